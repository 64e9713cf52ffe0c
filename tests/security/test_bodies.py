"""Hostile bodies, ids and strings on every route that takes them: never a 500.

Oversized bodies are 413, bodies that are not JSON 400, JSON the API cannot store 422,
all in the SPEC error shape; unicode that is valid text (RTL overrides, zero-width
characters, emoji, combining marks) is stored and given back unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from app.api.endpoint import Operation
from app.config import Config
from tests.security.conftest import Http, World
from tests.security.operations import (
    PARAM,
    assert_spec_error,
    authenticated,
    has_params,
    op_id,
    path_of,
)

WITH_BODY = [op for op in authenticated() if op.body is not None]
WITH_ID = [op for op in authenticated() if has_params(op)]
TOO_BIG = Config.MAX_CONTENT_LENGTH + 1

# Each is sent as the whole body: (raw bytes, content type, acceptable statuses).
MALFORMED: dict[str, tuple[bytes, str, tuple[int, ...]]] = {
    "not-json": (b"{not json", "application/json", (400,)),
    "truncated": (b'{"a": ', "application/json", (400,)),
    "array": (b"[1, 2]", "application/json", (400,)),
    "string": (b'"text"', "application/json", (400,)),
    "invalid-utf8": (b'{"a": "\xff\xfe\xc3\x28"}', "application/json", (400,)),
    "utf16": ('{"a": 1}'.encode("utf-16"), "application/json", (400, 422)),  # RFC 8259 allows
    "nul-escape": (b'{"a": "x\\u0000y"}', "application/json", (400, 422)),
    "raw-nul": (b'{"a": "x\x00y"}', "application/json", (400,)),
    "lone-surrogate": (b'{"a": "\\ud800"}', "application/json", (400, 422)),
    "surrogate-key": (b'{"\\udfff": 1}', "application/json", (400, 422)),
    "nan": (b'{"a": NaN}', "application/json", (400,)),
    "infinity": (b'{"a": -Infinity}', "application/json", (400,)),
    "huge-float": (b'{"a": 1e999}', "application/json", (400,)),
    "huge-int": (b'{"a": ' + b"9" * 5000 + b"}", "application/json", (400, 422)),
    "deep-100": (b'{"a":' * 100 + b"1" + b"}" * 100, "application/json", (400, 422)),
    "deep-100000": (b"[" * 100_000 + b"]" * 100_000, "application/json", (400, 422)),
    "duplicate-keys": (b'{"a": 1, "a": 2}', "application/json", (400, 422)),
    "form-encoded": (b"a=1&b=2", "application/x-www-form-urlencoded", (400, 415)),
    "multipart": (
        b'--X\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--X--\r\n',
        "multipart/form-data; boundary=X",
        (400, 415),
    ),
    "xml": (b"<?xml version='1.0'?><a>1</a>", "application/xml", (400, 415)),
}


@pytest.mark.parametrize("op", WITH_BODY, ids=op_id)
def test_it_answers_413_to_oversized_bodies(http: Http, world: World, op: Operation) -> None:
    path = path_of(op, world)
    big = b'{"input_data": {"x": "' + b"x" * TOO_BIG + b'"}}'
    response = http.call(
        op.method, path, world.keys.admin, data=big, headers={"Content-Type": "application/json"}
    )
    assert_spec_error(response, 413, "payload_too_large")


def chunks(total: int) -> Iterator[bytes]:
    """A body sent without Content-Length (chunked), so only reading it can size it."""
    yield b'{"input_data": {"x": "'
    sent = 0
    while sent < total:
        yield b"x" * 65536
        sent += 65536
    yield b'"}}'


def test_it_answers_413_to_a_chunked_body_that_grows_too_big(http: Http, world: World) -> None:
    response = http.call(
        "POST",
        "/ains/tasks",
        world.keys.client,
        data=chunks(TOO_BIG),
        headers={"Content-Type": "application/json"},
    )
    assert_spec_error(response, 413, "payload_too_large")


def test_it_accepts_a_body_just_under_the_limit(http: Http, world: World) -> None:
    """The control for the 413s: the limit is MAX_BODY_BYTES, not something smaller."""
    envelope = {"task_type": "r", "capability_required": "idle-v1", "input_data": {"x": ""}}
    room = Config.MAX_CONTENT_LENGTH - len(json.dumps(envelope)) - 16
    envelope["input_data"] = {"x": "x" * room}
    response = http.call("POST", "/ains/tasks", world.keys.client, json=envelope)
    assert response.status_code == 201, response.text[:300]


@pytest.mark.parametrize("op", WITH_BODY, ids=op_id)
def test_it_refuses_malformed_bodies_on_every_route(
    http: Http, world: World, op: Operation
) -> None:
    path = path_of(op, world)
    for name, (raw, content_type, statuses) in MALFORMED.items():
        response = http.call(
            op.method, path, world.keys.admin, data=raw, headers={"Content-Type": content_type}
        )
        assert response.status_code in statuses, (name, response.status_code, response.text[:300])
        assert_spec_error(response, response.status_code)


UNICODE_IDS = {
    "rtl-override": "task_\u202eabc",
    "zero-width": "task_\u200b\u200d\ufeff",
    "emoji": "task_😀👩‍👩‍👧",
    "combining": "task_e\u0301\u0308\u20dd",
    "percent-nul": "task_%00",
    "nul-byte": "task_\x00",
    "dot-dot": "%2E%2E",
    "encoded-slash": "a%2Fb",
    "sql": "' OR 1=1 --",
    "long": "t" * 4000,
    "newline": "task_%0D%0ASet-Cookie: x=1",
}


@pytest.mark.parametrize("op", WITH_ID, ids=op_id)
def test_it_answers_404_to_hostile_ids(http: Http, world: World, op: Operation) -> None:
    for name, hostile in UNICODE_IDS.items():
        path = PARAM.sub(lambda _m, h=hostile: h, op.rule)
        response = http.call(op.method, path, world.keys.admin, json={})
        assert response.status_code in (404, 405, 422), (name, response.status_code, response.text)
        error = assert_spec_error(response, response.status_code)
        assert "Set-Cookie" not in response.headers, name
        assert error["code"] in {"not_found", "validation_error", "method_not_allowed"}, name


TRICKY_TEXT = [
    "\u202egnp.exe",  # right-to-left override
    "a\u200bb\u200c\u200d\ufeffc",  # zero-width characters
    "😀👩‍👩‍👧🏳️‍🌈",  # emoji and ZWJ sequences
    "e\u0301\u0308\u20dd Z\u0351\u0352\u0353",  # combining marks
    "\u0000".replace("\u0000", "\u0001\u001f\u007f"),  # control characters (storable)
    "\U0010ffff\ufffe",  # the last code point and a non-character
    "ﷺ" * 10,  # a wide ligature
]


def test_it_stores_unicode_edge_cases_unchanged(http: Http, world: World) -> None:
    for text in TRICKY_TEXT:
        body = {"task_type": text, "capability_required": "idle-v1", "input_data": {text: text}}
        task = http.ok("POST", "/ains/tasks", world.keys.client, json=body)
        read = http.ok("GET", f"/ains/tasks/{task['task_id']}", world.keys.client)
        assert (read["task_type"], read["input_data"]) == (text, {text: text}), repr(text)
        hook = http.ok(
            "POST",
            "/ains/webhooks",
            world.keys.client,
            json={"url": "http://127.0.0.1:9/u", "description": text},
        )
        assert hook["description"] == text


@pytest.mark.parametrize("op", [op for op in authenticated() if op.query is not None], ids=op_id)
def test_it_refuses_hostile_query_strings(http: Http, world: World, op: Operation) -> None:
    path = path_of(op, world)
    for query in (
        "limit=99999999999999999999999999",
        "limit=-1",
        "limit=1e999",
        "limit=NaN",
        "status=%00",
        "client_id=%ED%A0%80",  # an encoded lone surrogate
        "client_id=%FF%FE",  # not UTF-8
        "cursor=%27%20OR%201%3D1%20--",
        "limit=1&limit=2",
        "unknown=1",
        "a[b][c]=1",
    ):
        response = http.call("GET", f"{path}?{query}", world.keys.admin)
        assert response.status_code in (200, 400, 422), (query, response.status_code, response.text)
        if response.status_code != 200:
            assert_spec_error(response, response.status_code)

"""Missing, malformed, invalid, expired and revoked keys on every authenticated route: 401."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from app.api.endpoint import Operation
from tests.security.conftest import Http, Keys, World
from tests.security.operations import assert_spec_error, authenticated, op_id, path_of

BadAuth = Callable[[Keys], dict[str, str | bytes]]


def swap_last(key: str) -> str:
    return key[:-1] + ("A" if key[-1] != "A" else "B")


BAD_CREDENTIALS: dict[str, BadAuth] = {
    "missing": lambda k: {},
    "empty": lambda k: {"Authorization": ""},
    "scheme-only": lambda k: {"Authorization": "Bearer"},
    "blank-token": lambda k: {"Authorization": "Bearer    "},
    "no-scheme": lambda k: {"Authorization": k.client.key},
    "basic-scheme": lambda k: {"Authorization": "Basic Y2xpZW50OnNlY3JldA=="},
    "token-scheme": lambda k: {"Authorization": f"Token {k.client.key}"},
    "garbage": lambda k: {"Authorization": "Bearer ' OR 1=1 --"},
    "wrong-secret": lambda k: {"Authorization": f"Bearer {swap_last(k.client.key)}"},
    "truncated": lambda k: {"Authorization": f"Bearer {k.client.key[:-5]}"},
    "extra-text": lambda k: {"Authorization": f"Bearer {k.client.key}x"},
    "two-keys": lambda k: {"Authorization": f"Bearer {k.client.key} {k.admin.key}"},
    "latin1-bytes": lambda k: {"Authorization": "Bearer ains_caf\xe9".encode("latin-1")},
    "utf8-bytes": lambda k: {"Authorization": "Bearer \u202eyek\u200b😀".encode()},
    "long": lambda k: {"Authorization": "Bearer " + "a" * 6000},
    "expired": lambda k: {"Authorization": f"Bearer {k.expired.key}"},
    "revoked": lambda k: {"Authorization": f"Bearer {k.revoked.key}"},
}


@pytest.mark.parametrize("op", authenticated(), ids=op_id)
def test_it_answers_401_to_every_bad_key_on_every_route(
    http: Http, world: World, op: Operation
) -> None:
    path = path_of(op, world)
    for name, bad in BAD_CREDENTIALS.items():
        # A body that is not even JSON: credentials are checked before anything else.
        response = http.call(op.method, path, headers=bad(world.keys), data=b"{not json")
        assert response.status_code != 500, (name, response.text)
        error = assert_spec_error(response, 401, "unauthorized")
        assert response.headers.get("WWW-Authenticate", "").startswith("Bearer"), name
        # The message never echoes what was sent (a key, or a probe for reflection).
        assert "OR 1=1" not in error["message"] and world.keys.client.key not in response.text


def test_it_still_accepts_the_good_keys_it_refuses_when_mangled(http: Http, world: World) -> None:
    """The control: the refusals above are about the credential, not the route."""
    keys = world.keys
    assert http.call("GET", "/ains/tasks", keys.client).status_code == 200
    lower = {"Authorization": f"bearer {keys.client.key}"}
    assert http.call("GET", "/ains/tasks", headers=lower).status_code == 200

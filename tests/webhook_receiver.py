"""A local HTTP receiver for webhook deliveries, started by the test that uses it (the
services, API, console, browser and end-to-end tests share it).

It listens on 127.0.0.1 in a thread, records every request (arrival time, path, headers,
raw body) and answers from a script: one ``Reply`` per request in order (a status code, its
headers, how long to hold the request first), then ``default`` for every request after.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from requests.structures import CaseInsensitiveDict


@dataclass(frozen=True)
class Reply:
    """What the receiver answers to one request."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds the request is held before the answer
    body: bytes | None = None  # default: {"ok": true} for a 2xx, {"ok": false} otherwise


@dataclass
class Received:
    """One request as it arrived (before any delay)."""

    at: float  # time.time(): compared with the body's timestamp
    monotonic: float  # time.monotonic(): compared with other arrivals
    path: str
    headers: CaseInsensitiveDict[str]
    body: bytes

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    @property
    def json(self) -> dict[str, Any]:
        return json.loads(self.body)

    @property
    def event_id(self) -> str | None:
        return self.header("X-Webhook-Id")

    @property
    def attempt(self) -> int:
        return int(self.header("X-Webhook-Attempt") or 0)


class Receiver:
    """Records webhook requests and answers them from a script."""

    def __init__(self, script: list[int | Reply] | None = None, default: int | Reply = 200) -> None:
        self._lock = threading.Condition()
        self._script = [self._reply(r) for r in script or []]
        self.default = self._reply(default)
        self.requests: list[Received] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver._handle(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep the test output quiet

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webhook-receiver", daemon=True
        )
        self._thread.start()

    @staticmethod
    def _reply(value: int | Reply) -> Reply:
        return value if isinstance(value, Reply) else Reply(status=value)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def set_default(self, value: int | Reply) -> None:
        with self._lock:
            self.default = self._reply(value)

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        arrived, arrived_mono = time.time(), time.monotonic()
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        with self._lock:
            self.requests.append(
                Received(
                    at=arrived,
                    monotonic=arrived_mono,
                    path=handler.path,
                    headers=CaseInsensitiveDict(handler.headers.items()),
                    body=body,
                )
            )
            reply = self._script.pop(0) if self._script else self.default
            self._lock.notify_all()
        if reply.delay:
            time.sleep(reply.delay)
        payload = reply.body
        if payload is None:
            payload = b'{"ok": true}' if 200 <= reply.status < 300 else b'{"ok": false}'
        try:
            handler.send_response(reply.status)
            for name, value in reply.headers.items():
                handler.send_header(name, value)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(payload)))
            handler.end_headers()
            handler.wfile.write(payload)
        except OSError:
            pass  # the sender gave up (timeout) or was killed while the request was held

    def received(self) -> list[Received]:
        with self._lock:
            return list(self.requests)

    def wait_for(self, count: int, timeout: float = 15) -> list[Received]:
        """The first ``count`` requests, waiting up to ``timeout`` seconds for them."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self.requests) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    got = [(r.header("X-Webhook-Event"), r.attempt) for r in self.requests]
                    raise AssertionError(
                        f"receiver got {len(self.requests)} of {count} requests in {timeout}s: "
                        f"{got[:20]}"
                    )
                self._lock.wait(min(remaining, 0.2))
            return list(self.requests[:count])

    def wait_for_events(self, event_ids: set[str], timeout: float = 15) -> list[Received]:
        """Wait until every one of ``event_ids`` has arrived at least once."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while True:
                missing = event_ids - {r.event_id for r in self.requests}
                if not missing:
                    return list(self.requests)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{len(missing)} of {len(event_ids)} events never arrived in {timeout}s"
                    )
                self._lock.wait(min(remaining, 0.2))

    def counts_by_event_id(self) -> Counter[str | None]:
        return Counter(r.event_id for r in self.received())

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def receiving(
    script: list[int | Reply] | None = None, default: int | Reply = 200
) -> Iterator[Receiver]:
    receiver = Receiver(script, default)
    try:
        yield receiver
    finally:
        receiver.stop()


@contextmanager
def receiver(status: int = 200, body: bytes | None = None) -> Iterator[Receiver]:
    """A receiver answering every request with ``status`` (and ``body``)."""
    with receiving(default=Reply(status=status, body=body)) as started:
        yield started

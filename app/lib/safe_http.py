"""Outbound HTTP to addresses users give us (webhooks), without becoming an SSRF proxy.

- only http and https;
- the host name is resolved once, every address is checked, and the connection goes to
  the checked address (a second lookup could answer differently: DNS rebinding);
- private, loopback, link-local, multicast and reserved addresses are refused unless
  ``allow_private`` (a test's local receiver, an intranet deployment);
- redirects are not followed except 307/308 to the same scheme, host and port;
- one deadline for the whole exchange (every read waits only for what is left of it, so a
  receiver dripping bytes cannot hold the sender), and the response is read up to a limit.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

MAX_REDIRECTS = 3
USER_AGENT = "AINS-Webhooks/1.0"


class UnsafeURL(ValueError):
    """The URL may not be called: bad scheme, or it points into a private network."""


class RequestFailed(Exception):
    """No HTTP answer: connection refused, timeout, TLS or DNS failure."""


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes
    truncated: bool = False
    redirects: list[str] = field(default_factory=list)


def check_url(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a URL we are willing to call; UnsafeURL otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeURL(f"not a valid URL: {exc}") from None
    scheme = (parts.scheme or "").lower()
    if scheme not in ("http", "https"):
        raise UnsafeURL(f"only http and https URLs are allowed, not {scheme or 'none'!r}")
    host = parts.hostname
    if not host:
        raise UnsafeURL("the URL has no host")
    if parts.username or parts.password:
        raise UnsafeURL("credentials in the URL are not allowed")
    return scheme, host, port or (443 if scheme == "https" else 80)


def forbidden_reason(address: str) -> str | None:
    """Why an IP address is off limits, or None if it is a public one."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for test, label in (
        (ip.is_loopback, "loopback"),
        (ip.is_link_local, "link-local"),
        (ip.is_private, "private"),
        (ip.is_multicast, "multicast"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_reserved, "reserved"),
    ):
        if test:
            return label
    if not ip.is_global:
        return "non-global"
    return None


def resolve(host: str, port: int, *, allow_private: bool) -> str:
    """The address to connect to; UnsafeURL if any address of the name is forbidden."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise RequestFailed(f"cannot resolve {host!r}: {exc}") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    if not addresses:
        raise RequestFailed(f"cannot resolve {host!r}")
    if not allow_private:
        for address in addresses:
            reason = forbidden_reason(address)
            if reason is not None:
                raise UnsafeURL(
                    f"refused: {host} resolves to {address}, a {reason} address "
                    "(set WEBHOOK_ALLOW_PRIVATE to allow it)"
                )
    return addresses[0]


class _DeadlineReader(io.RawIOBase):
    """Reads a socket, each read waiting only until the exchange's deadline.

    A socket timeout alone bounds each read, not their sum: a receiver sending a byte now
    and then would keep the status line, the headers or the body coming for ever.
    """

    def __init__(self, owner: _DeadlineSocket) -> None:
        super().__init__()
        self._owner = owner

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        sock = self._owner.sock
        sock.settimeout(self._owner.remaining())
        return sock.recv_into(buffer)

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._owner.reader_closed()


class _DeadlineSocket:
    """The connected socket as http.client sees it: reads and sends keep to the deadline.

    Like a socket's own makefile(), the socket stays open until its reader is closed too
    (http.client closes the connection before the body of a ``Connection: close`` answer
    has been read).
    """

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.readers = 0
        self.closing = False

    def remaining(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the deadline passed")
        return left

    def makefile(self, mode: str = "rb", *args: object, **kwargs: object) -> io.BufferedReader:
        assert mode == "rb", mode
        self.readers += 1
        return io.BufferedReader(_DeadlineReader(self))

    def sendall(self, data: bytes) -> None:
        self.sock.settimeout(self.remaining())
        self.sock.sendall(data)

    def reader_closed(self) -> None:
        self.readers -= 1
        if self.closing and self.readers <= 0:
            self.sock.close()

    def close(self) -> None:
        self.closing = True
        if self.readers <= 0:
            self.sock.close()

    def __getattr__(self, name: str) -> object:
        return getattr(self.sock, name)


class _PinnedHTTP(http.client.HTTPConnection):
    def __init__(self, host: str, port: int, address: str, deadline: float) -> None:
        super().__init__(host, port, timeout=max(0.001, deadline - time.monotonic()))
        self.address = address
        self.deadline = deadline

    def open_socket(self) -> socket.socket:
        return socket.create_connection((self.address, self.port), self.timeout)

    def connect(self) -> None:
        self.sock = _DeadlineSocket(self.open_socket(), self.deadline)  # type: ignore[assignment]


class _PinnedHTTPS(_PinnedHTTP):
    def __init__(self, host: str, port: int, address: str, deadline: float) -> None:
        super().__init__(host, port, address, deadline)
        self.context = ssl.create_default_context()

    def open_socket(self) -> socket.socket:
        return self.context.wrap_socket(super().open_socket(), server_hostname=self.host)


def post(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    timeout: float,
    allow_private: bool,
    max_response_bytes: int,
) -> Response:
    """POST ``body`` to ``url`` under the rules above."""
    deadline = time.monotonic() + timeout
    redirects: list[str] = []
    origin = check_url(url)
    while True:
        scheme, host, port = check_url(url)
        address = resolve(host, port, allow_private=allow_private)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RequestFailed(f"timed out after {timeout:g}s")
        connection_class = _PinnedHTTPS if scheme == "https" else _PinnedHTTP
        connection = connection_class(host, port, address, deadline)
        raw: http.client.HTTPResponse | None = None
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        try:
            connection.request(
                "POST",
                target,
                body=body,
                headers={"User-Agent": USER_AGENT, **headers, "Content-Length": str(len(body))},
            )
            raw = connection.getresponse()
            chunks: list[bytes] = []
            size = 0
            truncated = False
            while True:
                if time.monotonic() > deadline:
                    raise RequestFailed(f"timed out after {timeout:g}s reading the response")
                chunk = raw.read(min(16384, max_response_bytes - size + 1))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
                if size > max_response_bytes:
                    truncated = True
                    break
            response = Response(
                status=raw.status,
                headers={k.lower(): v for k, v in raw.getheaders()},
                body=b"".join(chunks)[:max_response_bytes],
                truncated=truncated,
                redirects=redirects,
            )
        except http.client.InvalidURL as exc:
            raise UnsafeURL(f"not a valid URL: {exc}") from None
        except (OSError, http.client.HTTPException) as exc:
            if isinstance(exc, TimeoutError | socket.timeout):
                raise RequestFailed(f"timed out after {timeout:g}s") from None
            raise RequestFailed(f"{type(exc).__name__}: {exc}") from None
        finally:
            if raw is not None:
                raw.close()  # an answer read only in part holds the socket open
            connection.close()
        location = response.headers.get("location")
        if response.status not in (307, 308) or not location:
            return response
        target_url = urljoin(url, location)
        try:
            same_origin = check_url(target_url) == origin
        except UnsafeURL:
            same_origin = False
        if not same_origin or len(redirects) >= MAX_REDIRECTS:
            return response  # the caller reports the redirect it did not follow
        redirects.append(target_url)
        url = target_url

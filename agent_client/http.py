"""A small JSON-over-HTTP session for the AINS API: bearer auth, timeouts, retries, errors."""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError

TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
# Answers that say the server did not act on the request: safe to repeat any request.
REFUSED_STATUSES = frozenset({429})
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
USER_AGENT = "ains-agent-client"


class ApiError(Exception):
    """An error answer from the AINS API, or no answer at all (status 0)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        """Store the HTTP status and the parsed `{"error": {...}}` body."""
        self.status = status
        self.code = code
        self.message = message
        self.details = details or []
        super().__init__(str(self))

    def __str__(self) -> str:
        """Render as `<status> <code>: <message> (<field>: <message>, ...)`."""
        text = f"{self.status} {self.code}: {self.message}"
        fields = [f"{d.get('field')}: {d.get('message')}" for d in self.details if d]
        return f"{text} ({'; '.join(fields)})" if fields else text

    @property
    def is_transient(self) -> bool:
        """Whether trying again later may succeed (unreachable, 429, 502, 503, 504)."""
        return self.status == 0 or self.status in TRANSIENT_STATUSES

    @classmethod
    def from_response(cls, response: requests.Response) -> ApiError:
        """Build from a non-2xx response, tolerating bodies that are not the error shape.

        A 409 comes back as `ConflictError`, or the subclass its code names
        (`CancelRequestedError`, `StaleAttemptError`), so callers can catch what they handle.
        """
        try:
            body = response.json()
        except ValueError:
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        status = response.status_code
        if isinstance(error, dict):
            details = error.get("details")
            code = str(error.get("code") or f"http_{status}")
            return error_class(status, code)(
                status,
                code,
                str(error.get("message") or response.reason or ""),
                [d for d in details if isinstance(d, dict)] if isinstance(details, list) else [],
            )
        text = (response.text or response.reason or "").strip()
        code = f"http_{status}"
        return error_class(status, code)(status, code, text[:500])


class ConflictError(ApiError):
    """409: the task is not in a state that allows the call (e.g. it has finished already)."""


class CancelRequestedError(ConflictError):
    """409 `cancel_requested`: a client cancelled the task; stop working on it.

    After a refused progress report, confirm with `fail(...)` (the task ends CANCELLED). A
    refused `complete` has already ended the task CANCELLED and dropped the result.
    """


class StaleAttemptError(ConflictError):
    """409 `stale_attempt`: the report came from an attempt the server has taken back."""


CONFLICT_CODES: dict[str, type[ConflictError]] = {
    "cancel_requested": CancelRequestedError,
    "stale_attempt": StaleAttemptError,
}


def error_class(status: int, code: str) -> type[ApiError]:
    """The `ApiError` subclass for an error answer: 409s by their code, the rest ApiError."""
    if status != 409:
        return ApiError
    return CONFLICT_CODES.get(code, ConflictError)


def never_sent(exc: requests.ConnectionError) -> bool:
    """Whether the connection failed before the request could reach the server.

    Refused, unresolvable or timed-out connects are; a connection dropped after the request
    went out (a server killed mid-request) may have been acted on.
    """
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    # NewConnectionError (refused, DNS) is a ConnectTimeoutError in urllib3 2.
    return isinstance(reason, ConnectTimeoutError)


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP-date), else None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class HttpSession:
    """A `requests.Session` bound to one API base URL and bearer key, speaking JSON.

    Connection errors, 429 (honouring `Retry-After`), 502, 503 and 504 are retried with
    exponential backoff and jitter, up to `max_attempts` tries in all. Read timeouts are not
    retried, because the server may already have acted on the request. Nor, for a request
    that is not idempotent, is anything else that may have reached the server: only a
    connect that failed and a 429 are retried then. GET, PUT, DELETE and requests with an
    `Idempotency-Key` header are idempotent; others say so with `idempotent=True`. Any
    other non-2xx answer, or a transient one still failing on the last try, raises
    `ApiError`.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        max_attempts: int = 5,
        backoff_base: float = 0.5,
        backoff_max: float = 10.0,
        retry_after_max: float = 60.0,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        pool_size: int = 10,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Configure the base URL, key, retry policy, timeouts and connection pool size."""
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts!r}")
        self.base_url = base_url.rstrip("/")
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.retry_after_max = retry_after_max
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._sleep = sleep
        self._session = session or requests.Session()
        # Retries are ours (with Retry-After and jitter); urllib3 must not retry underneath.
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers.update({"Accept": "application/json", "User-Agent": USER_AGENT})
        self._api_key: str | None = None
        self.api_key = api_key

    @property
    def api_key(self) -> str | None:
        """The bearer key sent with every request."""
        return self._api_key

    @api_key.setter
    def api_key(self, value: str | None) -> None:
        """Switch the bearer key for all later requests."""
        self._api_key = value
        if value:
            self._session.headers["Authorization"] = f"Bearer {value}"
        else:
            self._session.headers.pop("Authorization", None)

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        read_timeout: float | None = None,
        idempotent: bool | None = None,
    ) -> Any:
        """Send one request (retrying transient failures) and return the decoded JSON body.

        `idempotent`: whether repeating the request is harmless even if the server acted on
        it already; by default, true for GET, PUT, DELETE and with an `Idempotency-Key`.
        """
        url = f"{self.base_url}/{path.lstrip('/')}"
        timeout = (self.connect_timeout, read_timeout or self.read_timeout)
        if idempotent is None:
            idempotent = method.upper() in IDEMPOTENT_METHODS or "Idempotency-Key" in (
                headers or {}
            )
        retried_statuses = TRANSIENT_STATUSES if idempotent else REFUSED_STATUSES
        for attempt in range(1, self.max_attempts + 1):
            last = attempt == self.max_attempts
            try:
                response = self._session.request(
                    method, url, json=json, params=params, headers=headers, timeout=timeout
                )
            except requests.ConnectionError as exc:
                # ConnectTimeout is a ConnectionError too; a ReadTimeout is not, on purpose.
                if last or not (idempotent or never_sent(exc)):
                    raise ApiError(0, "connection_error", f"{method} {url}: {exc}") from exc
                self._sleep(self._backoff(attempt))
                continue
            except requests.Timeout as exc:
                raise ApiError(0, "timeout", f"{method} {url}: {exc}") from exc
            if response.status_code in retried_statuses and not last:
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
                self._sleep(self._delay(attempt, retry_after))
                continue
            return self._decode(response)
        raise AssertionError("unreachable: the last attempt always returns or raises")

    def get(self, path: str, *, params: Mapping[str, Any] | None = None) -> Any:
        """GET `path` and return the decoded JSON body."""
        return self.request("GET", path, params=params)

    def post(
        self,
        path: str,
        json: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        read_timeout: float | None = None,
        idempotent: bool | None = None,
    ) -> Any:
        """POST a JSON body to `path` and return the decoded JSON body."""
        return self.request(
            "POST",
            path,
            json=json,
            headers=headers,
            read_timeout=read_timeout,
            idempotent=idempotent,
        )

    def patch(self, path: str, json: Any = None, *, idempotent: bool | None = None) -> Any:
        """PATCH a JSON body to `path` and return the decoded JSON body."""
        return self.request("PATCH", path, json=json, idempotent=idempotent)

    def delete(self, path: str) -> Any:
        """DELETE `path` and return the decoded JSON body, if any."""
        return self.request("DELETE", path)

    def close(self) -> None:
        """Close the pooled connections."""
        self._session.close()

    def __enter__(self) -> HttpSession:
        """Use as a context manager that closes the session on exit."""
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the session."""
        self.close()

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with equal jitter: half fixed, half random."""
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (attempt - 1))
        return ceiling / 2 + random.uniform(0, ceiling / 2)

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """The wait before the next try: the server's `Retry-After` if given, else backoff."""
        if retry_after is None:
            return self._backoff(attempt)
        # A little jitter on top so rate-limited clients do not come back in lockstep.
        return min(retry_after, self.retry_after_max) + random.uniform(0, 0.25)

    @staticmethod
    def _decode(response: requests.Response) -> Any:
        """Return the JSON body of a 2xx response (None when empty), else raise ApiError."""
        if not response.ok:
            raise ApiError.from_response(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise ApiError(
                response.status_code,
                "invalid_response",
                f"expected a JSON body, got {response.text[:200]!r}",
            ) from exc

"""Logs: one JSON object per line (or readable text), each naming the request it belongs to.

Every process (gunicorn, the RQ worker, the clock) logs through the root logger's one
handler, set up by ``configure_logging`` from LOG_FORMAT and LOG_LEVEL. A line carries
``ts``, ``level``, ``logger``, ``message`` and ``request_id`` (null outside a request or a
job queued by one); a job's lines carry ``job_id`` too, and the web's one line per request
its ``method``, ``path`` (no query string), ``status``, ``duration_ms``, ``remote_addr``
and ``actor``. Whatever a caller passes as ``extra=`` becomes a field of its own.

The request id comes from the caller's ``X-Request-ID`` when it is 1-128 visible ASCII
characters, else it is a new uuid4 (hex). It is echoed in the ``X-Request-ID`` header of
every response and rides in ``job.meta`` of the RQ jobs queued during the request, so the
worker's lines about the job carry it too.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, g, request

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_PATTERN = re.compile(r"[\x21-\x7e]{1,128}")
JOB_META_KEY = "request_id"

request_id_var: ContextVar[str | None] = ContextVar("ains_request_id", default=None)
job_id_var: ContextVar[str | None] = ContextVar("ains_job_id", default=None)

request_log = logging.getLogger("ains.request")

# Attributes every LogRecord has: anything else on a record came from ``extra=``.
_PLAIN_RECORD = logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)
STANDARD_ATTRS = frozenset(vars(_PLAIN_RECORD)) | {
    *("message", "asctime", "taskName"),
    *("ains_request_id", "ains_job_id", "ids", "fields"),  # set by this module
}


# ---------------------------------------------------------------------------------------
# Request ids
# ---------------------------------------------------------------------------------------


def new_request_id() -> str:
    return uuid.uuid4().hex


def accepted_request_id(value: str | None) -> str:
    """The caller's id when it is 1-128 visible ASCII characters, else a new one."""
    if value and REQUEST_ID_PATTERN.fullmatch(value):
        return value
    return new_request_id()


def current_request_id() -> str | None:
    return request_id_var.get()


def job_meta() -> dict[str, str]:
    """What a job queued now carries to its worker (``Queue.enqueue(..., meta=...)``)."""
    request_id = request_id_var.get()
    return {JOB_META_KEY: request_id} if request_id else {}


@contextmanager
def job_context(job_id: str, meta: dict[str, Any] | None) -> Iterator[None]:
    """While a worker runs a job: its lines carry the job's id and its request's id."""
    request_id = (meta or {}).get(JOB_META_KEY)
    if not (isinstance(request_id, str) and REQUEST_ID_PATTERN.fullmatch(request_id)):
        request_id = None
    request_token = request_id_var.set(request_id)
    job_token = job_id_var.set(job_id)
    try:
        yield
    finally:
        job_id_var.reset(job_token)
        request_id_var.reset(request_token)


def install_request_ids(app: Flask) -> None:
    """Give every request an id and one log line. Call first in ``create_app``: the
    before-hook then runs before every other (a 429 has an id), the after-hook after every
    other (it logs the final status)."""
    app.before_request(start_request)
    app.after_request(finish_request)
    app.teardown_request(end_request)


def start_request() -> None:
    request_id = accepted_request_id(request.headers.get(REQUEST_ID_HEADER))
    g.request_id = request_id
    g.request_started = time.perf_counter()
    g.request_id_token = request_id_var.set(request_id)


def finish_request(response: Response) -> Response:
    request_id = g.get("request_id")
    if request_id is None:  # a hook before ours failed: still answer with an id
        request_id = g.request_id = new_request_id()
    response.headers[REQUEST_ID_HEADER] = request_id
    started = g.get("request_started")
    duration_ms = round((time.perf_counter() - started) * 1000, 2) if started else None
    status = response.status_code
    request_log.log(
        logging.WARNING if status >= 500 else logging.INFO,
        "%s %s %s",
        request.method,
        request.path,
        status,
        extra={
            "method": request.method,
            "path": request.path,
            "status": status,
            "duration_ms": duration_ms,
            "remote_addr": request.remote_addr,
            "actor": request_actor(),
        },
    )
    return response


def end_request(_exc: BaseException | None) -> None:
    token = g.pop("request_id_token", None)
    if token is not None:
        try:
            request_id_var.reset(token)
        except ValueError:  # torn down in another context (a streamed response)
            request_id_var.set(None)


def request_actor() -> str | None:
    """Who called, when known without a query: the API key's holder or the signed-in
    operator (as the audit log writes them)."""
    principal = g.get("principal")
    if principal is not None:
        return principal.actor
    user = g.get("_login_user")  # only if Flask-Login already loaded it for this request
    email = getattr(user, "email", None)
    return f"operator:{email}" if email else None


# ---------------------------------------------------------------------------------------
# Formatting
# ---------------------------------------------------------------------------------------


def _record_factory(base: Any) -> Any:
    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = base(*args, **kwargs)
        # Names of our own: a caller's extra= may name its fields request_id or job_id (RQ
        # passes job_id), and a record refuses an extra that overwrites an attribute.
        record.ains_request_id = request_id_var.get()
        record.ains_job_id = job_id_var.get()
        return record

    make.ains = True  # type: ignore[attr-defined]
    return make


def install_record_factory() -> None:
    """Stamp every record with the current request and job ids (once per process)."""
    base = logging.getLogRecordFactory()
    if not getattr(base, "ains", False):
        logging.setLogRecordFactory(_record_factory(base))


def extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in STANDARD_ATTRS}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; a traceback goes in ``exc``, never across lines."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "ains_request_id", None),
        }
        job_id = getattr(record, "ains_job_id", None)
        if job_id:
            line["job_id"] = job_id
        for key, value in extras(record).items():
            line.setdefault(key, value)
        if record.exc_info:
            line["exc"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger [request id]: message key=value...`` for a terminal."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(ids)s: %(message)s%(fields)s")

    def format(self, record: logging.LogRecord) -> str:
        ids = [
            i for i in (getattr(record, n, None) for n in ("ains_request_id", "ains_job_id")) if i
        ]
        record.ids = f" [{' '.join(ids)}]" if ids else ""
        record.fields = "".join(f" {k}={v}" for k, v in extras(record).items())
        return super().format(record)


def make_formatter(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def _log_uncaught(kind: type[BaseException], value: BaseException, tb: Any) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, value, tb)
        return
    logging.getLogger("ains.uncaught").critical("uncaught exception", exc_info=(kind, value, tb))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_type is SystemExit:
        return
    logging.getLogger("ains.uncaught").critical(
        "uncaught exception in thread %s",
        args.thread.name if args.thread else "?",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),  # type: ignore[arg-type]
    )


def configured() -> bool:
    """Whether ``configure_logging`` set up this process's logging."""
    return any(getattr(h, "ains", False) for h in logging.getLogger().handlers)


def configure_logging(log_format: str, level: str) -> None:
    """Send every logger's records through one stderr handler in the chosen format.

    Idempotent (the app factory runs more than once in tests): the handler this installed
    before is replaced, handlers others added (pytest's) are left alone.
    """
    install_record_factory()
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "ains", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(log_format))
    handler.ains = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    # Warnings and uncaught exceptions would otherwise print lines of their own (hooks
    # someone else installed, such as a test runner's, are left in place).
    logging.captureWarnings(True)
    if sys.excepthook is sys.__excepthook__:
        sys.excepthook = _log_uncaught
    if threading.excepthook is threading.__excepthook__:
        threading.excepthook = _log_uncaught_in_thread
    # Flask-Limiter logs every refused call at INFO: under a flood that is a flood of lines
    # (the audit log keeps the first refusal of each caller a minute).
    logging.getLogger("flask-limiter").setLevel(logging.WARNING)

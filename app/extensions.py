"""Extension singletons, bound to the app in create_app()."""

from __future__ import annotations

import threading

import redis
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy import MetaData

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

db = SQLAlchemy(metadata=MetaData(naming_convention=NAMING))
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
# API budgets and sign-in throttling, in fixed windows in Redis: app.lib.ratelimit gives it
# its limits and storage, and writes the X-RateLimit-* headers itself (exact, and from the
# counts its hits already fetched). Errors are swallowed: a limiter must never fail a call.
limiter = Limiter(
    get_remote_address, strategy="fixed-window", swallow_errors=True, headers_enabled=False
)

# psycopg converts each statement's %(name)s placeholders in Python and caches the result
# only for statements under 4,096 characters and 50 parameters. The multi-row INSERTs the
# unit of work sends for a claim or a batch completion (the attempts of up to a few dozen
# tasks, and then their events and trust records too: a few hundred parameters) were
# converted again on every execution, about a tenth of the CPU of a drained task, when this
# was measured. Cache those too, up to these ceilings: the cache is psycopg's LRU of 128
# statements, so at most about 20 MB per process even if every entry were this large; bigger
# statements (a 100-task batch submit) are converted each time, as before. The limits are
# module constants with no public setting; if a psycopg release drops them, this is a no-op.
PSYCOPG_CACHED_STATEMENT_LENGTH = 32 * 1024
PSYCOPG_CACHED_STATEMENT_PARAMS = 512


def tune_psycopg() -> None:
    """Let psycopg cache the conversion of long batch statements (see above)."""
    try:
        from psycopg import _queries
    except ImportError:  # SQLite-only install
        return
    for name, value in (
        ("MAX_CACHED_STATEMENT_LENGTH", PSYCOPG_CACHED_STATEMENT_LENGTH),
        ("MAX_CACHED_STATEMENT_PARAMS", PSYCOPG_CACHED_STATEMENT_PARAMS),
    ):
        if isinstance(getattr(_queries, name, None), int):
            setattr(_queries, name, max(getattr(_queries, name), value))


_redis_lock = threading.Lock()
_redis_clients: dict[str, redis.Redis] = {}


def redis_client(url: str) -> redis.Redis:
    """One pooled client per URL and process."""
    with _redis_lock:
        client = _redis_clients.get(url)
        if client is None:
            client = redis.Redis.from_url(
                url, socket_connect_timeout=2, socket_timeout=40, health_check_interval=30
            )
            _redis_clients[url] = client
        return client

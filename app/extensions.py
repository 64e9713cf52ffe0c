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

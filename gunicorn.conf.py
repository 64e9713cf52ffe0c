"""Gunicorn settings, from the app's config (the only reader of the environment)."""

from app.config import Config

bind = f"0.0.0.0:{Config.PORT}"
# Threads, because claim long polls hold a request open for up to 30 s while waiting.
worker_class = "gthread"
workers = Config.WEB_CONCURRENCY
threads = Config.WEB_THREADS
timeout = 60
graceful_timeout = 35
keepalive = 75
accesslog = "-"
# The control socket lives at one fixed path per user; several servers on a host (tests,
# benchmarks, two apps) would fight over it, and nothing here uses it.
control_socket_disable = True

"""Gunicorn's own lines (start, workers booted and lost) in the app's log format.

Named by ``logger_class`` in gunicorn.conf.py. Gunicorn's access log is off there: the
app writes one line per request itself (app/lib/logs.py), with the request id, the
caller and the time taken, in the same format as every other line.
"""

from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

from app.config import Config
from app.lib.logs import install_record_factory, make_formatter


class GunicornLogger(Logger):
    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        install_record_factory()
        formatter = make_formatter(Config.LOG_FORMAT)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                if getattr(handler, "_gunicorn", False):
                    handler.setFormatter(formatter)

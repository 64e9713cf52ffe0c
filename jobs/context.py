"""One app per job process, so jobs get a database session and config."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from flask import Flask

_app: Flask | None = None


def get_app() -> Flask:
    """The process's app, created on first use (also inside a forked work horse)."""
    global _app
    if _app is None:
        from app import create_app

        _app = create_app()
    return _app


@contextmanager
def app_context() -> Iterator[Flask]:
    """Run a job inside the app context and leave no session behind."""
    app = get_app()
    with app.app_context():
        from app.extensions import db

        try:
            yield app
        finally:
            db.session.remove()

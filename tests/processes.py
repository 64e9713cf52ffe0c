"""Real processes for end-to-end and browser tests: gunicorn, RQ worker, clock, agents."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from flask import Flask

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    """Poll ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


class Process:
    """A child process whose output is collected line by line for assertions."""

    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.lines: list[str] = []
        self._cond = threading.Condition()
        ARTIFACTS.mkdir(exist_ok=True)
        self.log_path = ARTIFACTS / f"{name}.log"
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with open(self.log_path, "a") as log:
            for line in self.proc.stdout:
                log.write(line)
                with self._cond:
                    self.lines.append(line.rstrip("\n"))
                    self._cond.notify_all()

    def wait_for_line(self, fragment: str, timeout: float = 20) -> str:
        """The first output line containing ``fragment``; fail with the output so far."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if fragment in line:
                        return line
                remaining = deadline - time.monotonic()
                if remaining <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    tail = "\n".join(self.lines[-30:])
                    raise AssertionError(f"{self.name}: no line with {fragment!r}; output:\n{tail}")
                self._cond.wait(min(remaining, 0.2))

    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; return the exit code."""
        self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            return self.proc.wait(5)


def process_env(app: Flask, **extra: str) -> dict[str, str]:
    """The environment a child needs to share the test database and Redis."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=app.config["SQLALCHEMY_DATABASE_URI"],
        REDIS_URL=app.config["REDIS_URL"],
        SECRET_KEY=app.config["SECRET_KEY"],
        PYTHONUNBUFFERED="1",
        # Fast heartbeats so dead-agent detection is observable within a test.
        HEARTBEAT_INTERVAL_SECONDS="1",
        HEARTBEAT_MISSES_ALLOWED="3",
        # The tests' webhook receivers listen on 127.0.0.1.
        WEBHOOK_ALLOW_PRIVATE="1",
    )
    env.update(extra)
    return env


class WebServer:
    def __init__(self, process: Process, url: str) -> None:
        self.process = process
        self.url = url


def start_web(app: Flask, name: str = "web", port: int | None = None, **extra: str) -> WebServer:
    port = port or free_port()
    env = process_env(
        app, **{"PORT": str(port), "WEB_CONCURRENCY": "1", "WEB_THREADS": "16", **extra}
    )
    process = Process(
        name, [sys.executable, "-m", "gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"], env
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/health", timeout=2).status_code == 200:
                return WebServer(process, url)
        except (requests.ConnectionError, requests.Timeout):
            pass  # not listening yet, or still starting its workers on a busy machine
        if process.proc.poll() is not None:
            break
        time.sleep(0.1)
    process.stop()
    raise AssertionError(f"gunicorn did not become healthy:\n{process.output()[-3000:]}")


@pytest.fixture
def web_server(app: Flask) -> Iterator[WebServer]:
    server = start_web(app)
    yield server
    server.process.stop()


@pytest.fixture
def rq_worker(app: Flask) -> Iterator[Process]:
    process = Process("worker", [sys.executable, "-m", "jobs.worker"], process_env(app))
    yield process
    process.stop()


@pytest.fixture
def clock(app: Flask) -> Iterator[Process]:
    process = Process("clock", [sys.executable, "-m", "jobs.clock"], process_env(app))
    yield process
    process.stop()


def start_agent(app: Flask, api_url: str, key: str, *args: str, name: str = "agent") -> Process:
    """The real sample agent CLI as a subprocess."""
    return Process(
        name,
        [
            sys.executable,
            "-m",
            "agent_client.sample_agent",
            "--api",
            api_url,
            "--key",
            key,
            "--wait-seconds",
            "2",
            *args,
        ],
        process_env(app),
    )

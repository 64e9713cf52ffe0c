"""Read a Heroku-style Procfile."""

from __future__ import annotations

from pathlib import Path


def read_procfile(path: str | Path) -> dict[str, str]:
    """``{process name: command}`` in file order; comments and blank lines skipped."""
    processes: dict[str, str] = {}
    for number, line in enumerate(Path(path).read_text().splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, command = line.partition(":")
        if not sep or not name.strip() or not command.strip():
            raise ValueError(f"{path}:{number}: expected 'name: command', got {line!r}")
        processes[name.strip()] = command.strip()
    return processes

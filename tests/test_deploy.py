"""The deployment files: app.json (Heroku), the Procfile and .python-version agree with the code.

app.json is checked against what Heroku needs and against the app: every variable it sets
is one app/config.py reads and accepts, and its formation names the Procfile's processes.
The release phase is run for real (honcho, on a fresh database).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from app.config import ConfigError, TestConfig, redis_tls_url
from app.lib.procfile import read_procfile

ROOT = Path(__file__).resolve().parent.parent
CONFIG_READERS = (
    r"(?:os\.environ\.get|os\.environ\[|env_int|env_bool|env_choice|env_rate|env_redis_url)"
)


@pytest.fixture(scope="module")
def app_json() -> dict[str, Any]:
    return json.loads((ROOT / "app.json").read_text())


@pytest.fixture(scope="module")
def procfile() -> dict[str, str]:
    return read_procfile(str(ROOT / "Procfile"))


def variables_config_reads() -> set[str]:
    source = (ROOT / "app" / "config.py").read_text()
    return set(re.findall(CONFIG_READERS + r"\(?\s*\"([A-Z][A-Z0-9_]*)\"", source))


def config_in_subprocess(env: dict[str, str], expression: str) -> subprocess.CompletedProcess[str]:
    """Import app.config in a fresh interpreter (it reads the environment at import)."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "AINS_INSTANCE_DIR")}
    return subprocess.run(
        [sys.executable, "-c", f"from app.config import Config; print({expression})"],
        cwd=ROOT,
        # A SECRET_KEY (app.json generates one), so no key file is written to instance/.
        env={**keep, "SECRET_KEY": "generated-by-heroku", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_app_json_has_what_a_heroku_deploy_needs(app_json: dict[str, Any]) -> None:
    assert app_json["name"] and app_json["description"]
    assert app_json["env"]["SECRET_KEY"] == {
        "description": app_json["env"]["SECRET_KEY"]["description"],
        "generator": "secret",
    }
    plans = {addon["plan"].split(":")[0] for addon in app_json["addons"]}
    assert plans == {"heroku-postgresql", "heroku-redis"}
    assert [b["url"] for b in app_json["buildpacks"]] == ["heroku/python"]
    for name, spec in app_json["env"].items():
        assert spec.get("description"), f"{name} has no description"
        # Each variable is generated, has a value, or must be given: never silently unset.
        assert "generator" in spec or "value" in spec or spec.get("required") is True, name
    assert set(app_json["scripts"]) <= {"postdeploy", "pr-predestroy"}


def test_every_variable_app_json_sets_is_one_the_config_reads(app_json: dict[str, Any]) -> None:
    read = variables_config_reads()
    assert {"DATABASE_URL", "REDIS_URL", "SECRET_KEY"} <= read  # the pattern finds them
    assert set(app_json["env"]) - read == set()


def test_the_values_app_json_sets_are_accepted_by_the_config(app_json: dict[str, Any]) -> None:
    env = {name: spec["value"] for name, spec in app_json["env"].items() if "value" in spec}
    # What the add-ons set: Heroku Postgres's postgres:// and Heroku Redis's TLS URL.
    env["DATABASE_URL"] = "postgres://u:p@db.example.com:5432/d1"
    env["REDIS_URL"] = "rediss://:secret@redis.example.com:6380"
    done = config_in_subprocess(
        env, "Config.SQLALCHEMY_DATABASE_URI, Config.REDIS_URL, Config.TRUSTED_PROXY_COUNT"
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [
        "postgresql+psycopg://u:p@db.example.com:5432/d1",
        "rediss://:secret@redis.example.com:6380?ssl_cert_reqs=none",
        "1",
    ]


def test_formation_runs_every_long_running_procfile_process(
    app_json: dict[str, Any], procfile: dict[str, str]
) -> None:
    assert set(procfile) == {"release", "web", "worker", "clock"}
    assert set(app_json["formation"]) == set(procfile) - {"release"}
    assert all(spec["quantity"] >= 1 for spec in app_json["formation"].values())


def test_procfile_commands(procfile: dict[str, str]) -> None:
    assert procfile["release"] == "flask --app wsgi db upgrade"
    assert procfile["web"].startswith("gunicorn --config gunicorn.conf.py wsgi:app")
    assert procfile["worker"] == "python -m jobs.worker"
    assert procfile["clock"] == "python -m jobs.clock"


def test_python_version_matches_the_interpreter_the_suite_runs_on() -> None:
    pinned = (ROOT / ".python-version").read_text().strip()
    assert re.fullmatch(r"3\.\d+", pinned), pinned  # a major version: Heroku picks its latest
    assert pinned == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_gunicorn_stops_within_the_platforms_30_seconds(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import runpy; c = runpy.run_path('gunicorn.conf.py'); "
            "print(c['graceful_timeout'], callable(c['post_worker_init']))",
        ],
        cwd=ROOT,
        env={**os.environ, "SECRET_KEY": "x", "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    graceful, hook = done.stdout.split()
    assert int(graceful) < 30 and hook == "True"


def test_release_phase_migrates_a_fresh_database(tmp_path: Path) -> None:
    """`honcho start release`, as a Procfile host runs the release line, on an empty SQLite."""
    database = tmp_path / "fresh.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TEST_", "PYTEST", "FLASK_"))}
    env.update(
        DATABASE_URL=f"sqlite:///{database}",
        SECRET_KEY="release-test",
        AINS_INSTANCE_DIR=str(tmp_path),
        PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
    )
    # The suite's Redis: without one the app would start an embedded redis-server that
    # outlives the release process.
    if TestConfig.REDIS_URL:
        env["REDIS_URL"] = TestConfig.REDIS_URL
    else:
        env.pop("REDIS_URL", None)
    done = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "honcho"), "start", "release"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    heads = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sqlite3, sys; "
            "print(sqlite3.connect(sys.argv[1]).execute('select version_num from alembic_version')"
            ".fetchone()[0])",
            str(database),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    migrations = sorted(p.name for p in (ROOT / "migrations" / "versions").glob("*.py"))
    assert heads.returncode == 0, heads.stderr
    assert migrations[-1].startswith(heads.stdout.strip()[:4]), (heads.stdout, migrations[-1])


@pytest.mark.parametrize(
    ("url", "verify", "expected"),
    [
        ("rediss://:pw@h:6380", False, "rediss://:pw@h:6380?ssl_cert_reqs=none"),
        ("rediss://:pw@h:6380/0?db=1", False, "rediss://:pw@h:6380/0?db=1&ssl_cert_reqs=none"),
        # An explicit choice in the URL wins; verification on, or no TLS: left alone.
        ("rediss://h?ssl_cert_reqs=required", False, "rediss://h?ssl_cert_reqs=required"),
        ("rediss://:pw@h:6380", True, "rediss://:pw@h:6380"),
        ("redis://:pw@h:6379", False, "redis://:pw@h:6379"),
        (None, False, None),
    ],
)
def test_redis_tls_verify_false_accepts_a_self_signed_certificate(
    url: str | None, verify: bool, expected: str | None
) -> None:
    assert redis_tls_url(url, verify) == expected


def test_a_bad_redis_tls_verify_stops_the_start() -> None:
    done = config_in_subprocess({"REDIS_TLS_VERIFY": "perhaps"}, "Config.REDIS_URL")
    assert done.returncode != 0
    assert "REDIS_TLS_VERIFY must be a boolean" in done.stderr
    assert ConfigError.__name__ in done.stderr

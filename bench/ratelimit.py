"""What the security layer costs per request: rate limits (Flask-Limiter on Redis), the
audit hook and the security headers, in process (Flask test client), limits on vs off.

    .venv/bin/python bench/ratelimit.py [--requests 1500] [--rounds 3] [--json FILE]

It builds the app on a temporary SQLite database and the Redis DB of ``--redis-url``
(default redis://127.0.0.1:6379/14, flushed), then times the same GETs with the limits on
and off, alternating, and prints the medians and the difference. The in-process client
leaves out the HTTP server, so the difference is the limiter's own cost: its Redis round
trips and its Python.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("AINS_INSTANCE_DIR", tempfile.mkdtemp(prefix="ains-bench-rl-"))

CASES = (
    ("GET /ains/tasks, a client key (key + address budgets)", "/ains/tasks", True, 200),
    ("GET /ains/tasks, no key (address budget, then 401)", "/ains/tasks", False, 401),
    ("GET /health (never limited)", "/health", False, 200),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1500, help="per case, mode and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/14")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    os.environ["TEST_REDIS_URL"] = args.redis_url

    from app import create_app
    from app.config import TestConfig
    from app.extensions import db, redis_client
    from app.lib import ratelimit
    from app.services.auth import create_api_key

    class BenchConfig(TestConfig):
        SQLALCHEMY_DATABASE_URI = "sqlite:///" + os.path.join(
            os.environ["AINS_INSTANCE_DIR"], "bench.db"
        )
        # Budgets no run reaches: the cost of counting, never of refusing.
        RATE_LIMIT_READ = "100000000/hour"
        RATE_LIMIT_PER_ADDRESS = "100000000/hour"

    app = create_app(BenchConfig)
    logging.getLogger().setLevel(logging.WARNING)
    with app.app_context():
        db.create_all()
        _, key = create_api_key(name="bench", role="client", client_id="bench")
        db.session.remove()
    redis_client(app.config["REDIS_URL"]).flushdb()
    client = app.test_client()
    auth = {"Authorization": f"Bearer {key}"}

    def median_us(path: str, with_key: bool, status: int) -> float:
        times = []
        for _ in range(args.requests):
            start = time.perf_counter()
            response = client.get(path, headers=auth if with_key else {})
            times.append(time.perf_counter() - start)
            assert response.status_code == status, (path, response.status_code)
        return statistics.median(times) * 1e6

    runs: dict[str, dict[str, list[float]]] = {label: {"on": [], "off": []} for label, *_ in CASES}
    for _ in range(args.rounds):
        for mode in ("on", "off"):
            app.config["RATE_LIMIT_ENABLED"] = mode == "on"
            ratelimit.init_app(app)
            for label, path, with_key, status in CASES:
                median_us(path, with_key, status)  # warm up this mode
                runs[label][mode].append(median_us(path, with_key, status))
    results = []
    print(f"{'request':58} {'limits on':>10} {'off':>9} {'cost':>9}")
    for label, *_ in CASES:
        on, off = statistics.median(runs[label]["on"]), statistics.median(runs[label]["off"])
        results.append({"case": label, "on_us": round(on, 1), "off_us": round(off, 1)})
        print(f"{label:58} {on:8.0f} µs {off:7.0f} µs {on - off:+7.0f} µs")
    print(f"(medians of {args.rounds} rounds x {args.requests} requests, test client, one thread)")
    if args.json:
        args.json.write_text(json.dumps({"requests": args.requests, "results": results}, indent=2))
        print(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The sample agent: registers, heartbeats, long-polls for tasks and runs them in a pool.

Run it with `python -m agent_client.sample_agent --api URL --key KEY --capability report-v1`.
SIGTERM or SIGINT stops claiming, lets running tasks finish, sends an OFFLINE heartbeat and
exits 0; a second signal exits at once.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import random
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from types import FrameType
from typing import Any

from agent_client.agents import AgentClient
from agent_client.http import ApiError, HttpSession

Handler = Callable[[dict[str, Any]], dict[str, Any]]

HEARTBEAT_LOG_EVERY = 10
DEFAULT_HEARTBEAT_SECONDS = 10.0
MAX_TASKS_PER_CLAIM = 100
# The task is gone from this agent: finished, cancelled, or given to another agent.
NOT_OURS_STATUSES = frozenset({404, 409})
# The key or the agent itself is no longer valid; claiming again cannot help.
FATAL_CLAIM_STATUSES = frozenset({401, 403, 404})


class PermanentError(Exception):
    """Raised by a handler to fail the task without a retry."""


def echo_report(
    task: dict[str, Any],
    *,
    agent: str = "sample-agent",
    work_seconds: float = 0.0,
    fail_rate: float = 0.0,
) -> dict[str, Any]:
    """Sleep `work_seconds`, then echo the task back as a report.

    For tests, the task's input_data may steer it: `{"sleep": s}` overrides `work_seconds`,
    `{"fail": "permanent"}` raises PermanentError, any other truthy `fail` a retryable error.
    With `fail_rate` > 0 it also fails (retryably) at random.
    """
    input_data = task.get("input_data") or {}
    steer = input_data if isinstance(input_data, dict) else {}
    time.sleep(max(0.0, float(steer.get("sleep", work_seconds))))
    if steer.get("fail") == "permanent":
        raise PermanentError("Permanent failure requested by input_data")
    if steer.get("fail"):
        raise RuntimeError("Failure requested by input_data")
    if fail_rate > 0 and random.random() < fail_rate:
        raise RuntimeError(f"Simulated failure (fail rate {fail_rate})")
    return {"report": f"Report for {task.get('task_type')}", "input": input_data, "agent": agent}


def load_handler(spec: str) -> Handler:
    """Import a handler given as `module:function`."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"handler must look like module:function, got {spec!r}")
    handler = getattr(importlib.import_module(module_name), attribute)
    if not callable(handler):
        raise ValueError(f"handler {spec!r} is not callable")
    return handler


class Console:
    """Whole-line, flushed output shared by the agent's threads."""

    def __init__(self, verbose: bool = False) -> None:
        """Print debug lines only when `verbose`."""
        self.verbose = verbose
        self._lock = threading.Lock()

    def say(self, message: str) -> None:
        """Print one line to stdout."""
        self._write(sys.stdout, message)

    def debug(self, message: str) -> None:
        """Print one line to stdout in verbose mode only."""
        if self.verbose:
            self._write(sys.stdout, message)

    def warn(self, message: str) -> None:
        """Print one line to stderr."""
        self._write(sys.stderr, message)

    def _write(self, stream: Any, message: str) -> None:
        """Write the line and its newline together so threads do not interleave them."""
        with self._lock:
            stream.write(message + "\n")
            stream.flush()


class SampleAgent:
    """One registered agent: a heartbeat thread, a claim loop and a pool of task threads."""

    def __init__(
        self,
        client: AgentClient,
        *,
        handler: Handler,
        concurrency: int = 1,
        wait_seconds: int = 20,
        max_tasks_per_claim: int | None = None,
        console: Console | None = None,
    ) -> None:
        """Run tasks with `handler`, at most `concurrency` at a time."""
        self.client = client
        self.handler = handler
        self.concurrency = concurrency
        self.wait_seconds = wait_seconds
        self.max_tasks_per_claim = min(max_tasks_per_claim or concurrency, MAX_TASKS_PER_CLAIM)
        self.console = console or Console()
        self.agent_id = ""
        self.exit_code = 0
        self.stop = threading.Event()
        self._heartbeat_stop = threading.Event()
        self._slot_freed = threading.Event()
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._cancelled: set[str] = set()
        self._completed = 0
        self._failed = 0
        self._heartbeats = 0
        self._last_status = ""
        self._draining = False
        self._started = time.monotonic()

    def register(
        self, display_name: str, public_key: str, capabilities: Sequence[str]
    ) -> dict[str, Any]:
        """Register with the server; the client switches to the new agent's key."""
        registered = self.client.register(
            display_name, public_key, list(capabilities), max_concurrent_tasks=self.concurrency
        )
        self.agent_id = registered["agent_id"]
        return registered

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """Signal handler: the first signal drains, a second one exits at once."""
        if self.stop.is_set():
            # Printing from a signal handler can re-enter the stdout buffer; os.write cannot.
            os.write(2, b"Forced shutdown: running tasks abandoned\n")
            os._exit(128 + signum)
        self.stop.set()

    def run(self) -> int:
        """Heartbeat and claim until stopped, then drain and go OFFLINE; returns the exit code."""
        interval = self._send_heartbeat("ACTIVE")
        heartbeat = threading.Thread(
            target=self._heartbeat_loop, args=(interval,), name="heartbeat", daemon=True
        )
        heartbeat.start()
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="task")
        poller = ThreadPoolExecutor(max_workers=1, thread_name_prefix="claim")
        pending: Future[dict[str, Any]] | None = None
        try:
            pending = self._claim_loop(pool, poller)
        finally:
            if pending is not None:
                # Tasks that claim returns are already ACTIVE for us: run them, never drop them.
                self._start_tasks(pool, self._claim_result(pending, block=True))
            with self._lock:
                self._draining = True
                running = len(self._running)
            self.console.say(f"Shutting down: finishing {running} running task(s)")
            pool.shutdown(wait=True)
            poller.shutdown(wait=True)
            self._heartbeat_stop.set()
            heartbeat.join(timeout=15)
            self._send_heartbeat("OFFLINE")
            self.console.say("Agent stopped")
        return self.exit_code

    def _claim_loop(
        self, pool: ThreadPoolExecutor, poller: ThreadPoolExecutor
    ) -> Future[dict[str, Any]] | None:
        """Long-poll for as many tasks as there are free slots; returns a claim still in flight.

        The claim runs on its own thread so that the main thread stays free to notice a
        signal at once, even in the middle of a long poll.
        """
        pending: Future[dict[str, Any]] | None = None
        announce = True
        while not self.stop.is_set():
            if pending is None:
                self._slot_freed.clear()
                free = self.concurrency - self._running_count()
                if free <= 0:
                    self._slot_freed.wait(0.5)
                    continue
                if announce:
                    self.console.say("Polling for tasks...")
                else:
                    self.console.debug("Polling for tasks...")
                pending = poller.submit(
                    self.client.claim_with_cancellations,
                    self.agent_id,
                    min(free, self.max_tasks_per_claim),
                    self.wait_seconds,
                )
            done, _ = wait([pending], timeout=0.2)
            if not done:
                continue
            tasks = self._claim_result(pending, block=False)
            pending = None
            announce = bool(tasks)
            self._start_tasks(pool, tasks)
        return pending

    def _claim_result(self, future: Future[dict[str, Any]], *, block: bool) -> list[dict]:
        """The tasks a finished claim returned, noting its cancellations; [] if it failed."""
        try:
            response = future.result()
        except ApiError as exc:
            if exc.status in FATAL_CLAIM_STATUSES:
                self.console.warn(f"Claim refused, stopping: {exc}")
                self.exit_code = 1
                self.stop.set()
            else:
                self.console.warn(f"Claim failed, will retry: {exc}")
                if not block:
                    self.stop.wait(2.0)
            return []
        self._note_cancelled(response.get("cancelled_task_ids"))
        return list(response.get("tasks") or [])

    def _start_tasks(self, pool: ThreadPoolExecutor, tasks: list[dict[str, Any]]) -> None:
        """Hand claimed tasks to the pool, counting them as running straight away."""
        for task in tasks:
            task_id = task["task_id"]
            with self._lock:
                self._running.add(task_id)
            self.console.say(f"Task {task_id} assigned")
            pool.submit(self._execute, task)

    def _execute(self, task: dict[str, Any]) -> None:
        """Run one task with the handler and report the outcome; never raises."""
        task_id = task["task_id"]
        try:
            self._run_task(task_id, task)
        except Exception as exc:  # a task thread must not die silently
            self.console.warn(f"Task {task_id}: unexpected error in the agent: {exc!r}")
        finally:
            with self._lock:
                self._running.discard(task_id)
                self._cancelled.discard(task_id)
            self._slot_freed.set()

    def _run_task(self, task_id: str, task: dict[str, Any]) -> None:
        """Report progress, call the handler, then report the result or the failure."""
        if self._is_cancelled(task_id):
            self.console.say(f"Task {task_id} was cancelled before it started; skipped")
            return
        self.console.say(f"Executing task... ({task_id})")
        try:
            self.client.progress(task_id, 50, "Executing")
        except ApiError as exc:
            if exc.status in NOT_OURS_STATUSES:
                self.console.say(f"Task {task_id} is no longer ours ({exc}); skipped")
                return
            self.console.warn(f"Progress report for {task_id} failed: {exc}")
        try:
            result = self.handler(task)
        except PermanentError as exc:
            self._report_failure(task_id, exc, retryable=False)
            return
        except Exception as exc:  # any handler error is a task failure
            self._report_failure(task_id, exc, retryable=True)
            return
        if not isinstance(result, dict):
            result = {"result": result}
        try:
            json.dumps(result)
        except (TypeError, ValueError) as exc:
            self._report_failure(task_id, PermanentError(f"result is not JSON: {exc}"), False)
            return
        if self._is_cancelled(task_id):
            self.console.say(f"Task {task_id} was cancelled; result discarded")
            return
        try:
            self.client.complete(task_id, result)
        except ApiError as exc:
            if exc.status in NOT_OURS_STATUSES:
                self.console.say(f"Task {task_id} is no longer ours ({exc}); result discarded")
            else:
                self.console.warn(f"Result report for {task_id} failed: {exc}")
            return
        with self._lock:
            self._completed += 1
        self.console.say(f"Result reported successfully ({task_id})")

    def _report_failure(self, task_id: str, exc: Exception, retryable: bool) -> None:
        """Tell the server the task failed, with the exception's message."""
        message = str(exc) or type(exc).__name__
        self.console.say(f"Task {task_id} failed: {message}")
        try:
            self.client.fail(task_id, message, retryable=retryable)
        except ApiError as error:
            if error.status in NOT_OURS_STATUSES:
                self.console.say(f"Task {task_id} is no longer ours ({error}); failure discarded")
            else:
                self.console.warn(f"Failure report for {task_id} failed: {error}")
            return
        with self._lock:
            self._failed += 1
        kind = "retryable" if retryable else "permanent"
        self.console.say(f"Failure reported ({kind}) ({task_id})")

    def _heartbeat_loop(self, interval: float) -> None:
        """Send ACTIVE (DEGRADED while draining) heartbeats until told to stop."""
        while not self._heartbeat_stop.wait(interval):
            with self._lock:
                status = "DEGRADED" if self._draining else "ACTIVE"
            interval = self._send_heartbeat(status, fallback=interval)

    def _send_heartbeat(self, status: str, fallback: float = DEFAULT_HEARTBEAT_SECONDS) -> float:
        """Send one heartbeat; returns the seconds until the next one (at least 1)."""
        with self._lock:
            metrics = {
                "running_tasks": len(self._running),
                "completed_tasks": self._completed,
                "failed_tasks": self._failed,
                "concurrency": self.concurrency,
            }
        uptime_ms = int((time.monotonic() - self._started) * 1000)
        try:
            answer = self.client.heartbeat(self.agent_id, status, uptime_ms, metrics)
        except ApiError as exc:
            self.console.warn(f"Heartbeat failed: {exc}")
            return max(1.0, min(fallback, 5.0))
        self._heartbeats += 1
        self._note_cancelled(answer.get("cancelled_task_ids"))
        line = f"Heartbeat sent ({status.lower()})"
        # The first beat, every status change and every Nth beat; the rest only when verbose.
        if status != self._last_status or self._heartbeats % HEARTBEAT_LOG_EVERY == 1:
            self.console.say(line)
        else:
            self.console.debug(line)
        self._last_status = status
        try:
            return max(1.0, float(answer.get("next_heartbeat_in") or fallback))
        except (TypeError, ValueError):
            return max(1.0, fallback)

    def _note_cancelled(self, task_ids: Iterable[str] | None) -> None:
        """Remember the server's cancellations for the tasks this agent is running."""
        with self._lock:
            fresh = [t for t in task_ids or [] if t in self._running and t not in self._cancelled]
            self._cancelled.update(fresh)
        for task_id in fresh:
            self.console.say(f"Task {task_id} cancelled by the server")

    def _is_cancelled(self, task_id: str) -> bool:
        """Whether the server has cancelled this task."""
        with self._lock:
            return task_id in self._cancelled

    def _running_count(self) -> int:
        """How many tasks are claimed and not yet finished."""
        with self._lock:
            return len(self._running)


def _bounded(
    kind: Callable[[str], Any], low: float, high: float | None = None
) -> Callable[[str], Any]:
    """An argparse type that converts with `kind` and checks `low <= value <= high`."""

    def convert(text: str) -> Any:
        """Convert and range-check one command-line value."""
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            limit = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {limit}, got {text!r}")
        return value

    return convert


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="python -m agent_client.sample_agent", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--api",
        default=os.environ.get("AINS_API_URL", "http://localhost:8000"),
        help="AINS base URL (default: $AINS_API_URL or http://localhost:8000)",
    )
    parser.add_argument(
        "--key",
        default=os.environ.get("AINS_API_KEY"),
        help="agent or admin API key used to register (default: $AINS_API_KEY)",
    )
    parser.add_argument(
        "--capability",
        action="append",
        dest="capabilities",
        metavar="NAME",
        help="capability to offer; repeat for more (default: report-v1)",
    )
    parser.add_argument("--name", help="display name (default: sample-agent-<8 hex>)")
    parser.add_argument(
        "--concurrency",
        type=_bounded(int, 1, 100),
        default=1,
        help="tasks run at once; also max_concurrent_tasks (default: 1)",
    )
    parser.add_argument(
        "--max-tasks-per-claim",
        type=_bounded(int, 1, MAX_TASKS_PER_CLAIM),
        help="cap on tasks asked for per claim (default: the free slots)",
    )
    parser.add_argument(
        "--wait-seconds",
        type=_bounded(int, 0, 30),
        default=20,
        help="long-poll wait per claim; also bounds how long shutdown waits (default: 20)",
    )
    parser.add_argument(
        "--work-seconds",
        type=_bounded(float, 0),
        default=0.0,
        help="seconds the default handler sleeps per task (default: 0)",
    )
    parser.add_argument(
        "--fail-rate",
        type=_bounded(float, 0, 1),
        default=0.0,
        help="probability that the default handler fails a task retryably (default: 0)",
    )
    parser.add_argument("--handler", metavar="MODULE:FUNCTION", help="handler(task) -> dict")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every poll and beat")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, register the agent and run it until a signal stops it."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.key:
        parser.error("--key is required (or set AINS_API_KEY)")
    display_name = args.name or f"sample-agent-{secrets.token_hex(4)}"
    if args.handler:
        try:
            handler = load_handler(args.handler)
        except (ImportError, AttributeError, ValueError) as exc:
            parser.error(f"--handler {args.handler}: {exc}")
    else:
        handler = functools.partial(
            echo_report,
            agent=display_name,
            work_seconds=args.work_seconds,
            fail_rate=args.fail_rate,
        )
    try:
        session = HttpSession(args.api, args.key, pool_size=max(10, args.concurrency + 2))
    except ValueError as exc:
        parser.error(str(exc))
    console = Console(verbose=args.verbose)
    agent = SampleAgent(
        AgentClient(args.api, args.key, session=session),
        handler=handler,
        concurrency=args.concurrency,
        wait_seconds=args.wait_seconds,
        max_tasks_per_claim=args.max_tasks_per_claim,
        console=console,
    )
    signal.signal(signal.SIGTERM, agent.request_stop)
    signal.signal(signal.SIGINT, agent.request_stop)
    try:
        agent.register(display_name, secrets.token_hex(32), args.capabilities or ["report-v1"])
    except ApiError as exc:
        console.warn(f"Registration failed: {exc}")
        return 1
    console.say(f"Agent started: {agent.agent_id}")
    return agent.run()


if __name__ == "__main__":
    sys.exit(main())

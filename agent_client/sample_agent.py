"""The sample agent: registers, heartbeats, long-polls for tasks and runs them in a pool.

Run it with `python -m agent_client.sample_agent --api URL --key KEY --capability report-v1`.
SIGTERM or SIGINT stops claiming, lets running tasks finish, sends an OFFLINE heartbeat and
exits 0; a second signal exits at once.

A handler is `handler(task)` or `handler(task, context)`; the second form gets a
`TaskContext` to report progress and to notice, cooperatively, that the server wants the
task stopped. Heartbeat and claim answers name the tasks to stop, and so does a progress
report refused with 409 `cancel_requested`. A cancelled task is confirmed with a fail
report, which ends it CANCELLED; on a task the server took back (timed out, or given up
on) nothing is reported, since the server would refuse it anyway.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import json
import os
import random
import secrets
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from types import FrameType
from typing import Any

from agent_client.agents import AgentClient, ClaimResult
from agent_client.http import ApiError, CancelRequestedError, ConflictError, HttpSession

# handler(task) -> dict, or handler(task, context) -> dict.
Handler = Callable[..., dict[str, Any]]

HEARTBEAT_LOG_EVERY = 10
DEFAULT_HEARTBEAT_SECONDS = 10.0
MAX_TASKS_PER_CLAIM = 100
# The key or the agent itself is no longer valid; claiming again cannot help.
FATAL_CLAIM_STATUSES = frozenset({401, 403, 404})
# Why a task was stopped: a client cancelled it, or the server ended this attempt itself.
CANCELLED = "cancelled"
TAKEN_BACK = "taken back"
CANCEL_CONFIRMATION = "cancelled: stopped by the agent"
# The built-in handler reports progress this often while it works (it renews the lease and
# is how the agent hears of a cancel between heartbeats).
PROGRESS_MIN_SECONDS = 1.0
PROGRESS_MAX_SECONDS = 5.0
# How often the agent asks which tasks the server counts as running here, to pick up any
# whose claim answer was lost. Heartbeats name the tasks the agent runs, so such a task's
# lease is not renewed: if it is not picked up first, the server takes it back and retries it.
LOST_TASK_CHECK_SECONDS = 30.0
# The most task ids a heartbeat may name; with more running, every lease is renewed.
MAX_RUNNING_TASK_IDS = 100


class PermanentError(Exception):
    """Raised by a handler to fail the task without a retry."""


class TaskStopped(Exception):
    """Raised by a handler to abandon a task the server stopped (`TaskContext.stopped`)."""


class TaskContext:
    """A running task's line to the agent: progress reports and the stop signal.

    The agent sets `stop_event` when the server cancels the task or takes it back. The
    handler should then return or raise soon; whatever it returns is dropped. A handler
    that never looks keeps its slot busy until it returns, but reports nothing either.
    """

    def __init__(
        self, task: dict[str, Any], report_progress: Callable[[TaskContext, int, str | None], None]
    ) -> None:
        """Wrap a claimed task; `report_progress` sends a progress report for it."""
        self.task = task
        self.task_id: str = task["task_id"]
        self.attempt: int | None = task.get("attempt")
        self.stop_event = threading.Event()
        self.stop_reason: str | None = None
        self.started = time.monotonic()
        self._report_progress = report_progress
        self._lock = threading.Lock()

    @property
    def stopped(self) -> bool:
        """Whether the server wants this task stopped."""
        return self.stop_event.is_set()

    def stop(self, reason: str) -> bool:
        """Ask the handler to stop (CANCELLED or TAKEN_BACK); False if it was asked already."""
        with self._lock:
            if self.stop_reason is not None:
                return False
            self.stop_reason = reason
        self.stop_event.set()
        return True

    def sleep(self, seconds: float) -> bool:
        """Wait `seconds` unless the task is stopped first; True if the whole wait went by."""
        return not self.stop_event.wait(max(0.0, seconds))

    def progress(self, percent: int, message: str | None = None) -> bool:
        """Report progress (0..100); False when the task is stopped (the server may say so)."""
        if not self.stopped:
            self._report_progress(self, percent, message)
        return not self.stopped

    def raise_if_stopped(self) -> None:
        """Raise TaskStopped if the server wants this task stopped."""
        if self.stopped:
            raise TaskStopped(f"task {self.task_id} was {self.stop_reason}")


def work_for(seconds: float, context: TaskContext | None) -> None:
    """Spend `seconds` working: in steps that report progress, until done or stopped.

    Raises TaskStopped as soon as the task is stopped. Without a context it just sleeps.
    """
    if context is None:
        time.sleep(seconds)
        return
    step = min(PROGRESS_MAX_SECONDS, max(PROGRESS_MIN_SECONDS, seconds / 10))
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        context.sleep(min(step, remaining))
        context.raise_if_stopped()
        left = deadline - time.monotonic()
        if left > 0:
            context.progress(min(99, int(100 * (1 - left / seconds))), "Working")
            context.raise_if_stopped()


def echo_report(
    task: dict[str, Any],
    context: TaskContext | None = None,
    *,
    agent: str = "sample-agent",
    work_seconds: float = 0.0,
    fail_rate: float = 0.0,
) -> dict[str, Any]:
    """Work `work_seconds` (reporting progress), then echo the task back as a report.

    For tests, the task's input_data may steer it: `{"sleep": s}` overrides `work_seconds`,
    `{"fail": "permanent"}` raises PermanentError, any other truthy `fail` a retryable error.
    With `fail_rate` > 0 it also fails (retryably) at random. A stop ends the work at once.
    """
    input_data = task.get("input_data") or {}
    steer = input_data if isinstance(input_data, dict) else {}
    work_for(max(0.0, float(steer.get("sleep", work_seconds))), context)
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


def takes_context(handler: Handler) -> bool:
    """Whether the handler accepts a second positional argument, the TaskContext."""
    try:
        inspect.signature(handler).bind(None, None)
    except (TypeError, ValueError):  # ValueError: a callable without a signature
        return False
    return True


def not_ours(error: ApiError) -> bool:
    """Whether an error says the task is gone from this agent (finished, taken back, gone)."""
    return isinstance(error, ConflictError) or error.status == 404


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
        self.handler_takes_context = takes_context(handler)
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
        self._running: dict[str, TaskContext] = {}
        self._completed = 0
        self._failed = 0
        self._stopped = 0
        self._heartbeats = 0
        self._last_status = ""
        self._draining = False
        self._started = time.monotonic()
        self._claim_in_doubt = False
        self._next_lost_task_check = self._started + LOST_TASK_CHECK_SECONDS

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
        # Its own thread, so that leases are renewed however long the handlers take.
        heartbeat = threading.Thread(
            target=self._heartbeat_loop, args=(interval,), name="heartbeat", daemon=True
        )
        heartbeat.start()
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="task")
        poller = ThreadPoolExecutor(max_workers=1, thread_name_prefix="claim")
        pending: Future[tuple[ClaimResult, float]] | None = None
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
    ) -> Future[tuple[ClaimResult, float]] | None:
        """Long-poll for as many tasks as there are free slots; returns a claim still in flight.

        The claim runs on its own thread so that the main thread stays free to notice a
        signal at once, even in the middle of a long poll.
        """
        pending: Future[tuple[ClaimResult, float]] | None = None
        announce = True
        while not self.stop.is_set():
            if pending is None:
                if self._claim_in_doubt or time.monotonic() >= self._next_lost_task_check:
                    self._recover_lost_tasks(pool)
                self._slot_freed.clear()
                free = self.concurrency - self._running_count()
                if free <= 0:
                    self._slot_freed.wait(0.5)
                    continue
                if announce:
                    self.console.say("Polling for tasks...")
                else:
                    self.console.debug("Polling for tasks...")
                pending = poller.submit(self._claim, min(free, self.max_tasks_per_claim))
            done, _ = wait([pending], timeout=0.2)
            if not done:
                continue
            tasks = self._claim_result(pending, block=False)
            pending = None
            announce = bool(tasks)
            self._start_tasks(pool, tasks)
        return pending

    def _claim(self, max_tasks: int) -> tuple[ClaimResult, float]:
        """One claim, with the moment it was asked (stop notices are as old as that)."""
        asked_at = time.monotonic()
        answer = self.client.claim_with_cancellations(self.agent_id, max_tasks, self.wait_seconds)
        return answer, asked_at

    def _claim_result(
        self, future: Future[tuple[ClaimResult, float]], *, block: bool
    ) -> list[dict[str, Any]]:
        """The tasks a finished claim returned, acting on its stop notices; [] if it failed."""
        try:
            answer, asked_at = future.result()
        except ApiError as exc:
            if exc.status in FATAL_CLAIM_STATUSES:
                self.console.warn(f"Claim refused, stopping: {exc}")
                self.exit_code = 1
                self.stop.set()
            else:
                self.console.warn(f"Claim failed, will retry: {exc}")
                # The server may have handed out tasks before the answer was lost.
                self._claim_in_doubt = True
                if not block:
                    self.stop.wait(2.0)
            return []
        self._note_stops(answer, "claim", asked_at)
        return list(answer.get("tasks") or [])

    def _start_tasks(self, pool: ThreadPoolExecutor, tasks: list[dict[str, Any]]) -> None:
        """Hand claimed tasks to the pool, counting them as running straight away."""
        for task in tasks:
            context = TaskContext(task, self._report_progress)
            with self._lock:
                self._running[context.task_id] = context
            self.console.say(f"Task {context.task_id} assigned")
            pool.submit(self._execute, context)

    def _recover_lost_tasks(self, pool: ThreadPoolExecutor) -> None:
        """Run the tasks the server counts as running here that this agent never heard of.

        Called with no claim in flight, so every task a claim returned is known by now; a
        task that finishes while the server is asked was known before it was asked.
        """
        self._next_lost_task_check = time.monotonic() + LOST_TASK_CHECK_SECONDS
        with self._lock:
            known = set(self._running)
        try:
            held = self.client.active_tasks(self.agent_id)
        except ApiError as exc:
            self.console.warn(f"Looking for lost tasks failed, will retry: {exc}")
            return
        self._claim_in_doubt = False
        lost = [task for task in held if task["task_id"] not in known]
        for task in lost:
            self.console.say(f"Task {task['task_id']} recovered: running here on the server")
        self._start_tasks(pool, lost)

    def _execute(self, context: TaskContext) -> None:
        """Run one task with the handler and report the outcome; never raises."""
        try:
            self._run_task(context)
        except Exception as exc:  # a task thread must not die silently
            self.console.warn(f"Task {context.task_id}: unexpected error in the agent: {exc!r}")
        finally:
            with self._lock:
                if self._running.get(context.task_id) is context:
                    del self._running[context.task_id]
            self._slot_freed.set()

    def _run_task(self, context: TaskContext) -> None:
        """Report progress, call the handler, then report the result, the failure or the stop."""
        task_id = context.task_id
        if not context.stopped:
            self.console.say(f"Executing task... ({task_id})")
            self._report_progress(context, 0, "Executing")
        if context.stopped:
            self._finish_stopped(context)
            return
        try:
            if self.handler_takes_context:
                result = self.handler(context.task, context)
            else:
                result = self.handler(context.task)
        except Exception as exc:  # any handler error is a task failure, unless it was stopped
            if context.stopped:
                self._finish_stopped(context)
            else:
                self._report_failure(context, exc, retryable=not isinstance(exc, PermanentError))
            return
        if context.stopped:
            self._finish_stopped(context)
            return
        if not isinstance(result, dict):
            result = {"result": result}
        try:
            json.dumps(result)
        except (TypeError, ValueError) as exc:
            self._report_failure(context, PermanentError(f"result is not JSON: {exc}"), False)
            return
        try:
            self.client.complete(task_id, result, attempt=context.attempt)
        except CancelRequestedError as exc:
            # The server has ended the task CANCELLED; the result is dropped, not retried.
            self.console.say(f"Task {task_id} was cancelled, result refused ({exc})")
            return
        except ApiError as exc:
            if not_ours(exc):
                self.console.say(f"Task {task_id} is no longer ours ({exc}), result discarded")
            else:
                self.console.warn(f"Result report for {task_id} failed: {exc}")
            return
        with self._lock:
            self._completed += 1
        self.console.say(f"Result reported successfully ({task_id})")

    def _report_progress(self, context: TaskContext, percent: int, message: str | None) -> None:
        """Send a progress report; a refusal that means "stop" stops the task."""
        try:
            self.client.progress(context.task_id, percent, message, attempt=context.attempt)
        except CancelRequestedError:
            self._stop_task(context, CANCELLED, "progress report")
        except ApiError as exc:
            if not_ours(exc):
                self._stop_task(context, TAKEN_BACK, "progress report")
            else:
                self.console.warn(f"Progress report for {context.task_id} failed: {exc}")

    def _finish_stopped(self, context: TaskContext) -> None:
        """After a stop: confirm a cancellation; report nothing on a task taken back."""
        task_id = context.task_id
        with self._lock:
            self._stopped += 1
        if context.stop_reason != CANCELLED:
            self.console.say(f"Task {task_id} stopped, nothing to report")
            return
        try:
            self.client.fail(task_id, CANCEL_CONFIRMATION, retryable=False, attempt=context.attempt)
        except ApiError as exc:
            if not_ours(exc):
                self.console.say(f"Task {task_id} stopped, already ended by the server ({exc})")
            else:
                self.console.warn(f"Cancellation report for {task_id} failed: {exc}")
            return
        self.console.say(f"Cancellation confirmed ({task_id})")

    def _report_failure(self, context: TaskContext, exc: Exception, retryable: bool) -> None:
        """Tell the server the task failed, with the exception's message."""
        task_id = context.task_id
        message = str(exc) or type(exc).__name__
        self.console.say(f"Task {task_id} failed: {message}")
        try:
            answer = self.client.fail(
                task_id, message, retryable=retryable, attempt=context.attempt
            )
        except ApiError as error:
            if not_ours(error):
                self.console.say(f"Task {task_id} is no longer ours ({error}), failure discarded")
            else:
                self.console.warn(f"Failure report for {task_id} failed: {error}")
            return
        if answer.get("status") == "CANCELLED":
            # A client cancelled it meanwhile: the server took the failure as our confirmation.
            with self._lock:
                self._stopped += 1
            self.console.say(f"Task {task_id} was cancelled meanwhile, cancellation confirmed")
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
            try:
                interval = self._send_heartbeat(status, fallback=interval)
            except Exception as exc:  # leases depend on this thread: it must not die
                self.console.warn(f"Heartbeat failed: unexpected error in the agent: {exc!r}")

    def _send_heartbeat(self, status: str, fallback: float = DEFAULT_HEARTBEAT_SECONDS) -> float:
        """Send one heartbeat; returns the seconds until the next one (at least 1)."""
        with self._lock:
            metrics = {
                "running_tasks": len(self._running),
                "completed_tasks": self._completed,
                "failed_tasks": self._failed,
                "stopped_tasks": self._stopped,
                "concurrency": self.concurrency,
            }
            running = list(self._running)
        uptime_ms = int((time.monotonic() - self._started) * 1000)
        asked_at = time.monotonic()
        try:
            answer = self.client.heartbeat(
                self.agent_id,
                status,
                uptime_ms,
                metrics,
                running_task_ids=running if len(running) <= MAX_RUNNING_TASK_IDS else None,
            )
        except ApiError as exc:
            self.console.warn(f"Heartbeat failed: {exc}")
            return max(1.0, min(fallback, 5.0))
        self._heartbeats += 1
        self._note_stops(answer, "heartbeat", asked_at)
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

    def _note_stops(self, answer: Any, source: str, asked_at: float) -> None:
        """Stop the running tasks a heartbeat or claim answer names.

        Only tasks that started before the request was sent: a task taken back and claimed
        again since then runs a new attempt, which an older notice must not stop.
        """
        cancelled = set(answer.get("cancelled_task_ids") or [])
        named = cancelled | set(answer.get("stop_task_ids") or [])
        with self._lock:
            targets = [
                context
                for task_id in sorted(named)
                if (context := self._running.get(task_id)) and context.started <= asked_at
            ]
        for context in targets:
            reason = CANCELLED if context.task_id in cancelled else TAKEN_BACK
            self._stop_task(context, reason, source)

    def _stop_task(self, context: TaskContext, reason: str, source: str) -> None:
        """Tell the task's handler to stop, saying so once."""
        if context.stop(reason):
            self.console.say(f"Task {context.task_id} {reason} by the server ({source}), stopping")

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
        help="seconds the default handler works per task, reporting progress (default: 0)",
    )
    parser.add_argument(
        "--fail-rate",
        type=_bounded(float, 0, 1),
        default=0.0,
        help="probability that the default handler fails a task retryably (default: 0)",
    )
    parser.add_argument(
        "--handler",
        metavar="MODULE:FUNCTION",
        help="handler(task) or handler(task, context) -> dict; see TaskContext",
    )
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

"""Handlers of the sample agent: which get a TaskContext, and the built-in one's stop."""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

import pytest

from agent_client.sample_agent import (
    CANCELLED,
    TaskContext,
    TaskStopped,
    echo_report,
    takes_context,
)


def one_argument(task: dict[str, Any]) -> dict[str, Any]:
    return {}


def with_context(task: dict[str, Any], context: TaskContext) -> dict[str, Any]:
    return {}


class CallableHandler:
    def __call__(self, task: dict[str, Any], context: TaskContext | None = None) -> dict:
        return {}


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (one_argument, False),
        (with_context, True),
        (CallableHandler(), True),
        (functools.partial(echo_report, agent="a", work_seconds=1.0), True),
        (print, True),  # *args
        (len, False),
    ],
)
def test_it_passes_the_context_only_to_handlers_that_take_it(handler: Any, expected: bool) -> None:
    assert takes_context(handler) is expected


def test_it_stops_the_built_in_handler_at_once_and_reports_progress_meanwhile() -> None:
    reports: list[tuple[int, str | None]] = []
    context = TaskContext(
        {"task_id": "task_1", "attempt": 1, "input_data": {"sleep": 10}},
        lambda _context, percent, message: reports.append((percent, message)),
    )
    threading.Timer(1.5, context.stop, args=(CANCELLED,)).start()

    started = time.monotonic()
    with pytest.raises(TaskStopped):
        echo_report(context.task, context)

    assert time.monotonic() - started < 2.5
    assert reports == [(10, "Working")]  # 10 s of work reports every second: once by 1.5 s
    assert context.stop_reason == CANCELLED

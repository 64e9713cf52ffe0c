"""Cron due times in a zone, across DST changes, and validation of expressions and zones."""

from __future__ import annotations

import itertools
import pickle
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from app.lib.cron import CronError, describe, load_zone, next_after, next_runs, parse_cron


@pytest.fixture(autouse=True)
def _clean_state() -> None:
    """Replace the suite's: pure functions leave no tables or Redis keys to reset."""


NEW_YORK = "America/New_York"
LONDON = "Europe/London"


def runs(expression: str, zone: str, after: str, count: int) -> list[str]:
    """The next ``count`` due times as UTC ISO strings, checking each is aware UTC."""
    found = next_runs(parse_cron(expression), load_zone(zone), datetime.fromisoformat(after), count)
    assert all(run.tzinfo is UTC for run in found)
    return [run.strftime("%Y-%m-%dT%H:%M:%SZ") for run in found]


# America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT (07:00Z); 2026-11-01 02:00 EDT -> 01:00 EST
# (06:00Z). Europe/London: 2026-03-29 01:00 GMT -> 02:00 BST and 2026-10-25 02:00 BST -> 01:00
# GMT, both at 01:00Z.


def test_it_keeps_hourly_runs_one_real_hour_apart_across_new_york_spring_forward() -> None:
    assert runs("0 * * * *", NEW_YORK, "2026-03-08T04:30:00+00:00", 4) == [
        "2026-03-08T05:00:00Z",  # 00:00 EST
        "2026-03-08T06:00:00Z",  # 01:00 EST
        "2026-03-08T07:00:00Z",  # 03:00 EDT; 02:00 does not exist
        "2026-03-08T08:00:00Z",  # 04:00 EDT
    ]


def test_it_keeps_five_minute_spacing_across_new_york_spring_forward() -> None:
    assert runs("*/5 * * * *", NEW_YORK, "2026-03-08T06:50:00+00:00", 3) == [
        "2026-03-08T06:55:00Z",  # 01:55 EST
        "2026-03-08T07:00:00Z",  # 03:00 EDT, once for all of 02:00-02:55
        "2026-03-08T07:05:00Z",
    ]


def test_it_runs_a_skipped_wall_time_once_at_the_transition_in_new_york() -> None:
    assert runs("30 2 * * *", NEW_YORK, "2026-03-07T12:00:00+00:00", 2) == [
        "2026-03-08T07:00:00Z",  # 03:00 EDT
        "2026-03-09T06:30:00Z",  # 02:30 EDT
    ]


def test_it_runs_hourly_in_both_repeated_hours_across_new_york_fall_back() -> None:
    assert runs("0 * * * *", NEW_YORK, "2026-11-01T03:30:00+00:00", 4) == [
        "2026-11-01T04:00:00Z",  # 00:00 EDT
        "2026-11-01T05:00:00Z",  # 01:00 EDT
        "2026-11-01T06:00:00Z",  # 01:00 EST
        "2026-11-01T07:00:00Z",  # 02:00 EST
    ]


def test_it_keeps_five_minute_spacing_across_new_york_fall_back() -> None:
    assert runs("*/5 * * * *", NEW_YORK, "2026-11-01T05:50:00+00:00", 3) == [
        "2026-11-01T05:55:00Z",  # 01:55 EDT
        "2026-11-01T06:00:00Z",  # 01:00 EST
        "2026-11-01T06:05:00Z",  # 01:05 EST
    ]


def test_it_goes_back_to_the_repeated_hour_start_from_inside_the_first_pass() -> None:
    # 01:40 EDT: the next wall match, 02:00, comes later than 01:00 EST.
    assert runs("*/20 * * * *", NEW_YORK, "2026-11-01T05:40:00+00:00", 2) == [
        "2026-11-01T06:00:00Z",
        "2026-11-01T06:20:00Z",
    ]


def test_it_runs_a_repeated_wall_time_with_a_named_hour_once_in_new_york() -> None:
    assert runs("30 1 * * *", NEW_YORK, "2026-10-31T12:00:00+00:00", 2) == [
        "2026-11-01T05:30:00Z",  # 01:30 EDT only, not 01:30 EST
        "2026-11-02T06:30:00Z",
    ]
    # From either pass of the repeated hour, the next run is the next day.
    assert runs("30 1 * * *", NEW_YORK, "2026-11-01T05:30:00+00:00", 1) == ["2026-11-02T06:30:00Z"]
    assert runs("30 1 * * *", NEW_YORK, "2026-11-01T06:15:00+00:00", 1) == ["2026-11-02T06:30:00Z"]


def test_it_handles_london_spring_forward() -> None:
    assert runs("*/15 * * * *", LONDON, "2026-03-29T00:30:00+00:00", 3) == [
        "2026-03-29T00:45:00Z",  # 00:45 GMT
        "2026-03-29T01:00:00Z",  # 02:00 BST
        "2026-03-29T01:15:00Z",
    ]
    assert runs("0 * * * *", LONDON, "2026-03-28T23:30:00+00:00", 3) == [
        "2026-03-29T00:00:00Z",  # 00:00 GMT
        "2026-03-29T01:00:00Z",  # 02:00 BST, standing in for the missing 01:00 too
        "2026-03-29T02:00:00Z",
    ]
    assert runs("30 1 * * *", LONDON, "2026-03-28T12:00:00+00:00", 2) == [
        "2026-03-29T01:00:00Z",  # 02:00 BST
        "2026-03-30T00:30:00Z",  # 01:30 BST
    ]


def test_it_handles_london_fall_back() -> None:
    assert runs("0 * * * *", LONDON, "2026-10-24T22:30:00+00:00", 4) == [
        "2026-10-24T23:00:00Z",  # 00:00 BST
        "2026-10-25T00:00:00Z",  # 01:00 BST
        "2026-10-25T01:00:00Z",  # 01:00 GMT
        "2026-10-25T02:00:00Z",  # 02:00 GMT
    ]
    assert runs("*/5 * * * *", LONDON, "2026-10-25T00:50:00+00:00", 2) == [
        "2026-10-25T00:55:00Z",  # 01:55 BST
        "2026-10-25T01:00:00Z",  # 01:00 GMT
    ]
    assert runs("30 1 * * *", LONDON, "2026-10-24T12:00:00+00:00", 2) == [
        "2026-10-25T00:30:00Z",  # 01:30 BST only
        "2026-10-26T01:30:00Z",
    ]


def test_it_runs_a_seconds_cron_across_both_changes() -> None:
    assert runs("*/15 * * * * *", NEW_YORK, "2026-03-08T06:59:30+00:00", 3) == [
        "2026-03-08T06:59:45Z",  # 01:59:45 EST
        "2026-03-08T07:00:00Z",  # 03:00:00 EDT
        "2026-03-08T07:00:15Z",
    ]
    assert runs("*/15 * * * * *", NEW_YORK, "2026-11-01T05:59:30+00:00", 3) == [
        "2026-11-01T05:59:45Z",  # 01:59:45 EDT
        "2026-11-01T06:00:00Z",  # 01:00:00 EST
        "2026-11-01T06:00:15Z",
    ]


def brute_force_runs(
    zone_name: str,
    matches: Callable[[datetime], bool],
    hour_is_wildcard: bool,
    start: datetime,
    end: datetime,
) -> list[str]:
    """Due minutes in (start, end], found by walking every real minute of the window."""
    zone, minute = load_zone(zone_name), timedelta(minutes=1)
    due = []
    instant = start
    previous_wall = start.astimezone(zone).replace(tzinfo=None, fold=0)
    while instant < end:
        instant += minute
        local = instant.astimezone(zone)
        wall = local.replace(tzinfo=None, fold=0)
        # Wall minutes a spring-forward jumped over just before this instant.
        skipped = [previous_wall + minute * n for n in range(1, (wall - previous_wall) // minute)]
        runs_here = matches(wall) and (hour_is_wildcard or local.fold == 0)
        if runs_here or any(map(matches, skipped)):
            due.append(instant.strftime("%Y-%m-%dT%H:%M:%SZ"))
        previous_wall = wall
    return due


@pytest.mark.parametrize(
    ("zone", "start"),
    [
        (NEW_YORK, "2026-03-08T03:00:00+00:00"),
        (NEW_YORK, "2026-11-01T02:00:00+00:00"),
        (LONDON, "2026-03-28T21:00:00+00:00"),
        (LONDON, "2026-10-24T21:00:00+00:00"),
        ("Australia/Lord_Howe", "2026-04-04T11:00:00+00:00"),  # a 30-minute change
        ("Australia/Lord_Howe", "2026-10-03T12:00:00+00:00"),
    ],
)
@pytest.mark.parametrize(
    ("expression", "minutes", "hours"),
    [
        ("*/5 * * * *", range(0, 60, 5), range(24)),
        ("0 * * * *", [0], range(24)),
        ("*/20 */2 * * *", [0, 20, 40], range(0, 24, 2)),
        ("30 2 * * *", [30], [2]),
        ("30 1 * * *", [30], [1]),
        ("15,45 0-3 * * *", [15, 45], [0, 1, 2, 3]),
        ("* 1 * * *", range(60), [1]),
    ],
)
def test_it_agrees_with_a_brute_force_walk_of_real_minutes(
    zone: str, start: str, expression: str, minutes: range, hours: range
) -> None:
    begin = datetime.fromisoformat(start)
    end = begin + timedelta(hours=8)
    expected = brute_force_runs(
        zone,
        lambda wall: wall.minute in minutes and wall.hour in hours,
        parse_cron(expression).hour_is_wildcard,
        begin,
        end,
    )
    found = runs(expression, zone, start, len(expected) + 1)
    assert found[: len(expected)] == expected
    assert found[-1] > end.strftime("%Y-%m-%dT%H:%M:%SZ")
    # Also from every half minute of the window, not only from the previous run.
    parsed, loaded = parse_cron(expression), load_zone(zone)
    after = begin
    while after < end:
        following = [run for run in expected if run > after.strftime("%Y-%m-%dT%H:%M:%SZ")]
        due = next_after(parsed, loaded, after)
        assert due is not None
        assert due.strftime("%Y-%m-%dT%H:%M:%SZ") == (following or found[-1:])[0], after
        after += timedelta(seconds=30)


def test_it_returns_strictly_increasing_aware_utc_without_duplicates() -> None:
    for expression in ("*/5 * * * *", "0 * * * *", "30 2 * * *", "30 1 * * *", "*/10 * * * * *"):
        for zone, start in ((NEW_YORK, "2026-03-07T00:00:00-05:00"), (LONDON, "2026-10-24T00:00Z")):
            found = next_runs(
                parse_cron(expression), load_zone(zone), datetime.fromisoformat(start), 400
            )
            assert all(run.utcoffset() == timedelta(0) for run in found)
            assert all(earlier < later for earlier, later in itertools.pairwise(found))


def test_it_runs_leap_day_schedules_only_in_leap_years() -> None:
    assert runs("0 0 29 2 *", "UTC", "2026-01-01T00:00:00+00:00", 2) == [
        "2028-02-29T00:00:00Z",
        "2032-02-29T00:00:00Z",
    ]
    assert runs("0 0 29 2 *", NEW_YORK, "2026-01-01T00:00:00+00:00", 1) == ["2028-02-29T05:00:00Z"]
    # 2100 is not a leap year.
    assert runs("0 0 29 2 *", "UTC", "2096-03-01T00:00:00+00:00", 1) == ["2104-02-29T00:00:00Z"]


def test_it_runs_day_31_only_in_months_that_have_one() -> None:
    assert runs("0 0 31 * *", "UTC", "2026-01-01T00:00:00+00:00", 7) == [
        "2026-01-31T00:00:00Z",
        "2026-03-31T00:00:00Z",
        "2026-05-31T00:00:00Z",
        "2026-07-31T00:00:00Z",
        "2026-08-31T00:00:00Z",
        "2026-10-31T00:00:00Z",
        "2026-12-31T00:00:00Z",
    ]


def test_it_finds_rare_dates_decades_apart() -> None:
    # A fifth Monday in February needs a leap year starting on a Monday.
    assert runs("0 0 * 2 1#5", "UTC", "2026-01-01T00:00:00+00:00", 3) == [
        "2044-02-29T00:00:00Z",
        "2072-02-29T00:00:00Z",
        "2112-02-29T00:00:00Z",
    ]


def test_it_runs_either_day_field_when_both_are_given() -> None:
    # Cron's OR rule: day 30 never comes in February, but Mondays do.
    assert runs("0 0 30 2 mon", "UTC", "2026-01-01T00:00:00+00:00", 2) == [
        "2026-02-02T00:00:00Z",
        "2026-02-09T00:00:00Z",
    ]


def test_it_returns_none_past_the_representable_years() -> None:
    after = datetime(9990, 1, 1, tzinfo=UTC)
    assert next_after(parse_cron("0 0 * * *"), load_zone("UTC"), after) is None
    assert next_runs(parse_cron("0 0 * * *"), load_zone("UTC"), after, 3) == []


def test_it_computes_weekday_schedules_in_utc() -> None:
    # Friday 2026-03-06 10:00Z: the next weekday 09:00 is Monday.
    assert runs("0 9 * * 1-5", "UTC", "2026-03-06T10:00:00+00:00", 2) == [
        "2026-03-09T09:00:00Z",
        "2026-03-10T09:00:00Z",
    ]


def test_it_is_strictly_after_and_accepts_any_aware_after() -> None:
    expression, zone = parse_cron("0 * * * *"), load_zone(NEW_YORK)
    assert next_after(expression, zone, datetime(2026, 6, 1, 12, tzinfo=UTC)) == datetime(
        2026, 6, 1, 13, tzinfo=UTC
    )
    in_new_york = datetime(2026, 6, 1, 8, 0, 0, 1, tzinfo=zone)
    assert next_after(expression, zone, in_new_york) == datetime(2026, 6, 1, 13, tzinfo=UTC)


def test_it_rejects_a_naive_after() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        next_after(parse_cron("* * * * *"), load_zone("UTC"), datetime(2026, 1, 1))


def test_it_returns_as_many_runs_as_asked() -> None:
    expression, zone, after = (
        parse_cron("*/5 * * * *"),
        load_zone("UTC"),
        datetime(2026, 1, 1, tzinfo=UTC),
    )
    assert next_runs(expression, zone, after, 0) == []
    assert len(next_runs(expression, zone, after, 12)) == 12
    with pytest.raises(ValueError, match="-1"):
        next_runs(expression, zone, after, -1)


def test_it_reads_an_equal_range_as_one_value() -> None:
    # croniter alone reads "5-5" as every minute.
    assert runs("5-5 * * * *", "UTC", "2026-01-01T00:00:00+00:00", 2) == [
        "2026-01-01T00:05:00Z",
        "2026-01-01T01:05:00Z",
    ]


def test_it_normalises_the_text() -> None:
    expression = parse_cron("  */5   *  * * *\n")
    assert (expression.text, expression.has_seconds, expression.hour_is_wildcard) == (
        "*/5 * * * *",
        False,
        True,
    )
    seconds = parse_cron("*/10 * 9 * * *")
    assert (seconds.has_seconds, seconds.hour_is_wildcard) == (True, False)
    assert parse_cron("@DAILY").text == "@daily"
    assert parse_cron("@hourly").hour_is_wildcard


def test_it_survives_pickling() -> None:
    expression = parse_cron("0 9 * * MON-FRI")
    assert pickle.loads(pickle.dumps(expression)) == expression


def test_it_is_safe_to_share_an_expression_between_threads() -> None:
    expression, zone = parse_cron("*/5 * * * *"), load_zone(NEW_YORK)
    afters = [datetime(2026, 3, 8, 6, minute, tzinfo=UTC) for minute in range(0, 60, 7)]
    expected = [next_after(expression, zone, after) for after in afters]
    mismatches = []

    def check() -> None:
        for _ in range(50):
            for after, want in zip(afters, expected, strict=True):
                if next_after(expression, zone, after) != want:
                    mismatches.append(after)

    threads = [threading.Thread(target=check) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert mismatches == []


@pytest.mark.parametrize(
    ("expression", "description"),
    [
        ("* * * * *", "every minute"),
        ("*/5 * * * *", "every 5 minutes"),
        ("0 * * * *", "every hour at :00"),
        ("15 */6 * * *", "every 6 hours at :15"),
        ("0 9 * * 1-5", "at 09:00 on Mon-Fri"),
        ("0 9,17 * * *", "at 09:00 and 17:00 every day"),
        ("0 0 31 * *", "at 00:00 on day 31 of the month"),
        ("0 0 1,15 * *", "at 00:00 on days 1 and 15 of the month"),
        ("0 0 L * *", "at 00:00 on the last day of the month"),
        ("0 0 29 2 *", "at 00:00 on Feb 29"),
        ("0 0 1 1,4,7,10 *", "at 00:00 on day 1 of the month in Jan, Apr, Jul and Oct"),
        ("0 0 1-7 * mon", "at 00:00 on days 1-7 of the month or on Mon"),
        ("*/15 * * * * *", "every 15 seconds"),
        ("30 0 9 * * *", "at 09:00:30 every day"),
        ("@daily", "at 00:00 every day"),
        ("@weekly", "at 00:00 on Sun"),
        ("*/7 * * * *", "cron: */7 * * * *"),  # :56 to :00 is not 7 minutes
        ("* 9 * * *", "cron: * 9 * * *"),
        ("0 0 * * 1#2", "cron: 0 0 * * 1#2"),
        ("0 0 15W * *", "cron: 0 0 15W * *"),
    ],
)
def test_it_describes_common_forms(expression: str, description: str) -> None:
    assert describe(parse_cron(expression)) == description


@pytest.mark.parametrize(
    "expression",
    [
        "0 0 * * L5",
        "*/3 */5 */7 */2 */3",
        "1-59/2 0-23/3 1-31/2 1-12/5 0-7/2",
        "50-10 22-2 * * *",
        "0 0 ? * ?",
        "0 0 L 2 *",
        "59 23 31 12 7",
        "0 0 * * sun-sat",
        "*/30 */30 * * * *",
    ],
)
def test_it_describes_anything_without_crashing(expression: str) -> None:
    assert describe(parse_cron(expression))


@pytest.mark.parametrize(
    ("expression", "reason"),
    [
        ("", "cron expression is empty"),
        ("   ", "cron expression is empty"),
        ("* * *", "expected 5 fields (or 6 with seconds first), got 3"),
        ("* * * * * * *", "expected 5 fields (or 6 with seconds first), got 7"),
        ("61 * * * *", "minute field '61' is out of range 0-59"),
        ("5,61 * * * *", "minute field '5,61': 61 is out of range 0-59"),
        ("0 24 * * *", "hour field '24' is out of range 0-23"),
        ("0 0 0-5 * *", "day-of-month field '0-5': 0 is out of range 1-31"),
        ("0 0 * 13 *", "month field '13' is out of range 1-12"),
        ("0 0 * * 8", "day-of-week field '8' is out of range 0-7"),
        ("60 * * * * *", "second field '60' is out of range 0-59"),
        ("*/0 * * * *", "minute field '*/0': step 0 is out of range 1-60"),
        ("*/90 * * * *", "minute field '*/90': step 90 is out of range 1-60"),
        ("*/x * * * *", "minute field '*/x': step 'x' is not a number"),
        ("1,,2 * * * *", "minute field '1,,2' has an empty list item"),
        ("H * * * *", "hashed (H) and random (R) values are not supported"),
        ("R * * * *", "hashed (H) and random (R) values are not supported"),
        ("0 0 * FOO *", "month field 'FOO' is not valid cron syntax"),
        ("0 0 * * 1#6", "day-of-week field '1#6': #6 is out of range #1-#5"),
        ("0 0 30 2 *", "day-of-month field '30' never occurs in month field '2'"),
        ("0 0 31 apr,jun *", "day-of-month field '31' never occurs in month field 'apr,jun'"),
        ("@reboot", "@reboot is not supported"),
        ("@fortnightly", "unknown alias '@fortnightly'"),
        ("0 0 * * *\x00", "control character '\\x00'"),
        ("0\t0 * * *", "control character '\\t'"),
        ("0 0 \uff15 * *", "non-ASCII character '\uff15'"),
        ("* " * 101, "202 characters long, at most 200"),
    ],
)
def test_it_rejects_invalid_expressions_with_the_reason(expression: str, reason: str) -> None:
    with pytest.raises(CronError) as raised:
        parse_cron(expression)
    assert raised.value.field == "cron_expression"
    assert reason in str(raised.value)


def test_it_rejects_a_non_string_expression() -> None:
    with pytest.raises(CronError, match="must be a string, got int"):
        parse_cron(5)  # type: ignore[arg-type]


def test_it_loads_iana_zones() -> None:
    assert str(load_zone("UTC")) == "UTC"
    assert str(load_zone(NEW_YORK)) == NEW_YORK
    assert str(load_zone("Etc/GMT+5")) == "Etc/GMT+5"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "time zone is empty"),
        ("Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
        ("../../etc/passwd", "unknown time zone '../../etc/passwd'"),
        ("/etc/localtime", "unknown time zone '/etc/localtime'"),
        ("localtime", "unknown time zone 'localtime'"),
        ("America", "unknown time zone 'America'"),
        ("zone.tab", "unknown time zone 'zone.tab'"),
        ("America/New_York\x00", "unknown time zone"),
        ("america/new_york", "did you mean 'America/New_York'?"),
        ("A" * 500, "500 characters long, at most 64"),
    ],
)
def test_it_rejects_unknown_zones_with_the_reason(name: str, reason: str) -> None:
    with pytest.raises(CronError) as raised:
        load_zone(name)
    assert raised.value.field == "timezone"
    assert reason in str(raised.value)

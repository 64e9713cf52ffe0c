"""Cron schedules in an IANA time zone, handling DST changes the way Vixie cron does.

Cron fields match the zone's wall clock. A matching wall time that a spring-forward skips
runs once, at the transition. A wall time that a fall-back repeats runs at both instants
when the hour field is ``*`` or ``*/n`` (so "every 5 minutes" keeps its real spacing) and
once, at the first instant, when it names hours. Everything returned is aware UTC.
Expressions whose date can never occur ("0 0 30 2 *") are rejected by parse_cron rather
than accepted as schedules that never run.
"""

from __future__ import annotations

import calendar
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo, available_timezones

from croniter import CroniterBadDateError, CroniterError, croniter

MAX_EXPRESSION_LENGTH = 200
MAX_ZONE_NAME_LENGTH = 64

# croniter gives up when nothing matches within this many years of the start.
HORIZON_YEARS = 50
# Past this, wall-clock arithmetic near datetime.max would overflow.
LAST_YEAR = 9999 - HORIZON_YEARS - 1
FIRST_YEAR = 2

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

FIELD_NAMES = ("minute", "hour", "day-of-month", "month", "day-of-week")
SECONDS_FIELD_NAMES = ("second", *FIELD_NAMES)
# Value bounds per field name; day-of-week accepts 7 as Sunday, like croniter.
FIELD_RANGES = {
    "second": (0, 59),
    "minute": (0, 59),
    "hour": (0, 23),
    "day-of-month": (1, 31),
    "month": (1, 12),
    "day-of-week": (0, 7),
}
# A step longer than a field's cycle silently means "the first value only".
MAX_STEPS = {
    "second": 60,
    "minute": 60,
    "hour": 24,
    "day-of-month": 31,
    "month": 12,
    "day-of-week": 7,
}

DAY_NAMES = ("Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat")
MONTH_NAMES = tuple(calendar.month_abbr)  # index 1..12
# February can have 29 days, so "29 2" is a leap-day schedule, not an impossible one.
LONGEST_MONTH = {
    month: 29 if month == 2 else calendar.monthrange(2001, month)[1] for month in range(1, 13)
}

CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")
ZONE_NAME = re.compile(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*")
HOUR_WILDCARD = re.compile(r"\*(/\d+)?")
NUMBER = re.compile(r"\d+")
NTH_WEEKDAY = re.compile(r"#(\d+)$")
EQUAL_RANGE = re.compile(r"(\w+)-(\w+)", re.ASCII)

# Zone files that load but are not IANA zone names a user should pick.
NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})


class CronError(ValueError):
    """An invalid cron expression or time zone; str() says why."""

    def __init__(self, message: str, *, field: Literal["cron_expression", "timezone"]) -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class CronExpression:
    """A validated cron expression, ready to compute due times; build it with parse_cron."""

    text: str
    has_seconds: bool
    # Hour field is ``*`` or ``*/n``: wall times a fall-back repeats run at both instants.
    hour_is_wildcard: bool
    _matcher: croniter = field(repr=False, compare=False)
    # croniter keeps the start time on the instance; concurrent schedulers must not mix them.
    _lock: threading.Lock = field(repr=False, compare=False, default_factory=threading.Lock)

    @property
    def resolution(self) -> timedelta:
        """The smallest step between due times: a second or a minute."""
        return timedelta(seconds=1) if self.has_seconds else timedelta(minutes=1)

    def __reduce__(self) -> tuple[Any, ...]:
        # The lock and croniter state are rebuilt rather than pickled or shared by copies.
        return (parse_cron, (self.text,))


def parse_cron(text: str) -> CronExpression:
    """Validate 5 cron fields, or 6 with seconds first, or an @alias; CronError says why not."""
    if not isinstance(text, str):
        raise CronError(
            f"cron expression must be a string, got {type(text).__name__}",
            field="cron_expression",
        )
    if len(text) > MAX_EXPRESSION_LENGTH:
        raise CronError(
            f"cron expression is {len(text)} characters long, at most "
            f"{MAX_EXPRESSION_LENGTH} allowed",
            field="cron_expression",
        )
    stripped = text.strip()
    if not stripped.isascii():
        character = next(character for character in stripped if not character.isascii())
        raise CronError(
            f"cron expression contains the non-ASCII character {character!r}",
            field="cron_expression",
        )
    if control := CONTROL_CHARACTERS.search(stripped):
        raise CronError(
            f"cron expression contains the control character {control.group()!r}",
            field="cron_expression",
        )
    return _parse_normalised(" ".join(stripped.split()))


@lru_cache(maxsize=2048)
def _parse_normalised(text: str) -> CronExpression:
    """Parse once per distinct expression: callers re-parse stored text on every use."""
    if not text:
        raise CronError("cron expression is empty", field="cron_expression")
    if text.startswith("@"):
        alias = text.lower()
        if alias == "@reboot":
            raise CronError(
                "@reboot is not supported: a schedule needs clock times",
                field="cron_expression",
            )
        if alias not in ALIASES:
            raise CronError(
                f"unknown alias {text!r}, expected one of {', '.join(ALIASES)}",
                field="cron_expression",
            )
        text, fields = alias, ALIASES[alias].split()
    else:
        fields = text.split()
    if len(fields) not in (5, 6):
        raise CronError(
            f"expected 5 fields (or 6 with seconds first), got {len(fields)}",
            field="cron_expression",
        )
    has_seconds = len(fields) == 6
    names = SECONDS_FIELD_NAMES if has_seconds else FIELD_NAMES
    matcher_fields = [
        _check_field(name, value, has_seconds) for name, value in zip(names, fields, strict=True)
    ]
    try:
        matcher = croniter(
            " ".join(matcher_fields),
            start_time=datetime(2000, 1, 1),
            ret_type=datetime,
            second_at_beginning=has_seconds,
        )
    except CroniterError as error:
        raise CronError(
            f"cron expression {text!r} is not valid: {error}", field="cron_expression"
        ) from error
    _check_can_match(matcher, fields[-3], fields[-2])
    return CronExpression(
        text=text,
        has_seconds=has_seconds,
        hour_is_wildcard=HOUR_WILDCARD.fullmatch(fields[-4]) is not None,
        _matcher=matcher,
    )


def _check_field(name: str, value: str, has_seconds: bool) -> str:
    """Raise CronError naming what is wrong with one field; return it as croniter should see it."""
    low, high = FIELD_RANGES[name]
    items = []
    for item in value.split(","):
        if not item:
            raise CronError(
                f"{name} field {value!r} has an empty list item", field="cron_expression"
            )
        if item[0] in "hHrR":
            raise CronError(
                f"{name} field {value!r}: hashed (H) and random (R) values are not supported",
                field="cron_expression",
            )
        base, slash, step = item.partition("/")
        # croniter reads an equal range such as "5-5" as the whole cycle, not as 5.
        equal = EQUAL_RANGE.fullmatch(base)
        items.append(equal[1] if equal and equal[1].lower() == equal[2].lower() else item)
        if slash:
            if not step.isdigit():
                raise CronError(
                    f"{name} field {value!r}: step {step!r} is not a number",
                    field="cron_expression",
                )
            if not 1 <= int(step) <= MAX_STEPS[name]:
                raise CronError(
                    f"{name} field {value!r}: step {step} is out of range 1-{MAX_STEPS[name]}",
                    field="cron_expression",
                )
        if name == "day-of-week" and (nth := NTH_WEEKDAY.search(base)):
            if not 1 <= int(nth.group(1)) <= 5:
                raise CronError(
                    f"{name} field {value!r}: #{nth.group(1)} is out of range #1-#5",
                    field="cron_expression",
                )
            base = base[: nth.start()]
        for number in NUMBER.findall(base):
            if not low <= int(number) <= high:
                where = f"{name} field {value!r}" + ("" if number == value else f": {number}")
                raise CronError(f"{where} is out of range {low}-{high}", field="cron_expression")
    normalised = ",".join(items)
    probe = ["*"] * (6 if has_seconds else 5)
    probe[(SECONDS_FIELD_NAMES if has_seconds else FIELD_NAMES).index(name)] = normalised
    try:
        croniter.expand(" ".join(probe), second_at_beginning=has_seconds)
    except CroniterError as error:
        raise CronError(
            f"{name} field {value!r} is not valid cron syntax "
            "(use *, numbers, names, ranges a-b, steps */n or a-b/n, lists a,b)",
            field="cron_expression",
        ) from error
    return normalised


def _check_can_match(matcher: croniter, day_text: str, month_text: str) -> None:
    """Reject dates that never exist, e.g. "0 0 30 2 *", instead of never running."""
    days, months, weekdays = (matcher.expanded[i] for i in (2, 3, 4))
    # With a day-of-week given, cron runs on either field, so a missing date is harmless.
    if weekdays != ["*"] or matcher.nearest_weekday or "l" in days or days == ["*"]:
        return
    month_numbers = range(1, 13) if months == ["*"] else months
    if min(days) > max(LONGEST_MONTH[month] for month in month_numbers):
        raise CronError(
            f"day-of-month field {day_text!r} never occurs in month field {month_text!r}",
            field="cron_expression",
        )


def load_zone(name: str) -> ZoneInfo:
    """Return the IANA time zone ``name`` (e.g. "Europe/London", "UTC")."""
    if not isinstance(name, str):
        raise CronError(f"time zone must be a string, got {type(name).__name__}", field="timezone")
    if not name:
        raise CronError("time zone is empty", field="timezone")
    if len(name) > MAX_ZONE_NAME_LENGTH:
        raise CronError(
            f"time zone name is {len(name)} characters long, at most {MAX_ZONE_NAME_LENGTH}",
            field="timezone",
        )
    if not ZONE_NAME.fullmatch(name) or name not in _zone_names():
        hint = _zone_names_by_lower_case().get(name.lower())
        suffix = (
            f", did you mean {hint!r}?" if hint else ", expected an IANA name like Europe/London"
        )
        raise CronError(f"unknown time zone {name!r}{suffix}", field="timezone")
    return ZoneInfo(name)


@cache
def _zone_names() -> frozenset[str]:
    """IANA names the installed tz database can load (scanned once, ~10 ms)."""
    return frozenset(available_timezones() - NOT_ZONES)


@cache
def _zone_names_by_lower_case() -> dict[str, str]:
    """Correct spellings, for suggesting "America/New_York" to "america/new_york"."""
    return {zone_name.lower(): zone_name for zone_name in _zone_names()}


def next_after(expr: CronExpression, zone: ZoneInfo, after: datetime) -> datetime | None:
    """The first due instant strictly after ``after``, as aware UTC; None if none in ~50 years."""
    if after.tzinfo is None or after.utcoffset() is None:
        raise ValueError(f"after must be timezone-aware, got naive {after.isoformat()}")
    if after.year < FIRST_YEAR:
        raise ValueError(f"after {after.isoformat()} is before the year {FIRST_YEAR}")
    after = after.astimezone(UTC)
    if after.year > LAST_YEAR:
        return None
    local = after.astimezone(zone)
    wall = local.replace(tzinfo=None, fold=0)
    best = _next_from_later_wall_times(expr, zone, wall, after)
    if expr.hour_is_wildcard and local.fold == 0:
        repeated = _repeat_of(zone, wall)
        if repeated is not None:
            # ``after`` is in the first pass of a repeated hour; that hour's second pass,
            # which starts earlier on the wall clock than ``wall``, is still ahead.
            start, end, second_offset = repeated
            match = _first_match_from(expr, start)
            if match is not None and match < end:
                second_pass = (match - second_offset).replace(tzinfo=UTC)
                if best is None or second_pass < best:
                    best = second_pass
    return best


def next_runs(expr: CronExpression, zone: ZoneInfo, after: datetime, count: int) -> list[datetime]:
    """The next ``count`` due instants after ``after``, fewer if the schedule ends."""
    if count < 0:
        raise ValueError(f"count must be zero or more, got {count}")
    runs: list[datetime] = []
    while len(runs) < count:
        found = next_after(expr, zone, runs[-1] if runs else after)
        if found is None:
            break
        runs.append(found)
    return runs


def _next_from_later_wall_times(
    expr: CronExpression, zone: ZoneInfo, wall: datetime, after: datetime
) -> datetime | None:
    """The earliest instant after ``after`` of the wall times that match later than ``wall``."""
    start = _floor(wall, expr.resolution) + expr.resolution
    while (match := _first_match_from(expr, start)) is not None:
        first_offset, second_offset = _offsets(zone, match)
        if first_offset < second_offset:  # skipped by a spring-forward: runs at the change
            instants = [_transition(zone, match, first_offset, second_offset)]
        elif first_offset == second_offset or expr.hour_is_wildcard:
            instants = [
                (match - offset).replace(tzinfo=UTC) for offset in (first_offset, second_offset)
            ]
        else:  # repeated by a fall-back, but the hours named run only in the first pass
            instants = [(match - first_offset).replace(tzinfo=UTC)]
            if instants[0] <= after:
                # ``after`` is in the second pass: skip the rest of the repeated hour.
                transition = _transition(zone, match, first_offset, second_offset)
                start = (transition + first_offset).replace(tzinfo=None)
                continue
        # Only exotic zones could fail this, but a due time not after ``after`` would refire.
        for instant in instants:
            if instant > after:
                return instant
        start = match + expr.resolution
    return None


def _first_match_from(expr: CronExpression, wall: datetime) -> datetime | None:
    """The first matching naive wall time at or after ``wall``."""
    # croniter steps strictly past a whole-unit start, so start one unit before the
    # first whole unit at or after ``wall``; whole units also keep its float maths exact.
    step = expr.resolution
    floor = _floor(wall, step)
    start = floor - step if floor == wall else floor
    if start.year > LAST_YEAR:
        return None
    with expr._lock:
        try:
            return expr._matcher.get_next(datetime, start_time=start)
        except CroniterBadDateError:  # nothing within HORIZON_YEARS
            return None


def _floor(wall: datetime, step: timedelta) -> datetime:
    """``wall`` truncated to a whole second or minute."""
    if step == timedelta(seconds=1):
        return wall.replace(microsecond=0)
    return wall.replace(second=0, microsecond=0)


def _offsets(zone: ZoneInfo, wall: datetime) -> tuple[timedelta, timedelta]:
    """UTC offsets of the first (fold=0) and second (fold=1) reading of a naive wall time.

    Equal for an ordinary time; first > second in a fall-back's repeated hour; first <
    second in a spring-forward's gap, where fold=0 reads it with the offset before the change.
    """
    first = wall.replace(tzinfo=zone).utcoffset()
    second = wall.replace(tzinfo=zone, fold=1).utcoffset()
    assert first is not None and second is not None
    return first, second


def _repeat_of(zone: ZoneInfo, wall: datetime) -> tuple[datetime, datetime, timedelta] | None:
    """For a wall time a fall-back repeats: the repeated span [start, end) and its second offset."""
    first_offset, second_offset = _offsets(zone, wall)
    if first_offset <= second_offset:
        return None
    transition = _transition(zone, wall, first_offset, second_offset).replace(tzinfo=None)
    return transition + second_offset, transition + first_offset, second_offset


def _transition(
    zone: ZoneInfo, wall: datetime, first_offset: timedelta, second_offset: timedelta
) -> datetime:
    """The instant (aware UTC) of the offset change that makes ``wall`` skipped or repeated."""
    # The two readings of ``wall`` fall on either side of the change; bisect to the second.
    low, high = sorted((wall - first_offset, wall - second_offset))
    one_second = timedelta(seconds=1)
    while high - low > one_second:
        middle = low + (high - low) // 2 // one_second * one_second
        if _offset_at(zone, middle) == first_offset:
            low = middle
        else:
            high = middle
    return high.replace(tzinfo=UTC)


def _offset_at(zone: ZoneInfo, instant: datetime) -> timedelta | None:
    """The zone's UTC offset at a naive UTC instant."""
    return zone.fromutc(instant.replace(tzinfo=zone)).utcoffset()


def describe(expr: CronExpression) -> str:
    """A short English description, e.g. "every 5 minutes" or "at 09:00 on Mon-Fri"."""
    matcher = expr._matcher
    if matcher.nth_weekday_of_month or matcher.nearest_weekday:
        return f"cron: {expr.text}"
    minutes, hours, days, months, weekdays = matcher.expanded[:5]
    seconds = matcher.expanded[5] if expr.has_seconds else [0]
    when = _describe_time(seconds, minutes, hours)
    on = _describe_days(days, months, weekdays)
    if when is None or on is None:
        return f"cron: {expr.text}"
    if not on and when.startswith("at "):
        on = " every day"
    return when + on


def _every(values: list[Any], span: int) -> int | None:
    """n when ``values`` is every n-th value of a cycle of ``span`` starting at 0."""
    if values == ["*"]:
        return 1
    if all(isinstance(value, int) for value in values) and len(values) > 1:
        step = values[1] - values[0]
        if span % step == 0 and values == list(range(0, span, step)):
            return step
    return None


def _describe_time(seconds: list[Any], minutes: list[Any], hours: list[Any]) -> str | None:
    """The time-of-day part: "every 15 seconds", "every hour at :30", "at 09:00"."""
    second_step, minute_step, hour_step = (
        _every(seconds, 60),
        _every(minutes, 60),
        _every(hours, 24),
    )
    if second_step is not None:
        if minute_step == 1 and hour_step == 1:
            return "every second" if second_step == 1 else f"every {second_step} seconds"
        return None
    if len(seconds) != 1:
        return None
    second = seconds[0]
    if second == 0 and hour_step == 1 and minute_step is not None:
        return "every minute" if minute_step == 1 else f"every {minute_step} minutes"
    if len(minutes) == 1 and minutes[0] != "*" and hour_step is not None:
        at = f":{minutes[0]:02}" + (f":{second:02}" if second else "")
        return f"every hour at {at}" if hour_step == 1 else f"every {hour_step} hours at {at}"
    if "*" in minutes or "*" in hours or len(minutes) * len(hours) > 6:
        return None
    suffix = f":{second:02}" if second else ""
    times = sorted(f"{hour:02}:{minute:02}{suffix}" for hour in hours for minute in minutes)
    return f"at {_join(times)}"


def _describe_days(days: list[Any], months: list[Any], weekdays: list[Any]) -> str | None:
    """The calendar part: "", " on Mon-Fri", " on day 31 of the month", " on Feb 29"."""
    if "l" in weekdays or ("l" in days and len(days) > 1):
        return None
    in_months = "" if months == ["*"] else f" in {_names(months, MONTH_NAMES)}"
    if days == ["*"] and weekdays == ["*"]:
        return f" every day{in_months}" if in_months else ""
    day, month = days[0], months[0]
    one_date = len(days) == len(months) == 1 and weekdays == ["*"]
    if one_date and isinstance(day, int) and isinstance(month, int):
        return f" on {MONTH_NAMES[month]} {day}"
    if days == ["*"]:
        on = _names(weekdays, DAY_NAMES)
    else:
        if days == ["l"]:
            on = "the last day of the month"
        else:
            on = f"{'day' if len(days) == 1 else 'days'} {_ranges(days, str)} of the month"
        if weekdays != ["*"]:  # cron runs when either field matches
            on += f" or on {_names(weekdays, DAY_NAMES)}"
    return f" on {on}{in_months}"


def _names(values: list[int], names: tuple[str, ...]) -> str:
    """Numbers as day or month names, with runs of three or more as ranges: "Mon-Fri"."""
    return _ranges(values, lambda value: names[value])


def _ranges(values: list[int], label: Callable[[int], str]) -> str:
    """Sorted numbers as "1-7, 15 and 20", labelled by ``label``."""
    runs: list[list[int]] = []
    for value in sorted(values):
        if runs and value == runs[-1][-1] + 1:
            runs[-1].append(value)
        else:
            runs.append([value])
    parts: list[str] = []
    for run in runs:
        if len(run) >= 3:
            parts.append(f"{label(run[0])}-{label(run[-1])}")
        else:
            parts.extend(label(value) for value in run)
    return _join(parts)


def _join(parts: list[str]) -> str:
    """English list: "a", "a and b", "a, b and c"."""
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"

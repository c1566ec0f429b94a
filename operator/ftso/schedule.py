"""Cron schedules as a CronJob reads them: five fields (minute hour day-of-month month day-of-week), month and
day names, and the macros @yearly, @annually, @monthly, @weekly, @daily, @midnight and @hourly; in UTC.
Parsed by croniter; a schedule that can never fire (such as `0 0 30 2 *`) is refused here."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from croniter import CroniterError, croniter

MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
# A schedule must fire within this long from any moment; a year has every date but 29 February, which
# comes back within eight years (2100 is not a leap year).
FIRES_WITHIN = timedelta(days=366 * 8 + 2)
# Where "can it fire at all" is asked from: a fixed moment, so the answer never depends on the clock.
REFERENCE = datetime(2000, 1, 1, tzinfo=UTC)


NAMES = frozenset(
    [
        "jan",
        "feb",
        "mar",
        "apr",
        "may",
        "jun",
        "jul",
        "aug",
        "sep",
        "oct",
        "nov",
        "dec",
        "sun",
        "mon",
        "tue",
        "wed",
        "thu",
        "fri",
        "sat",
    ]
)  # what CronJob knows besides numbers; croniter's extensions (L, W, #, H) it does not


class CronError(ValueError):
    pass


def _cronjob_syntax(fields: list[str]) -> None:
    for field in fields:
        if not re.fullmatch(r"[0-9A-Za-z*?,/-]+", field):
            raise CronError(f"{field!r}: a field holds digits, names, and * ? , - / only")
        unknown = [w for w in re.findall(r"[A-Za-z]+", field) if w.lower() not in NAMES]
        if unknown:
            raise CronError(f"{unknown[0]!r} is neither a month nor a day name")
        for low, high in re.findall(r"(\d+)-(\d+)", field):
            if int(low) > int(high):
                raise CronError(f"the range {low}-{high} runs backwards")


@dataclass(frozen=True)
class Cron:
    expression: str  # five fields, macros expanded


def parse_cron(expression: str) -> Cron:
    text = MACROS.get(expression.strip().lower(), expression.strip())
    if not text.isascii() or not text.isprintable():
        raise CronError("a schedule is ASCII: digits, names such as MON or JAN, and * , - /")
    fields = text.split()
    if len(fields) != 5:
        raise CronError(
            "a schedule has five fields (minute hour day-of-month month day-of-week) or is a macro "
            "such as @daily"
        )
    _cronjob_syntax(fields)
    if not croniter.is_valid(text):
        raise CronError("not a cron expression CronJobs accept")
    cron = Cron(text)
    first = next_after(cron, REFERENCE)
    if first - REFERENCE > FIRES_WITHIN:
        raise CronError("the schedule never fires")
    return cron


def next_after(cron: Cron, moment: datetime) -> datetime:
    """The first time strictly after `moment` that the schedule fires (minute resolution)."""
    try:
        found = croniter(cron.expression, moment).get_next(datetime)
    except (CroniterError, OverflowError, ValueError) as error:
        raise CronError("the schedule never fires") from error
    if not isinstance(found, datetime) or found - moment > FIRES_WITHIN:
        raise CronError("the schedule never fires")
    return found


def latest_at_or_before(cron: Cron, moment: datetime) -> datetime:
    """The newest time at or before `moment` that the schedule fires."""
    try:
        found = croniter(cron.expression, moment + timedelta(seconds=1)).get_prev(datetime)
    except (CroniterError, OverflowError, ValueError) as error:
        raise CronError("the schedule never fires") from error
    if not isinstance(found, datetime):
        raise CronError("the schedule never fires")
    return found

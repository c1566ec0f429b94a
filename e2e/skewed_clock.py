"""Run `ftso` with its wall clock shifted, as on a machine whose clock is off: for tests only.

    python -m e2e.skewed_clock --offset 5 -- --kubeconfig X run ...

`time.time`, `time.time_ns` and `datetime.now`/`utcnow`/`today` are shifted by `--offset` seconds before
ftso (or kopf) is imported; the monotonic clock is left alone, as a skewed machine's would be.
"""

from __future__ import annotations

import argparse
import datetime as datetime_module
import importlib
import sys
import time
from collections.abc import Sequence
from typing import Any

_RealDatetime = datetime_module.datetime


class _Meta(type):
    # Datetimes made by code we did not patch (parsing, arithmetic) still count as datetimes.
    def __instancecheck__(cls, instance: object) -> bool:
        return isinstance(instance, _RealDatetime)


def skew(offset: float) -> None:
    """Shift this process's wall clock by `offset` seconds."""
    real_time, real_time_ns = time.time, time.time_ns
    shift = datetime_module.timedelta(seconds=offset)

    class SkewedDatetime(_RealDatetime, metaclass=_Meta):
        @classmethod
        def now(cls, tz: Any = None) -> Any:
            return _RealDatetime.now(tz) + shift

        @classmethod
        def utcnow(cls) -> Any:
            return _RealDatetime.now(datetime_module.UTC).replace(tzinfo=None) + shift

        @classmethod
        def today(cls) -> Any:
            return _RealDatetime.now() + shift

    time.time = lambda: real_time() + offset
    time.time_ns = lambda: real_time_ns() + int(offset * 1e9)
    datetime_module.datetime = SkewedDatetime  # type: ignore[misc]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m e2e.skewed_clock", description=__doc__)
    parser.add_argument("--offset", type=float, required=True, help="seconds to add to the wall clock")
    parser.add_argument("ftso_args", nargs=argparse.REMAINDER, help="-- then the arguments of ftso")
    args = parser.parse_args(argv)
    skew(args.offset)
    from ftso.cli import main as ftso_main  # only now: its modules must see the skewed clock

    check_skewed(args.offset)
    rest = args.ftso_args[1:] if args.ftso_args[:1] == ["--"] else args.ftso_args
    return ftso_main(rest)


def check_skewed(offset: float, *, modules: Sequence[str] = ("ftso.leader", "ftso.controller")) -> None:
    """The skew must show where ftso reads the time (each module's own `datetime`), not only here: a
    module imported before the patch would keep the true clock, and the test would prove nothing."""
    true_now = _RealDatetime.now(datetime_module.UTC)
    for name in modules:
        seen = importlib.import_module(name).datetime.now(datetime_module.UTC)
        if abs((seen - true_now).total_seconds() - offset) > 1:
            raise SystemExit(f"the clock of {name} is not skewed by {offset} s: it reads {seen}")


if __name__ == "__main__":
    sys.exit(main())

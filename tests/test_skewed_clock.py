"""e2e/skewed_clock.py: the operator it starts reads a shifted wall clock, and refuses to start when the
shift did not reach ftso's modules (a skew test that ran on the true clock would prove nothing)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'operator'}{os.pathsep}{ROOT}"}
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_the_skew_reaches_ftso() -> None:
    started = _python("-m", "e2e.skewed_clock", "--offset", "300", "--", "--help")
    assert started.returncode == 0, started.stderr


def test_a_skew_that_missed_ftso_stops_the_run() -> None:
    """ftso.leader imported before the clock was shifted keeps the true one: the check says so."""
    missed = _python(
        "-c",
        "import ftso.leader; from e2e import skewed_clock; skewed_clock.skew(300); skewed_clock.check_skewed(300)",
    )
    assert missed.returncode != 0 and "ftso.leader is not skewed" in missed.stderr

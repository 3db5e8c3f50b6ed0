"""The command line's progress display: what it prints, and the times it states."""

import io

import pytest

from astra_inr import progress as progress_module
from astra_inr.progress import ProgressBar


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = _Clock()
    monkeypatch.setattr(progress_module.time, "perf_counter", c)
    return c


def test_a_stage_first_reported_part_way_is_dated_from_its_real_start(clock):
    out = io.StringIO()
    bar = ProgressBar(out, log_every=0.0)
    # A trainer reports every 10 steps of 1 s each: the stage began 10 s before its first report.
    for done in (10, 20, 30):
        clock.now += 10.0
        bar("INR", done, 30, f"step {done}")
    lines = out.getvalue().splitlines()
    # Nothing is known of the time before the first report, so no time is claimed for it.
    assert lines[0] == "INR: 10/30 (33%) step 10"
    assert lines[1] == "INR: 20/30 (67%) 20.0s step 20"
    assert lines[2] == "INR: 30/30 (100%) 30.0s step 30"


def test_a_stage_reported_from_zero_counts_from_that_report(clock):
    out = io.StringIO()
    bar = ProgressBar(out, log_every=0.0)
    bar("preprocess", 0, 4, "rows")
    clock.now += 2.0
    bar("preprocess", 4, 4, "rows")
    assert out.getvalue().splitlines() == ["preprocess: 0/4 (0%) 0.0s rows",
                                           "preprocess: 4/4 (100%) 2.0s rows"]


def test_log_lines_are_spaced_by_log_every_and_each_stage_ends_with_one(clock):
    out = io.StringIO()
    bar = ProgressBar(out, log_every=10.0, prefix="[scan1] ")
    for done in range(1, 101):
        clock.now += 1.0
        bar("SIRT", done, 100)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[scan1] SIRT: 1/100 (1%)")
    assert lines[-1] == "[scan1] SIRT: 100/100 (100%) 100.0s "
    assert 9 <= len(lines) <= 12


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_line_claims_no_rate_before_the_stage_can_be_dated(clock):
    out = _Terminal()
    bar = ProgressBar(out)
    clock.now += 10.0
    bar("INR", 10, 30)
    assert "/s" not in out.getvalue() and "eta" not in out.getvalue()
    clock.now += 10.0
    bar("INR", 20, 30)
    assert "   1.0/s eta    10s" in out.getvalue()

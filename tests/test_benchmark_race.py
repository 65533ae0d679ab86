"""benchmarks/race.py, the race tick benchmark: its timer books each wrapped call's own time and touches only the
objects it wraps; its two policies load (a race of the champion, the entering retrain and four online racers, and the
same policy without a race); its stream stops before Agrawal's change; a tiny run writes the report, measures both
variants and keeps the hand-written analysis below the marker."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO, load_benchmark


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """benchmarks/race.py, a script, loaded as a module."""
    return load_benchmark("race")


class Worker:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def inner(self) -> None:
        end = time.perf_counter() + self.seconds
        while time.perf_counter() < end:
            pass

    def outer(self) -> str:
        self.inner()
        self.inner()
        return "done"


def test_the_timer_books_own_time_and_wraps_only_the_given_object(bench: ModuleType) -> None:
    timer = bench.Timer()
    wrapped, other = Worker(0.01), Worker(0.01)
    timer.wrap(wrapped, "inner", "inner")
    timer.wrap(wrapped, "outer", "outer")
    started = time.perf_counter()
    assert wrapped.outer() == "done"
    total = time.perf_counter() - started
    other.outer()  # another object of the same class: not timed
    parts = timer.take()
    assert (parts["inner"].calls, parts["outer"].calls) == (2, 1)
    assert parts["inner"].wall >= 0.02
    # The inner calls are booked to themselves only: own times add up to no more than the whole call (booked
    # inclusively, outer alone would take about the whole call and the sum would exceed it by inner's 20 ms).
    # No bound on outer's own time itself: a busy machine may pause the process between the two inner calls.
    assert parts["outer"].wall + parts["inner"].wall <= total
    assert timer.take() == {}
    assert "inner" in vars(wrapped) and "inner" not in vars(other)  # the instance's attribute, not the class's
    assert not hasattr(Worker.inner, "__wrapped__")


def test_the_policies_race_six_and_the_plain_one_does_not(bench: ModuleType, tmp_path: Path) -> None:
    stream = bench.steady_stream(bench.SCENARIO, 300, 0)
    raced = bench.write_policy(tmp_path / "race", "bench-race", stream, race=True).config
    plain = bench.write_policy(tmp_path / "plain", "bench-plain", stream, race=False).config
    assert [r.name for r in raced.race.racers] == ["arf", "hat", "logreg", "no-change"]
    assert plain.race is None and plain.rules == [] and raced.rules == []
    assert raced.model_dump(exclude={"race", "model", "storage", "mlflow"}) == \
        plain.model_dump(exclude={"race", "model", "storage", "mlflow"})
    assert set(raced.features) == set(stream.spec.features)


def test_the_stream_ends_before_the_change(bench: ModuleType) -> None:
    stream = bench.steady_stream(bench.SCENARIO, 700, 0)
    assert len(stream.frame) >= 700 and stream.spec.change_points[0] >= 700


@pytest.mark.slow
def test_a_tiny_run_writes_the_report_and_keeps_the_analysis(tmp_path: Path) -> None:
    out = tmp_path / "race.md"
    out.write_text("old tables\n<!-- analysis: written by hand, kept by benchmarks/race.py when it rewrites the "
                   "tables -->\nmy reading\n")
    run = subprocess.run([sys.executable, "benchmarks/race.py", "--bootstrap-rows", "600", "--reps", "3",
                          "--row-reps", "3", "--warmup", "1", "--row-warmup", "2", "--profile-ticks", "1",
                          "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    text = out.read_text()
    assert "old tables" not in text and text.endswith("my reading\n")
    assert "| 100 new rows + 100 matured labels | 3 |" in text
    assert "| 1 new row + 1 matured label | 3 |" in text
    assert "race: online learn: arf" in text and "race: frozen predict: v2" in text
    assert "**plain** model" in text and "cProfile of 1 further race ticks" in text

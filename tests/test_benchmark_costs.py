"""benchmarks/costs.py's bookkeeping on hand-made runs: the grid point chosen in hindsight per ratio, auto taken at
its own ratio, the targets counted as the page states them, and --resume's job keys."""

from __future__ import annotations

import argparse
from types import ModuleType

import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark("costs")


def _run(bench, policy, *, loss, retrains, value=0.9, ratio=None, **params):
    return bench.CostRun("s", 0, policy, "sgd", "accuracy", value, loss, retrains, 1.0, ratio=ratio, params=params)


def test_the_periodic_grid_point_is_chosen_per_ratio_and_auto_at_its_own_ratio(bench) -> None:
    often = _run(bench, "periodic", loss=100, retrains=10, value=0.95, period=250, window=1000)
    never = _run(bench, "periodic", loss=300, retrains=0, value=0.85, period=None, window=None)
    autos = [_run(bench, "auto", loss=120, retrains=r, ratio=ratio) for r, ratio in ((5, 10.0), (1, 100.0))]
    runs = [often, never, *autos]
    cheap, middle = bench.cells(runs, "s", 10.0), bench.cells(runs, "s", 100.0)
    assert cheap["periodic"] == [often] and middle["periodic"] == [never]   # 200 < 300; 300 < 1,100
    assert cheap["auto"] == [autos[0]] and middle["auto"] == [autos[1]]
    assert often.total(10.0) == 200 and never.total(100.0) == 300


def test_the_targets_table_counts_each_cell(bench, tmp_path) -> None:
    runs = [_run(bench, "periodic", loss=300, retrains=0, value=0.85, period=None, window=None),
            _run(bench, "oracle", loss=100, retrains=2, value=0.95)]
    runs += [_run(bench, "auto", loss=250, retrains=0, value=0.88, ratio=r) for r in (10.0, 100.0, 1000.0)]
    args = argparse.Namespace(rows=10, label_delay=10, seeds=[0], bootstrap=1, tick_every=1,
                              ratio_list=[("cheap", 10.0), ("middle", 100.0), ("expensive", 1000.0)])
    page = tmp_path / "costs.md"
    bench.write_report(page, runs, args, "python benchmarks/costs.py", "abc")
    text = page.read_text()
    # auto 250 <= periodic 300 everywhere; vs the oracle 120 / 300 / 2,100: missed at 10 (250 > 132) only.
    assert "| total cost <= the best periodic schedule in hindsight | 3 of 3 |" in text
    assert "| total cost within 10 % of the oracle's | 2 of 3; missed: s (cheap) |" in text
    # Middle: 0 retrains <= 1/3 of 0, and 0.88 >= 0.85.
    assert "| middle ratio: <= 1/3 of periodic's retrains at equal or better accuracy | 1 of 1 |" in text


def test_resume_knows_which_job_a_run_came_from(bench) -> None:
    assert bench.task_of(_run(bench, "auto", loss=1, retrains=0, ratio=100.0)) == ("s", 0, "auto:100")
    assert bench.task_of(_run(bench, "auto (before)", loss=1, retrains=0)) == ("s", 0, "before")
    assert bench.task_of(_run(bench, "river-arf", loss=1, retrains=0)) == ("s", 0, "baselines")

"""benchmarks/policies.py --dask: the (stream, seed, delay) jobs as tasks on a Dask cluster give the very runs of a
local run (every run is seeded and deterministic): a tiny protocol (sea-abrupt, 1,500 rows, seeds 0 and 1, baselines
and auto) run in this process and on a two-worker ``LocalCluster``, compared run by run on everything but timings."""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import load_benchmark

TINY = ["--scenarios", "sea-abrupt", "--no-elec2", "--rows", "1500", "--bootstrap", "500", "--seeds", "2",
        "--label-delays", "10", "--skip", "river-arf", "oracle", "--tick-every", "250"]
TIMINGS = {"cpu_seconds", "wall_seconds"}
EXTRA_TIMINGS = {"controller_seconds"}


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """benchmarks/policies.py, a script, loaded as a module."""
    return load_benchmark("policies")


def runs_of(path: Path) -> tuple[dict, dict[tuple, dict]]:
    data = json.loads(path.read_text())
    runs = {}
    for raw in data["runs"]:
        key = (raw["stream"], raw["label_delay"], raw["seed"], raw["policy"], raw["family"])
        runs[key] = {k: v for k, v in raw.items() if k not in TIMINGS}
        runs[key]["extra"] = {k: v for k, v in raw["extra"].items() if k not in EXTRA_TIMINGS}
    return data["meta"], runs


@pytest.mark.slow
def test_dask_run_gives_the_runs_of_a_local_run(bench: ModuleType, tmp_path: Path) -> None:
    from distributed import LocalCluster

    bench.main([*TINY, "--out", str(tmp_path / "local.md")])
    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None) as cluster:
        bench.main([*TINY, "--dask", cluster.scheduler_address, "--out", str(tmp_path / "dask.md")])

    local_meta, local = runs_of(tmp_path / "local.json")
    dask_meta, remote = runs_of(tmp_path / "dask.json")
    assert local_meta["executor"] == "local" and dask_meta["executor"].startswith("dask tcp://")
    assert {(k[2], k[3]) for k in local} >= {(0, "auto"), (1, "auto"), (0, "periodic"), (1, "river-hat")}
    assert list(remote) == list(local)  # same runs, in job order whatever order the tasks finished in
    for key, run in local.items():
        assert remote[key] == run, key
    # the report's quality table holds the same numbers (its header names the command, and timings differ)
    tables = [path.read_text().split("| stream (regime) |", 1)[1].split("\n\n", 1)[0] for path in
              (tmp_path / "local.md", tmp_path / "dask.md")]
    assert tables[0] == tables[1]

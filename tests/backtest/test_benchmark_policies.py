"""The decision-quality benchmark (benchmarks/policies.py): its `auto` policies validate and fit every stream they are
replayed on (the classification one each classification scenario and Elec2's schema, the regression one the
regression scenario); the scenarios it replays do not change under it; its label-delay regimes, partial runs
(baselines only, auto only), their merge and the targets table of Part 12."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from datetime import timedelta
from pathlib import Path
from types import ModuleType

import pandas as pd
import pytest
from click.testing import CliRunner

from controller.backtest.replay import policy_for_stream
from controller.backtest.streams import SCENARIOS, scenario
from controller.cli.main import main
from controller.policy_loader import load_policy
from tests.conftest import REPO, load_benchmark

POLICIES = {"classification": REPO / "config" / "backtest-auto.yaml",
            "regression": REPO / "config" / "backtest-auto-regression.yaml"}


def test_the_benchmark_policies_validate() -> None:
    result = CliRunner().invoke(main, ["config", "validate", *map(str, POLICIES.values())])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_the_benchmark_policy_fits_every_scenario(name: str, tmp_path: Path) -> None:
    stream = scenario(name, rows=200, seed=0)
    loaded = policy_for_stream(load_policy(POLICIES[stream.spec.task]), stream.spec, tmp_path)
    assert list(loaded.config.features) == list(stream.spec.features)
    assert len(loaded.config.pool_members()) >= 2  # auto competes with a candidate pool
    assert str(tmp_path) in loaded.config.storage.url  # never the policy's own stores


# ------------------------------------------------------------------------------------------------ scenarios

# sha256 (first 16 hex digits) of each scenario at 1,000 rows, seed 0: the frame as CSV plus its change points,
# computed before sea-stationary was added (Part 12). A scenario whose rows change breaks every earlier benchmark.
FINGERPRINTS = {
    "sea-abrupt": "2cd327815dd8f112",
    "sea-gradual": "e869dc4582e3daf2",
    "sea-recurring": "3e565f491d408128",
    "hyperplane-incremental": "fb964919c86be751",
    "agrawal-abrupt": "b506736d868f2ec3",
    "friedman-gradual": "3aea1a69a32bbeba",
}


def _fingerprint(name: str) -> str:
    stream = scenario(name, rows=1000, seed=0)
    text = stream.frame.to_csv(index=False) + repr(stream.spec.change_points)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@pytest.mark.parametrize("name", list(FINGERPRINTS))
def test_the_earlier_scenarios_are_unchanged(name: str) -> None:
    assert _fingerprint(name) == FINGERPRINTS[name]


def test_sea_stationary_is_one_sea_concept_without_change_points() -> None:
    stream = scenario("sea-stationary", rows=1200, seed=3, label_delay=timedelta(minutes=10))
    assert stream.rows == 1200
    assert stream.spec.change_points == ()
    assert stream.spec.task == "classification"
    # the same generator as sea-abrupt's first concept (SEA variant 0, 10 % noise, the same seed)
    abrupt = scenario("sea-abrupt", rows=2400, seed=3)
    pd.testing.assert_frame_equal(stream.frame[["x0", "x1", "x2", "y"]],
                                  abrupt.frame[["x0", "x1", "x2", "y"]].iloc[:1200])
    assert (stream.frame["label_time"] - stream.frame["event_time"] == timedelta(minutes=10)).all()


# ------------------------------------------------------------------------------------------------ the benchmark


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """benchmarks/policies.py, a script, loaded as a module."""
    return load_benchmark("policies")


# a few hundred rows; the bootstrap outlasts the 500-row label delay, so periodic's first refit has matured rows
TINY = ["--rows", "900", "--stationary-rows", "900", "--bootstrap", "600", "--period", "100", "--window", "200",
        "--seeds", "1", "--stationary-seeds", "1", "--skip", "river-arf", "oracle", "--no-elec2"]


def test_both_label_delay_regimes_run_in_one_process_and_are_grouped_apart(bench: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "baselines.md"
    bench.main(["--scenarios", "sea-abrupt", "--label-delays", "10", "500", *TINY, "--skip-auto", "--out", str(out)])
    runs = json.loads(out.with_suffix(".json").read_text())["runs"]
    assert {(r["stream"], r["label_delay"]) for r in runs} == {("sea-abrupt", 10), ("sea-abrupt", 500)}
    assert not [r for r in runs if r["policy"] == "auto"]
    # a later label: periodic refits on fewer matured rows, so the regimes differ
    periodic = {r["label_delay"]: r["value"] for r in runs if r["policy"] == "periodic" and r["family"] == "gb"}
    assert periodic[10] != periodic[500]
    report = out.read_text()
    assert "| sea-abrupt (delay 10) | static |" in report and "| sea-abrupt (delay 500) | static |" in report
    assert bench.ANALYSIS_MARKER in report


def test_label_delay_is_a_single_regime_alias(bench: ModuleType) -> None:
    args = bench.parse_args(["--label-delay", "500", "--scenarios", "sea-abrupt", "sea-stationary", "--seeds", "2"])
    assert args.label_delays == [500]
    # sea-stationary runs only in the 10-row regime unless asked
    assert bench.plan(args) == [("sea-abrupt", 0, 500), ("sea-abrupt", 1, 500), ("elec2", 0, 1)]
    args = bench.parse_args(["--scenarios", "sea-stationary", "--stationary-seeds", "3", "--no-elec2"])
    assert args.label_delays == [10, 500]
    assert bench.plan(args) == [("sea-stationary", seed, 10) for seed in range(3)]
    args = bench.parse_args(["--scenarios", "sea-stationary", "--stationary-seeds", "1", "--stationary-delays", "10",
                             "500", "--no-elec2"])
    assert bench.plan(args) == [("sea-stationary", 0, 10), ("sea-stationary", 0, 500)]
    assert bench.parse_args([]).snapshot_every == []  # the ARF what-ifs are opt-in
    with pytest.raises(SystemExit):
        bench.parse_args(["--label-delay", "10", "--label-delays", "10", "500"])
    with pytest.raises(SystemExit):  # a partial run never writes over the committed report
        bench.parse_args(["--skip-auto"])


def test_only_auto_runs_no_baseline(bench: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_auto(loaded, stream, seed, bootstrap_rows, tick_every, keep):  # noqa: ANN001, ANN202
        calls.append((stream.spec.name, seed))
        return bench.Run(stream.spec.name, seed, "auto", "", "accuracy", 0.9)

    monkeypatch.setattr(bench, "run_auto", fake_auto)
    args = bench.parse_args(["--only-auto", "--out", "/tmp/unused.md"])
    runs = bench.bench_stream(scenario("sea-abrupt", rows=400, seed=2), 2, None, args)
    assert [r.policy for r in runs] == ["auto"] and calls == [("sea-abrupt", 2)]


def _auto_run(bench: ModuleType, stream: str, delay: int, seed: int, value: float, **extra: object) -> dict:
    run = bench.Run(stream, seed, "auto", "", "mae" if stream == "friedman-gradual" else "accuracy", value, 3, 12,
                    5.0, 6.0, {"rows": 900, "promotions": 2, "harmful": 0, "rollbacks": 0, "failed": 0,
                               "controller_seconds": 1.0, "detection_delays": [], **extra}, delay)
    return dataclasses.asdict(run)


def test_merge_joins_a_baselines_only_and_an_auto_only_file(bench: ModuleType, tmp_path: Path) -> None:
    baselines = tmp_path / "baselines.md"
    bench.main(["--scenarios", "sea-abrupt", "sea-stationary", "--label-delays", "10", "500", *TINY, "--skip-auto",
                "--out", str(baselines)])
    base = json.loads(baselines.with_suffix(".json").read_text())
    best = {}
    for r in base["runs"]:
        if r["policy"] in bench.BASELINES:
            key = (r["stream"], r["label_delay"])
            best[key] = max(best.get(key, 0.0), r["value"])
    assert set(best) == {("sea-abrupt", 10), ("sea-abrupt", 500), ("sea-stationary", 10)}
    auto = {"meta": {**base["meta"], "command": "auto-only", "part": "auto"}, "runs": [
        _auto_run(bench, "sea-abrupt", 10, 0, best["sea-abrupt", 10] - 0.001),             # within 0.002: met
        _auto_run(bench, "sea-abrupt", 500, 0, best["sea-abrupt", 500] - 0.01),            # missed
        _auto_run(bench, "sea-stationary", 10, 0, 0.8, promotions=1, max_promotions_per_racer=1),
    ]}
    (tmp_path / "auto.json").write_text(json.dumps(auto))
    out = tmp_path / "report.md"
    out.write_text("old tables\n" + bench.ANALYSIS_MARKER + "\nkept by hand\n")
    bench.main(["--merge", str(baselines.with_suffix(".json")), str(tmp_path / "auto.json"), "--out", str(out)])
    merged = json.loads(out.with_suffix(".json").read_text())["runs"]
    keys = [(r["stream"], r["label_delay"], r["seed"], r["policy"], r["family"]) for r in merged]
    assert len(keys) == len(set(keys)) == len(base["runs"]) + 3
    report = out.read_text()
    assert "old tables" not in report and report.endswith(bench.ANALYSIS_MARKER + "\nkept by hand\n")
    targets = report[report.index("## Targets of Part 12"):]
    line = {row.split(" | ")[0].lstrip("| "): row for row in targets.splitlines() if row.startswith("| sea-")}
    assert " met " in line["sea-abrupt (delay 10)"] + " " and "**missed**" not in line["sea-abrupt (delay 10)"]
    assert "**missed**" in line["sea-abrupt (delay 500)"]
    assert "sea-stationary (delay 10): no harmful switch (all seeds) | met" in targets
    assert "sea-stationary (delay 10): each racer promoted at most once per run | met" in targets
    # merging the same file twice counts each run once
    bench.main(["--merge", str(tmp_path / "auto.json"), str(tmp_path / "auto.json"), "--out", str(tmp_path / "a.md")])
    assert len(json.loads((tmp_path / "a.json").read_text())["runs"]) == 3


def test_merge_refuses_files_of_different_protocols(bench: ModuleType, tmp_path: Path) -> None:
    meta = {"command": "x", "commit": "c", "dirty": False, "loads": ["1"], "seconds": 1.0,
            "protocol": {"bootstrap": 1000, "period": 500}}
    first = {"meta": meta, "runs": [_auto_run(bench, "sea-abrupt", 10, 0, 0.8)]}
    second = {"meta": {**meta, "protocol": {"bootstrap": 1000, "period": 250}},
              "runs": [_auto_run(bench, "sea-abrupt", 10, 1, 0.8)]}
    other_rows = {"meta": meta, "runs": [{**_auto_run(bench, "sea-abrupt", 10, 1, 0.8), "extra": {"rows": 4000}}]}
    for name, data in (("a", first), ("b", second), ("c", other_rows)):
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    with pytest.raises(SystemExit, match="period"):
        bench.main(["--merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(tmp_path / "m.md")])
    with pytest.raises(SystemExit, match="different row counts"):
        bench.main(["--merge", str(tmp_path / "a.json"), str(tmp_path / "c.json"), "--out", str(tmp_path / "m.md")])


def test_a_file_from_before_the_regimes_gets_its_label_delay(bench: ModuleType, tmp_path: Path) -> None:
    old = [{k: v for k, v in _auto_run(bench, s, 10, 0, 0.8).items() if k != "label_delay"}
           for s in ("sea-abrupt", "elec2")]
    path = tmp_path / "old.json"
    path.write_text(json.dumps({"meta": {"command": ".venv/bin/python benchmarks/policies.py --rows 4000"},
                                "runs": old}))
    _, runs = bench.load_raw(path)
    assert {r.stream: r.label_delay for r in runs} == {"sea-abrupt": 10, "elec2": 1}
    assert [bench.regime_label(r.stream, r.label_delay) for r in runs] == ["sea-abrupt (delay 10)", "elec2 (next row)"]


def test_targets(bench: ModuleType) -> None:
    def run(stream: str, delay: int, policy: str, value: float, seed: int = 0, **extra: object) -> object:
        metric = "mae" if stream == "friedman-gradual" else "accuracy"
        base = {"rows": 1, "promotions": 0, "harmful": 0, "controller_seconds": 0.0} if policy == "auto" else {}
        return bench.Run(stream, seed, policy, "", metric, value, cpu_seconds=extra.pop("cpu", 1.0),
                         extra={**base, **extra}, label_delay=delay)

    runs = [run("friedman-gradual", 10, "river-arf", 2.0), run("friedman-gradual", 10, "auto", 2.019),
            run("friedman-gradual", 500, "river-arf", 2.0), run("friedman-gradual", 500, "auto", 2.03),
            run("elec2", 1, "river-hat", 0.83), run("elec2", 1, "auto", 0.885, promotions=200, harmful=2, cpu=100.0),
            run("sea-stationary", 10, "periodic", 0.88),
            run("sea-stationary", 10, "auto", 0.88, seed=0, promotions=1, max_promotions_per_racer=1),
            run("sea-stationary", 10, "auto", 0.88, seed=1, promotions=3, harmful=1, max_promotions_per_racer=2)]
    text = "\n".join(bench.targets_table(bench.summarize(runs), bench.regimes(runs)))
    rows = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "+1.0% | met" in rows["friedman-gradual (delay 10)"]          # MAE within 1 % of the best
    assert "+1.5% | **missed**" in rows["friedman-gradual (delay 500)"]
    assert "| 2 / 200 met |" in rows["elec2 (next row)"]                 # 1 % of promotions may be harmful
    assert "elec2 (next row): `auto` accuracy ≥ 0.883 | met (0.8850)" in text
    assert "≤ 120 s CPU (incl. bootstrap and the harmful-promotion check) | met (100 s CPU" in text
    assert "sea-stationary (delay 10): no harmful switch (all seeds) | **missed** (1 harmful of 4" in text
    assert "each racer promoted at most once per run | **missed** (at most 2 in one run)" in text
    assert "all streams and regimes | **missed** (3 of 204)" in text

"""Data drift through a real Evidently run: flags match the injected drift exactly."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from monitors import DataDriftConfig
from monitors.data_drift import DataDriftMonitor, NoReportYet, sample_rows
from monitors.drift_methods import DRIFT_METHODS, is_drift

TYPES = (
    {f"num{i}": "numeric" for i in range(6)}
    | {"cat0": "categorical", "cat1": "categorical"}
    | {
        "flag0": "boolean",
        "flag1": "boolean",
    }
)


def frame(
    seed: int, rows: int, *, shift: float = 0.0, cat_p=(0.5, 0.3, 0.2), flag_p: float = 0.5
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data = {f"num{i}": rng.normal(size=rows) for i in range(6)}
    data["num0"] = data["num0"] + shift
    data["cat0"] = rng.choice(["a", "b", "c"], size=rows, p=cat_p).astype(object)
    data["cat1"] = rng.choice(["x", "y", "z"], size=rows, p=(0.5, 0.3, 0.2)).astype(object)
    data["flag0"] = pd.Series(rng.random(rows) < 0.5, dtype=object)
    data["flag1"] = pd.Series(rng.random(rows) < flag_p, dtype=object)
    return pd.DataFrame(data)


REFERENCE = frame(1, 3000)


def run(
    current: pd.DataFrame, reference: pd.DataFrame = REFERENCE, **config
) -> tuple[DataDriftMonitor, object]:
    monitor = DataDriftMonitor(DataDriftConfig.model_validate(config))
    return monitor, monitor.run(reference, current, TYPES)


def test_flags_exactly_the_features_with_injected_drift():
    current = frame(2, 3000, shift=0.5, cat_p=(0.2, 0.3, 0.5), flag_p=0.85)
    _, signal = run(current, drift_share=0.3)
    assert set(signal.drifted_features) == {"num0", "cat0", "flag1"}
    assert signal.drift_share == pytest.approx(3 / 10)
    assert signal.dataset_drifted and signal.verdict == "drift" and signal.triggered
    num0, num1 = signal.feature("num0"), signal.feature("num1")
    assert (num0.method, num0.score_kind, num0.threshold) == ("wasserstein", "distance", 0.1)
    # Noise floor at 3,000 rows
    assert num0.score == pytest.approx(0.5, abs=0.06) and num1.score < 0.08
    assert signal.feature("cat0").method == signal.feature("flag1").method == "jensenshannon"
    # Our reading of the score agrees with Evidently's own flag for every feature.
    assert all(f.drifted == is_drift(f.method, f.score, f.threshold) for f in signal.features)


def test_no_drift_between_two_samples_of_the_same_distribution():
    _, signal = run(frame(3, 3000))
    assert signal.drifted_features == () and signal.drift_share == 0.0
    assert signal.verdict == "ok" and not signal.triggered
    assert max(f.score for f in signal.features) < 0.05


def test_per_feature_p_value_test_and_threshold_are_applied():
    current = frame(2, 3000, shift=0.15)
    _, signal = run(
        current,
        per_feature={"num0": {"method": "ks", "threshold": 0.001}, "num1": {"method": "ks"}},
    )
    num0, num1 = signal.feature("num0"), signal.feature("num1")
    assert (num0.method, num0.score_kind, num0.threshold) == ("ks", "p_value", 0.001)
    # A 0.15 sd shift: p tiny, but Wasserstein would say 0.15 < ...
    assert num0.drifted and num0.score < 0.001
    assert (num1.method, num1.threshold) == ("ks", 0.05) and not num1.drifted and num1.score > 0.05
    assert not signal.dataset_drifted  # 1 of 10 features < drift_share 0.5


def test_sampling_cap_is_respected_and_seeded():
    big_reference, big_current = frame(4, 20_000), frame(5, 8_000, shift=0.5)
    config = {"sample_cap": 1000, "seed": 11}
    _, first = run(big_current, big_reference, **config)
    _, again = run(big_current, big_reference, **config)
    _, other_seed = run(big_current, big_reference, sample_cap=1000, seed=12)
    assert (first.reference_rows, first.current_rows) == (1000, 1000)
    assert (first.reference_rows_available, first.current_rows_available) == (20_000, 8_000)
    assert first.sample_cap == 1000 and first.seed == 11
    assert first.features == again.features
    assert [f.score for f in first.features] != [f.score for f in other_seed.features]
    assert first.drifted_features == ("num0",)  # a 0.5 sd shift survives the cap


def test_sample_rows_draws_distinct_rows_in_order():
    data = pd.DataFrame({"i": np.arange(10_000)})
    picked = sample_rows(data, 500, seed=3)
    assert len(picked) == 500 and picked["i"].is_unique and picked["i"].is_monotonic_increasing
    assert sample_rows(data, None, seed=3).equals(data) and sample_rows(
        data.head(20), 500, 3
    ).equals(data.head(20))
    # Reference and current draw independently
    assert not picked.equals(sample_rows(data, 500, seed=3, side=1))


def test_too_few_rows_gives_no_verdict_and_runs_no_test():
    monitor, signal = run(frame(2, 10, shift=5.0))
    assert signal.verdict == "insufficient_rows" and not signal.dataset_drifted
    assert all(f.score is None and not f.drifted and "min_rows" in f.note for f in signal.features)
    with pytest.raises(NoReportYet, match="call run"):
        monitor.save_html("never.html")


def test_a_feature_without_values_is_reported_untested_and_the_rest_still_run():
    current = frame(2, 3000, shift=0.5)
    current["num3"] = np.nan
    _, signal = run(current)
    num3 = signal.feature("num3")
    assert (
        num3.score is None
        and not num3.drifted
        and "current" in num3.note
        and num3.current_values == 0
    )
    assert signal.drifted_features == ("num0",) and signal.drift_share == pytest.approx(1 / 9)


def test_html_report_is_saved_and_its_path_recorded(tmp_path):
    monitor, _ = run(frame(2, 500))
    path = monitor.save_html(tmp_path / "reports" / "drift.html")
    assert (
        path.exists()
        and path.stat().st_size > 100_000
        and path.read_text()[:200].lower().count("html")
    )
    again = monitor.run(REFERENCE, frame(2, 500), TYPES, html_path=tmp_path / "b.html")
    assert again.html_path == str(tmp_path / "b.html") and (tmp_path / "b.html").exists()


def test_missing_feature_column_is_refused_with_the_columns_it_has():
    with pytest.raises(ValueError, match=r"current frame lacks feature column\(s\) \['flag1'\]"):
        run(frame(2, 100).drop(columns=["flag1"]))


def test_signal_to_dict_is_json():
    _, signal = run(frame(2, 3000, shift=0.5))
    body = json.loads(json.dumps(signal.to_dict()))
    assert body["kind"] == "data_drift" and body["features"][0]["feature"] == "num0"
    assert body["features"][0]["drifted"] is True and body["reference_rows"] == 3000


def test_method_table_matches_evidentlys_registry():
    from monitors.evidently_adapter import default_thresholds, registered_methods

    registered = registered_methods()
    defaults = default_thresholds()
    for name, method in DRIFT_METHODS.items():
        assert registered[name] == set(method.kinds), name
        assert defaults[name] == method.default_threshold, name


def test_fast_path_scores_and_flags_equal_the_full_evidently_report():
    from monitors.data_drift import prepare_column
    from monitors.evidently_adapter import ColumnTest, report_results, run_drift, run_report

    current = frame(2, 3000, shift=0.2, cat_p=(0.4, 0.3, 0.3), flag_p=0.6)
    ref = pd.DataFrame({name: prepare_column(REFERENCE[name], t) for name, t in TYPES.items()})
    cur = pd.DataFrame({name: prepare_column(current[name], t) for name, t in TYPES.items()})
    plan = {
        "num0": ("ks", 0.05),
        "num1": ("wasserstein", 0.1),
        "num2": ("psi", 0.1),
        "num3": ("mannw", 0.05),
        "num4": ("t_test", 0.05),
        "num5": ("hellinger", 0.1),
        "cat0": ("chisquare", 0.05),
        "cat1": ("jensenshannon", 0.1),
        "flag0": ("z", 0.05),
        "flag1": ("g_test", 0.1),  # not TVD: its p-value takes ~6 s per column at 3,000 rows
    }
    tests = [
        ColumnTest(name, "num" if TYPES[name] == "numeric" else "cat", method, threshold)
        for name, (method, threshold) in plan.items()
    ]
    fast = run_drift(ref, cur, tests, drift_share=0.5).results
    full = report_results(run_report(ref, cur, tests, drift_share=0.5), tests)
    assert {c: r.drifted for c, r in fast.items()} == {c: r.drifted for c, r in full.items()}
    assert {c: r.score for c, r in fast.items()} == pytest.approx(
        {c: r.score for c, r in full.items()}
    )
    assert {c for c, r in fast.items() if r.drifted} >= {
        "num0",
        "cat0",
        "flag1",
    }  # the injected ones

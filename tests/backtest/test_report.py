"""The backtest report: its numbers on a real replay (SEA with an abrupt change, 2,000 rows, through the real
controller, trainers, gate and MLflow store), the Markdown page and the PNG plot; and the counting of held
challengers, rollbacks, failed and skipped decisions on a hand-built result where every case is known."""

from __future__ import annotations

import itertools
import math
import re
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from controller.backtest.quality import detection_delays
from controller.backtest.replay import replay
from controller.backtest.report import (
    HORIZON,
    figure,
    headline_metrics,
    markdown,
    plot,
    registry_loader,
    summarize,
    write_report,
)
from controller.backtest.result import BacktestResult, ReplayStream, StreamSpec
from controller.backtest.streams import START, scenario
from controller.policy_loader import load_policy
from tests.backtest.conftest import write_policy

ROWS, BOOT, EVERY = 2000, 400, 50
SECTIONS = ("## Summary", "## Prequential accuracy over time", "## Retrains by strategy and trigger", "## Decisions",
            "## Detection delay", "## Promotions: did they help?")


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory):
    """One real replay shared by the tests below. Seed 1 of sea-abrupt makes this policy reject challengers before
    it promotes one after the change (the harmful-promotion check needs a promotion)."""
    folder = tmp_path_factory.mktemp("report")
    loaded = load_policy(write_policy(folder))
    stream = scenario("sea-abrupt", rows=ROWS, seed=1)
    result = replay(loaded, stream, folder / "work", bootstrap_rows=BOOT, tick_every=EVERY)
    summary = summarize(result, stream, load=registry_loader(loaded, result))
    return loaded, stream, result, summary, folder


@pytest.mark.slow  # one real replay (module fixture), ~5-15 s
def test_the_summary_numbers_match_the_replay(replayed) -> None:
    _, stream, result, summary, _ = replayed
    served = result.served
    frame = stream.frame
    # Every row after the bootstrap is served once, scored against its own label.
    assert served["position"].tolist() == list(range(BOOT, ROWS))
    assert (served["label"].to_numpy() == frame["y"].iloc[BOOT:].to_numpy()).all()
    expected = float(np.mean(served["prediction"].to_numpy() == frame["y"].iloc[BOOT:].to_numpy()))
    assert summary["metric"] == {"name": "accuracy", "higher_is_better": True, "value": pytest.approx(expected)}

    segments = summary["segments"]
    assert len(segments) == 10
    assert segments[0]["start"] == BOOT and segments[-1]["end"] == ROWS - 1
    assert all(a["end"] + 1 == b["start"] for a, b in itertools.pairwise(segments))
    assert sum(s["rows"] for s in segments) == ROWS - BOOT
    for s in segments:
        part = served[(served["position"] >= s["start"]) & (served["position"] <= s["end"])]
        assert s["value"] == pytest.approx(part["score"].mean())
        assert s["versions"] == list(dict.fromkeys(part["version"].astype(str)))
    assert [p for s in segments for p in s["change_points"]] == [ROWS // 2]

    trainings = [d for d in result.decisions if d["action"] in ("retrain", "learn")]
    assert summary["retrains"]["total"] == len(trainings) > 0
    assert summary["retrains"]["by_strategy"] == dict(pd.Series([d["strategy"] for d in trainings]).value_counts())
    assert sum(r["count"] for r in summary["retrains"]["by_strategy_and_trigger"]) == len(trainings)
    assert summary["promotions"] == sum(d["verdict"] == "promote" and d["status"] == "done" for d in trainings)
    assert summary["rejected"] == sum(d["verdict"] == "reject" for d in trainings)
    assert summary["promotions"] >= 1 and summary["rejected"] >= 1, "the fixture's stream should give both"
    assert summary["rollbacks"] == sum(d["action"] == "rollback" for d in result.decisions)
    # The champion served as many rows as the served frame says, and the last one is the registry's champion.
    assert sum(summary["champions"]["served_rows"].values()) == ROWS - BOOT
    assert summary["champions"]["final"] == str(served["version"].iloc[-1])

    found = detection_delays(result)
    per_point = summary["detections"]["per_change_point"]
    assert [(p["change_point"], p["detected_at"], p["delay"]) for p in per_point] == [
        (f.change_point, f.detected_at, f.delay) for f in found]
    first_after = [d["position"] for d in trainings if d["position"] >= ROWS // 2]
    assert per_point[0]["first_retrain_at"] == (first_after[0] if first_after else None)

    compute = summary["compute"]
    assert compute["ticks"] == math.ceil((ROWS - BOOT) / EVERY)
    assert 0 < compute["controller_seconds"] <= compute["wall_seconds"]


@pytest.mark.slow  # one real replay (module fixture), ~5-15 s
def test_harmful_promotions_are_judged_on_the_rows_after_each_promotion(replayed) -> None:
    _, _, result, summary, _ = replayed
    harm = summary["harmful_promotions"]
    assert harm["checked"] and harm["horizon"] == HORIZON
    promotions = [d for d in result.decisions if d["verdict"] == "promote" and d["status"] == "done"]
    assert [p["decision_id"] for p in harm["promotions"]] == [d["decision_id"] for d in promotions]
    assert harm["count"] == sum(p["harmful"] for p in harm["promotions"])
    served = result.served.set_index("position")
    for p, d in zip(harm["promotions"], promotions, strict=True):
        assert p["position"] == d["verdict_position"] and p["new_version"] == d["challenger_version"]
        assert p["harmful"] == (p["new_score"] < p["old_score"])
        # The promoted version, loaded back from the backtest's registry, scores exactly what it scored while it
        # served those rows (when it served all of them).
        after = served.loc[p["position"] + 1: p["position"] + p["rows"]]
        if (after["version"].astype(str) == p["new_version"]).all() and len(after) == p["rows"]:
            assert p["new_score"] == pytest.approx(after["score"].mean())


@pytest.mark.slow  # one real replay (module fixture), ~5-15 s
def test_the_markdown_page_has_every_section_with_the_counts(replayed) -> None:
    _, _, result, summary, _ = replayed
    page = markdown(summary)
    positions = [page.index(section) for section in SECTIONS]
    assert positions == sorted(positions)
    assert f"| promotions | {summary['promotions']} |" in page
    assert f"| rejected challengers | {summary['rejected']} |" in page
    assert f"| retrains | {summary['retrains']['total']} |" in page
    assert f"| prequential accuracy (higher is better) | {summary['metric']['value']:.4f} |" in page
    over_time = page[page.index(SECTIONS[1]):page.index(SECTIONS[2])]
    assert len(re.findall(r"^\| [\d,]+–[\d,]+ \|", over_time, re.MULTILINE)) == 10
    decisions = page[page.index(SECTIONS[3]):page.index(SECTIONS[4])]
    listed = [d for d in result.decisions if d["status"] != "skipped"]
    assert len(re.findall(r"^\| [\d,]+", decisions, re.MULTILINE)) == len(listed)
    for d in listed:
        assert d["decision_id"] in decisions
    detection = page[page.index(SECTIONS[4]):page.index(SECTIONS[5])]
    assert f"| {ROWS // 2:,} |" in detection
    promotions = page[page.index(SECTIONS[5]):]
    assert len(re.findall(r"^\| [\d,]+ \| v\d+ \| v\d+ \|", promotions, re.MULTILINE)) == summary["promotions"]
    assert "![prequential accuracy over the stream](metric.png)" in page


def _pixels_near(image: np.ndarray, colour: str, tolerance: float = 0.03) -> int:
    rgb = np.array([int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(image[..., :3] - rgb).max(axis=-1) < tolerance).sum())


@pytest.mark.slow  # one real replay (module fixture), ~5-15 s
def test_write_report_writes_the_page_a_readable_plot_and_every_decision(replayed) -> None:
    _, _, result, summary, folder = replayed
    files = write_report(result, summary, folder / "out")
    assert files.summary.read_text().startswith("# Backtest: ")
    lines = files.decisions.read_text().splitlines()
    assert len(lines) == len(result.decisions)
    assert all('"verdict_position"' in line and '"evidence"' in line for line in lines)

    assert files.plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(files.plot)
    height, width = image.shape[:2]
    assert width >= 1000 and height >= 500
    assert (image[..., :3] < 0.9).any(axis=-1).mean() > 0.02  # not a blank canvas
    assert _pixels_near(image, "#2166ac") > 1000               # the rolling metric
    assert _pixels_near(image, "#1a9850") > 50                  # a promotion marker
    assert _pixels_near(image, "#d73027") > 50                  # a rejection marker


# --------------------------------------------------------------------------------------- a hand-built result


def _hand_built() -> tuple[BacktestResult, ReplayStream]:
    """A regression backtest of 1,000 rows (bootstrap 100) where each kind of decision happens once: a challenger
    held then promoted (v2), a rollback to v1, a rejection, a failed retrain, a skipped decision and a challenger
    still held at the end."""
    rows, boot = 1000, 100
    rng = np.random.default_rng(0)
    times = pd.Series(pd.date_range(START, periods=rows, freq="1min", tz="UTC"))
    y = rng.normal(size=rows)
    frame = pd.DataFrame({"x": rng.normal(size=rows), "y": y, "event_time": times,
                          "label_time": times + timedelta(minutes=30)})
    spec = StreamSpec(name="hand", task="regression", features={"x": "numeric"}, target="y",
                      change_points=(300, 700), description="hand-built")
    positions = np.arange(boot, rows)
    version = np.where((positions > 400) & (positions <= 600), "2", "1")
    prediction = y[boot:] + np.where(version == "2", 0.5, 1.0)
    served = pd.DataFrame({"position": positions, "event_time": times[boot:].to_numpy(), "label": y[boot:],
                           "prediction": prediction, "version": version})
    served["score"] = (served["prediction"] - served["label"]).abs()

    def decision(did, position, action, status, verdict, champion, challenger, strategy="stateless",
                 verdict_position=None, evidence=None):
        return {"decision_id": did, "position": position, "verdict_position": verdict_position or position,
                "created_at": times[position].isoformat(), "trigger": "performance_drop", "rule": "r",
                "action": action, "strategy": strategy if action != "rollback" else None, "status": status,
                "verdict": verdict, "champion_version": champion, "challenger_version": challenger,
                "evidence": evidence or {}, "error": "boom" if status == "failed" else None}

    gate = {"gate": {"as_of": times[400].isoformat(), "verdicts": {"2": {
        "metric": "rmse", "rows": 250, "champion_value": 1.0, "challenger_value": 0.5, "delta": 0.5,
        "p_value": 0.001, "reason": "better"}}}}
    decisions = [
        decision("retrain-a", 350, "retrain", "done", "promote", "1", "2", verdict_position=400, evidence=gate),
        decision("rollback-b", 600, "rollback", "done", "rollback", "2", "1",
                 evidence={"probation": {"metric": "rmse", "new_champion": 1.2, "previous": 1.0, "rows": 150,
                                         "max_drop": 0.02}}),
        decision("retrain-c", 720, "retrain", "done", "reject", "1", "3"),
        decision("retrain-d", 800, "retrain", "failed", None, "1", None),
        decision("skip-e", 850, "skip", "skipped", None, "1", None, strategy=None),
        decision("retrain-f", 900, "retrain", "held", "hold", "1", "5", strategy="finetune", verdict_position=980),
    ]
    result = BacktestResult(spec=spec, policy_name="hand.yaml", bootstrap_rows=boot, served=served,
                            decisions=decisions, ticks=18, wall_seconds=2.0, controller_seconds=1.5, metric="mae",
                            detections=[320, 330, 250])
    return result, ReplayStream(spec, frame)


def test_held_rollbacks_failures_and_skips_are_counted_apart() -> None:
    result, stream = _hand_built()
    summary = summarize(result, stream)
    assert summary["metric"]["name"] == "mae" and summary["metric"]["higher_is_better"] is False
    assert summary["metric"]["value"] == pytest.approx(result.served["score"].mean())
    assert summary["retrains"]["total"] == 4
    assert summary["retrains"]["failed"] == 1
    assert summary["retrains"]["by_strategy"] == {"stateless": 3, "finetune": 1}
    assert (summary["promotions"], summary["rejected"], summary["rollbacks"], summary["skipped"]) == (1, 1, 1, 1)
    assert summary["held"] == 2
    assert summary["held_then"] == {"promoted": 1, "still held at the end": 1}
    assert summary["champions"]["served_rows"] == {"1": 700, "2": 200}
    assert summary["stream"]["label_delay"]["median_seconds"] == 1800
    per_point = summary["detections"]["per_change_point"]
    assert [(p["change_point"], p["delay"], p["retrain_delay"]) for p in per_point] == [(300, 20, 50), (700, None, 20)]
    assert summary["detections"]["before_first_change_point"] == 1
    assert summary["harmful_promotions"] == {"checked": False, "count": None, "horizon": HORIZON, "promotions": []}
    metrics = headline_metrics(summary)
    assert metrics["prequential_mae"] == summary["metric"]["value"] and metrics["harmful_promotions"] is None
    assert metrics["mean_detection_delay_rows"] == 20

    page = markdown(summary)
    assert "| prequential MAE (lower is better) |" in page
    assert "| held challengers | 2 (1 promoted, 1 still held at the end) |" in page
    assert "| rollbacks | 1 |" in page
    assert "| retrains | 4 (1 failed) |" in page
    assert "| 350 → 400 | retrain-a |" in page and "rmse v1 1.0000 vs v2 0.5000 on 250 rows, p=0.001" in page
    assert "probation rmse: v2 1.2000 vs previous 1.0000 on 150 rows" in page
    assert "skip-e" not in page and "1 skipped decision(s)" in page
    assert "1 concept-drift detection(s) before the first change point" in page
    assert "Not checked" in page


def test_the_plot_marks_rollbacks_holds_and_both_change_points(tmp_path: Path) -> None:
    result, _ = _hand_built()
    path = plot(result, tmp_path / "hand.png")
    image = imread(path)
    assert _pixels_near(image, "#7b3294") > 50   # the rollback marker
    assert _pixels_near(image, "#fdae61") > 50   # the held challengers
    assert _pixels_near(image, "#1a9850") > 50   # the promotion after the hold
    assert _pixels_near(image, "#e08214") > 50   # the concept-drift detections
    # Nothing of a decision's colour is drawn without decisions.
    result.decisions = []
    bare = imread(plot(result, tmp_path / "bare.png"))
    assert all(_pixels_near(bare, c) == 0 for c in ("#7b3294", "#fdae61", "#1a9850", "#d73027"))
    result.detections = []
    bare = imread(plot(result, tmp_path / "bare.png"))
    assert _pixels_near(bare, "#e08214") == 0


def test_the_champion_panel_steps_through_the_versions_that_served() -> None:
    result, _ = _hand_built()
    metric_panel, champion_panel = figure(result).axes
    assert [t.get_text() for t in champion_panel.get_yticklabels()] == ["v1", "v2"]
    (step,) = [line for line in champion_panel.get_lines() if line.get_drawstyle().startswith("steps")]
    levels = step.get_ydata()
    assert list(levels[:2]) == [0, 0] and levels[350] == 1 and levels[-1] == 0   # v1, v2 from row 401, v1 again
    assert {round(line.get_xdata()[0]) for line in metric_panel.get_lines() if line.get_linestyle() == "--"} == {
        300, 700}
    assert "lower is better" in metric_panel.get_ylabel()

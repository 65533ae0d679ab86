"""The backtest report of a race, on one small real replay: SEA with an abrupt change (1,500 rows, seed 1), the
scikit-learn champion raced by River's logistic regression and a no-change classifier, through the real controller,
race driver and stores. Its racers and switches in the summary (each number recomputed here from the replay's served
rows and outcome log), the Markdown tables, the plot's racers panel and served-by strip, and the CLI's racer lines."""

from __future__ import annotations

import re
from collections import Counter
from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.image import imread

from controller.backtest.quality import RACE_LOG_COLUMNS, race_switches, racer_keys
from controller.backtest.replay import replay
from controller.backtest.report import (
    HORIZON,
    RACER_COLOURS,
    figure,
    headline_metrics,
    markdown,
    registry_loader,
    summarize,
    write_report,
)
from controller.backtest.result import BacktestResult, ReplayStream, StreamSpec
from controller.backtest.streams import START, scenario
from controller.cli.backtest_commands import _table
from controller.policy_loader import load_policy
from tests.backtest.conftest import write_policy

ROWS, BOOT, EVERY = 1500, 300, 20


@pytest.fixture(scope="module")
def raced(tmp_path_factory: pytest.TempPathFactory):
    """Seed 1: logreg beats the batch champion v1 within the first few hundred served rows and serves the rest."""
    folder = tmp_path_factory.mktemp("race-report")
    loaded = load_policy(write_policy(folder, race=True))
    stream = scenario("sea-abrupt", rows=ROWS, seed=1)
    result = replay(loaded, stream, folder / "work", bootstrap_rows=BOOT, tick_every=EVERY)
    summary = summarize(result, stream, load=registry_loader(loaded, result))
    return stream, result, summary, folder


def _served_racer(result) -> pd.Series:
    return result.served.set_index("position")["racer"].astype(str)


@pytest.mark.slow  # one real replay (module fixture), ~10-40 s
def test_each_racers_numbers_are_its_outcome_log_and_served_rows(raced) -> None:
    _, result, summary, _ = raced
    race, log, served = summary["race"], result.race, result.served
    assert race["metric"] == "accuracy" and race["higher_is_better"] is True
    racers = {r["racer"]: r for r in race["racers"]}
    scored = [c for c in log.columns if c not in RACE_LOG_COLUMNS]
    assert list(racers) == racer_keys(result) and set(racers) == set(scored) | set(served["racer"])
    assert {"v1", "logreg", "no-change"} <= set(racers)

    # Every served row is counted once, for the racer that served it.
    assert len(served) == ROWS - BOOT
    assert sum(r["served_rows"] for r in racers.values()) == len(served)
    for key, r in racers.items():
        assert r["served_rows"] == int((served["racer"] == key).sum())
        column = log[key]
        assert r["rows"] == int(column.notna().sum()) > 0
        assert r["mean"] == pytest.approx(float(column.mean())) and r["value"] == r["mean"]
        assert (r["first_row"], r["last_row"]) == (int(log.loc[column.notna(), "position"].min()),
                                                   int(log.loc[column.notna(), "position"].max()))
    assert Counter({k: r["promoted"] for k, r in racers.items() if r["promoted"]}) == Counter(
        d["evidence"]["race"]["challenger"] for d in race_switches(result))
    assert racers["no-change"]["served_rows"] == 0 and racers["no-change"]["mean"] < racers["logreg"]["mean"]

    # On the rows a racer served, its score in the outcome log is the served row's score: the race scored what
    # served (the state published after a tick predicts the rows before the next one), not a later state.
    both = served.merge(log, on="position", how="inner")
    for key in served["racer"].unique():
        rows = both[both["racer"] == key]
        assert len(rows) > 0 and (rows["score"].to_numpy() == rows[key].to_numpy()).all(), key


@pytest.mark.slow  # one real replay (module fixture), ~10-40 s
def test_each_switch_has_its_evidence_and_its_impact_on_the_next_rows(raced) -> None:
    _, result, summary, _ = raced
    race, log = summary["race"], result.race
    decisions = race_switches(result)
    assert decisions, "the fixture's stream should make the race switch"
    assert [s["decision_id"] for s in race["switches"]] == [d["decision_id"] for d in decisions]
    served_by = _served_racer(result)
    for s, d in zip(race["switches"], decisions, strict=True):
        evidence = d["evidence"]["race"]
        assert (s["position"], s["from"], s["to"]) == (d["position"], evidence["champion"], evidence["challenger"])
        assert (s["from_version"], s["to_version"]) == (d["champion_version"], d["challenger_version"])
        assert s["threshold"] == evidence["threshold"] and s["evidence"] >= s["threshold"] > 0
        assert s["re_promoted"] == bool(evidence["re_promoted"])
        # The new racer serves from the switch's row on; the replaced one served the row before.
        assert served_by[s["position"]] == s["to"] and served_by[s["position"] - 1] == s["from"]
        # The impact, recomputed from the outcome log: both racers on the next HORIZON positions both predicted.
        window = log[(log["position"] >= s["position"]) & (log["position"] < s["position"] + HORIZON)]
        paired = window[[s["to"], s["from"]]].dropna()
        impact = s["impact"]
        assert impact["rows"] == len(paired) > 0
        assert impact["new_score"] == pytest.approx(paired[s["to"]].mean())
        assert impact["old_score"] == pytest.approx(paired[s["from"]].mean())
        assert impact["harmful"] == (paired[s["to"]].mean() < paired[s["from"]].mean())
    harm = race["harmful"]
    assert harm == {"count": sum(s["impact"]["harmful"] for s in race["switches"]), "judged": len(decisions),
                    "horizon": HORIZON}
    assert race["checkpoints"] == sum(d["action"] == "checkpoint" for d in result.decisions)
    # The race's switches are judged here, as they served, not again as frozen versions.
    ids = {d["decision_id"] for d in result.decisions if d["trigger"] == "race"}
    assert summary["harmful_promotions"]["checked"]
    assert not ids & {p["decision_id"] for p in summary["harmful_promotions"]["promotions"]}
    metrics = headline_metrics(summary)
    assert metrics["race_switches"] == len(decisions) and metrics["harmful_race_switches"] == harm["count"]


@pytest.mark.slow  # one real replay (module fixture), ~10-40 s
def test_the_markdown_page_has_the_racers_and_the_switches_tables(raced) -> None:
    _, result, summary, _ = raced
    race = summary["race"]
    page = markdown(summary)
    section = page[page.index("## The race"):page.index("## Retrains by strategy and trigger")]
    assert page.index("## Prequential accuracy over time") < page.index("## The race")
    assert len(re.findall(r"^\| [\w.-]+ \| [\d,]+ \| [\d,]+–[\d,]+ \|", section, re.MULTILINE)) == len(race["racers"])
    for r in race["racers"]:
        assert (f"| {r['racer']} | {r['rows']:,} | {r['first_row']:,}–{r['last_row']:,} | {r['value']:.4f} | "
                f"{r['served_rows']:,} | {r['promoted']} |") in section
    rows = re.findall(r"^\| ([\d,]+) \| (\S+) → (\S+) \| .*\| (no|\*\*yes\*\*) \|$", section, re.MULTILINE)
    assert [(int(p.replace(",", "")), a, b, h == "**yes**") for p, a, b, h in rows] == [
        (s["position"], s["from"], s["to"], s["impact"]["harmful"]) for s in race["switches"]]
    assert f"| race switches | {len(race['switches'])} |" in page
    assert f"| harmful race switches | {race['harmful']['count']} of {race['harmful']['judged']} judged |" in page
    served = ", ".join(f"{r['racer']} {r['served_rows']:,}" for r in race["racers"] if r["served_rows"])
    assert f"| served by | {served} rows |" in page
    # The switch is in the decisions table with its evidence, and in its tenth of the stream.
    s = race["switches"][0]
    assert f"serve {s['to']} (v{s['to_version']})" in page and f"{s['to']} beat {s['from']} on" in page
    assert f"race: {s['from']} → {s['to']} (v{s['to_version']})" in page


def _pixels_near(image: np.ndarray, colour: str, tolerance: float = 0.03) -> int:
    rgb = np.array([int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
    return int((np.abs(image[..., :3] - rgb).max(axis=-1) < tolerance).sum())


@pytest.mark.slow  # one real replay (module fixture), ~10-40 s
def test_the_plot_shows_each_racer_and_which_one_served(raced) -> None:
    _, result, summary, folder = raced
    fig = figure(result)
    metric_panel, race_panel, strip, champion_panel = fig.axes[:4]
    keys = [r["racer"] for r in summary["race"]["racers"]]
    legend = [t.get_text() for t in race_panel.get_legend().get_texts()]
    assert [text.split(":")[0] for text in legend] == keys
    assert "higher is better" in race_panel.get_ylabel() and strip.get_ylabel() == "served by"
    # One band per stretch served by one racer (plus the bootstrap's), in that racer's colour.
    serving = result.served["racer"].astype(str).to_numpy()
    starts = [0, *(np.flatnonzero(serving[1:] != serving[:-1]) + 1).tolist()]
    assert len(strip.patches) == 1 + len(starts)
    colour = {k: RACER_COLOURS[i] for i, k in enumerate(keys)}
    assert [to_hex(p.get_facecolor()) for p in strip.patches[1:]] == [colour[serving[i]] for i in starts]

    path = write_report(result, summary, folder / "out").plot
    image = imread(path)
    for key in dict.fromkeys(serving):
        assert _pixels_near(image, colour[key]) > 2000, key   # its band in the strip and its line


@pytest.mark.slow  # one real replay (module fixture), ~10-40 s
def test_the_terminal_table_ends_with_the_racers(raced) -> None:
    _, _, summary, _ = raced
    race = summary["race"]
    lines = _table(summary).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  race switches"))
    assert lines[start].startswith(f"  race switches          {len(race['switches'])}, harmful "
                                   f"{race['harmful']['count']} of {race['harmful']['judged']} judged")
    assert lines[start + 1].startswith("  racers                 accuracy on the rows each predicted")
    listed = lines[start + 2:]
    assert len(listed) == len(race["racers"])
    by_name = {line.split()[0]: line for line in listed}
    for r in race["racers"]:
        line = by_name[r["racer"]]
        assert f"{r['value']:.4f} on {r['rows']:,} rows" in line
        assert (f"served {r['served_rows']:,}" in line) == (r["served_rows"] > 0)
        assert (f"promoted {r['promoted']}×" in line) == (r["promoted"] > 0)
    values = [float(line.split()[1]) for line in listed]
    assert values == sorted(values, reverse=True)  # best first


# --------------------------------------------------------------------------------------- a hand-built race


def _hand_built_race() -> tuple[BacktestResult, ReplayStream]:
    """A regression race (rmse: squared errors in the outcome log) over 1,000 rows, bootstrap 100, with four switches:
    v1 -> lin at 400, lin -> v1 at 700 (a re-promotion, harmful: v1 does worse after it), v1 -> gone at 800 and
    gone -> v1 at 900 (gone left the race at 900: that switch cannot be judged). ``bad`` predicts every row far off."""
    rows, boot = 1000, 100
    rng = np.random.default_rng(0)
    times = pd.Series(pd.date_range(START, periods=rows, freq="1min", tz="UTC"))
    frame = pd.DataFrame({"x": rng.normal(size=rows), "y": rng.normal(size=rows), "event_time": times,
                          "label_time": times + timedelta(minutes=10)})
    spec = StreamSpec(name="hand-race", task="regression", features={"x": "numeric"}, target="y",
                      change_points=(700,), description="hand-built race")
    positions = np.arange(boot, rows)
    noise = rng.uniform(0.9, 1.1, size=len(positions))
    log = pd.DataFrame({"position": positions, "seq": positions - boot + 1,
                        "prediction_id": [f"bt-{p}" for p in positions],
                        "v1": np.where(positions < 700, 1.0, 0.8) * noise,
                        "lin": np.where(positions < 700, 0.5, 0.4) * noise,
                        "bad": 100.0 * noise,
                        "gone": np.where(positions < 900, 0.6 * noise, np.nan)})
    racer = np.select([positions < 400, positions < 700, positions < 800, positions < 900],
                      ["v1", "lin", "v1", "gone"], "v1")
    version = pd.Series(racer).map({"v1": "1", "lin": "2", "gone": "3"}).to_numpy()
    served = pd.DataFrame({"position": positions, "event_time": times[boot:].to_numpy(),
                           "label": frame["y"].iloc[boot:].to_numpy(), "prediction": 0.0, "version": version,
                           "racer": racer})
    served["score"] = np.sqrt([log.at[i, key] for i, key in enumerate(racer)])  # absolute errors, as served

    def switch(position, action, old, new, old_version, new_version, back):
        return {"decision_id": f"race-{position}", "position": position, "verdict_position": position,
                "created_at": times[position].isoformat(), "trigger": "race", "rule": "race", "action": action,
                "strategy": "online", "status": "done", "verdict": "promote", "champion_version": old_version,
                "challenger_version": new_version, "error": None,
                "evidence": {"race": {"challenger": new, "champion": old, "evidence": 250.0 + position,
                                      "threshold": 180.0, "rows": 300, "challenger_metric": 0.25,
                                      "champion_metric": 1.0, "metric": "rmse", "re_promoted": back},
                             "standings": []}}

    decisions = [switch(400, "promote", "v1", "lin", "1", "2", False),
                 switch(700, "rollback", "lin", "v1", "2", "1", True),
                 switch(800, "promote", "v1", "gone", "1", "3", False),
                 switch(900, "rollback", "gone", "v1", "3", "1", True)]
    result = BacktestResult(spec=spec, policy_name="hand-race.yaml", bootstrap_rows=boot, served=served,
                            decisions=decisions, ticks=900, wall_seconds=2.0, controller_seconds=1.0, metric="mae",
                            race=log)
    return result, ReplayStream(spec, frame)


def test_a_regression_race_reports_rmse_lower_is_better_and_unjudged_switches() -> None:
    result, stream = _hand_built_race()
    summary = summarize(result, stream)  # the metric comes from the switches' evidence
    race = summary["race"]
    assert race["metric"] == "rmse" and race["higher_is_better"] is False
    racers = {r["racer"]: r for r in race["racers"]}
    assert list(racers) == ["v1", "lin", "bad", "gone"]
    for key, r in racers.items():
        assert r["mean"] == pytest.approx(result.race[key].mean())
        assert r["value"] == pytest.approx(np.sqrt(result.race[key].mean()))   # rmse from the squared errors
    assert {k: r["served_rows"] for k, r in racers.items()} == {"v1": 500, "lin": 300, "bad": 0, "gone": 100}
    assert {k: r["promoted"] for k, r in racers.items()} == {"v1": 2, "lin": 1, "bad": 0, "gone": 1}
    assert racers["gone"]["last_row"] == 899

    impacts = [s["impact"] for s in race["switches"]]
    assert [i["rows"] for i in impacts] == [500, 300, 100, 0]
    assert [i["harmful"] for i in impacts] == [False, True, False, False]   # lower is better: v1 0.8 > lin 0.4
    assert race["harmful"] == {"count": 1, "judged": 3, "horizon": HORIZON}
    assert [s["from_metric"] for s in race["switches"]] == [1.0] * 4          # sqrt of the duel's mean squared error
    assert [s["to_metric"] for s in race["switches"]] == [0.5] * 4

    page = markdown(summary)
    section = page[page.index("## The race"):page.index("## Retrains by strategy and trigger")]
    assert "| racer | rows predicted | from–to row | RMSE | rows served | promoted |" in section
    assert f"| lin | 900 | 100–999 | {np.sqrt(result.race['lin'].mean()):.4f} | 300 | 1 |" in section
    assert len(re.findall(r"\| yes \| [\d,]+ \|", section)) == 2                # the two re-promotions
    assert section.count("| **yes** |") == 1 and section.count("| not judged |") == 1
    assert "Harmful switches: 1 of 3 judged (1 not judged: no row after the switch that both predicted" in section
    assert "| race switches | 4 (2 re-promoted) |" in page

    fig = figure(result, race_metric="rmse")
    race_panel = fig.axes[1]
    assert "RMSE" in race_panel.get_ylabel() and "lower is better" in race_panel.get_ylabel()
    legend = [t.get_text() for t in race_panel.get_legend().get_texts()]
    assert legend[2].startswith("bad: ") and legend[2].endswith("(above the panel)")
    assert all("panel" not in text for i, text in enumerate(legend) if i != 2)
    assert race_panel.get_ylim()[1] < 2.0   # bad's RMSE of 10 would flatten the others
    # The switches on the served-by strip: promotions green, re-promotions (rollbacks) purple.
    marks = [(round(line.get_xdata()[0]), to_hex(line.get_color())) for line in fig.axes[2].get_lines()
             if line.get_linestyle() == "-"]
    assert marks == [(400, "#1a9850"), (700, "#7b3294"), (800, "#1a9850"), (900, "#7b3294")]


def test_a_result_without_a_race_has_no_race_in_its_report() -> None:
    result, stream = _hand_built_race()
    result.race = None
    result.decisions = []
    summary = summarize(result, stream)
    assert summary["race"] is None
    assert "## The race" not in markdown(summary) and "race_switches" not in headline_metrics(summary)
    assert len(figure(result).axes) == 2

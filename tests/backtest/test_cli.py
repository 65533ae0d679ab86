"""`driftpilot backtest` end to end: a scenario and a user's CSV replayed through the real controller (in-process via
click's runner), the files it writes, the run it logs to the policy's own MLflow, and every way the input can be
wrong — one line on stderr and exit code 2, nothing written, never a traceback."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from mlflow import MlflowClient

from controller.cli.main import main
from tests.backtest.conftest import user_table, write_policy
from tests.conftest import EXAMPLE_REGRESSION
from tests.loop.daemon_kit import DRIFTPILOT


def run(*args: str):
    return CliRunner().invoke(main, ["--log-level", "WARNING", "backtest", *args])


def decisions_listed(page: str) -> int:
    section = page[page.index("## Decisions"):page.index("## Detection delay")]
    return len(re.findall(r"^\| [\d,]+", section, re.MULTILINE))


@pytest.mark.slow  # a real replay, ~5-15 s
def test_a_scenario_is_replayed_into_a_report_without_touching_the_policys_stores(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "policy")
    out = tmp_path / "out"
    result = run("--config", str(policy), "--stream", "sea-abrupt", "--rows", "1500", "--seed", "1",
                 "--bootstrap-rows", "300", "--tick-every", "50", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    assert "backtest of" in result.stdout and "sea-abrupt: 1,500 rows (300 bootstrap), change points 750" \
        in result.stdout
    assert re.search(r"prequential accuracy\s+0\.\d{4} \(higher is better\)", result.stdout)
    assert f"wrote {out / 'summary.md'}, {out / 'metric.png'} and {out / 'decisions.jsonl'}" in result.stdout
    assert f"mlflow ui --backend-store-uri sqlite:///{(out / 'work' / 'mlflow.db').resolve()}" in result.stdout

    page = (out / "summary.md").read_text()
    assert page.startswith(f"# Backtest: {policy} on sea-abrupt")
    decisions = [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]
    assert decisions_listed(page) == sum(d["status"] != "skipped" for d in decisions)
    retrains = re.search(r"^  retrains\s+(\d+)", result.stdout, re.MULTILINE)
    assert int(retrains.group(1)) == sum(d["action"] in ("retrain", "learn") for d in decisions)
    assert (out / "metric.png").stat().st_size > 20_000
    # The backtest's own stores are in out/work; the policy's event store and MLflow store were never opened.
    assert (out / "work" / "events.db").is_file() and (out / "work" / "mlflow.db").is_file()
    assert sorted(p.name for p in (tmp_path / "policy").iterdir()) == ["bt-model.yaml"]


@pytest.mark.slow  # a real replay, ~5-15 s
def test_a_user_csv_is_replayed_and_logged_to_the_policys_mlflow(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "policy")
    data = tmp_path / "traffic.csv"
    user_table(1000, change_at=500).to_csv(data, index=False)
    out = tmp_path / "out"
    result = run("--config", str(policy), "--stream", str(data), "--rows", "900", "--bootstrap-rows", "300",
                 "--out", str(out), "--log-mlflow")
    assert result.exit_code == 0, result.output
    assert "traffic: 900 rows (300 bootstrap), change points none known" in result.stdout
    page = (out / "summary.md").read_text()
    assert "replay of traffic.csv — classification, 900 rows" in page
    assert "(label delay 10 min)" in page  # the median of the file's label_time - event_time (5 to 15 minutes)
    value = float(re.search(r"\| prequential accuracy \(higher is better\) \| (0\.\d{4}) \|", page).group(1))

    # One finished run in the policy's own MLflow, in <experiment>/decisions, with the numbers and both files.
    client = MlflowClient(f"sqlite:///{tmp_path / 'policy' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("driftpilot/bt-model/decisions")
    (logged,) = client.search_runs([experiment.experiment_id])
    assert logged.info.status == "FINISHED"
    assert logged.data.metrics["prequential_accuracy"] == pytest.approx(value, abs=5e-5)
    assert logged.data.params["stream"] == str(data) and logged.data.params["rows"] == "900"
    assert logged.data.tags["driftpilot.backtest"] == "traffic"
    assert sorted(a.path for a in client.list_artifacts(logged.info.run_id)) == ["metric.png", "summary.md"]
    assert f"logged to MLflow sqlite:///{tmp_path / 'policy'}/mlflow.db: run {logged.info.run_id}" in result.stdout


@pytest.mark.slow  # a real replay with a race, ~10-40 s
def test_a_race_policy_ends_the_table_with_its_racers(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "policy", race=True)
    out = tmp_path / "out"
    result = run("--config", str(policy), "--stream", "sea-abrupt", "--rows", "1000", "--seed", "1",
                 "--bootstrap-rows", "300", "--out", str(out))
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    table_end = next(i for i, line in enumerate(lines) if line.startswith("wrote "))
    decisions = [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]
    switches = [d for d in decisions if d["trigger"] == "race" and d["action"] in ("promote", "rollback")]
    start = next(i for i, line in enumerate(lines) if line.startswith("  race switches"))
    assert lines[start].startswith(f"  race switches          {len(switches)}")
    assert "promotions             0 by the gate (the race's switches are below)" in result.stdout
    # One line per racer, the same numbers as the page's racers table, and nothing after them in the table.
    page = (out / "summary.md").read_text()
    table = re.findall(r"^\| ([\w.-]+) \| ([\d,]+) \| [\d,]+–[\d,]+ \| (0\.\d{4}) \| ([\d,]+) \| (\d+) \|$", page,
                       re.MULTILINE)
    racers = lines[start + 2:table_end]
    assert len(racers) == len(table) >= 3
    by_name = {line.split()[0]: line for line in racers}
    for name, rows, value, served, promoted in table:
        line = by_name[name]
        assert f"{value} on {rows} rows" in line
        assert (f"served {served}" in line) == (served != "0")
        assert (f"promoted {promoted}×" in line) == (promoted != "0")
    served = sum(int(s.replace(",", "")) for _, _, _, s, _ in table)
    assert served == 1000 - 300


def _csv(tmp_path: Path, change=lambda t: t) -> str:
    path = tmp_path / "user.csv"
    change(user_table(400)).to_csv(path, index=False)
    return str(path)


def _early_label(table):
    table.loc[7, "label_time"] = "2026-01-01T00:00:00Z"
    return table


# case -> (arguments after --config, what the one line says). Every case fails before anything is replayed.
BAD_INPUT = {
    "unknown scenario": (lambda tmp: ["--stream", "sea-sideways"],
                         "--stream 'sea-sideways' is neither a scenario (sea-abrupt, "),
    "missing column": (lambda tmp: ["--stream", _csv(tmp, lambda t: t.drop(columns=["x2"]))],
                       "required feature column(s) ['x2'] are missing"),
    "no label times": (lambda tmp: ["--stream", _csv(tmp, lambda t: t.drop(columns=["label_time"]))],
                       "no 'label_time' column; add one (when each label arrived) or pass --label-delay"),
    "label before its prediction": (lambda tmp: ["--stream", _csv(tmp, _early_label)],
                                    "row 7 has its label_time 2026-01-01T00:00:00+00:00 before its event_time"),
    "not a number": (lambda tmp: ["--stream", _csv(tmp, lambda t: t.astype({"x1": object}).assign(
        x1=lambda f: f["x1"].where(f.index != 3, "abc")))], "column 'x1' must be numeric; row 3 has 'abc'"),
    "classification policy, regression stream": (
        lambda tmp: ["--stream", "friedman-gradual", "--rows", "300"],
        "a classification policy cannot replay stream 'friedman-gradual', which is a regression stream"),
    "bad label delay": (lambda tmp: ["--stream", "sea-abrupt", "--label-delay", "soon"],
                        "--label-delay 'soon' is not a duration; write e.g. 90s, 10m, 12h or 1d"),
    "label delay for elec2": (lambda tmp: ["--stream", "elec2", "--label-delay", "1h"],
                              "--label-delay does not apply to elec2"),
    "nothing left to replay": (lambda tmp: ["--stream", "sea-abrupt", "--rows", "300", "--bootstrap-rows", "400"],
                               "--bootstrap-rows 400 leaves nothing to replay: the stream has 300 rows"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, case: str) -> None:
    policy = write_policy(tmp_path / "policy")
    arguments, expected = BAD_INPUT[case]
    out = tmp_path / "out"
    result = run("--config", str(policy), *arguments(tmp_path), "--out", str(out))
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit) and "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert expected in lines[0], lines[0]
    assert not out.exists()


def test_a_regression_policy_does_not_fit_a_classification_scenario(tmp_path: Path) -> None:
    result = run("--config", str(EXAMPLE_REGRESSION), "--stream", "sea-abrupt", "--rows", "300",
                 "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert result.stderr == (f"error: {EXAMPLE_REGRESSION}: a regression policy cannot replay stream 'sea-abrupt', "
                             "which is a classification stream; pick a regression stream or a classification "
                             "policy\n")


def test_an_out_folder_holding_other_files_is_never_cleared(tmp_path: Path) -> None:
    policy = write_policy(tmp_path / "policy")
    keep = tmp_path / "out" / "work" / "notes.txt"
    keep.parent.mkdir(parents=True)
    keep.write_text("mine")
    result = run("--config", str(policy), "--stream", "sea-abrupt", "--rows", "300", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "holds files that are not a backtest's (notes.txt); pass another --out folder" in result.stderr
    assert keep.read_text() == "mine"


def test_the_terminal_sees_one_line_for_an_unknown_stream(tmp_path: Path) -> None:
    """Once as a real process: exactly what a person's terminal shows."""
    policy = write_policy(tmp_path / "policy")
    done = subprocess.run([str(DRIFTPILOT), "backtest", "--config", str(policy), "--stream", "nowhere.csv"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("error: --stream 'nowhere.csv' is neither a scenario") and \
        done.stderr.count("\n") == 1

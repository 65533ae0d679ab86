"""The model-lifecycle commands end to end through the CLI: retrain (through the gate), decisions, status, rollback,\npromote, report drift, learn."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from controller.cli.main import main
from controller.clock import SystemClock
from controller.policy_loader import load_policy
from controller.store import EventStore, LabelRecord, PredictionRecord
from tests.conftest import T0
from tests.toy import toy_table, write_policy


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--log-level", "WARNING", *args])
    return result.exit_code, result.output


def test_retrain_promote_rollback_report_from_the_command_line(tmp_path: Path) -> None:
    policy = write_policy(tmp_path, tmp_path, "cli-toy", "sklearn.linear_model.SGDClassifier",
                          "{loss: log_loss, random_state: 0}")
    policy.write_text(policy.read_text() + "gate: {min_rows: 50}\n")
    data = tmp_path / "train.csv"
    toy_table(400).to_csv(data, index=False)
    assert run("bootstrap", "--config", str(policy), "--data", str(data))[0] == 0

    # Traffic of a new concept, labeled: written through the store as the API would.
    config = load_policy(policy, environ={}).config
    # The CLI runs on the system clock, so the labels must arrive after the bootstrap on that clock too.
    store = EventStore.from_url(config.storage.url, SystemClock())
    drifted = toy_table(300, seed=3, concept="b")
    store.add_predictions(config.model, [PredictionRecord({"x1": r.x1, "x2": r.x2}, T0, prediction=0,
                                                          prediction_id=f"n{i}", model_version="1")
                                         for i, r in enumerate(drifted.itertuples())])
    store.add_labels(config.model, [LabelRecord(f"n{i}", int(y)) for i, y in enumerate(drifted.y)])

    # A manual retrain is one decision through the loop: the challenger, then the gate, then the promotion.
    code, out = run("retrain", "--config", str(policy), "--strategy", "finetune")
    assert code == 0, out
    assert "manual via rule manual -> finetune" in out and "gate promotes v2" in out, out
    assert "v2 is champion (previous v1)" in out

    code, out = run("decisions", "--config", str(policy), "--json")
    decision = json.loads(out.splitlines()[0])
    assert (decision["action"], decision["trigger"], decision["strategy"], decision["verdict"], decision["status"]) == \
        ("retrain", "manual", "finetune", "promote", "done")
    code, out = run("status", "--config", str(policy))
    assert code == 0 and out.startswith("model cli-toy: champion v2, previous v1"), out

    code, out = run("rollback", "--config", str(policy))
    assert code == 0 and out.startswith("version 1 is champion again (was version 2; decision rollback-"), out
    code, out = run("rollback", "--config", str(policy))
    assert code == 1 and "driftpilot promote --config FILE --version V" in out and "Traceback" not in out

    # Back to v2, by hand, through the gate on the rows neither version trained on.
    code, out = run("promote", "--config", str(policy), "--version", "2")
    assert code == 0 and "gate: promote" in out and "version 2 is champion; previous is version 1" in out, out
    code, out = run("rollback", "--config", str(policy))
    assert code == 0, out

    report = tmp_path / "drift.html"
    code, out = run("report", "drift", "--config", str(policy), "--output", str(report))
    assert code == 0, out
    signals = json.loads(out)
    assert signals["champion_version"] == "1" and report.is_file()
    assert set(signals["signals"]) == {"data_drift", "concept_drift", "performance"}

    code, out = run("learn", "--config", str(policy))
    assert code == 1 and "incremental learning continues a River model" in out

"""The cost trigger (controller/loop/costs.py): the staleness ledger, its reference, the rule, the policy section,
and the controller retraining when staleness outgrows a retrain's cost — with the numbers it weighed recorded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from controller.clock import ManualClock
from controller.errors import ConfigError
from controller.loop import costs
from controller.loop.config import CostsConfig
from controller.loop.state import LoopState
from controller.policy_loader import load_policy
from controller.store.control import DecisionLog
from tests.loop.loop_kit import toy_model
from tests.toy import toy_table, write_policy

COST_RULE = """\
  - name: when-it-pays
    when: {cost: pays}
    do: {strategy: stateless}
"""


def test_the_ledger_is_a_one_sided_cusum_of_loss_above_the_reference() -> None:
    ledger = costs.StalenessLedger()
    config = CostsConfig(retrain=5, error=1)
    # Better than the reference: no credit is banked below zero.
    first = costs.signal(ledger, config, np.array([0.0] * 10), (0.2, "holdout"))
    assert (first.excess_loss, first.pays, first.rows) == (0.0, False, 10)
    # 10 errors on 10 rows against a 0.2 reference: 8 errors of staleness >= a retrain's 5.
    second = costs.signal(ledger, config, np.ones(10), (0.2, "holdout"))
    assert second.excess_loss == pytest.approx(8.0)
    assert second.pays and second.staleness_cost == pytest.approx(8.0) and second.retrain_cost == 5
    assert second.mean_loss == pytest.approx(0.5) and second.reference_source == "holdout"
    ledger.restart()
    assert (ledger.excess, ledger.rows, ledger.loss) == (0.0, 0, 0.0)


def test_error_cost_and_compute_seconds_enter_the_weighing() -> None:
    ledger = costs.StalenessLedger(retrain_cpu_seconds=10.0)
    config = CostsConfig(retrain=5, error=2, compute_second=0.5)   # a retrain: 5 + 0.5 x 10 s = 10
    out = costs.signal(ledger, config, np.ones(6), (0.0, "holdout"))   # 6 errors x 2 = 12 >= 10
    assert out.retrain_cost == pytest.approx(10.0) and out.staleness_cost == pytest.approx(12.0) and out.pays
    out = costs.signal(costs.StalenessLedger(retrain_cpu_seconds=10.0), config, np.ones(4), (0.0, "holdout"))
    assert not out.pays  # 8 < 10


def test_no_reference_means_no_verdict_and_rows_without_a_prediction_are_left_out() -> None:
    ledger = costs.StalenessLedger()
    out = costs.signal(ledger, CostsConfig(retrain=1), np.ones(5), None)
    assert not out.enabled and not out.pays and ledger.rows == 0
    losses = costs.row_losses("classification", [1, 0, 1], [1, 1, None])
    assert np.isnan(losses[2]) and losses[:2].tolist() == [0.0, 1.0]
    out = costs.signal(ledger, CostsConfig(retrain=1), losses, (0.0, "holdout"))
    assert out.rows == 2 and out.excess_loss == pytest.approx(1.0)
    assert costs.row_losses("regression", [1.0, 3.0], [1.5, 1.0]).tolist() == [0.5, 2.0]


def test_the_reference_is_the_best_other_racer_with_enough_rows_else_the_holdout() -> None:
    standings = [{"racer": "v3", "champion": True, "rolling": 0.95, "rolling_rows": 900},
                 {"racer": "arf", "champion": False, "rolling": 0.90, "rolling_rows": 900},
                 {"racer": "hat", "champion": False, "rolling": 0.92, "rolling_rows": 50}]
    assert costs.race_reference("classification", "accuracy", standings, 200) == (pytest.approx(0.10), "arf")
    assert costs.race_reference("classification", "log_loss", standings, 200) is None  # not an error rate
    assert costs.race_reference("classification", "accuracy", standings[:1], 200) is None
    assert costs.holdout_reference("classification", {"accuracy": 0.8}) == pytest.approx(0.2)
    assert costs.holdout_reference("regression", {"mae": 1.5}) == 1.5
    assert costs.holdout_reference("regression", {"rmse": 1.5}) is None


def test_every_trigger_a_rule_can_name_is_a_lineage_trigger() -> None:
    # A version trained by a rule records its trigger in its lineage; one the record refuses fails the training.
    from controller.loop.config import TRIGGER_KINDS
    from lineage.record import TRIGGERS

    assert set(TRIGGER_KINDS.values()) <= set(TRIGGERS)


def test_the_ledger_survives_the_loop_state_round_trip() -> None:
    state = LoopState()
    state.staleness.excess, state.staleness.rows, state.staleness.retrain_cpu_seconds = 3.5, 40, 1.25
    back = LoopState.from_json(state.to_json())
    assert back.staleness == state.staleness
    assert LoopState.from_json(b'{"champion": "1"}').staleness == costs.StalenessLedger()  # an older state file


def test_a_cost_rule_without_costs_is_refused_at_load(tmp_path, model_name) -> None:
    path = write_policy(tmp_path, tmp_path / "mlruns", model_name)
    path.write_text(path.read_text() + "rules:\n" + COST_RULE)
    with pytest.raises(ConfigError, match="add a `costs:` section"):
        load_policy(path, environ={})
    path.write_text(path.read_text() + "costs: {retrain: 0}\n")
    with pytest.raises(ConfigError, match="retrain"):
        load_policy(path, environ={})


@pytest.fixture(scope="module")
def mlflow_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("mlflow")


def test_the_controller_retrains_once_staleness_costs_more_than_a_retrain(tmp_path, mlflow_dir,
                                                                         clock: ManualClock, model_name) -> None:
    toy = toy_model(tmp_path, mlflow_dir, model_name, clock, rules=COST_RULE, extra="costs: {retrain: 30}\n")
    controller = toy.controller()
    # The concept the champion learned: its served errors stay near its holdout's, staleness stays below 30 errors.
    quiet = toy.traffic(toy_table(300, seed=5), controller=controller)
    assert [r.proposal for r in quiet] == [None, None, None], [r.signals.get("cost") for r in quiet]
    # (The first tick meets the champion: its counters start there, the ledger with the rows that follow.)
    assert all(r.signals["cost"]["staleness_cost"] < 30 for r in quiet[1:])
    # A new concept: about half the rows are served wrong, so 30 errors above the reference accrue within a batch or
    # two, and the cost rule retrains.
    reports = toy.traffic(toy_table(300, seed=6, concept="b"), controller=controller)
    fired = [r for r in reports if r.proposal]
    assert fired and fired[0].proposal["trigger"] == "cost", [r.signals.get("cost") for r in reports]
    retrains = [d for d in DecisionLog(toy.store, clock).list(model_name) if d.action == "retrain"]
    assert retrains[0].status == "done" and retrains[0].verdict == "promote", retrains[0].error
    # The version it trained carries the trigger in its lineage (and in the MLflow UI).
    assert toy.registry.get(model_name, retrains[0].challenger_version).record.trigger == "cost"
    weighed = retrains[0].evidence["rule_evidence"]["cost"]
    assert weighed["pays"] and weighed["staleness_cost"] >= weighed["retrain_cost"] == 30
    assert weighed["reference_source"] == "holdout" and weighed["mean_loss"] > weighed["reference"] + 0.2
    # The retrain paid the staleness: the ledger starts again, so the next tick counts only its own batch.
    following = reports[reports.index(fired[0]) + 1].signals["cost"]
    assert following["rows"] <= 100 < weighed["rows"]

"""Cost-aware retraining through a real replay: SEA with an abrupt change (1,200 rows, seed 1), the batch champion
raced by River's logistic regression and a no-change classifier, and one automatic rule, `when: {cost: pays}`. The
race's margin is set out of reach, so the better logistic regression never takes the seat: the champion keeps paying
for its staleness against it. Each retrain was weighed against the race's best other racer and paid for itself; the
summary's total cost is the served errors plus the retrains at each price; a retrain too dear to pay is never
started. (With a reachable margin the race hands the seat to the learner and no retrain pays: nothing beats it.)"""

from __future__ import annotations

import pytest

from controller.backtest.costs import BENCHMARK_RATIOS
from controller.backtest.replay import replay
from controller.backtest.report import markdown, summarize
from controller.backtest.streams import scenario
from controller.cli.backtest_commands import _table
from controller.policy_loader import load_policy
from tests.backtest.conftest import write_policy

ROWS, BOOT, EVERY = 1200, 300, 20
COST_RULES = """rules:
  - name: when-it-pays
    when: {{cost: pays}}
    do: {{strategy: stateless, window: {{last_rows: 400}}}}
costs: {{retrain: {retrain}}}
"""


def _replay(folder, retrain: float):
    path = write_policy(folder, race=True)
    text = path.read_text()
    start, end = text.index("rules:\n"), text.index("gate:")
    text = text[:start] + COST_RULES.format(retrain=retrain) + text[end:]
    path.write_text(text.replace("  past_versions: 0\n", "  past_versions: 0\n  margin: {absolute: 0.3}\n"))
    loaded = load_policy(path)
    stream = scenario("sea-abrupt", rows=ROWS, seed=1)
    result = replay(loaded, stream, folder / "work", bootstrap_rows=BOOT, tick_every=EVERY)
    return loaded, stream, result


@pytest.fixture(scope="module")
def cheap(tmp_path_factory: pytest.TempPathFactory):
    loaded, stream, result = _replay(tmp_path_factory.mktemp("cheap"), retrain=15)
    return loaded, result, summarize(result, stream, costs=loaded.config.costs)


@pytest.mark.slow  # one real replay (module fixture), ~10-40 s
def test_every_retrain_paid_for_itself_against_the_race(cheap) -> None:
    _, result, _ = cheap
    retrains = [d for d in result.decisions if d["action"] == "retrain"]
    assert retrains, "the abrupt change should make staleness cost more than 15 errors at least once"
    for d in retrains:
        weighed = d["evidence"]["rule_evidence"]["cost"]
        assert d["trigger"] == "cost" and weighed["pays"]
        assert d["status"] == "done" and d["evidence"]["challengers"], d.get("error")  # it trained and registered
        assert weighed["staleness_cost"] >= weighed["retrain_cost"] == 15
        assert weighed["excess_loss"] == pytest.approx(weighed["staleness_cost"])  # costs.error is 1
    # The race's standings were the reference: a racer that learns every label is what a fresh model looks like.
    assert any(d["evidence"]["rule_evidence"]["cost"]["reference_source"].startswith("race:") for d in retrains)


@pytest.mark.slow
def test_the_summary_totals_the_served_errors_and_the_retrains_at_each_price(cheap) -> None:
    loaded, result, summary = cheap
    costs = summary["costs"]
    errors = float((1 - result.served["score"]).sum())
    retrains = sum(d["action"] == "retrain" and d["status"] != "skipped" for d in result.decisions)
    assert costs["loss"] == pytest.approx(errors) and costs["retrains"] == retrains
    assert [(r["name"], r["total"]) for r in costs["ratios"]] == [
        (name, pytest.approx(errors + price * retrains)) for name, price in BENCHMARK_RATIOS]
    assert costs["policy"]["total"] == pytest.approx(errors + 15 * retrains + 0 * result.controller_seconds)
    page = markdown(summary, plot_name=None)
    assert "## Cost" in page and f"| the policy's | 15 x error cost 1 | {errors:,.1f} |" in page
    line = next(x for x in _table(summary).splitlines() if x.strip().startswith("total cost"))
    assert f"at the policy's costs {errors + 15 * retrains:,.0f}" in line
    assert f"expensive (1000/retrain) {errors + 1000 * retrains:,.0f}" in line


@pytest.mark.slow  # a second replay, ~10-40 s
def test_a_retrain_too_dear_to_pay_is_never_started(tmp_path) -> None:
    _, _, result = _replay(tmp_path, retrain=1e9)
    assert not [d for d in result.decisions if d["action"] == "retrain"]

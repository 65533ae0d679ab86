"""A backtest's total cost: errors (or summed loss) + retrains x a retrain's cost, and the compute it took.

Shown at the policy's own ``costs:`` and at the three ratios of the decision-quality benchmark
(:data:`BENCHMARK_RATIOS`, one error = 1), so two policies can be compared at a price a user recognises.
Only ``retrain`` decisions count as retrains (each trains challengers from a window); the incremental updates of a
River champion (``learn``) are counted apart and cost only their compute.
"""

from __future__ import annotations

from typing import Any

from controller.backtest.result import BacktestResult
from controller.loop.config import CostsConfig
from controller.loop.costs import total_cost

#: (name, a retrain's cost in errors) — cheap, middle and expensive retrains (docs/benchmarks-costs.md).
BENCHMARK_RATIOS: tuple[tuple[str, float], ...] = (("cheap", 10.0), ("middle", 100.0), ("expensive", 1000.0))


def served_loss(result: BacktestResult) -> float:
    """Errors (classification: rows served wrong) or summed absolute error (regression) over the served rows."""
    scores = result.served["score"]
    return float((1.0 - scores).sum() if result.spec.task == "classification" else scores.sum())


def retrain_count(result: BacktestResult) -> int:
    """Retrain decisions that trained (a skipped one, which waited for rows and gave up, trained nothing)."""
    return sum(d["action"] == "retrain" and d["status"] != "skipped" for d in result.decisions)


def cost_summary(result: BacktestResult, costs: CostsConfig | None) -> dict[str, Any]:
    """The numbers of the page's "Cost" section (JSON-safe)."""
    loss = served_loss(result)
    retrains = retrain_count(result)
    ratios = [{"name": name, "retrain": retrain,
               "total": round(total_cost(loss, retrains, CostsConfig(retrain=retrain)), 3)}
              for name, retrain in BENCHMARK_RATIOS]
    policy = None
    if costs is not None:
        policy = {"retrain": costs.retrain, "error": costs.error, "compute_second": costs.compute_second,
                  "total": round(total_cost(loss, retrains, costs, result.controller_seconds), 3)}
    return {"loss": round(loss, 3), "unit": "errors" if result.spec.task == "classification" else "absolute error",
            "retrains": retrains, "incremental_updates": sum(d["action"] == "learn" for d in result.decisions),
            "compute_seconds": round(result.controller_seconds, 3), "policy": policy, "ratios": ratios}


def cost_lines(costs: dict[str, Any]) -> list[str]:
    """The "Cost" section of the Markdown page."""
    lines = ["## Cost", "",
             (f"Total cost = {costs['unit']} + retrains x a retrain's cost ({costs['retrains']} retrains"
              + (f", {costs['incremental_updates']} incremental updates, which cost only compute"
                 if costs["incremental_updates"] else "")
              + f"; {costs['compute_seconds']:.1f} compute seconds inside the controller)."), "",
             f"| costs | a retrain costs | {costs['unit']} | total cost |", "|---|---|---|---|"]
    policy = costs.get("policy")
    if policy is not None:
        extra = (f" + {policy['compute_second']:g} per compute second" if policy["compute_second"] else "")
        lines.append(f"| the policy's | {policy['retrain']:g} x error cost {policy['error']:g}{extra} | "
                     f"{costs['loss']:,.1f} | {policy['total']:,.1f} |")
    for ratio in costs["ratios"]:
        lines.append(f"| benchmark: {ratio['name']} | {ratio['retrain']:g} | {costs['loss']:,.1f} | "
                     f"{ratio['total']:,.1f} |")
    return [*lines, ""]

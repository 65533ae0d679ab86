"""Cost-aware retraining: retrain when the errors a stale champion cost since the last retrain exceed a retrain's cost.

CARA's cumulative rule (Mahadevan & Mathioudakis, "Cost-aware retraining for machine learning", 2024): the
*staleness cost* accumulated since the last retrain — the champion's loss above the loss a fresh model would have on
the same rows, times the cost of one error — is weighed against the cost of one retrain; when it is larger, the
retrain pays. Here:

* the champion's loss is what the service paid: the served predictions' per-row loss on the labels that matured
  since the last tick (1/0 errors for classification, the absolute error for regression);
* the reference — the loss a fresh model would have — is the best other racer's rolling loss when the race has one
  on the same metric (a model that already learns the newest rows), else the champion's own holdout loss (what it
  scored when it was trained);
* the excess is accumulated as a one-sided CUSUM, ``S = max(0, S + sum(loss - reference))``: rows where the champion
  does better than the reference pay back earlier excess, and a champion that is good for long does not bank credit
  below zero;
* a retrain costs ``costs.retrain`` (in errors, or units of loss) plus ``costs.compute_second`` x the CPU seconds the
  last retrain took; the ledger starts again at every retrain and at every new champion.

Pure logic: :class:`StalenessLedger` is stored in the loop state, :func:`signal` makes the per-tick
:class:`CostSignal` the ``cost`` trigger reads (``when: {cost: pays}``), with every number it weighed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from controller.loop.config import CostsConfig

#: Race metrics whose rolling value converts to the cost's per-row loss (1/0 error; absolute error).
COMPARABLE_RACE_METRICS = {"classification": "accuracy", "regression": "mae"}


@dataclass
class StalenessLedger:
    """What the cost trigger remembers between ticks (JSON in the loop state)."""

    excess: float = 0.0                 # the CUSUM of (served loss - reference), in units of loss
    rows: int = 0                       # matured rows accumulated since the ledger started
    loss: float = 0.0                   # their summed served loss
    retrain_cpu_seconds: float | None = None   # CPU seconds the last retrain took (for costs.compute_second)

    def restart(self) -> None:
        """A retrain started, or a new champion took the seat: staleness starts from zero."""
        self.excess, self.rows, self.loss = 0.0, 0, 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, body: Mapping[str, Any] | None) -> StalenessLedger:
        return cls(**{k: v for k, v in (body or {}).items() if k in cls.__dataclass_fields__})


@dataclass(frozen=True)
class CostSignal:
    """One tick's weighing: does a retrain pay now?"""

    enabled: bool
    pays: bool
    staleness_cost: float              # excess x costs.error
    retrain_cost: float                # costs.retrain + costs.compute_second x retrain CPU seconds
    excess_loss: float
    rows: int                          # matured rows since the ledger started
    mean_loss: float | None            # the champion's served loss over them
    reference: float | None            # the loss a fresh model is taken to have
    reference_source: str              # race:<racer> | holdout | none
    new_rows: int                      # rows this tick added

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def row_losses(task: str, labels: Sequence[Any], predictions: Sequence[Any]) -> np.ndarray:
    """Per-row loss of served predictions: 1/0 errors (classification) or absolute errors (regression). A row
    without a prediction counts as no loss information and is left out (NaN)."""
    if task == "classification":
        out = np.array([np.nan if p is None else float(str(p) != str(y)) for y, p in zip(labels, predictions,
                                                                                          strict=True)])
    else:
        predicted = np.array([np.nan if p is None else float(p) for p in predictions], dtype=float)
        out = np.abs(predicted - np.asarray(labels, dtype=float))
    return out


def holdout_reference(task: str, holdout_metrics: Mapping[str, float] | None) -> float | None:
    """The champion's own reference loss: its holdout error rate (1 - accuracy) or MAE; None when not recorded."""
    metrics = holdout_metrics or {}
    if task == "classification":
        value = metrics.get("accuracy")
        return None if value is None else 1.0 - float(value)
    value = metrics.get("mae")
    return None if value is None else float(value)


def race_reference(task: str, metric: str, standings: Sequence[Mapping[str, Any]],
                   min_rows: int) -> tuple[float, str] | None:
    """The best other racer's rolling loss, when the race scores on a metric comparable to the cost's loss and
    that racer has at least ``min_rows`` rolling rows."""
    if COMPARABLE_RACE_METRICS.get(task) != metric:
        return None
    losses = [((1.0 - r["rolling"]) if task == "classification" else r["rolling"], r["racer"])
              for r in standings if not r.get("champion") and r.get("rolling") is not None
              and r.get("rolling_rows", 0) >= min_rows]
    return min(losses) if losses else None


def signal(ledger: StalenessLedger, costs: CostsConfig, losses: np.ndarray,
           reference: tuple[float, str] | None) -> CostSignal:
    """Add this tick's served losses to the ledger (in place) and weigh staleness against a retrain."""
    seen = losses[~np.isnan(losses)]
    if reference is not None:
        ledger.excess = max(0.0, ledger.excess + float(np.sum(seen - reference[0])))
        ledger.rows += len(seen)
        ledger.loss += float(np.sum(seen))
    staleness = ledger.excess * costs.error
    retrain_cost = costs.retrain + costs.compute_second * (ledger.retrain_cpu_seconds or 0.0)
    return CostSignal(enabled=reference is not None, pays=reference is not None and staleness >= retrain_cost,
                      staleness_cost=staleness, retrain_cost=retrain_cost, excess_loss=ledger.excess,
                      rows=ledger.rows, mean_loss=ledger.loss / ledger.rows if ledger.rows else None,
                      reference=reference[0] if reference is not None else None,
                      reference_source=reference[1] if reference is not None else "none", new_rows=len(seen))


def total_cost(errors: float, retrains: int, costs: CostsConfig, cpu_seconds: float = 0.0) -> float:
    """Errors (or summed loss) x costs.error + retrains x costs.retrain + compute seconds x costs.compute_second."""
    return errors * costs.error + retrains * costs.retrain + cpu_seconds * costs.compute_second

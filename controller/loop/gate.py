"""The promotion gate: is the challenger really better than the champion on the same matured rows?

Pure statistics, no I/O: the caller scores the same matured rows (which neither model trained on) with both models
and hands them over as a :class:`PairedSample`; :meth:`PromotionGate.judge` returns a :class:`GateVerdict` with
every number behind it. The rules, in order:

1. fewer than ``min_rows`` paired rows -> ``hold`` (wait for labels), or ``reject`` once ``held_for > max_hold``;
2. the gate metric is undefined on these rows -> ``hold`` when more rows can fix it (one class only among the
   labels for ``roc_auc``, constant labels for ``r2``), ``reject`` when they cannot (no class probabilities for
   ``roc_auc``/``log_loss``, NaN/inf regression predictions);
3. the challenger misses the absolute ``floor`` -> ``reject``;
4. the improvement ``delta`` (positive = challenger better) is not > 0, or below
   ``max(margin.absolute, margin.relative * |champion|)`` -> ``reject`` (so an equal or worse challenger always
   stops here, whatever the test would say);
5. the one-sided paired test gives ``p >= alpha`` -> ``reject`` ("gain not significant");
6. otherwise ``promote``.

With ``shadow_rows`` set, :meth:`PromotionGate.confirm` checks a ``promote`` once more on the rows that matured after
the decision started (the shadow rows: no training window or holdout could contain them): fewer than
``shadow_rows`` -> ``hold`` (``reject`` after ``max_hold``); the challenger worse than the champion on them ->
``reject``; otherwise the ``promote`` stands. It asks for no significance on the shadow rows, only that the holdout's
gain does not turn into a loss on rows that came later (on a fast-changing stream a model fitted to a recent window
can win its holdout and lose on what follows).

With ``incremental: not_worse``, :meth:`PromotionGate.judge_checkpoint` promotes a checkpoint of the champion's own
River learner whose gain is below the margin or not significant, as long as it is not worse (rules 1–3 still apply):
it is the champion continued on newer labels, and a River champion that must prove significance at every checkpoint
stops learning in service.

The paired test does not depend on the metric. Classification: exact one-sided McNemar on per-row correctness
(``b`` = champion right and challenger wrong, ``c`` = the reverse; ``p = P(Binomial(b + c, 1/2) >= c)``).
Regression: a seeded paired bootstrap of the mean per-row loss improvement (squared loss for ``rmse`` and ``r2``,
absolute loss for ``mae``), ``p = (#{resampled mean <= 0} + 1) / (B + 1)``. So a ``roc_auc`` or ``log_loss`` gate
promotes only when the challenger is better on that metric *and* significantly more often right.

Metrics: every one of the task, computed by :mod:`monitors.metrics` with the trainers' and the performance monitor's
rules (the positive class, "1" vs 1, probability clipping, when a metric is undefined). Both models are scored over
one set of classes (the probability columns, the labels and both models' predictions), so both are binary or both
not, with one positive class; a macro f1 averages over the classes in the labels or in that model's own predictions
(scikit-learn's ``average="macro"``). In ``GateVerdict`` an undefined
metric is NaN in ``champion_metrics`` / ``challenger_metrics`` and None as ``champion_value`` / ``challenger_value``
(``to_dict()`` writes None for both).

A misconfiguration (a metric that does not fit the task, a ``positive_class`` that is not a class of the rows, binary
labels that name no positive class for an f1 / roc_auc gate) raises ``ValueError``: waiting cannot fix it, a person
must.

>>> import numpy as np
>>> labels = np.ones(30, dtype=int)
>>> champion = labels.copy(); champion[:10] = 0        # wrong on rows 0-9
>>> challenger = labels.copy(); challenger[10:12] = 0  # wrong on rows 10-11: b = 2, c = 10
>>> gate = PromotionGate(GateConfig(min_rows=20), "classification")
>>> verdict = gate.judge(PairedSample(labels, champion, challenger))
>>> verdict.verdict, verdict.test, verdict.details["b"], verdict.details["c"], round(verdict.p_value * 4096)
('promote', 'mcnemar_exact', 2, 10, 79)
>>> verdict.reason
'challenger accuracy 0.9333 vs champion 0.6667 on 30 rows (+0.2667 >= margin 0), McNemar p=0.0193 < alpha 0.05'

With a ``race:`` section this gate only filters the challengers a retrain produces (a challenger worse than the
champion on its holdout does not join the race); which model serves is decided by the race's sequential test on rows
scored after the challenger joined: a betting e-process on the paired per-row differences, promote at evidence >= K/alpha,
roll back on the reverse — its formulas and guarantee are in :mod:`controller.loop.sequential`, its use in
:mod:`controller.race.race`.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd

from controller.loop.gate_config import GateConfig, Margin
from controller.loop.gate_values import GateVerdict, PairedSample, Verdict
from controller.loop.significance import mcnemar_exact, paired_bootstrap
from monitors.config import format_duration
from monitors.metrics import (
    HIGHER_IS_BETTER,
    Metrics,
    class_list,
    classification_metrics,
    regression_metrics,
    row_scores,
)

# The gate's inputs, output, configuration and tests are importable from here too: its public face in one place.
__all__ = ["GateConfig", "GateVerdict", "Margin", "PairedSample", "PromotionGate", "mcnemar_exact", "paired_bootstrap"]

Task = Literal["classification", "regression"]


def _num(x: float, signed: bool = False) -> str:
    sign = "+" if signed else ""
    return f"{x:{sign}.4g}" if abs(x) < 1e4 else f"{x:{sign},.0f}"

class PromotionGate:
    """Judges a challenger against the champion on a :class:`PairedSample`; see the module docstring."""

    def __init__(self, config: GateConfig, task: Task) -> None:
        self.config = config
        self.task = task

    @property
    def metric(self) -> str:
        return self.config.metric_for(self.task)

    @property
    def higher_is_better(self) -> bool:
        return self.metric in HIGHER_IS_BETTER

    def judge_checkpoint(self, sample: PairedSample) -> GateVerdict:
        """A checkpoint of the champion's own incremental learner: :meth:`judge`, except that with ``incremental:
        not_worse`` a checkpoint that is not worse (and has min_rows rows and passes the floor) is promoted: it is
        the champion plus newer labels, not a rival that must prove itself."""
        verdict = self.judge(sample)
        cfg = self.config
        if cfg.incremental == "significant" or verdict.verdict != "reject" or verdict.delta is None:
            return verdict
        if verdict.delta < 0 or verdict.rows < cfg.min_rows:
            return verdict
        if cfg.floor is not None and not _passes(verdict.challenger_value, cfg.floor, self.higher_is_better):
            return verdict
        return dataclasses.replace(
            verdict, verdict="promote",
            reason=f"checkpoint {self.metric} {_num(verdict.challenger_value)} vs champion "
                   f"{_num(verdict.champion_value)} on {verdict.rows:,} rows ({_num(verdict.delta, True)}): not worse, "
                   f"and it continues the champion's own learner (gate.incremental: not_worse)")

    def confirm(self, verdict: GateVerdict, shadow: PairedSample, *,
                held_for: timedelta | None = None) -> GateVerdict:
        """A ``promote`` of :meth:`judge` checked on the shadow rows (see the module docstring); others unchanged."""
        cfg = self.config
        if verdict.verdict != "promote" or cfg.shadow_rows == 0:
            return verdict
        if shadow.rows < cfg.shadow_rows:
            why = f"{shadow.rows:,} of shadow_rows {cfg.shadow_rows:,} rows matured after the decision"
            if held_for is not None and held_for > cfg.max_hold:
                return dataclasses.replace(verdict, verdict="reject", reason=f"{verdict.reason}; but waited "
                                           f"{format_duration(cfg.max_hold)} and only {why}")
            return dataclasses.replace(verdict, verdict="hold", reason=f"{verdict.reason}; shadow: {why}, waiting")
        later = self.judge(shadow)
        details = {**verdict.details, "shadow": {"rows": shadow.rows, "champion": later.champion_value,
                                                 "challenger": later.challenger_value, "delta": later.delta,
                                                 "fingerprint": shadow.fingerprint}}
        if later.delta is None:
            return dataclasses.replace(verdict, verdict="hold", details=details,
                                       reason=f"{verdict.reason}; shadow: {verdict.metric} undefined on the "
                                              f"{shadow.rows:,} rows after the decision, waiting")
        on_shadow = (f"{verdict.metric} {_num(later.challenger_value)} vs champion {_num(later.champion_value)} on the "
                     f"{shadow.rows:,} rows after the decision")
        if later.delta < 0:
            return dataclasses.replace(verdict, verdict="reject", details=details,
                                       reason=f"{verdict.reason}; but worse on the shadow rows: {on_shadow}")
        return dataclasses.replace(verdict, details=details, reason=f"{verdict.reason}; shadow: {on_shadow}")

    def judge(self, sample: PairedSample, *, held_for: timedelta | None = None) -> GateVerdict:
        """The verdict on ``sample``; ``held_for`` is how long this challenger has waited so far (for max_hold)."""
        cfg, metric = self.config, self.metric
        draft = _Draft(self, sample, held_for)
        if sample.rows == 0:
            return draft.wait(f"no paired rows yet (min_rows {cfg.min_rows:,})")
        known = []
        if self.task == "classification":
            known = class_list(sample.labels, sample.champion, sample.challenger, classes=sample.classes)
            champion_right = row_scores("accuracy", sample.labels, sample.champion, classes=known) == 1.0
            challenger_right = row_scores("accuracy", sample.labels, sample.challenger, classes=known) == 1.0
            draft.details.update(b=int(np.count_nonzero(champion_right & ~challenger_right)),
                                 c=int(np.count_nonzero(challenger_right & ~champion_right)))
        champion = _metrics(self.task, sample, sample.champion, sample.champion_proba, known, cfg.positive_class)
        challenger = _metrics(self.task, sample, sample.challenger, sample.challenger_proba, known, cfg.positive_class)
        draft.scores(champion, challenger)

        undefined = [(who, scores.undefined[metric]) for who, scores in (("champion", champion),
                                                                         ("challenger", challenger))
                     if metric in scores.undefined]
        for who, why in undefined:
            if why.needs_setting:  # waiting cannot fix a missing or wrong setting, a person must
                raise ValueError(f"gate {metric} of the {who}: {why.why}")
        if sample.rows < cfg.min_rows:
            return draft.wait(f"{sample.rows:,} paired rows, fewer than min_rows {cfg.min_rows:,}")
        for who, why in undefined:
            reason = f"{metric} of the {who} is undefined on these {sample.rows:,} rows: {why.why}"
            return draft.wait(reason) if why.more_rows_help else draft.end("reject", reason)
        if cfg.floor is not None and not draft.passes_floor(cfg.floor):
            side = ">=" if self.higher_is_better else "<="
            return draft.end("reject", f"challenger {metric} {_num(draft.challenger_value)} on {sample.rows:,} rows "
                             f"misses the floor ({side} {_num(cfg.floor)})")
        if not (draft.delta > 0 and _at_least(draft.delta, draft.required_delta)):
            if draft.delta <= 0:
                why = f"({_num(draft.delta, True)}): no improvement, the challenger is not better"
            else:
                why = f"({_num(draft.delta, True)} < margin {_num(draft.required_delta)}): improvement below the margin"
            return draft.end("reject", f"{draft.comparison()} {why}")

        if self.task == "classification":
            return draft.tested("mcnemar_exact", "McNemar", mcnemar_exact(draft.details["b"], draft.details["c"]))
        # The per-row loss behind the metric: absolute error for mae, squared error for rmse and r2.
        loss, row_metric = ("absolute", "mae") if metric == "mae" else ("squared", "rmse")
        improvement = (row_scores(row_metric, sample.labels, sample.champion)
                       - row_scores(row_metric, sample.labels, sample.challenger))
        p, means = paired_bootstrap(improvement, cfg.bootstrap_resamples, cfg.seed)
        low, high = np.quantile(means, [0.025, 0.975])
        draft.details.update(loss=loss, mean_improvement=float(improvement.mean()), ci95=[float(low), float(high)],
                             resamples=cfg.bootstrap_resamples, seed=cfg.seed)
        return draft.tested("paired_bootstrap", "bootstrap", p)


class _Draft:
    """A verdict being built: the numbers known so far, then one of the endings."""

    def __init__(self, gate: PromotionGate, sample: PairedSample, held_for: timedelta | None) -> None:
        self.gate, self.sample, self.held_for = gate, sample, held_for
        self.details: dict[str, Any] = {}
        self.champion_metrics: dict[str, float] = {}
        self.challenger_metrics: dict[str, float] = {}
        self.champion_value: float | None = None
        self.challenger_value: float | None = None
        self.delta: float | None = None
        self.required_delta: float | None = None

    def scores(self, champion: Metrics, challenger: Metrics) -> None:
        self.champion_metrics, self.challenger_metrics = _with_nan(champion), _with_nan(challenger)
        ch, cl = champion[self.gate.metric], challenger[self.gate.metric]
        self.champion_value, self.challenger_value = ch, cl
        if ch is not None and cl is not None:
            self.delta = cl - ch if self.gate.higher_is_better else ch - cl
            self.required_delta = self.gate.config.margin.required(ch)

    def passes_floor(self, floor: float) -> bool:
        return _passes(self.challenger_value, floor, self.gate.higher_is_better)

    def comparison(self) -> str:
        return (f"challenger {self.gate.metric} {_num(self.challenger_value)} vs champion "
                f"{_num(self.champion_value)} on {self.sample.rows:,} rows")

    def wait(self, why: str) -> GateVerdict:
        """hold while more matured rows may settle it; reject once the challenger has waited longer than max_hold."""
        cfg = self.gate.config
        max_hold = format_duration(cfg.max_hold)
        if self.held_for is not None and self.held_for > cfg.max_hold:
            held = f" (held {_about(self.held_for)})"
            if self.sample.rows < cfg.min_rows:
                return self.end("reject", f"waited {max_hold} for {cfg.min_rows:,} matured rows, got "
                                f"{self.sample.rows:,}{held}")
            return self.end("reject", f"waited {max_hold}{held} and still {why}")
        held = f", held {_about(self.held_for)} of at most {max_hold}" if self.held_for else ""
        return self.end("hold", f"{why}: waiting for more matured labels{held}")

    def tested(self, test: Literal["mcnemar_exact", "paired_bootstrap"], name: str, p: float) -> GateVerdict:
        alpha = self.gate.config.alpha
        head = f"{self.comparison()} ({_num(self.delta, True)} >= margin {_num(self.required_delta)})"
        if p < alpha:
            return self.end("promote", f"{head}, {name} p={p:.3g} < alpha {alpha:g}", test, p)
        return self.end("reject", f"{head}, but the gain is not significant: {name} p={p:.3g} >= alpha {alpha:g}",
                        test, p)

    def end(self, verdict: Verdict, reason: str, test: str | None = None, p: float | None = None) -> GateVerdict:
        cfg = self.gate.config
        return GateVerdict(
            verdict=verdict, reason=reason, metric=self.gate.metric, higher_is_better=self.gate.higher_is_better,
            rows=self.sample.rows, min_rows=cfg.min_rows, champion_value=self.champion_value,
            challenger_value=self.challenger_value, delta=self.delta, required_delta=self.required_delta,
            p_value=p, alpha=cfg.alpha, test=test, champion_metrics=self.champion_metrics,
            challenger_metrics=self.challenger_metrics, details=self.details, fingerprint=self.sample.fingerprint,
        )


def _passes(value: float, floor: float, higher_is_better: bool) -> bool:
    return value >= floor if higher_is_better else value <= floor


def _about(value: timedelta) -> str:
    """A waiting time for people: ``"45s"``, ``"12.5m"``, ``"3h"``, ``"7d"`` (one decimal at most)."""
    seconds = value.total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{round(seconds / size, 1):g}{unit}"
    return f"{round(seconds, 1):g}s"


def _at_least(delta: float, required: float) -> bool:
    # Metric differences carry float error (0.75 - 0.70 = 0.04999999999999993): a gain of exactly the margin counts.
    return delta >= required or math.isclose(delta, required, rel_tol=1e-9, abs_tol=1e-12)


def _metrics(task: str, sample: PairedSample, predictions: np.ndarray, proba: np.ndarray | None, known: list,
             positive_class: Any) -> Metrics:
    """One model's metrics on the sample, by monitors.metrics (the trainers' and the monitor's rules)."""
    if task == "regression":
        return regression_metrics(sample.labels, predictions)
    # A DataFrame names its columns, so ``known`` can also carry the classes only the other model predicted: both
    # models are then scored over one set of classes (binary or not, the same positive class).
    frame = None if proba is None else pd.DataFrame(proba, columns=list(sample.classes))
    return classification_metrics(sample.labels, predictions, frame, known, positive_class=positive_class)


def _with_nan(metrics: Metrics) -> dict[str, float]:
    # GateVerdict's metric dicts stay floats (NaN where undefined) for the arithmetic of their readers (probation);
    # to_dict() turns NaN into None like the rest of the project.
    return {k: (math.nan if v is None else v) for k, v in metrics.items()}

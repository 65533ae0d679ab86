"""The anytime-valid promotion test: a betting e-process on paired score differences, safe to look at after every tick.

Pure functions, no I/O. Both models score the same matured rows; row ``t`` gives a paired difference ``x_t`` in
[-1, 1], positive when the challenger is better: ``accuracy_differences`` (``1[C right] - 1[H right]``) or
``loss_differences`` (``(min(loss_H, c) - min(loss_C, c)) / c`` with a clip scale ``c`` fixed from past data when the
test starts, so it is predictable). The test is looked at after every tick, forever, so it cannot be a fixed-alpha test.

Null hypothesis ``H0(delta)``: for every row, ``E[x_t | past] <= delta`` (the challenger is not better by the margin
``delta``, in x units). The e-process:

- one bet ``lambda`` in ``(0, 1/(1+delta)]`` -> wealth ``W_t(lambda) = prod_{i<=t} (1 + lambda (x_i - delta))``. Why:
  each factor is >= 0 (``x_i - delta >= -(1+delta)``) and has conditional mean <= 1 under H0, so ``W`` is a
  nonnegative supermartingale with ``W_0 = 1``, whatever the rows' distribution, dependence or drift.
- bets ``lambda_k = f_k / (1+delta)`` for the fractions ``f_k`` in ``bets`` (default 1/2 ... 1/32), equal weights
  ``1/m``. Why: the growth-optimal bet depends on the unknown gap; the grid's mixture is within a factor ``m`` of
  its best bet's wealth, so it pays at most ``log m`` for not knowing the gap.
- start points ``s_j = j R`` (``R = restart_every``) with prior weights ``pi_j = 1/((j+1)(j+2))`` (they sum to 1);
  component ``j`` is worth 1 until row ``s_j`` and bets from row ``s_j + 1`` on. Why: after a change (the challenger
  was worse, then becomes better) a wealth that decayed for thousands of rows recovers as slowly as it fell; the
  component started after the change only pays ``log(1/pi_j)``, about ``2 log(change row / R)``.
- ``E_t = sum_k (1/m) sum_j pi_j W^{(s_j)}_t(lambda_k)``. Why valid: the weights are fixed in advance and sum to 1,
  so ``E_t`` is a nonnegative supermartingale with ``E_0 = 1`` and Ville's inequality gives
  ``P(exists t: E_t >= 1/a) <= a`` under H0, at every look and any number of rows per look.
- state, O(1) per bet: ``log S_k = log sum_{j started} pi_j W^{(s_j)}_t(lambda_k)`` and the row count ``t``; the
  unstarted mass is ``1 - sum_{j <= J} pi_j = 1/(J+2)`` with ``J = t // R``, so
  ``E_t = (1/m) sum_k (S_k + 1/(J+2))``. Why log space: wealths over 100,000s of rows overflow or underflow a float;
  ``log1p``/``logaddexp`` keep them exact to rounding.
- decision: promote when ``E_t >= K / alpha`` (:func:`threshold`), ``K`` = the number of challengers compared
  (Bonferroni over the racers).

Guarantee (what is controlled): a challenger which is never better than the champion by the margin (H0 on every row)
is ever promoted, at any look, with probability at most ``alpha / K``; so at most ``alpha`` over the ``K`` racers of
one race. Not controlled: after a promotion the tests restart against the new champion, so each crowning spends its
own ``alpha`` (over many races the count of wrong promotions grows with the races); a challenger better on some
stretches and worse on others breaks H0 and may rightly be promoted even when it is not better on average; the
guarantee needs rows that neither model trained on and a clip scale fixed before the rows it scores.

:attr:`SequentialTest.evidence` saturates at the largest float (``log_evidence`` never does): any threshold is far
below, and ``min(E_t, constant)`` is still a supermartingale.

>>> import numpy as np
>>> rng = np.random.default_rng(7)
>>> champion_right = rng.random(400) < 0.70
>>> challenger_right = rng.random(400) < 0.90
>>> x = accuracy_differences(champion_right, challenger_right)
>>> test, bar = SequentialTest(), threshold(k=1, alpha=0.05)
>>> next(row for row in range(1, 401) if test.update(x[row - 1:row]) >= bar)  # one look per row
77
>>> round(test.evidence, 2), test.rows
(22.28, 77)
>>> SequentialTest.from_dict(test.to_dict()).evidence == test.evidence
True
"""

from __future__ import annotations

import math
import numbers
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["DEFAULT_BETS", "SequentialTest", "accuracy_differences", "loss_differences", "threshold"]

DEFAULT_BETS: tuple[float, ...] = (0.5, 0.25, 0.125, 0.0625, 0.03125)
_STATE_VERSION = 1
_STATE_KEYS = {"version", "margin", "bets", "restart_every", "rows", "log_wealth"}


def threshold(k: int, alpha: float) -> float:
    """The e-value at which one of ``k`` challengers is promoted at level ``alpha``: ``k / alpha``."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(
            f"k={k!r}: the number of challengers compared must be an integer >= 1 (1 for a lone challenger)"
        )
    if not (isinstance(alpha, numbers.Real) and 0 < alpha < 1):
        raise ValueError(f"alpha={alpha!r}: the level must be a number in (0, 1), e.g. 0.05")
    return int(k) / float(alpha)


def accuracy_differences(champion_correct: Any, challenger_correct: Any) -> np.ndarray:
    """Per-row ``1[challenger right] - 1[champion right]`` in {-1, 0, 1}, from two boolean (or 0/1) arrays."""
    champion = _rows_of(champion_correct, "champion_correct")
    challenger = _rows_of(challenger_correct, "challenger_correct")
    _same_length(champion, challenger, "champion_correct", "challenger_correct")
    for name, values in (("champion_correct", champion), ("challenger_correct", challenger)):
        if values.dtype != bool:
            bad = np.flatnonzero((values != 0) & (values != 1))
            if bad.size:
                raise ValueError(
                    f"{name}[{bad[0]}] = {values[bad[0]].item()!r}: per-row correctness must be True/False or 1/0 "
                    f"({bad.size} bad row(s)); pass `predictions == labels`"
                )
    return challenger.astype(float) - champion.astype(float)


def loss_differences(champion_loss: Any, challenger_loss: Any, clip: float) -> np.ndarray:
    """Per-row ``(min(loss_H, c) - min(loss_C, c)) / c`` in [-1, 1], positive when the challenger's loss is lower.

    ``clip`` (``c``) must be fixed before the rows it scores, from past data only (e.g. a high quantile of the
    champion's earlier losses): a clip chosen from these rows would void the guarantee. Losses are >= 0 (absolute or
    squared error, log loss); an infinite loss is clipped to ``c``.
    """
    if not (isinstance(clip, numbers.Real) and math.isfinite(clip) and clip > 0):
        raise ValueError(
            f"clip={clip!r}: the clip scale must be a finite number > 0, fixed from past losses (e.g. the champion's "
            f"99th percentile before the test started)"
        )
    champion = _rows_of(champion_loss, "champion_loss").astype(float)
    challenger = _rows_of(challenger_loss, "challenger_loss").astype(float)
    _same_length(champion, challenger, "champion_loss", "challenger_loss")
    for name, values in (("champion_loss", champion), ("challenger_loss", challenger)):
        bad = np.flatnonzero(~(values >= 0))  # NaN fails the comparison too
        if bad.size:
            raise ValueError(
                f"{name}[{bad[0]}] = {values[bad[0]].item()!r}: a loss must be a number >= 0 (inf is clipped, NaN is "
                f"not accepted; {bad.size} bad row(s)); drop rows a model could not score or give them the worst loss"
            )
    c = float(clip)
    return (np.minimum(champion, c) - np.minimum(challenger, c)) / c


@dataclass(eq=False)
class SequentialTest:
    """The e-process of one challenger against the champion (see the module docstring for the formulas).

    ``margin`` is ``delta`` in x units (0 <= delta < 1); ``bets`` are fractions in (0, 1] of the largest safe bet
    ``1/(1+delta)``; ``restart_every`` is ``R``, the rows between start points. Feed rows in order with
    :meth:`update`; compare :attr:`evidence` with :func:`threshold`. ``to_dict``/``from_dict`` carry the state across
    a restart of the daemon exactly.
    """

    margin: float = 0.0
    bets: tuple[float, ...] = DEFAULT_BETS
    restart_every: int = 100
    _log_wealth: np.ndarray = field(init=False, repr=False)
    _rows: int = field(init=False, repr=False)

    def __post_init__(self) -> None:
        _check_parameters(self.margin, self.bets, self.restart_every)
        self.margin = float(self.margin)
        self.bets = tuple(float(b) for b in self.bets)
        self.restart_every = int(self.restart_every)
        self._reset()

    def _reset(self) -> None:
        # Component j = 0 starts at row 0: each bet's started mass is pi_0 = 1/2 with wealth 1.
        self._log_wealth = np.full(len(self.bets), _log_prior(0))
        self._rows = 0

    @property
    def rows(self) -> int:
        """Rows fed so far."""
        return self._rows

    @property
    def log_evidence(self) -> float:
        """``log E_t``: finite at any length, however strong the evidence."""
        return float(_log_evidence(self._log_wealth, self._rows, self.restart_every))

    @property
    def evidence(self) -> float:
        """``E_t`` (1 before any row), saturated at the largest float."""
        try:
            return math.exp(self.log_evidence)
        except OverflowError:
            return sys.float_info.max

    def update(self, x: np.ndarray | Sequence[float]) -> float:
        """Feed the next rows' paired differences, in order; returns the e-value after the last of them.

        Refuses the whole chunk (nothing applied) when a value is NaN or outside [-1, 1].
        """
        values = np.asarray(x, dtype=float)
        if values.ndim != 1:
            raise ValueError(
                f"x has shape {values.shape}: pass a 1-D sequence of rows in order (one row: [x]; several runs: "
                f"one SequentialTest each)"
            )
        bad = np.flatnonzero(~((values >= -1) & (values <= 1)))  # NaN fails both comparisons
        if bad.size:
            i = int(bad[0])
            raise ValueError(
                f"x[{i}] = {values[i].item()!r} (row {self._rows + i + 1} of this test) is not in [-1, 1] "
                f"({bad.size} bad row(s), nothing applied): each row's paired difference must be a number in "
                f"[-1, 1], positive when the challenger is better; build it with accuracy_differences() or "
                f"loss_differences(..., clip=c)"
            )
        if values.size:
            _, log_wealth = _log_evidence_paths(
                values[None, :],
                margin=self.margin,
                bets=self.bets,
                restart_every=self.restart_every,
                log_wealth=self._log_wealth[None, :],
                rows=self._rows,
            )
            self._log_wealth = log_wealth[0]
            self._rows += int(values.size)
        return self.evidence

    def to_dict(self) -> dict:
        """JSON-safe state; ``from_dict`` rebuilds the same test exactly (floats round-trip through JSON)."""
        return {
            "version": _STATE_VERSION,
            "margin": self.margin,
            "bets": list(self.bets),
            "restart_every": self.restart_every,
            "rows": self._rows,
            # A bet of fraction 1 loses everything on a row x = -1: log 0 = -inf, which JSON cannot spell.
            "log_wealth": [None if v == -math.inf else float(v) for v in self._log_wealth],
        }

    @classmethod
    def from_dict(cls, d: dict) -> SequentialTest:
        """The test that :meth:`to_dict` saved, ready to continue."""
        if not isinstance(d, dict) or set(d) != _STATE_KEYS:
            got = sorted(d) if isinstance(d, dict) else type(d).__name__
            raise ValueError(f"a SequentialTest state needs exactly the keys {sorted(_STATE_KEYS)}; got {got}")
        if d["version"] != _STATE_VERSION:
            raise ValueError(
                f"state version {d['version']!r} is not supported (this driftpilot reads version {_STATE_VERSION}); "
                f"start a fresh test"
            )
        test = cls(margin=d["margin"], bets=tuple(d["bets"]), restart_every=d["restart_every"])
        rows, saved = d["rows"], d["log_wealth"]
        if isinstance(rows, bool) or not isinstance(rows, numbers.Integral) or rows < 0:
            raise ValueError(f"rows={rows!r}: the saved row count must be an integer >= 0")
        if not isinstance(saved, list) or len(saved) != len(test.bets):
            raise ValueError(f"log_wealth={saved!r}: the saved state needs one value per bet ({len(test.bets)})")
        log_wealth = np.array([-math.inf if v is None else v for v in saved], dtype=float)
        if np.isnan(log_wealth).any() or (log_wealth == math.inf).any():
            raise ValueError(f"log_wealth={saved!r}: each value must be a finite number or null (wealth 0)")
        test._log_wealth, test._rows = log_wealth, int(rows)
        return test


def _check_parameters(margin: Any, bets: Any, restart_every: Any) -> None:
    if not (isinstance(margin, numbers.Real) and 0 <= margin < 1):
        raise ValueError(
            f"margin={margin!r}: the margin delta must be a number with 0 <= delta < 1, in x units (0.02: the "
            f"challenger must be right on 2 % more rows, or have a loss lower by 2 % of the clip scale); 0: any gain"
        )
    if isinstance(restart_every, bool) or not isinstance(restart_every, numbers.Integral) or restart_every < 1:
        raise ValueError(
            f"restart_every={restart_every!r}: the rows between two start points must be an integer >= 1 "
            f"(default 100)"
        )
    if isinstance(bets, (str, bytes)) or not isinstance(bets, Sequence) or len(bets) == 0:
        raise ValueError(f"bets={bets!r}: give a non-empty sequence of bet fractions in (0, 1], e.g. {DEFAULT_BETS}")
    for b in bets:
        if not (isinstance(b, numbers.Real) and 0 < b <= 1):
            raise ValueError(
                f"bets contains {b!r}: each bet is a fraction in (0, 1] of the largest safe bet 1/(1+margin) "
                f"(above it a row could make the wealth negative); default {DEFAULT_BETS}"
            )


def _rows_of(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"{name} has shape {array.shape}: pass one value per row, a 1-D sequence in row order")
    if array.dtype.kind not in "biuf":
        raise ValueError(f"{name} has dtype {array.dtype}: pass numbers (or booleans for correctness), one per row")
    return array


def _same_length(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{name_a} has {a.size} rows and {name_b} {b.size}: both models must be scored on the same rows, in "
            f"the same order"
        )


def _log_prior(j: int) -> float:
    """``log pi_j`` with ``pi_j = 1/((j+1)(j+2))``."""
    return -(math.log(j + 1) + math.log(j + 2))


def _log_unstarted(rows: Any, restart_every: int, m: int) -> np.ndarray:
    """``log(m / (rows // R + 2))``: the unstarted components of all ``m`` bets, each worth 1."""
    return np.log(m / (np.asarray(rows) // restart_every + 2.0))


def _log_evidence(log_wealth: np.ndarray, rows: Any, restart_every: int) -> np.ndarray:
    """``log E`` from the state: ``log((1/m) (sum_k S_k + m / (rows // R + 2)))``."""
    m = log_wealth.shape[-1]
    started = log_wealth[..., 0]
    for k in range(1, m):
        started = np.logaddexp(started, log_wealth[..., k])
    return np.logaddexp(started, _log_unstarted(rows, restart_every, m)) - math.log(m)


def _log_evidence_paths(
    x: np.ndarray,
    *,
    margin: float = 0.0,
    bets: Sequence[float] = DEFAULT_BETS,
    restart_every: int = 100,
    log_wealth: np.ndarray | None = None,
    rows: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``log E`` after every row of many independent runs at once, and each bet's ``log S`` after the last row.

    ``x`` has shape (runs, n); ``log_wealth`` (runs, m) is the state after ``rows`` rows (None: a fresh test). The
    one implementation of the recursion: :meth:`SequentialTest.update` calls it with one run. No input checks.
    """
    x = np.asarray(x, dtype=float)
    runs, n = x.shape
    m = len(bets)
    if log_wealth is None:
        log_wealth = np.full((runs, m), _log_prior(0))
    final = np.array(log_wealth, dtype=float, copy=True)
    if n == 0:
        return np.empty((runs, 0)), final
    t = rows + np.arange(1, n + 1)  # the test's row count after each row
    # Component j starts after row j*R: S gains pi_j there. Between two starts S is a running product.
    stops = [int(i) + 1 for i in np.flatnonzero(t % restart_every == 0)]
    if not stops or stops[-1] != n:
        stops.append(n)
    paths = np.empty((runs, n))
    log_e = np.empty((runs, n))
    for k, fraction in enumerate(bets):
        bet = fraction / (1.0 + margin)
        stakes = bet * (x - margin)
        if fraction == 1.0:
            np.maximum(stakes, -1.0, out=stakes)  # so rounding in 1/(1+delta) can never take a factor below 0
        with np.errstate(divide="ignore"):  # a bet of fraction 1 on x = -1: wealth 0, log -inf (not an error)
            steps = np.log1p(stakes)
        current = final[:, k]
        start = 0
        for stop in stops:
            # Adding the carried log S to the first step, then cumsum, is the same left-to-right sum as feeding
            # the rows one at a time: chunking does not change the result beyond log1p's own rounding.
            steps[:, start] += current
            np.cumsum(steps[:, start:stop], axis=1, out=paths[:, start:stop])
            if t[stop - 1] % restart_every == 0:
                j = int(t[stop - 1] // restart_every)
                paths[:, stop - 1] = np.logaddexp(paths[:, stop - 1], _log_prior(j))
            current = paths[:, stop - 1]
            start = stop
        final[:, k] = current
        # Summed as _log_evidence does (bet by bet, then the unstarted mass), so the class and the paths agree to
        # the last bit; logaddexp is the slow step here, so it runs m + 1 times, not 2m.
        if k == 0:
            log_e[:] = paths
        else:
            np.logaddexp(log_e, paths, out=log_e)
    np.logaddexp(log_e, _log_unstarted(t, restart_every, m), out=log_e)
    log_e -= math.log(m)
    return log_e, final

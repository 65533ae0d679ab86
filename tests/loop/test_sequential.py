"""The anytime-valid promotion test: false promotions under the null at every look, detection delays after abrupt
changes, the margin, bounded losses, exact state round trips, long streams, and the formulas against exact arithmetic.

Simulations are seeded and vectorized across runs through ``_log_evidence_paths``, the same code that
``SequentialTest.update`` runs (``test_class_gives_the_paths_numbers`` ties the two together).
"""

from __future__ import annotations

import doctest
import importlib
import json
import math
import warnings
from fractions import Fraction

import numpy as np
import pytest

from controller.loop.sequential import (
    DEFAULT_BETS,
    SequentialTest,
    _log_evidence_paths,
    accuracy_differences,
    loss_differences,
    threshold,
)

ALPHA = 0.05
NEVER = np.iinfo(np.int64).max


def first_promotion(log_e: np.ndarray, bar: float) -> np.ndarray:
    """Per run, the 1-based row after which the e-value first reaches ``bar`` (one look per row); NEVER if none."""
    hit = log_e >= math.log(bar)
    return np.where(hit.any(axis=1), hit.argmax(axis=1) + 1, NEVER)


def ternary(rng: np.random.Generator, shape: tuple[int, int], p: float) -> np.ndarray:
    """Paired accuracy differences of two equal models: +1 and -1 with probability p each, else 0."""
    u = rng.random(shape)
    return np.where(u < p, 1.0, np.where(u < 2 * p, -1.0, 0.0))


def paired_accuracy(rng: np.random.Generator, champion_p: np.ndarray | float, challenger_p: np.ndarray | float,
                    shape: tuple[int, int]) -> np.ndarray:
    """Independent per-row correctness of both models (probabilities may vary by row), as x = C - H."""
    return (rng.random(shape) < challenger_p).astype(float) - (rng.random(shape) < champion_p)


def test_docstring_example_runs():
    result = doctest.testmod(importlib.import_module("controller.loop.sequential"))
    assert result.attempted > 0 and result.failed == 0


def test_a_fresh_test_is_worth_one_and_the_threshold_is_k_over_alpha():
    test = SequentialTest()
    assert test.rows == 0 and test.evidence == pytest.approx(1.0, rel=1e-15)
    assert test.update([]) == test.evidence and test.rows == 0
    assert threshold(1, 0.05) == 20.0 and threshold(4, 0.05) == 80.0


# 1. False promotions: equal models, one look per row, 2,000 rows.
@pytest.mark.parametrize("p", [0.1, 0.3])
def test_equal_models_are_rarely_promoted_at_any_look(p):
    rng = np.random.default_rng(11 if p == 0.1 else 12)
    races, racers, rows = 500, 4, 2000
    x = ternary(rng, (races * racers, rows), p)
    peak = np.exp(_log_evidence_paths(x)[0].max(axis=1)).reshape(races, racers)

    alone = (peak >= threshold(1, ALPHA)).mean()  # K = 1: each of the 2,000 paths is a lone challenger
    assert alone <= ALPHA, f"K=1: {alone:.4f} of {races * racers} null paths were ever promoted (bound {ALPHA})"

    per_racer = (peak >= threshold(4, ALPHA)).mean()
    any_racer = (peak >= threshold(4, ALPHA)).any(axis=1).mean()
    assert per_racer <= ALPHA / 4, f"K=4: {per_racer:.4f} of null challengers promoted (bound alpha/K={ALPHA / 4})"
    assert any_racer <= ALPHA, f"K=4: {any_racer:.4f} of {races} races crowned a null challenger (bound {ALPHA})"


# 2a. Power: a fresh challenger much better than the champion.
def test_a_much_better_fresh_challenger_is_promoted_within_50_rows():
    rng = np.random.default_rng(21)
    x = paired_accuracy(rng, 0.45, 0.95, (1000, 120))
    delay = first_promotion(_log_evidence_paths(x)[0], threshold(4, ALPHA))
    within = (delay <= 50).mean()
    assert within >= 0.95, f"{within:.3f} promoted within 50 rows (median {np.median(delay):.0f} rows)"
    assert np.median(delay) == 34  # pinned on this seed: a change in the formulas shows here first


# 2b. Power after a change: the challenger was worse for 1,500 rows, then the two swap.
def test_a_challenger_that_becomes_better_is_promoted_soon_after_the_swap():
    rng = np.random.default_rng(22)
    swap, rows = 1500, 1700
    before = np.arange(rows) < swap
    x = paired_accuracy(rng, np.where(before, 0.95, 0.45), np.where(before, 0.45, 0.95), (1000, rows))
    promoted_at = first_promotion(_log_evidence_paths(x)[0], threshold(4, ALPHA))
    early = (promoted_at <= swap).mean()
    delay = promoted_at - swap
    within = ((delay > 0) & (delay <= 150)).mean()
    assert early <= ALPHA, f"{early:.3f} of runs promoted before the swap"
    assert within >= 0.95, f"{within:.3f} promoted within 150 rows of the swap (median {np.median(delay):.0f})"
    assert np.median(delay) == 60  # the start point at row 1500 pays log(1/pi_15) = log 272, not 1,500 rows of decay


def test_a_single_start_point_would_be_far_slower_after_the_swap():
    # Why the start points: the same streams with one start point (restart_every beyond the stream) rarely recover.
    rng = np.random.default_rng(22)
    swap, rows = 1500, 1700
    before = np.arange(rows) < swap
    x = paired_accuracy(rng, np.where(before, 0.95, 0.45), np.where(before, 0.45, 0.95), (200, rows))
    promoted_at = first_promotion(_log_evidence_paths(x, restart_every=10**9)[0], threshold(4, ALPHA))
    assert (promoted_at <= swap + 150).mean() == 0.0


# 3. Margin: better by 0.005 in accuracy is not better by the margin 0.02.
def test_a_gain_below_the_margin_is_almost_never_promoted():
    rng = np.random.default_rng(31)
    x = paired_accuracy(rng, 0.80, 0.805, (1000, 5000))
    promoted = (first_promotion(_log_evidence_paths(x, margin=0.02)[0], threshold(1, ALPHA)) != NEVER).mean()
    assert promoted <= ALPHA, f"{promoted:.3f} of runs promoted a challenger 0.005 better under margin 0.02"


def test_the_margin_still_lets_a_clear_gain_through():
    rng = np.random.default_rng(32)
    x = paired_accuracy(rng, 0.45, 0.95, (1000, 200))
    delay = first_promotion(_log_evidence_paths(x, margin=0.1)[0], threshold(4, ALPHA))
    assert (delay <= 100).mean() >= 0.95


# 4. Bounded losses.
def test_loss_differences_clip_both_losses_and_scale_by_the_clip():
    champion = [0.0, 1.0, 5.0, math.inf, 2.0]
    challenger = [2.0, 1.0, 0.0, 0.5, 7.0]
    assert loss_differences(champion, challenger, clip=2.0).tolist() == [-1.0, 0.0, 1.0, 0.75, 0.0]
    assert accuracy_differences([True, False, True], [1, 1, 0]).tolist() == [0.0, 1.0, -1.0]


def regression_errors(rng: np.random.Generator, challenger_scale: float, shape: tuple[int, int]):
    # The clip scale comes from the champion's past errors only (a 500-row sample before the test starts).
    clip = float(np.quantile(np.abs(rng.normal(size=500)), 0.99))
    champion = np.abs(rng.normal(size=shape))
    challenger = challenger_scale * np.abs(rng.normal(size=shape))
    return loss_differences(champion.ravel(), challenger.ravel(), clip).reshape(shape)


def test_a_regression_challenger_with_30_percent_smaller_errors_is_promoted():
    x = regression_errors(np.random.default_rng(41), 0.7, (1000, 600))
    delay = first_promotion(_log_evidence_paths(x)[0], threshold(1, ALPHA))
    within = (delay <= 400).mean()
    assert within >= 0.95, f"{within:.3f} promoted within 400 rows (median {np.median(delay):.0f})"


def test_equal_regression_errors_are_rarely_promoted():
    x = regression_errors(np.random.default_rng(42), 1.0, (1000, 2000))
    promoted = (first_promotion(_log_evidence_paths(x)[0], threshold(1, ALPHA)) != NEVER).mean()
    assert promoted <= ALPHA, f"{promoted:.3f} of runs promoted a challenger with the same error distribution"


# 5. The class is the paths helper; state round trips exactly; chunking does not matter.
def test_class_gives_the_paths_numbers():
    rng = np.random.default_rng(51)
    x = ternary(rng, (1, 1000), 0.3)[0] + 0.2 * rng.random(1000) - 0.1
    x = np.clip(x, -1, 1)
    log_e, _ = _log_evidence_paths(x[None, :], margin=0.05, bets=(1.0, 0.3), restart_every=7)
    test = SequentialTest(margin=0.05, bets=(1.0, 0.3), restart_every=7)
    cuts = np.sort(rng.choice(np.arange(1, 1000), size=60, replace=False)).tolist() + [1000]
    start = 0
    for stop in cuts:
        e = test.update(x[start:stop])
        assert e == pytest.approx(math.exp(log_e[0, stop - 1]), rel=1e-12), stop
        start = stop
    assert test.rows == 1000


def test_round_trip_mid_stream_and_chunking_give_the_same_evidence():
    rng = np.random.default_rng(52)
    x = paired_accuracy(rng, 0.7, 0.75, (1, 3000))[0]
    whole = SequentialTest(margin=0.01, restart_every=50)
    expected = [whole.update(x[i:i + 1]) for i in range(x.size)]  # row by row, never saved

    saved = SequentialTest(margin=0.01, restart_every=50)
    got, start = [], 0
    for stop in (1, 2, 49, 50, 51, 333, 1200, 2999, 3000):
        got.append(saved.update(x[start:stop]))
        saved = SequentialTest.from_dict(json.loads(json.dumps(saved.to_dict())))  # a daemon restart after each tick
        assert saved.rows == stop
        assert saved.evidence == got[-1]  # the saved state is exact
        assert got[-1] == pytest.approx(expected[stop - 1], rel=1e-12), stop
        start = stop


def test_state_with_a_lost_bet_round_trips_through_strict_json():
    test = SequentialTest(bets=(1.0, 0.5))
    test.update([1.0, -1.0, 0.5])  # the full bet loses everything on x = -1
    state = test.to_dict()
    assert state["log_wealth"][0] is None
    text = json.dumps(state, allow_nan=False)
    again = SequentialTest.from_dict(json.loads(text))
    assert again.update([0.25, 1.0]) == test.update([0.25, 1.0])


# 6. Long streams stay finite and quiet.
@pytest.mark.parametrize("challenger_p", [0.95, 0.05])
def test_200000_rows_give_finite_evidence_without_warnings(challenger_p):
    rng = np.random.default_rng(61)
    x = paired_accuracy(rng, 0.5, challenger_p, (1, 200_000))[0]
    test = SequentialTest()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for start in range(0, x.size, 10_000):  # ticks of 10,000 rows
            test.update(x[start:start + 10_000])
        log_e, evidence = test.log_evidence, test.evidence
    assert math.isfinite(log_e) and math.isfinite(evidence) and evidence > 0
    if challenger_p > 0.5:
        assert log_e > 10_000 and evidence == np.finfo(float).max  # saturated, never inf
    else:
        # The started components have decayed (the last ones, younger than a few hundred rows, hardly hold anything);
        # what is left is the unstarted mass 1/(J+2), J = 2000.
        assert 1 / 2002 < evidence < 1.001 / 2002


# 7. The formulas against exact arithmetic. No published implementation installs here: confseq (Howard &
# Waudby-Smith) ships only a source distribution that needs the Boost headers and does not import under numpy 2
# (np.float_), and expectation needs Python >= 3.12. So the fixed-bet wealth is checked against exact rationals.
def exact_evidence(x: list[float], margin: float, bets: tuple[float, ...], restart_every: int) -> list[Fraction]:
    """E_t after every row by the literal definition, in exact rationals: every component j, every bet."""
    delta = Fraction(margin)
    lams = [Fraction(b) / (1 + delta) for b in bets]
    values, out = [Fraction(v) for v in x], []
    for t in range(1, len(values) + 1):
        total = Fraction(0)
        for lam in lams:
            started = [j for j in range(t // restart_every + 1)]
            mix = 1 - sum(Fraction(1, (j + 1) * (j + 2)) for j in started)  # the components not started: worth 1
            for j in started:
                wealth = Fraction(1)
                for v in values[j * restart_every:t]:
                    wealth *= 1 + lam * (v - delta)
                mix += Fraction(1, (j + 1) * (j + 2)) * wealth
            total += mix / len(lams)
        out.append(total)
    return out


def test_mixture_matches_the_definition_in_exact_arithmetic():
    rng = np.random.default_rng(71)
    x = np.round(rng.uniform(-1, 1, 40), 3)
    bets = (0.9, 0.3, 0.05)
    log_e, _ = _log_evidence_paths(x[None, :], margin=0.1, bets=bets, restart_every=3)
    exact = exact_evidence(x.tolist(), 0.1, bets, 3)
    assert np.exp(log_e[0]) == pytest.approx([float(e) for e in exact], rel=1e-12)


def fixed_bet_wealth(x: np.ndarray, fraction: float, margin: float) -> np.ndarray:
    """W_t of one bet and one start point after every row, read from the test's saved state (S = pi_0 W = W / 2)."""
    test = SequentialTest(margin=margin, bets=(fraction,), restart_every=10**9)
    wealth = []
    for v in x:
        test.update([v])
        wealth.append(2 * math.exp(test.to_dict()["log_wealth"][0]))
    return np.array(wealth)


def test_fixed_bet_wealth_is_the_exact_product():
    x = np.round(np.random.default_rng(72).uniform(-1, 1, 200), 4)
    lam = Fraction(0.5) / (1 + Fraction(0.02))
    wealth, exact = Fraction(1), []
    for v in x:
        wealth *= 1 + lam * (Fraction(v) - Fraction(0.02))
        exact.append(float(wealth))
    assert fixed_bet_wealth(x, 0.5, 0.02) == pytest.approx(exact, rel=1e-12)


# Errors teach: the bad value, what is accepted, what to do.
@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"margin": 1.0}, ["margin=1.0", "0 <= delta < 1"]),
        ({"margin": -0.1}, ["margin=-0.1", "x units"]),
        ({"restart_every": 0}, ["restart_every=0", "integer >= 1"]),
        ({"restart_every": 2.5}, ["restart_every=2.5", "integer >= 1"]),
        ({"bets": ()}, ["bets=()", "non-empty", "(0, 1]"]),
        ({"bets": (0.5, 0.0)}, ["bets contains 0.0", "(0, 1]", "1/(1+margin)"]),
        ({"bets": (1.5,)}, ["bets contains 1.5", "negative"]),
    ],
)
def test_bad_parameters_are_refused_with_the_accepted_range(kwargs, words):
    with pytest.raises(ValueError) as caught:
        SequentialTest(**kwargs)
    assert all(w in str(caught.value) for w in words), str(caught.value)


@pytest.mark.parametrize(
    ("rows", "words"),
    [
        ([0.5, 1.0, float("nan")], ["x[2] = nan", "row 13 of this test", "[-1, 1]", "accuracy_differences()"]),
        ([1.5], ["x[0] = 1.5", "row 11", "nothing applied", "loss_differences(..., clip=c)"]),
        ([[0.5]], ["shape (1, 1)", "1-D"]),
    ],
)
def test_bad_rows_are_refused_whole_and_named(rows, words):
    test = SequentialTest()
    test.update([0.0] * 10)
    before = test.to_dict()
    with pytest.raises(ValueError) as caught:
        test.update(rows)
    assert all(w in str(caught.value) for w in words), str(caught.value)
    assert test.to_dict() == before


def test_bad_helper_inputs_are_refused():
    with pytest.raises(ValueError, match=r"k=0: .* integer >= 1"):
        threshold(0, 0.05)
    with pytest.raises(ValueError, match=r"alpha=1.0: .* \(0, 1\)"):
        threshold(1, 1.0)
    with pytest.raises(ValueError, match="same rows"):
        accuracy_differences([True, False], [True])
    with pytest.raises(ValueError, match=r"challenger_correct\[1\] = 2: .* True/False or 1/0"):
        accuracy_differences([1, 0], [1, 2])
    with pytest.raises(ValueError, match=r"clip=0: .* > 0, fixed from past losses"):
        loss_differences([1.0], [1.0], clip=0)
    with pytest.raises(ValueError, match=r"champion_loss\[1\] = -0.5: a loss must be a number >= 0"):
        loss_differences([1.0, -0.5], [1.0, 1.0], clip=1.0)
    with pytest.raises(ValueError, match=r"challenger_loss\[0\] = nan"):
        loss_differences([1.0], [float("nan")], clip=1.0)


def test_bad_saved_state_is_refused():
    state = SequentialTest().to_dict()
    with pytest.raises(ValueError, match="exactly the keys"):
        SequentialTest.from_dict({**state, "extra": 1})
    with pytest.raises(ValueError, match="version 2 is not supported"):
        SequentialTest.from_dict({**state, "version": 2})
    with pytest.raises(ValueError, match=f"one value per bet \\({len(DEFAULT_BETS)}\\)"):
        SequentialTest.from_dict({**state, "log_wealth": [0.0]})
    with pytest.raises(ValueError, match="rows=-1"):
        SequentialTest.from_dict({**state, "rows": -1})

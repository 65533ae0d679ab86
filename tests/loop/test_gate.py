"""The promotion gate on constructed cases: exact p-values, the order of its rules, and that a challenger which is
not better is never promoted (many seeded random cases, both tasks)."""

from __future__ import annotations

import doctest
import importlib
import json
from datetime import timedelta
from fractions import Fraction
from math import comb

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.metrics import f1_score, log_loss, mean_absolute_error, r2_score, roc_auc_score, root_mean_squared_error

from controller.config import PolicyConfig
from controller.loop.gate import (
    GateConfig,
    GateVerdict,
    Margin,
    PairedSample,
    PromotionGate,
    mcnemar_exact,
    paired_bootstrap,
)

HIGHER_IS_BETTER = {"accuracy", "f1", "roc_auc", "r2"}


def discordant(b: int, c: int, *, agree_right: int = 0, agree_wrong: int = 0) -> PairedSample:
    """Binary rows where the champion alone is right on b rows and the challenger alone on c rows."""
    labels = np.ones(b + c + agree_right + agree_wrong, dtype=int)
    champion, challenger = labels.copy(), labels.copy()
    challenger[:b] = 0
    champion[b:b + c] = 0
    champion[b + c + agree_right:] = challenger[b + c + agree_right:] = 0
    return PairedSample(labels, champion, challenger, fingerprint="sha256:abc")


def accuracy_case(champion_right: int, challenger_right: int, rows: int) -> PairedSample:
    """Accuracy champion_right/rows vs challenger_right/rows; the challenger is right wherever the champion is."""
    labels = np.zeros(rows, dtype=int)
    champion = np.where(np.arange(rows) < champion_right, 0, 1)
    challenger = np.where(np.arange(rows) < challenger_right, 0, 1)
    return PairedSample(labels, champion, challenger)


def regression_case(rows: int, champion_sd: float, challenger_sd: float, seed: int = 0) -> PairedSample:
    rng = np.random.default_rng(seed)
    labels = rng.normal(10, 3, rows)
    noise = rng.normal(0, 1, rows)
    other = rng.normal(0, 1, rows)
    return PairedSample(labels, labels + champion_sd * noise, labels + challenger_sd * other)


def classify(sample: PairedSample, **config) -> GateVerdict:
    return PromotionGate(GateConfig(**config), "classification").judge(sample)


def regress(sample: PairedSample, **config) -> GateVerdict:
    return PromotionGate(GateConfig(**config), "regression").judge(sample)


def test_docstring_examples() -> None:
    result = doctest.testmod(importlib.import_module("controller.loop.gate"))
    assert result.attempted >= 3 and result.failed == 0


# ---------------------------------------------------------------------------------------------------------------
# Exact p-values


def binomial_tail(b: int, c: int) -> Fraction:
    """P(Binomial(b + c, 1/2) >= c), by hand."""
    n = b + c
    return Fraction(sum(comb(n, k) for k in range(c, n + 1)), 2**n) if n else Fraction(1)


@pytest.mark.parametrize(
    ("b", "c", "expected"),
    [(2, 10, Fraction(79, 4096)), (0, 5, Fraction(1, 32)), (1, 4, Fraction(6, 32)), (3, 3, Fraction(42, 64)),
     (5, 0, Fraction(1)), (0, 0, Fraction(1)), (40, 60, None)],
)
def test_mcnemar_p_value_is_the_exact_one_sided_binomial_tail(b, c, expected) -> None:
    exact = expected if expected is not None else binomial_tail(b, c)
    assert mcnemar_exact(b, c) == pytest.approx(float(exact), rel=1e-12)
    assert exact == binomial_tail(b, c)


def test_judge_reports_the_mcnemar_counts_and_p_value() -> None:
    verdict = classify(discordant(2, 10, agree_right=180, agree_wrong=8))
    assert verdict.verdict == "promote"
    assert verdict.test == "mcnemar_exact"
    assert (verdict.details["b"], verdict.details["c"]) == (2, 10)
    assert verdict.p_value == pytest.approx(79 / 4096, rel=1e-12)
    assert verdict.champion_value == pytest.approx(182 / 200)
    assert verdict.challenger_value == pytest.approx(190 / 200)
    assert verdict.delta == pytest.approx(8 / 200)
    assert verdict.reason == ("challenger accuracy 0.95 vs champion 0.91 on 200 rows (+0.04 >= margin 0), "
                              "McNemar p=0.0193 < alpha 0.05")


def test_a_gain_that_is_not_significant_is_rejected() -> None:
    verdict = classify(discordant(4, 6, agree_right=190))  # p = P(Bin(10, 1/2) >= 6) = 386/1024
    assert verdict.verdict == "reject"
    assert verdict.p_value == pytest.approx(386 / 1024, rel=1e-12)
    assert verdict.delta > 0
    assert "not significant" in verdict.reason and "p=0.377 >= alpha 0.05" in verdict.reason
    assert classify(discordant(4, 6, agree_right=190), alpha=0.4).verdict == "promote"


def test_the_mcnemar_test_runs_on_correctness_whatever_the_metric() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 400)
    champion_p1 = np.clip(np.where(labels == 1, 0.6, 0.4) + rng.normal(0, 0.15, 400), 0.01, 0.99)
    challenger_p1 = np.clip(np.where(labels == 1, 0.8, 0.2) + rng.normal(0, 0.15, 400), 0.01, 0.99)
    sample = PairedSample(labels, (champion_p1 > 0.5).astype(int), (challenger_p1 > 0.5).astype(int),
                          np.c_[1 - champion_p1, champion_p1], np.c_[1 - challenger_p1, challenger_p1], (0, 1))
    verdict = classify(sample, metric="log_loss")
    b, c = verdict.details["b"], verdict.details["c"]
    assert verdict.test == "mcnemar_exact" and verdict.p_value == pytest.approx(float(binomial_tail(b, c)))
    assert verdict.verdict == "promote" and not verdict.higher_is_better


# ---------------------------------------------------------------------------------------------------------------
# Never promotes a challenger that is not better


def worse_classification_case(rng: np.random.Generator) -> tuple[PairedSample, float]:
    """Random probabilities for the champion; the challenger moves probability away from the true class on a random
    subset of rows (none: an equal challenger). That can only lower accuracy, f1 (binary and macro), roc_auc, and
    raise log loss. Returns the sample and the share of rows changed."""
    rows, k = int(rng.integers(20, 600)), int(rng.integers(2, 5))
    classes = tuple(["a", "b", "c", "d"][:k]) if rng.random() < 0.5 else tuple(range(k))
    labels_code = rng.integers(0, k, rows)
    champion_proba = rng.dirichlet(np.ones(k), rows)
    # Make the champion informative, so the cases are not all coin flips.
    champion_proba[np.arange(rows), labels_code] += rng.random(rows) * rng.random()
    champion_proba /= champion_proba.sum(axis=1, keepdims=True)
    share = float(rng.choice([0.0, 0.05, 0.3, 1.0]))
    changed = rng.random(rows) < share
    factor = np.where(changed, rng.uniform(0.05, 0.95, rows), 1.0)
    true_p = champion_proba[np.arange(rows), labels_code]
    new_true = true_p * factor
    # The other classes keep their ratios, so a wrong row's argmax does not move: only right -> wrong happens.
    challenger_proba = champion_proba * ((1 - new_true) / (1 - true_p))[:, None]
    challenger_proba[np.arange(rows), labels_code] = new_true
    as_label = np.asarray(classes, dtype=object)
    sample = PairedSample(as_label[labels_code], as_label[champion_proba.argmax(1)],
                          as_label[challenger_proba.argmax(1)], champion_proba, challenger_proba, classes)
    return sample, share


def worse_regression_case(rng: np.random.Generator) -> PairedSample:
    """The challenger's error is the champion's times a factor >= 1 on every row (1: an equal challenger)."""
    rows = int(rng.integers(20, 600))
    labels = rng.normal(0, rng.uniform(0.1, 10), rows)
    error = rng.standard_t(3, rows) * rng.uniform(0.01, 5)
    factor = 1 + rng.choice([0.0, 0.01, 0.5]) * rng.random(rows)
    return PairedSample(labels, labels + error, labels + error * factor)


def random_config(rng: np.random.Generator, metrics: list[str], positive_class: object = None) -> GateConfig:
    # Lenient settings on purpose: a tiny min_rows, no margin and a huge alpha leave the test nothing to hide behind.
    return GateConfig(metric=str(rng.choice(metrics)), min_rows=int(rng.integers(1, 30)),
                      alpha=float(rng.choice([0.05, 0.5, 0.99])), bootstrap_resamples=200, seed=int(rng.integers(99)),
                      positive_class=positive_class)


def test_never_promotes_a_worse_or_equal_classification_challenger() -> None:
    rng = np.random.default_rng(20260101)
    reached_test = 0
    for _ in range(300):
        sample, _share = worse_classification_case(rng)
        # "a"/"b" name no positive class by themselves: binary f1 / roc_auc need it configured.
        config = random_config(rng, ["accuracy", "f1", "roc_auc", "log_loss"], positive_class=sample.classes[-1])
        verdict = PromotionGate(config, "classification").judge(sample)
        assert verdict.verdict != "promote", verdict.reason
        assert verdict.delta is None or verdict.delta <= 1e-12, verdict.reason
        reached_test += verdict.test is not None
    assert reached_test == 0  # every one stops at the margin rule, before the test


def test_never_promotes_a_worse_or_equal_regression_challenger() -> None:
    rng = np.random.default_rng(20260102)
    for _ in range(300):
        verdict = PromotionGate(random_config(rng, ["mae", "rmse", "r2"]), "regression").judge(
            worse_regression_case(rng))
        assert verdict.verdict != "promote", verdict.reason
        assert verdict.delta is None or verdict.delta <= 0, verdict.reason


def independent_score(metric: str, labels: np.ndarray, predictions: np.ndarray, other: np.ndarray) -> float:
    """sklearn on the raw arrays, sign-adjusted so that higher is better."""
    if metric == "accuracy":
        return float(np.mean(predictions == labels))
    if metric == "f1":  # macro over every class present in the labels or the model's predictions
        return float(f1_score(labels, predictions, average="macro"))
    if metric == "r2":
        return float(r2_score(labels, predictions))
    return -float({"mae": mean_absolute_error, "rmse": root_mean_squared_error}[metric](labels, predictions))


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_a_promoted_challenger_is_better_by_an_independent_computation(task) -> None:
    """Random challengers, better or worse; whenever the gate promotes, sklearn on the raw arrays agrees."""
    rng = np.random.default_rng(7)
    promoted = rejected = 0
    for _ in range(150):
        rows = int(rng.integers(50, 500))
        if task == "classification":
            labels = rng.integers(0, 3, rows)
            champion = np.where(rng.random(rows) < rng.uniform(0.4, 0.9), labels, rng.integers(0, 3, rows))
            challenger = np.where(rng.random(rows) < rng.uniform(0.4, 0.9), labels, rng.integers(0, 3, rows))
            metric = str(rng.choice(["accuracy", "f1"]))
        else:
            labels = rng.normal(0, 2, rows)
            champion = labels + rng.normal(0, rng.uniform(0.5, 2), rows)
            challenger = labels + rng.normal(0, rng.uniform(0.5, 2), rows)
            metric = str(rng.choice(["mae", "rmse", "r2"]))
        config = GateConfig(metric=metric, min_rows=50, bootstrap_resamples=500, seed=1)
        verdict = PromotionGate(config, task).judge(PairedSample(labels, champion, challenger))
        if verdict.verdict != "promote":
            rejected += 1
            continue
        promoted += 1
        better = independent_score(metric, labels, challenger, champion)
        assert better > independent_score(metric, labels, champion, challenger), verdict.reason
        assert verdict.p_value < config.alpha and verdict.rows >= config.min_rows
    assert promoted >= 10 and rejected >= 10  # both outcomes occur, so the check above is not vacuous


# ---------------------------------------------------------------------------------------------------------------
# min_rows and max_hold


def test_holds_below_min_rows_and_rejects_after_max_hold() -> None:
    gate = PromotionGate(GateConfig(min_rows=200, max_hold="7d"), "classification")
    few = discordant(0, 60, agree_right=139)  # 199 rows, and a clear gain
    assert gate.judge(few).verdict == "hold"
    assert gate.judge(few).reason.startswith("199 paired rows, fewer than min_rows 200: waiting")
    assert gate.judge(few, held_for=timedelta(days=7)).verdict == "hold"  # exactly max_hold: still waiting
    late = gate.judge(few, held_for=timedelta(days=7, seconds=1))
    assert late.verdict == "reject"
    assert late.reason == "waited 1w for 200 matured rows, got 199 (held 7d)"
    waiting = gate.judge(few, held_for=timedelta(hours=30))
    assert waiting.reason.endswith("waiting for more matured labels, held 30h of at most 1w")
    enough = discordant(0, 60, agree_right=140)
    assert gate.judge(enough, held_for=timedelta(days=30)).verdict == "promote"  # max_hold only limits waiting


def test_no_rows_at_all_is_a_hold() -> None:
    empty = PairedSample(np.array([]), np.array([]), np.array([]))
    for task in ("classification", "regression"):
        verdict = PromotionGate(GateConfig(), task).judge(empty)
        assert (verdict.verdict, verdict.rows, verdict.p_value, verdict.test) == ("hold", 0, None, None)
        json.dumps(verdict.to_dict(), allow_nan=False)


# ---------------------------------------------------------------------------------------------------------------
# Floor and margins


def test_the_challenger_must_pass_the_floor() -> None:
    sample = accuracy_case(700, 850, 1000)
    missed = classify(sample, floor=0.9)
    assert missed.verdict == "reject" and "misses the floor (>= 0.9)" in missed.reason
    assert classify(sample, floor=0.85).verdict == "promote"  # exactly the floor passes


def test_a_lower_is_better_floor_is_an_upper_bound() -> None:
    sample = regression_case(1000, champion_sd=1.0, challenger_sd=0.5)
    verdict = regress(sample, metric="rmse")
    assert verdict.verdict == "promote"
    assert regress(sample, metric="rmse", floor=verdict.challenger_value + 0.01).verdict == "promote"
    missed = regress(sample, metric="rmse", floor=verdict.challenger_value - 0.01)
    assert missed.verdict == "reject" and "misses the floor (<=" in missed.reason


def test_absolute_margin() -> None:
    assert 0.7 - 0.6 < 0.1  # 0.09999999999999998 in floats; a gain of exactly the margin still counts
    assert classify(accuracy_case(600, 700, 1000), margin={"absolute": 0.1}).verdict == "promote"
    sample = accuracy_case(700, 750, 1000)  # +0.05, c = 50, b = 0: highly significant
    assert classify(sample, margin={"absolute": 0.05}).verdict == "promote"
    above = classify(sample, margin={"absolute": 0.051})
    assert above.verdict == "reject" and above.required_delta == 0.051
    assert "(+0.05 < margin 0.051): improvement below the margin" in above.reason


def test_relative_margin_and_the_larger_of_the_two() -> None:
    sample = accuracy_case(700, 750, 1000)
    assert classify(sample, margin={"relative": 0.07}).verdict == "promote"  # needs 0.049
    too_much = classify(sample, margin={"relative": 0.1})  # needs 0.07
    assert too_much.verdict == "reject" and too_much.required_delta == pytest.approx(0.07)
    both = classify(sample, margin={"absolute": 0.01, "relative": 0.1})
    assert both.required_delta == pytest.approx(0.07) and both.verdict == "reject"


def test_relative_margin_on_a_lower_is_better_metric() -> None:
    sample = regression_case(2000, champion_sd=1.0, challenger_sd=0.8)
    verdict = regress(sample, metric="mae", margin={"relative": 0.1})
    assert verdict.required_delta == pytest.approx(0.1 * verdict.champion_value)
    assert verdict.delta == pytest.approx(verdict.champion_value - verdict.challenger_value)
    assert verdict.verdict == "promote"  # mae falls by about 20%
    assert regress(sample, metric="mae", margin={"relative": 0.3}).verdict == "reject"


def test_an_equal_challenger_is_rejected_even_with_no_margin() -> None:
    for sample, judge in ((accuracy_case(700, 700, 1000), classify), (regression_case(500, 1, 1), regress)):
        same = PairedSample(sample.labels, sample.champion, sample.champion)
        verdict = judge(same, alpha=0.99)
        assert (verdict.verdict, verdict.delta, verdict.test) == ("reject", 0.0, None)
        assert "no improvement" in verdict.reason


# ---------------------------------------------------------------------------------------------------------------
# Metrics, lower-is-better metrics


@pytest.mark.parametrize("metric", ["mae", "rmse", "r2"])
def test_regression_metrics_and_their_direction(metric) -> None:
    better = regression_case(1000, champion_sd=1.0, challenger_sd=0.7)
    verdict = regress(better, metric=metric)
    expected = {"mae": mean_absolute_error, "rmse": root_mean_squared_error, "r2": r2_score}
    for side, predictions in (("champion", better.champion), ("challenger", better.challenger)):
        metrics = getattr(verdict, f"{side}_metrics")
        assert set(metrics) == {"mae", "rmse", "r2"}
        for name, fn in expected.items():
            assert metrics[name] == pytest.approx(fn(better.labels, predictions))
    assert verdict.higher_is_better is (metric == "r2")
    assert verdict.verdict == "promote" and verdict.delta > 0 and verdict.test == "paired_bootstrap"
    assert verdict.details["loss"] == ("absolute" if metric == "mae" else "squared")
    low, high = verdict.details["ci95"]
    assert 0 < low < verdict.details["mean_improvement"] < high
    swapped = regress(PairedSample(better.labels, better.challenger, better.champion), metric=metric)
    assert swapped.verdict == "reject" and swapped.delta == pytest.approx(-verdict.delta)


def test_classification_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(11)
    labels = rng.choice(["DOWN", "UP"], 500)
    proba_up = {name: np.clip((labels == "UP") * q + rng.normal(0.5 - q / 2, 0.2, 500), 0.01, 0.99)
                for name, q in (("champion", 0.3), ("challenger", 0.5))}
    predicted = {name: np.where(p > 0.5, "UP", "DOWN") for name, p in proba_up.items()}
    sample = PairedSample(labels, predicted["champion"], predicted["challenger"],
                          np.c_[1 - proba_up["champion"], proba_up["champion"]],
                          np.c_[1 - proba_up["challenger"], proba_up["challenger"]], ("DOWN", "UP"))
    # UP/DOWN name no positive class: an f1 or roc_auc gate without one is a misconfiguration, not a guess.
    with pytest.raises(ValueError, match=r"cannot tell the positive class among \['DOWN', 'UP'\]"):
        classify(sample, metric="roc_auc")
    verdict = classify(sample, metric="roc_auc", positive_class="UP")
    for name in ("champion", "challenger"):
        metrics = getattr(verdict, f"{name}_metrics")
        assert metrics["accuracy"] == pytest.approx(np.mean(predicted[name] == labels))
        assert metrics["f1"] == pytest.approx(f1_score(labels, predicted[name], pos_label="UP"))
        assert metrics["roc_auc"] == pytest.approx(roc_auc_score(labels == "UP", proba_up[name]))
        assert metrics["log_loss"] == pytest.approx(log_loss(labels, np.c_[1 - proba_up[name], proba_up[name]],
                                                             labels=["DOWN", "UP"]))
    down = classify(sample, metric="f1", positive_class="DOWN")
    assert down.champion_value == pytest.approx(f1_score(labels, predicted["champion"], pos_label="DOWN"))
    assert down.champion_value != pytest.approx(verdict.champion_metrics["f1"])


def test_multiclass_f1_is_macro_over_the_classes_present() -> None:
    """Macro over the classes in the labels or in that model's predictions (scikit-learn's average="macro")."""
    labels = np.array([0, 1, 2, 2, 1, 0, 2, 1] * 30)
    champion = np.array([0, 1, 1, 2, 1, 3, 2, 0] * 30)  # 3 is never a label
    challenger = np.array([0, 1, 2, 2, 1, 2, 2, 1] * 30)
    verdict = classify(PairedSample(labels, champion, challenger), metric="f1")
    assert verdict.champion_value == pytest.approx(f1_score(labels, champion, average="macro"))  # over 0, 1, 2, 3
    assert verdict.challenger_value == pytest.approx(f1_score(labels, challenger, average="macro"))  # over 0, 1, 2
    assert verdict.verdict == "promote"


def test_log_loss_is_lower_is_better() -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 600)
    sharp = np.full((600, 3), 0.1)
    sharp[np.arange(600), labels] = 0.8
    dull = np.full((600, 3), 0.3)
    dull[np.arange(600), labels] = 0.4
    wrong = rng.random(600) < 0.3  # the champion is also wrong more often, so McNemar agrees
    dull[wrong] = np.roll(dull[wrong], 1, axis=1)
    sample = PairedSample(labels, dull.argmax(1), sharp.argmax(1), dull, sharp, (0, 1, 2))
    verdict = classify(sample, metric="log_loss")
    assert not verdict.higher_is_better
    assert verdict.challenger_value < verdict.champion_value
    assert verdict.delta == pytest.approx(verdict.champion_value - verdict.challenger_value)
    assert verdict.verdict == "promote"
    reverse = classify(PairedSample(labels, sharp.argmax(1), dull.argmax(1), sharp, dull, (0, 1, 2)),
                       metric="log_loss")
    assert reverse.verdict == "reject" and reverse.delta < 0


# ---------------------------------------------------------------------------------------------------------------
# The paired bootstrap


def test_bootstrap_p_value_is_deterministic_for_a_seed() -> None:
    sample = regression_case(400, champion_sd=1.0, challenger_sd=0.93, seed=2)
    first, again = regress(sample, seed=42), regress(sample, seed=42)
    assert first.p_value == again.p_value and first.details == again.details
    other = regress(sample, seed=43)
    assert other.details["ci95"] != first.details["ci95"]


def test_bootstrap_p_value_shrinks_as_the_improvement_grows() -> None:
    rng = np.random.default_rng(9)
    labels = rng.normal(0, 1, 300)
    champion_error, challenger_error = rng.normal(0, 1, 300), rng.normal(0, 1, 300)
    p_values = []
    for t in (-0.3, -0.2, -0.1, 0.0, 0.05):
        # Each row's challenger error shrinks with t, so each resampled mean improvement grows with it.
        sample = PairedSample(labels, labels + champion_error, labels + (1 - t) * challenger_error)
        p, _ = paired_bootstrap(np.abs(champion_error) - (1 - t) * np.abs(challenger_error), 2000, 0)
        verdict = regress(sample, metric="mae", seed=0, min_rows=10)
        if verdict.test is not None:
            assert verdict.p_value == p
        p_values.append(p)
    assert p_values == sorted(p_values, reverse=True)
    assert p_values[0] > 0.9 and p_values[-1] == 1 / 2001


def test_bootstrap_p_value_is_the_counted_share_and_both_chunkings_agree() -> None:
    rng = np.random.default_rng(4)
    improvement = rng.normal(0.1, 1, 300)  # mean 0.1, standard error 0.058: p near 0.04
    p_whole, means_whole = paired_bootstrap(improvement, 4000, 1)  # many resamples per draw
    p_split, means_split = paired_bootstrap(improvement, 4000, 1, chunk=64)  # each resample in row chunks
    for p, means in ((p_whole, means_whole), (p_split, means_split)):
        assert p == (np.count_nonzero(means <= 0) + 1) / 4001
        assert means.mean() == pytest.approx(improvement.mean(), abs=0.005)
        assert means.std() == pytest.approx(improvement.std() / np.sqrt(300), rel=0.05)
    assert p_whole == pytest.approx(p_split, abs=0.015)


# ---------------------------------------------------------------------------------------------------------------
# Undefined metrics and bad input


def test_roc_auc_without_probabilities_is_rejected_with_the_fix() -> None:
    verdict = classify(accuracy_case(700, 800, 1000), metric="roc_auc")
    assert verdict.verdict == "reject"
    assert "no class probabilities" in verdict.reason and "predict_proba" in verdict.reason
    assert verdict.challenger_metrics["accuracy"] == 0.8


def test_roc_auc_with_one_class_only_holds_then_rejects() -> None:
    labels = np.ones(300, dtype=int)
    proba = np.c_[np.full(300, 0.2), np.full(300, 0.8)]
    sample = PairedSample(labels, labels, labels, proba, proba, (0, 1))
    gate = PromotionGate(GateConfig(metric="roc_auc", max_hold="1d"), "classification")
    assert gate.judge(sample).verdict == "hold" and "only one class (1)" in gate.judge(sample).reason
    late = gate.judge(sample, held_for=timedelta(days=2))
    assert late.verdict == "reject" and late.reason.startswith("waited 1d (held 2d) and still roc_auc")


def test_constant_labels_leave_r2_undefined() -> None:
    labels = np.full(300, 4.0)
    verdict = regress(PairedSample(labels, labels + 1, labels + 0.5), metric="r2")
    assert verdict.verdict == "hold" and "labels are constant" in verdict.reason
    assert np.isnan(verdict.champion_metrics["r2"]) and verdict.champion_metrics["mae"] == 1.0


def test_nan_predictions_of_the_challenger_are_rejected() -> None:
    sample = regression_case(300, 1.0, 0.5)
    broken = sample.challenger.copy()
    broken[:3] = np.nan
    verdict = regress(PairedSample(sample.labels, sample.champion, broken))
    assert verdict.verdict == "reject" and verdict.reason == (
        "rmse of the challenger is undefined on these 300 rows: the predictions are NaN or inf on 3 rows")


def test_nan_labels_are_an_error() -> None:
    labels = np.r_[np.nan, np.zeros(299)]
    with pytest.raises(ValueError, match="labels contain NaN or inf on 1 rows"):
        regress(PairedSample(labels, labels, labels))


def test_sample_arrays_must_line_up() -> None:
    with pytest.raises(ValueError, match=r"lengths \{'labels': 3, 'champion': 2, 'challenger': 3\}"):
        PairedSample([1, 0, 1], [1, 0], [1, 1, 1])
    with pytest.raises(ValueError, match="without classes"):
        PairedSample([1, 0], [1, 0], [1, 1], champion_proba=np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"shape \(2, 3\), expected \(2, 2\)"):
        PairedSample([1, 0], [1, 0], [1, 1], challenger_proba=np.ones((2, 3)), classes=(0, 1))
    assert PairedSample([1, 0], [1, 0], [1, 1]).rows == 2


def test_text_labels_and_integer_predictions_name_the_same_classes() -> None:
    # "1" (JSON, CSV) and 1 are one class, as in the monitor and the trainers (monitors.metrics).
    verdict = classify(PairedSample(["1", "0"] * 150, [1, 0] * 150, [1, 1] * 150))
    assert verdict.champion_metrics["accuracy"] == 1.0 and verdict.challenger_metrics["accuracy"] == 0.5
    assert verdict.champion_metrics["f1"] == 1.0 and verdict.challenger_metrics["f1"] == pytest.approx(2 / 3)


def test_the_gate_judges_the_monitored_metric_unless_it_names_its_own() -> None:
    policy = {"model": "m", "task": "classification", "target": {"name": "y", "classes": [0, 1]},
              "features": {"x": "numeric"}}
    follows = PolicyConfig.model_validate({**policy, "monitors": {"performance": {"metric": "f1", "positive_class": 0}}})
    assert PromotionGate(follows.gate, follows.task).metric == "f1" == follows.monitors.performance.metric_for(
        "classification")
    assert follows.gate.positive_class == 0  # the holdout f1 (the monitor's reference) and the gate's: one class
    own = PolicyConfig.model_validate({**policy, "monitors": {"performance": {"metric": "f1", "positive_class": 0}},
                                       "gate": {"metric": "accuracy", "positive_class": 1}})
    assert (own.gate.metric, own.gate.positive_class) == ("accuracy", 1)
    neither = PolicyConfig.model_validate(policy)
    assert PromotionGate(neither.gate, "classification").metric == "accuracy" == neither.monitors.performance.metric_for(
        "classification")
    regression = PolicyConfig.model_validate({**policy, "task": "regression", "target": {"name": "y"},
                                              "monitors": {"performance": {"metric": "mae"}}})
    assert PromotionGate(regression.gate, "regression").metric == "mae"


def test_metric_must_fit_the_task_and_positive_class_must_exist() -> None:
    with pytest.raises(ValueError, match="gate.metric 'rmse' does not fit a classification model"):
        _ = PromotionGate(GateConfig(metric="rmse"), "classification").metric
    assert PromotionGate(GateConfig(), "regression").metric == "rmse"
    assert PromotionGate(GateConfig(), "classification").metric == "accuracy"
    with pytest.raises(ValueError, match="positive_class 'yes' is not one of the classes"):
        classify(accuracy_case(700, 800, 1000), positive_class="yes", metric="f1")


# ---------------------------------------------------------------------------------------------------------------
# Config and serialisation


def test_config_reads_durations_and_round_trips_through_json() -> None:
    config = GateConfig.model_validate({"max_hold": "2w", "margin": {"absolute": 0.01}, "metric": "f1", "floor": 0.6})
    assert config.max_hold == timedelta(weeks=2) and config.margin == Margin(absolute=0.01)
    dumped = config.model_dump(mode="json")
    assert dumped["max_hold"] == "2w"
    assert GateConfig.model_validate(json.loads(json.dumps(dumped))) == config
    schema = GateConfig.model_json_schema()
    assert schema["properties"]["max_hold"]["type"] == "string"
    assert schema["properties"]["max_hold"]["default"] == "7d"  # not ISO 8601's "P7D", which the pattern refuses
    assert schema["additionalProperties"] is False


@pytest.mark.parametrize(
    ("section", "message"),
    [({"max_hold": "soon"}, "cannot read duration 'soon'"),
     ({"bootstrap_resamples": 19}, "use at least 20 resamples"),
     ({"margin": {"absolute": -0.1}}, "greater than or equal to 0"),
     ({"alpha": 1.5}, "less than 1"),
     ({"min_row": 10}, "Extra inputs are not permitted"),
     ({"metric": "acuracy"}, "accuracy")],
)
def test_config_errors_name_the_problem(section, message) -> None:
    with pytest.raises(ValidationError, match=message):
        GateConfig.model_validate(section)


def test_to_dict_is_json_serialisable() -> None:
    nan_metrics = regress(PairedSample(np.full(300, 4.0), np.full(300, 5.0), np.full(300, 4.5)), metric="r2")
    tested = regress(regression_case(500, 1.0, 0.7))
    for verdict in (nan_metrics, tested, classify(discordant(2, 10, agree_right=188))):
        data = json.loads(json.dumps(verdict.to_dict(), allow_nan=False))
        assert data["verdict"] == verdict.verdict and data["reason"] == verdict.reason
        assert data["rows"] == verdict.rows and data["fingerprint"] == verdict.fingerprint
    assert nan_metrics.to_dict()["champion_metrics"]["r2"] is None
    assert nan_metrics.to_dict()["champion_value"] is None
    assert tested.to_dict()["details"]["ci95"] == tested.details["ci95"]


# ------------------------------------------------------------------------------------------- shadow confirmation

def _promoting() -> tuple[PromotionGate, GateVerdict]:
    gate = PromotionGate(GateConfig(min_rows=20, shadow_rows=50, max_hold=timedelta(days=2)), "classification")
    verdict = gate.judge(accuracy_case(20, 30, 40))
    assert verdict.verdict == "promote"
    return gate, verdict


def test_shadow_holds_a_promote_until_enough_rows_after_the_decision_then_rejects_after_max_hold() -> None:
    gate, verdict = _promoting()
    few = accuracy_case(10, 20, 30)
    held = gate.confirm(verdict, few, held_for=timedelta(hours=1))
    assert held.verdict == "hold" and "30 of shadow_rows 50 rows matured after the decision" in held.reason
    assert (held.challenger_value, held.p_value) == (verdict.challenger_value, verdict.p_value)  # the holdout's
    late = gate.confirm(verdict, few, held_for=timedelta(days=3))
    assert late.verdict == "reject" and "waited 2d and only 30 of shadow_rows 50" in late.reason


def test_shadow_rejects_a_challenger_that_is_worse_on_the_rows_after_the_decision() -> None:
    gate, verdict = _promoting()
    worse = accuracy_case(40, 38, 60)  # champion 40/60 right, challenger 38/60
    rejected = gate.confirm(verdict, worse)
    assert rejected.verdict == "reject" and "worse on the shadow rows" in rejected.reason
    shadow = rejected.details["shadow"]
    assert shadow["rows"] == 60 and shadow["delta"] == pytest.approx(-2 / 60)
    assert (shadow["champion"], shadow["challenger"]) == (pytest.approx(40 / 60), pytest.approx(38 / 60))


def test_shadow_keeps_a_promote_when_the_challenger_is_not_worse_later() -> None:
    gate, verdict = _promoting()
    equal = accuracy_case(40, 40, 60)  # no significance asked on the shadow rows: equal is enough
    kept = gate.confirm(verdict, equal)
    assert kept.verdict == "promote" and kept.details["shadow"]["delta"] == 0
    assert "shadow: accuracy 0.6667 vs champion 0.6667 on the 60 rows after the decision" in kept.reason


def test_shadow_leaves_other_verdicts_and_a_gate_without_shadow_rows_alone() -> None:
    gate, _ = _promoting()
    rejected = gate.judge(accuracy_case(30, 30, 40))
    assert gate.confirm(rejected, accuracy_case(0, 60, 60)) is rejected
    plain = PromotionGate(GateConfig(min_rows=20), "classification")
    promote = plain.judge(accuracy_case(20, 30, 40))
    assert plain.confirm(promote, accuracy_case(60, 0, 60)) is promote


# ------------------------------------------------------------------------------ checkpoints of a River champion

def test_not_worse_promotes_a_checkpoint_whose_gain_is_not_significant_or_zero() -> None:
    gate = PromotionGate(GateConfig(min_rows=20, incremental="not_worse"), "classification")
    small = accuracy_case(30, 31, 40)  # +1 row: McNemar cannot call it significant
    assert gate.judge(small).verdict == "reject"
    promoted = gate.judge_checkpoint(small)
    assert promoted.verdict == "promote" and "not worse" in promoted.reason and promoted.p_value is not None
    assert gate.judge_checkpoint(accuracy_case(30, 30, 40)).verdict == "promote"


def test_not_worse_still_rejects_worse_checkpoints_too_few_rows_and_the_floor() -> None:
    gate = PromotionGate(GateConfig(min_rows=20, incremental="not_worse", floor=0.9), "classification")
    worse = accuracy_case(31, 30, 40)
    assert gate.judge_checkpoint(worse).verdict == "reject"
    assert gate.judge_checkpoint(accuracy_case(5, 6, 10)).verdict == "hold"  # below min_rows
    below_floor = gate.judge_checkpoint(accuracy_case(30, 31, 40))  # 0.775 < floor 0.9
    assert below_floor.verdict == "reject" and "floor" in below_floor.reason
    regression = PromotionGate(GateConfig(min_rows=20, incremental="not_worse", metric="mae"), "regression")
    assert regression.judge_checkpoint(regression_case(200, 1.0, 1.2)).verdict == "reject"  # worse mae
    same = regression_case(200, 1.0, 1.0)
    equal = PairedSample(same.labels, same.champion, same.champion)
    assert regression.judge_checkpoint(equal).verdict == "promote"


def test_significant_checkpoints_are_judged_like_any_challenger() -> None:
    gate = PromotionGate(GateConfig(min_rows=20), "classification")
    small = accuracy_case(30, 31, 40)
    assert gate.judge_checkpoint(small) == gate.judge(small)

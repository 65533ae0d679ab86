"""Strategy auto: each choice from the evidence, with its rationale; explicit strategies and their fallbacks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from controller.loop.auto import ChampionFacts, choose_strategy
from controller.loop.config import Action, AutoConfig
from tests.loop.signals_kit import concept, data
from trainers import LastRows, SinceDrift

NOW = datetime(2026, 3, 1, tzinfo=UTC)
AUTO = AutoConfig(severe_drift_share=0.5, abrupt_loss_jump=0.2, max_chain_depth=3, max_parent_age="30d")
SKLEARN = ChampionFacts(version="4", flavor="sklearn", chain_depth=1, window_end=NOW - timedelta(days=2))
RIVER = ChampionFacts(version="4", flavor="river", chain_depth=7, window_end=NOW - timedelta(days=90))
DEFAULT_WINDOW = LastRows(rows=5000)


def choose(action: dict | None = None, champion: ChampionFacts = SKLEARN, **signals):
    return choose_strategy(Action.model_validate(action or {}), champion, AUTO, now=NOW,
                           default_window=DEFAULT_WINDOW, **signals)


def test_moderate_change_fine_tunes_the_parent() -> None:
    choice = choose(data_drift=data(0.3))
    assert (choice.strategy, choice.requested) == ("finetune", "auto")
    assert "fine-tune the parent" in choice.rationale


def test_abrupt_concept_drift_retrains_stateless_on_the_rows_since_the_drift() -> None:
    choice = choose(concept_drift=concept(True))  # loss 0.10 -> 0.45: +0.35 >= 0.2
    assert choice.strategy == "stateless"
    assert isinstance(choice.window, SinceDrift) and choice.window.fallback == DEFAULT_WINDOW
    assert "abrupt concept drift: mean loss 0.100 -> 0.450" in choice.rationale


def test_a_small_loss_jump_is_not_abrupt() -> None:
    gentle = AutoConfig(abrupt_loss_jump=0.5)
    choice = choose_strategy(Action(), SKLEARN, gentle, now=NOW, default_window=DEFAULT_WINDOW,
                             concept_drift=concept(True))
    assert choice.strategy == "finetune"


def test_a_large_drift_share_retrains_stateless() -> None:
    choice = choose(data_drift=data(0.75))
    assert choice.strategy == "stateless" and "data drift share 0.75 >= auto.severe_drift_share" in choice.rationale


def test_a_deep_chain_or_a_stale_parent_is_rebased() -> None:
    deep = ChampionFacts(version="9", flavor="sklearn", chain_depth=3, window_end=NOW)
    stale = ChampionFacts(version="9", flavor="sklearn", chain_depth=0, window_end=NOW - timedelta(days=31))
    assert "chain depth 3 >= auto.max_chain_depth 3" in choose(champion=deep).rationale
    assert choose(champion=deep).strategy == "stateless"
    assert choose(champion=stale).strategy == "stateless" and "max_parent_age" in choose(champion=stale).rationale


def test_an_unsound_fine_tune_falls_back_to_stateless_with_the_reason() -> None:
    hgb = ChampionFacts(version="2", flavor="sklearn", not_fine_tunable="HistGradientBoosting rebins on new data")
    assert choose(champion=hgb).strategy == "stateless"
    explicit = choose({"strategy": "finetune"}, champion=hgb)
    assert (explicit.strategy, explicit.requested) == ("stateless", "finetune")
    assert "fell back to stateless" in explicit.rationale and "rebins" in explicit.rationale


def test_a_river_champion_keeps_learning_and_resets_on_severe_drift() -> None:
    # Chain depth and parent age do not matter for a continual learner.
    assert choose(champion=RIVER).strategy == "incremental"
    reset = choose(champion=RIVER, concept_drift=concept(True))
    assert reset.strategy == "stateless" and "reset the River model" in reset.rationale
    assert isinstance(reset.window, SinceDrift)


@pytest.mark.parametrize(("requested", "champion", "expected"), [
    ("stateless", RIVER, "stateless"),
    ("incremental", RIVER, "incremental"),
    ("incremental", SKLEARN, "stateless"),   # nothing to continue incrementally
    ("finetune", SKLEARN, "finetune"),
])
def test_explicit_strategies_are_honoured_when_they_can_run(requested, champion, expected) -> None:
    choice = choose({"strategy": requested, "window": {"last_rows": 10}}, champion=champion)
    assert (choice.strategy, choice.requested) == (expected, requested)
    assert choice.window == LastRows(rows=10)


def test_a_severe_performance_drop_is_worded_in_the_direction_the_metric_moved() -> None:
    from dataclasses import replace

    from tests.loop.signals_kit import performance

    accuracy = choose(performance=performance(0.6, reference=0.9))  # 33 % drop
    assert accuracy.strategy == "stateless"
    assert "live accuracy 0.600 is 33% below the champion's reference 0.900" in accuracy.rationale
    # An error metric gets worse upwards: rmse 2.041 against a reference of 1.760 is worse, not "below".
    rmse = replace(performance(0.6, reference=0.9), metric="rmse", value=2.041, reference=1.760, drop_relative=0.16)
    assert "live rmse 2.041 is 16% worse than the champion's reference 1.760" in choose(performance=rmse).rationale

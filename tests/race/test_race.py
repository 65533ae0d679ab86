"""The race's logic on its own (controller.race.race): scripted racers injected as objects, no store, no registry.

Scripted racers predict from a table of answers and record what they were taught, so each test states exactly what
every racer knew when it predicted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from controller.race.config import RaceConfig
from controller.race.race import Race, Racer
from trainers.online import RowPredictions


class Scripted:
    """Predicts ``answer(row)``; learns nothing but remembers every label it was taught (and when)."""

    def __init__(self, answer: Any, *, fail_on: str | None = None) -> None:
        self.answer = answer
        self.fail_on = fail_on
        self.taught: list[Any] = []
        self.n_updates = 0
        self.known_at_predict: list[int] = []

    def predict_records(self, records: Sequence[Mapping[str, Any]]) -> RowPredictions:
        if self.fail_on == "predict":
            raise RuntimeError("boom")
        self.known_at_predict += [len(self.taught)] * len(records)
        return RowPredictions(values=[self.answer(r) for r in records])

    def learn_records(self, records: Sequence[Mapping[str, Any]], targets: Sequence[Any]) -> int:
        if self.fail_on == "learn":
            raise RuntimeError("cannot learn")
        self.taught += list(targets)
        self.n_updates += len(targets)
        return len(targets)

    def dumps(self) -> bytes:
        return b""


def right(record: Mapping[str, Any]) -> int:
    return record["y"]


def coin(seed: int, p: float) -> Any:
    """Right with probability p (seeded per row)."""
    def answer(record: Mapping[str, Any]) -> int:
        rng = np.random.default_rng([seed, record["i"]])
        return record["y"] if rng.random() < p else 1 - record["y"]
    return answer


def race_of(*racers: tuple[str, Any, str], config: RaceConfig | None = None, champion: str | None = None) -> Race:
    race = Race(config or RaceConfig(min_rows=10, batch_rows=1), task="classification", metric="accuracy",
                classes=[0, 1])
    for key, model, kind in racers:
        race.add(Racer(key=key, kind=kind, origin="policy" if kind == "online" else "retrain", model=model))
    race.crown(champion or racers[0][0])
    return race


def rows(start: int, n: int, seed: int = 0) -> tuple[list[str], list[dict[str, Any]]]:
    rng = np.random.default_rng([seed, start])
    ys = rng.integers(0, 2, size=n)
    return [f"r{start + i}" for i in range(n)], [{"i": start + i, "y": int(y)} for i, y in enumerate(ys)]


def tick(race: Race, start: int, n: int, *, delay: int = 0, seed: int = 0) -> Any:
    """Rows start..start+n are logged; the labels of the rows logged ``delay`` ticks earlier mature."""
    ids, records = rows(start, n, seed)
    race.score(ids, records)
    old_ids, old_records = rows(start - delay * n, n, seed) if start - delay * n >= 0 else ([], [])
    seqs = list(range(start - delay * n, start - delay * n + len(old_ids)))
    step = race.mature(seqs, old_ids, old_records, [r["y"] for r in old_records])
    return step


def test_every_row_is_predicted_before_its_label_or_any_later_label_is_learned() -> None:
    learner = Scripted(right)
    race = race_of(("champion", Scripted(right), "frozen"), ("learner", learner, "online"))
    for t in range(20):
        tick(race, 5 * t, 5, delay=2)
    # The row logged at tick t was predicted when only labels of ticks <= t-3 had been learned (delay 2, and this
    # tick's labels are learned after this tick's rows are scored).
    for row, known in enumerate(learner.known_at_predict):
        logged_tick = row // 5
        assert known == max(0, logged_tick - 2) * 5


def test_a_clearly_better_challenger_is_promoted_within_tens_of_rows() -> None:
    race = race_of(("champion", Scripted(coin(1, 0.5)), "frozen"), ("good", Scripted(coin(2, 0.95)), "frozen"))
    switch, position = None, 0
    for t in range(200):
        tick(race, t, 1)
        switch, _ = race.verdict()
        if switch is not None:
            position = t
            break
    assert switch is not None and switch.challenger == "good" and switch.champion == "champion"
    assert position < 10 + 80  # min_rows of the champion's history, then tens of rows
    assert switch.evidence >= switch.threshold == pytest.approx(7 / 0.05)
    assert switch.challenger_metric > switch.champion_metric


def test_equal_racers_never_switch() -> None:
    race = race_of(("champion", Scripted(coin(1, 0.8)), "frozen"), ("same", Scripted(coin(2, 0.8)), "online"))
    for t in range(300):
        tick(race, 5 * t, 5)
        switch, _ = race.verdict()
        assert switch is None


def test_a_racer_that_raises_leaves_the_race_and_the_tick_goes_on() -> None:
    race = race_of(("champion", Scripted(right), "frozen"), ("broken", Scripted(right, fail_on="predict"), "online"),
                   ("slow", Scripted(right, fail_on="learn"), "online"), ("ok", Scripted(right), "online"))
    tick(race, 0, 5)
    tick(race, 5, 5, delay=1)
    assert set(race.racers) == {"champion", "ok"}
    reasons = {d.key: d.reason for d in race.dropped}
    assert reasons["broken"] == "predict raised RuntimeError: boom"
    assert reasons["slow"] == "learn raised RuntimeError: cannot learn"


def test_a_champion_that_cannot_learn_keeps_serving_frozen() -> None:
    race = race_of(("champion", Scripted(right, fail_on="learn"), "online"), ("other", Scripted(right), "online"))
    tick(race, 0, 5)
    tick(race, 5, 5, delay=1)
    champion = race.racers["champion"]
    assert race.champion == "champion" and champion.kind == "frozen"
    assert champion.note == "stopped learning: learn raised RuntimeError: cannot learn"


def test_a_clearly_worse_frozen_challenger_leaves_but_a_policy_learner_stays() -> None:
    race = race_of(("champion", Scripted(coin(1, 0.95)), "frozen"), ("bad", Scripted(coin(2, 0.4)), "frozen"),
                   ("learner", Scripted(coin(3, 0.4)), "online"))
    left = []
    for t in range(100):
        tick(race, t, 1)
        _, gone = race.verdict()
        left += gone
    assert [g.key for g in left] == ["bad"] and "worse than the champion" in left[0].reason
    assert "learner" in race.racers


def test_an_undecided_frozen_challenger_retires_after_challenger_rows() -> None:
    config = RaceConfig(min_rows=10, batch_rows=1, challenger_rows=100)
    race = race_of(("champion", Scripted(coin(1, 0.8)), "frozen"), ("twin", Scripted(coin(2, 0.8)), "frozen"),
                   config=config)
    gone = []
    for t in range(40):
        tick(race, 5 * t, 5)
        gone += race.verdict()[1]
    assert [g.key for g in gone] == ["twin"] and "undecided after" in gone[0].reason


def test_a_full_race_retires_its_worst_frozen_challenger_to_let_a_new_one_in() -> None:
    config = RaceConfig(min_rows=10, batch_rows=1, max_racers=3)
    race = race_of(("champion", Scripted(coin(1, 0.9)), "frozen"), ("weak", Scripted(coin(2, 0.6)), "frozen"),
                   ("strong", Scripted(coin(3, 0.85)), "frozen"), config=config)
    for t in range(5):
        tick(race, 5 * t, 5)
    assert race.add(Racer(key="new", kind="frozen", origin="retrain", model=Scripted(right))) is None
    assert set(race.racers) == {"champion", "strong", "new"}
    assert race.dropped[-1].reason == "retired to make room for new"
    full = race_of(("champion", Scripted(right), "frozen"), ("a", Scripted(right), "online"),
                   ("b", Scripted(right), "online"), config=config)
    refused = full.add(Racer(key="c", kind="frozen", origin="retrain", model=Scripted(right)))
    assert refused == "the race is full (3 racers, none of them a frozen challenger)"


def test_crowning_restarts_every_duel_against_the_new_champion() -> None:
    race = race_of(("a", Scripted(coin(1, 0.5)), "frozen"), ("b", Scripted(coin(2, 0.95)), "frozen"),
                   ("c", Scripted(coin(3, 0.7)), "frozen"))
    for t in range(60):
        tick(race, t, 1)
    assert race.duels["b"].rows > 0
    race.crown("b")
    assert race.duels == {}
    tick(race, 60, 1)
    assert set(race.duels) == {"a", "c"} and race.duels["a"].champion == "b"


def test_regression_duels_compare_clipped_losses() -> None:
    config = RaceConfig(min_rows=20, batch_rows=1, margin={"relative": 0.05})
    race = Race(config, task="regression", metric="mae")

    def noisy(seed: int, scale: float) -> Any:
        return lambda r: r["y"] + float(np.random.default_rng([seed, r["i"]]).normal(scale=scale))

    race.add(Racer(key="champion", kind="frozen", origin="champion", model=Scripted(noisy(1, 2.0))))
    race.add(Racer(key="better", kind="frozen", origin="retrain", model=Scripted(noisy(2, 0.5))))
    race.crown("champion")
    switch = None
    for t in range(400):
        ids = [f"r{t}"]
        records = [{"i": t, "y": float(t % 7)}]
        race.score(ids, records)
        race.mature([t], ids, records, [records[0]["y"]])
        switch, _ = race.verdict()
        if switch:
            break
    assert switch is not None and switch.challenger == "better"
    duel_clip = switch.delta  # delta is the margin in clipped-loss units: below 0.5 and positive
    assert 0 < duel_clip < 0.5
    assert switch.challenger_metric < switch.champion_metric


def test_frozen_racers_are_judged_in_batches_of_batch_rows() -> None:
    frozen = Scripted(right)
    race = race_of(("champion", Scripted(coin(1, 0.7)), "online"), ("frozen", frozen, "frozen"),
                   config=RaceConfig(min_rows=10, batch_rows=7))
    for t in range(20):
        tick(race, t, 1)
        # The frozen racer is asked only once 7 matured rows are waiting, then for all 7 at once.
        assert len(frozen.known_at_predict) == 7 * ((t + 1) // 7)
        assert race.rows == 7 * ((t + 1) // 7) and len(race.unjudged) == (t + 1) % 7
    race.judge()
    assert race.rows == 20 and race.racers["frozen"].scored == 20


def test_a_checkpoint_given_by_updates_only_has_no_minute_cadence() -> None:
    # The incremental trainer's default of 10 minutes would register an online champion every ten minutes of a
    # backtest's simulated clock (every ten rows at a row a minute).
    given = RaceConfig.model_validate({"checkpoint": {"every_updates": 5000}}).checkpoint
    assert (given.every_updates, given.every_minutes) == (5000, None)
    both = RaceConfig.model_validate({"checkpoint": {"every_updates": 50, "every_minutes": 5}}).checkpoint
    assert (both.every_updates, both.every_minutes) == (50, 5)

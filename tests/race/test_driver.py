"""The race against a real store and registry (controller.race.driver): leak-free scoring, restarts, the outcome log."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

from controller.clock import ManualClock
from controller.race.driver import STATE_KEY, RaceDriver
from controller.race.outcomes import decode
from tests.race.race_kit import RaceModel, minutes, race_model, regression_table


class Stream:
    """Rows logged a few per minute; each label arrives 0..6 minutes after its row (seeded), in arrival order."""

    def __init__(self, model: RaceModel, seed: int = 1, rows_per_minute: int = 4) -> None:
        self.model = model
        self.table = regression_table(2000, seed=seed)
        self.rng = np.random.default_rng(seed)
        self.next_row = 0
        self.rows_per_minute = rows_per_minute
        self.due: list[tuple[datetime, str, float]] = []
        self.logged_at: dict[str, datetime] = {}
        self.arrived_at: dict[float, datetime] = {}

    def minute(self, driver: RaceDriver) -> None:
        """One minute: the labels due arrive, the race ticks, then new rows are logged."""
        clock = self.model.clock
        clock.advance(seconds=60)
        now = clock.now()
        arrived = [d for d in self.due if d[0] <= now]
        self.due = [d for d in self.due if d[0] > now]
        if arrived:
            self.model.label([(pid, y) for _, pid, y in arrived])
            for _, _, y in arrived:
                self.arrived_at[y] = now
        driver.tick(now, self.model.registry.get(self.model.name, self.model.registry.champion_version(
            self.model.name)))
        chunk = self.table.iloc[self.next_row:self.next_row + self.rows_per_minute]
        self.next_row += len(chunk)
        for pid, y in zip(self.model.log(chunk), chunk["y"], strict=True):
            self.logged_at[pid] = now
            self.due.append((now + minutes(int(self.rng.integers(0, 7))), pid, float(y)))


def test_no_racer_score_uses_a_label_that_arrived_after_its_row(tmp_path, clock: ManualClock) -> None:
    model = race_model(tmp_path, clock)
    boot = model.store.labeled_window(model.name, clock.now())
    driver = RaceDriver(model.loaded, model.store, model.registry, clock)
    stream = Stream(model)
    for y in boot.labels.tolist():
        stream.arrived_at[float(y)] = boot.as_of
    checked = 0
    for _ in range(40):
        stream.minute(driver)
        for pid, (_, predictions) in driver.race.pending.items():
            value = predictions["no-change"][0]
            # The no-change racer predicts the newest label it learned: that label must have arrived by the time
            # the row was logged, or the score of the row used the future.
            assert stream.arrived_at[value] <= stream.logged_at[pid], pid
            checked += 1
    assert checked > 100
    assert driver.race.racers["no-change"].learned > 40 * 2


def test_a_restart_neither_relearns_the_history_nor_learns_a_label_twice(tmp_path, clock: ManualClock) -> None:
    twins = {}
    for run in ("uninterrupted", "restarted"):
        folder = tmp_path / run
        folder.mkdir()
        run_clock = ManualClock(clock.now())
        model = race_model(folder, run_clock)
        stream = Stream(model)
        driver = RaceDriver(model.loaded, model.store, model.registry, run_clock)
        for minute in range(60):
            if run == "restarted" and minute == 37:
                # A new process: everything in memory is gone; the race comes back from its last save.
                driver = RaceDriver(model.loaded, model.store, model.registry, run_clock)
            stream.minute(driver)
        twins[run] = (driver, model)
    (straight, _), (again, model) = twins["uninterrupted"], twins["restarted"]
    probe = [{"x1": float(a), "x2": float(b)} for a, b in np.random.default_rng(5).normal(size=(20, 2))]
    for key in ("no-change", "linear"):
        a, b = straight.race.racers[key], again.race.racers[key]
        assert a.model.n_updates == b.model.n_updates
        assert a.learned_through == b.learned_through
        assert a.model.predict_records(probe).values == b.model.predict_records(probe).values
    # Every label was learned exactly once: the newest 100 bootstrap rows (race.warm_start_rows), then every label
    # that arrived while the race ran (the last minute's too: they arrive before its tick).
    arrived = model.store.labeled_count(model.name, model.clock.now())[0]
    assert again.race.racers["no-change"].model.n_updates == arrived - 200 + 100
    saved = model.store.get_state(model.name, STATE_KEY)
    assert saved is not None


def test_the_outcome_log_has_every_scored_row_once_with_each_racers_score(tmp_path, clock: ManualClock) -> None:
    model = race_model(tmp_path, clock)
    driver = RaceDriver(model.loaded, model.store, model.registry, clock)
    stream = Stream(model)
    for _ in range(50):
        stream.minute(driver)
    driver.save(clock.now())
    log = decode(model.store.race_outcome_blocks(model.name))
    assert log["seq"].is_unique and log["prediction_id"].is_unique
    assert set(log.columns) == {"seq", "prediction_id", "v1", "no-change", "linear"}
    assert len(log) == sum(r.scored for r in driver.race.racers.values()) / 3
    # The scores are the racers' absolute errors: non-negative, and the no-change racer's are the largest here.
    assert (log[["v1", "no-change", "linear"]] >= 0).all().all()
    assert log["no-change"].mean() > log["linear"].mean()
    assert pd.Series(log["seq"]).is_monotonic_increasing

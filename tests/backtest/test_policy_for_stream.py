"""A backtest replays the user's policy as written: only its schema and stores are swapped for the stream's."""

from __future__ import annotations

from pathlib import Path

from controller.backtest.replay import policy_for_stream
from controller.backtest.streams import scenario
from controller.policy_loader import load_policy
from tests.backtest.conftest import write_policy


def test_a_null_setting_stays_null_and_the_stores_move_to_the_workdir(tmp_path: Path) -> None:
    path = write_policy(tmp_path / "policy")
    path.write_text(path.read_text().replace(
        "retrain: {holdout_fraction: 0.25, min_rows: 40}",
        "retrain: {holdout_fraction: 0.25, min_rows: 40, incremental: {checkpoint: "
        "{every_updates: 200, every_minutes: null}}}"))
    loaded = load_policy(path, environ={})
    assert loaded.config.retrain.incremental.checkpoint.every_minutes is None
    stream = scenario("sea-abrupt", rows=200, seed=0)
    replayed = policy_for_stream(loaded, stream.spec, tmp_path / "work").config
    # `every_minutes: null` turns the time threshold off; dropping the None brought back the default of 10 minutes
    # and checkpointed on every tick of the replay.
    assert replayed.retrain.incremental.checkpoint.every_minutes is None
    assert replayed.retrain.incremental.checkpoint.every_updates == 200
    assert replayed.gate == loaded.config.gate and replayed.rules == loaded.config.rules
    assert replayed.storage.url == f"sqlite:///{(tmp_path / 'work' / 'events.db').resolve()}"
    assert list(replayed.feature_types) == list(stream.spec.features)

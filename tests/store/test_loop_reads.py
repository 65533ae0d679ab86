"""The loop's cheap reads (EventStore.labeled_count, tail_start) answer exactly what labeled_window would, on SQLite
and PostgreSQL: with overwrites, labels that arrive before their prediction, several models in one store, batches
that share one arrival time, and as_of in the past. Their cost is measured in benchmarks/controller.py."""

from __future__ import annotations

from datetime import datetime

import pytest

from controller.clock import ManualClock
from controller.store import EventStore, LabelRecord, PredictionRecord
from tests.conftest import T0


def _prediction(pid: str, when: datetime) -> PredictionRecord:
    return PredictionRecord({"x": 1.0}, when, prediction=1, prediction_id=pid)


def _history(store: EventStore, clock: ManualClock, model: str, other: str) -> list[datetime]:
    """Six batches of labels (one arrival time each), interleaved with another model's, with an overwrite, a label
    that arrives before its prediction, and a label whose prediction never comes; returns each batch's time."""
    times = []
    for batch in range(6):
        clock.advance(minutes=10)
        ids = [f"b{batch}-{i}" for i in range(5)]
        store.add_predictions(model, [_prediction(pid, clock.now()) for pid in ids])
        store.add_predictions(other, [_prediction(pid, clock.now()) for pid in ids])
        labels = [LabelRecord(pid, i % 2) for i, pid in enumerate(ids)]
        if batch == 2:
            labels.append(LabelRecord("b0-1", 0, overwrite=True))      # supersedes a batch-0 label
            labels.append(LabelRecord("early", 1))                    # its prediction arrives with batch 4
            labels.append(LabelRecord("never", 0))                    # no prediction: never in a window
        if batch == 4:
            store.add_predictions(model, [_prediction("early", clock.now())])
        store.add_labels(model, labels)
        store.add_labels(other, [LabelRecord(pid, 1) for pid in ids])
        times.append(clock.now())
    return times


def test_labeled_count_after_a_cursor_is_what_labeled_window_returns(store: EventStore, clock: ManualClock,
                                                                      model_name) -> None:
    times = _history(store, clock, model_name, model_name + "-other")
    everything = store.labeled_window(model_name, clock.now())
    cursors = [None, *everything.label_seqs.tolist()]
    for as_of in (times[1], times[2], times[4], clock.now()):
        for cursor in cursors:
            window = store.labeled_window(model_name, as_of, after_seq=cursor)
            expected = (window.rows, window.last_seq)
            assert store.labeled_count(model_name, as_of, after_seq=cursor) == expected, (as_of, cursor)
            since = times[3]
            window = store.labeled_window(model_name, as_of, after_seq=cursor, since=since)
            assert store.labeled_count(model_name, as_of, after_seq=cursor, since=since) == \
                (window.rows, window.last_seq), (as_of, cursor, "since")


def test_a_cursor_of_a_superseded_label_or_another_model_still_counts_exactly(store: EventStore, clock: ManualClock,
                                                                               model_name) -> None:
    other = model_name + "-other"
    _history(store, clock, model_name, other)
    now = clock.now()
    superseded = store.label_history(model_name, "b0-1")
    assert len(superseded) == 2
    seqs = store.labeled_window(other, now).label_seqs.tolist()
    for cursor in (seqs[0], seqs[len(seqs) // 2], seqs[-1], 10**9, -1):
        window = store.labeled_window(model_name, now, after_seq=cursor)
        assert store.labeled_count(model_name, now, after_seq=cursor) == (window.rows, window.last_seq)


@pytest.mark.parametrize("rows", [1, 4, 5, 6, 13, 27, 28, 29, 100])
def test_tail_start_reads_the_same_newest_rows_as_max_rows(store: EventStore, clock: ManualClock, model_name,
                                                           rows: int) -> None:
    times = _history(store, clock, model_name, model_name + "-other")
    for as_of in (T0, times[0], times[2], times[4], clock.now()):
        since = store.tail_start(model_name, as_of, rows)
        newest = store.labeled_window(model_name, as_of, max_rows=rows)
        tail = store.labeled_window(model_name, as_of, since=since, max_rows=rows)
        assert tail.label_seqs.tolist() == newest.label_seqs.tolist(), (as_of, rows)
        assert tail.fingerprint == newest.fingerprint
        if newest.rows < rows:
            assert since is None
        else:
            assert since == newest.label_times.iloc[0]


def test_tail_start_needs_a_positive_row_count(store: EventStore, clock: ManualClock, model_name) -> None:
    with pytest.raises(ValueError, match="rows must be >= 1"):
        store.tail_start(model_name, clock.now(), 0)


def test_a_new_champions_detector_starts_at_the_end_of_its_training_window(tmp_path, clock: ManualClock,
                                                                          model_name) -> None:
    """Without a stored cursor the detector would read every labeled row ever stored on the first tick with labels."""
    import pickle

    from controller.actions.monitoring import DETECTOR_KEY
    from controller.loop.observe import last_seq
    from tests.loop.loop_kit import toy_model
    from tests.toy import toy_table

    toy = toy_model(tmp_path, tmp_path / "mlflow", model_name, clock)
    controller = toy.controller()
    champion = toy.registry.get(model_name, toy.registry.champion_version(model_name))
    assert toy.store.get_state(model_name, DETECTOR_KEY) is None
    controller.tick(clock.now())
    saved = pickle.loads(toy.store.get_state(model_name, DETECTOR_KEY))
    assert (saved["champion"], saved["cursor"]) == (champion.version, last_seq(champion))
    # Labels arrive: the detector moves on from there, saved every DETECTOR_SAVE_ROWS rows (not every tick).
    toy.traffic(toy_table(200, seed=5), controller=controller)
    assert pickle.loads(toy.store.get_state(model_name, DETECTOR_KEY))["cursor"] == last_seq(champion)
    toy.traffic(toy_table(400, seed=6), controller=controller)
    moved = pickle.loads(toy.store.get_state(model_name, DETECTOR_KEY))
    assert moved["cursor"] > last_seq(champion)
    # A restarted controller resumes from the saved cursor and, with the next labels, catches up to the newest one:
    # it re-reads the rows after its cursor (lags), it never skips them.
    toy.traffic(toy_table(100, seed=7), controller=toy.controller())
    newest = toy.store.labeled_window(model_name, clock.now(), after_seq=moved["cursor"]).last_seq
    assert newest > moved["cursor"]
    assert pickle.loads(toy.store.get_state(model_name, DETECTOR_KEY))["cursor"] == newest

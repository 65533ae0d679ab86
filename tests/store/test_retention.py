"""Retention (issue 13): `storage.retention` and `driftpilot db prune [--dry-run]`.

Store-level tests run on SQLite and on the real PostgreSQL server, with rows in the row tables and in sealed
segments; the CLI test bootstraps a real model (MLflow registry on SQLite) and checks that its training window and
holdout can still be rebuilt, fingerprint for fingerprint, after a prune.
"""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from controller.cli.main import main
from controller.clock import ManualClock, SystemClock
from controller.policy_loader import load_policy
from controller.store import EventStore, LabelRecord, PredictionRecord
from controller.store.control import DecisionLog
from controller.store.events import Sealing
from controller.store.retention import OPEN_END, Protected, protected_by_versions, prune
from controller.store.tables import labels, predictions
from tests.conftest import T0
from tests.toy import toy_table, write_policy

DAY = timedelta(days=1)


@pytest.fixture
def store(store_url: str, clock: ManualClock):
    store = EventStore.from_url(store_url, clock, sealing=Sealing(rows=10, keep_rows=0, mode="off"))
    yield store
    store.dispose()


def day_of_traffic(store: EventStore, clock: ManualClock, model: str, day: int, n: int = 10,
                   labeled: int | None = None) -> list[str]:
    """n predictions made on ``day`` (the clock is there), the first ``labeled`` of them labeled an hour later."""
    clock.set(T0 + day * DAY)
    ids = [f"d{day}-{i}" for i in range(n)]
    store.add_predictions(model, [PredictionRecord({"x": float(i)}, clock.now(), prediction=i % 2, prediction_id=p)
                                  for i, p in enumerate(ids)])
    clock.advance(hours=1)
    store.add_labels(model, [LabelRecord(p, i % 2) for i, p in enumerate(ids[:n if labeled is None else labeled])])
    return ids


def counts(store: EventStore, model: str) -> tuple[int, int]:
    with store.engine.connect() as conn:
        return (conn.execute(sa.select(sa.func.count()).select_from(labels).where(labels.c.model == model))
                .scalar_one(),
                conn.execute(sa.select(sa.func.count()).select_from(predictions).where(predictions.c.model == model))
                .scalar_one())


def test_max_age_prunes_old_events_in_row_tables_and_segments(store: EventStore, clock: ManualClock,
                                                              model_name: str) -> None:
    for day in range(6):
        day_of_traffic(store, clock, model_name, day, labeled=8)
    store.add_labels(model_name, [LabelRecord("never-predicted", 1)])  # day 5: unmatched, recent
    store.seal(model_name, keep_rows=15)  # days 0-3 sealed, the rest in the row tables
    clock.set(T0 + 6 * DAY)
    before = store.labeled_window(model_name, clock.now())
    dry = prune(store, model_name, max_age=3 * DAY + timedelta(hours=12), max_rows=None, protected=[],
                now=clock.now(), dry_run=True)
    assert store.labeled_window(model_name, clock.now()).fingerprint == before.fingerprint  # nothing deleted
    report = prune(store, model_name, max_age=3 * DAY + timedelta(hours=12), max_rows=None, protected=[],
                   now=clock.now())
    # Days 0, 1 and 2 go: 24 labeled predictions and 6 unlabeled ones; days 3-5 stay.
    for r in (dry, report):
        assert (r.labeled_predictions, r.label_rows, r.unlabeled_predictions, r.unmatched_labels) == (24, 24, 6, 0)
    after = store.labeled_window(model_name, clock.now())
    assert after.prediction_ids.tolist() == [p for p in before.prediction_ids if not p.startswith(("d0", "d1", "d2"))]
    assert store.count_predictions(model_name) == 30
    assert store.known_prediction_ids(model_name, ["d0-1", "d0-9", "d4-9"]) == {"d4-9"}
    assert store.label_stats(model_name).unmatched_labels == 1
    # A pruned id sent again is a new prediction, not a repeat of a deleted one.
    store.add_predictions(model_name, [PredictionRecord({"x": 9.0}, clock.now(), prediction_id="d0-1")])
    assert store.get_prediction(model_name, "d0-1")["features"] == {"x": 9.0}


def test_protected_ranges_and_ids_with_recent_labels_stay_whole(store: EventStore, clock: ManualClock,
                                                                model_name: str) -> None:
    for day in range(4):
        day_of_traffic(store, clock, model_name, day)
    seqs = store.labeled_window(model_name, clock.now()).label_seqs.tolist()
    day1 = seqs[10:20]
    # d0-3's old label is overwritten today: its id has a recent row, so nothing of it goes.
    clock.set(T0 + 5 * DAY)
    store.add_labels(model_name, [LabelRecord("d0-3", 0, overwrite=True)])
    store.seal(model_name, keep_rows=5)
    protected = [Protected("version 7: training window", day1[2], day1[6])]
    report = prune(store, model_name, max_age=2 * DAY, max_rows=None, protected=protected, now=clock.now())
    window = store.labeled_window(model_name, clock.now())
    kept = set(window.prediction_ids)
    assert {f"d1-{i}" for i in range(2, 7)} <= kept and not {"d1-0", "d1-1", "d1-7"} & kept
    assert "d0-3" in kept and [c.value for c in store.label_history(model_name, "d0-3")] == [1, 0]
    assert not {f"d0-{i}" for i in range(10) if i != 3} & kept
    assert report.kept_for_lineage == 5 and report.labeled_predictions == 10 - 1 + 10 - 5 + 10
    # The protected range rebuilds exactly: same rows as before the prune.
    rebuilt = store.labeled_window(model_name, T0 + 2 * DAY, after_seq=day1[2] - 1, through_seq=day1[6])
    assert rebuilt.prediction_ids.tolist() == [f"d1-{i}" for i in range(2, 7)]


def test_max_rows_keeps_the_newest_label_rows_and_never_the_newest_seq(store: EventStore, clock: ManualClock,
                                                                     model_name: str) -> None:
    for day in range(3):
        day_of_traffic(store, clock, model_name, day)
    store.seal(model_name, keep_rows=0, min_rows=1)
    report = prune(store, model_name, max_age=None, max_rows=12, protected=[], now=clock.now())
    assert report.label_rows == 18
    assert store.labeled_window(model_name, clock.now()).prediction_ids.tolist() == \
        [f"d1-{i}" for i in range(8, 10)] + [f"d2-{i}" for i in range(10)]
    last = store.labeled_window(model_name, clock.now()).last_seq
    # Everything older than a day goes, but the model's newest label stays: the next seq follows it.
    prune(store, model_name, max_age=timedelta(hours=1), max_rows=None, protected=[], now=T0 + 9 * DAY)
    window = store.labeled_window(model_name, clock.now())
    assert window.prediction_ids.tolist() == ["d2-9"] and window.last_seq == last
    store.add_predictions(model_name, [PredictionRecord({"x": 1.0}, clock.now(), prediction_id="new")])
    store.add_labels(model_name, [LabelRecord("new", 1)])
    assert store.labeled_window(model_name, clock.now(), after_seq=last).prediction_ids.tolist() == ["new"]


def test_in_flight_decisions_stop_or_limit_the_prune(store: EventStore, clock: ManualClock,
                                                     model_name: str) -> None:
    for day in range(3):
        day_of_traffic(store, clock, model_name, day)
    seqs = store.labeled_window(model_name, clock.now()).label_seqs.tolist()
    log = DecisionLog(store, clock)
    decision = log.open(model_name, trigger="manual", action="retrain", status="training")
    report = prune(store, model_name, max_age=timedelta(hours=1), max_rows=None, protected=[],
                   now=clock.now() + 5 * DAY)
    assert report.skipped and "is training" in report.skipped and report.label_rows == 0
    log.update(decision.decision_id, status="held",
               evidence={"challengers": [{"ok": True, "version": "2", "holdout_first_seq": seqs[15]}]})
    report = prune(store, model_name, max_age=timedelta(hours=1), max_rows=None, protected=[],
                   now=clock.now() + 5 * DAY)
    assert report.label_rows == 15 and report.protected[-1].last_seq == OPEN_END
    assert "holdout on" in "\n".join(report.lines())
    assert store.labeled_window(model_name, clock.now()).label_seqs.tolist() == seqs[15:]


def test_archive_keeps_what_was_pruned(store: EventStore, clock: ManualClock, model_name: str,
                                       tmp_path: Path) -> None:
    for day in range(3):
        day_of_traffic(store, clock, model_name, day, labeled=7)
    store.seal(model_name, keep_rows=12)
    report = prune(store, model_name, max_age=DAY, max_rows=None, protected=[], now=T0 + 3 * DAY,
                   archive=tmp_path / "archive")
    tables = [pd.read_parquet(p) for p in report.archived]
    labeled = pd.concat([t for t in tables if "label" in t.columns])
    unlabeled = pd.concat([t for t in tables if "label" not in t.columns])
    assert sorted(labeled.prediction_id) == sorted(f"d{d}-{i}" for d in (0, 1) for i in range(7))
    assert sorted(unlabeled.prediction_id) == sorted(f"d{d}-{i}" for d in (0, 1) for i in range(7, 10))
    row = labeled.set_index("prediction_id").loc["d1-3"]
    assert (json.loads(row.label), json.loads(row.features)) == (1, {"x": 3.0})


def test_protected_ranges_come_from_lineage_records() -> None:
    class Record:
        def __init__(self, extra):
            self.extra = extra

    class Info:
        def __init__(self, version, extra):
            self.version, self.record = version, Record(extra)

    ranges = protected_by_versions([
        Info("1", {"first_label_seq": 1, "last_label_seq": 50}),
        Info("2", {"first_label_seq": 51, "last_label_seq": 90, "holdout_first_seq": 91, "holdout_last_seq": 99}),
        Info("3", {}),
    ])
    assert [(r.reason, r.first_seq, r.last_seq) for r in ranges] == [
        ("version 1: training window", 1, 50), ("version 2: training window", 51, 90),
        ("version 2: holdout", 91, 99)]


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--log-level", "WARNING", *args])
    return result.exit_code, result.output


@pytest.mark.slow
def test_db_prune_keeps_every_registered_window_rebuildable(tmp_path: Path) -> None:
    """A real bootstrap (MLflow registry on SQLite), traffic after it, then `db prune --dry-run` and `db prune`
    with max_rows: the version's training window and holdout rebuild with the fingerprints in its lineage."""
    policy = write_policy(tmp_path, tmp_path, "prune-toy", "sklearn.linear_model.SGDClassifier",
                          "{loss: log_loss, random_state: 0}")
    data = tmp_path / "train.csv"
    toy_table(300).to_csv(data, index=False)
    assert run("bootstrap", "--config", str(policy), "--data", str(data))[0] == 0
    config = load_policy(policy, environ={}).config
    store = EventStore.from_url(config.storage.url, SystemClock(), sealing=Sealing(rows=50, keep_rows=0,
                                                                                    mode="off"))
    traffic = toy_table(400, seed=5)
    store.add_predictions(config.model, [PredictionRecord({"x1": r.x1, "x2": r.x2}, T0, prediction=0,
                                                          prediction_id=f"t{i}", model_version="1")
                                         for i, r in enumerate(traffic.itertuples())])
    store.add_labels(config.model, [LabelRecord(f"t{i}", int(y)) for i, y in enumerate(traffic.y[:350])])
    store.seal(config.model)
    policy.write_text(policy.read_text().replace("storage: {", "storage: {retention: {max_rows: 100}, ", 1)
                      if "storage: {" in policy.read_text() else
                      policy.read_text() + "")
    assert "retention" in policy.read_text(), policy.read_text()

    code, out = run("db", "prune", "--config", str(policy), "--dry-run")
    assert code == 0, out
    assert "would delete 250 labeled predictions with 250 label rows" in out and "50 unlabeled" not in out, out
    assert "protected: label seqs" in out and "version 1: training window" in out and "version 1: holdout" in out
    before = store.labeled_window(config.model, SystemClock().now())
    assert before.rows == 650

    code, out = run("db", "prune", "--config", str(policy), "--json")
    assert code == 0, out
    report = json.loads(out)
    assert (report["labeled_predictions"], report["label_rows"], report["dry_run"]) == (250, 250, False)
    assert store.labeled_window(config.model, SystemClock().now()).rows == 400

    from controller.actions.model_registry import open_registry

    (info,) = open_registry(config, SystemClock()).tree(config.registered_model)
    record = info.record
    train = store.labeled_window(config.model, record.maturity_cut, after_seq=record.extra["first_label_seq"] - 1,
                                 through_seq=record.extra["last_label_seq"], feature_types=config.feature_types)
    assert train.fingerprint == record.window_fingerprint and train.rows == record.window_rows
    holdout = store.labeled_window(config.model, record.maturity_cut, after_seq=record.extra["last_label_seq"])
    assert holdout.fingerprint == record.extra["holdout_fingerprint"]
    store.dispose()

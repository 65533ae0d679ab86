"""Several writers on one event store (issue 14, and the store items of issue 9).

Three layers, each on SQLite and on the real PostgreSQL server where it applies:

* the store's rules for repeats inside one batch and for re-sent predictions without an event time;
* threads, each with its own ``EventStore`` (its own engine and connections, as separate processes would have),
  writing overlapping predictions and labels at the same moment, and a reader paging labels with ``after_seq``;
* real processes: N processes opening a fresh folder at once, and two ``driftpilot serve`` processes on PostgreSQL
  answering concurrent clients with overlapping ids.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa

from controller.clock import ManualClock
from controller.errors import LabelConflict, PredictionConflict, StoreUnavailable
from controller.store import EventStore, LabelReceipt, LabelRecord, PredictionRecord
from controller.store.db import create_store_engine, current_revision, setup_lock
from lineage import RegistrySettings
from lineage.errors import LineageUnavailable
from lineage.gateway import setup_lock as mlflow_setup_lock
from tests.api.serve_kit import ServeProcesses
from tests.conftest import T0

FAR = T0 + timedelta(days=365)
OPEN_TOGETHER = Path(__file__).with_name("open_together.py")


def prediction(pid: str | None, x: float = 1.0, *, when: datetime | None = T0, **kw: Any) -> PredictionRecord:
    return PredictionRecord({"x": x, "color": "red"}, when, prediction=1, scores={"0": 0.4, "1": 0.6},
                            prediction_id=pid, **kw)


def run_together(*jobs: Callable[[], Any]) -> list[Any]:
    """Run each job in its own thread, released at the same moment; return each result or the exception raised."""
    barrier = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = jobs[i]()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.fixture
def writers(store_url: str) -> Iterator[Callable[[int], list[EventStore]]]:
    """``writers(n)``: n stores on the test's database, each with its own engine (like n processes)."""
    opened: list[EventStore] = []

    def make(n: int, clock: ManualClock | None = None) -> list[EventStore]:
        stores = [EventStore.from_url(store_url, clock or ManualClock(T0)) for _ in range(n)]
        opened.extend(stores)
        return stores

    yield make
    for store in opened:
        store.dispose()


# ------------------------------------------------------------------------------------------ one batch, one writer


def test_one_id_twice_in_a_label_batch_applies_in_order(store: EventStore, clock: ManualClock, model_name) -> None:
    store.add_predictions(model_name, [prediction("p1"), prediction("p2")])
    store.add_labels(model_name, [LabelRecord("p2", 0)])
    clock.advance(minutes=1)
    receipt = store.add_labels(model_name, [LabelRecord("p1", 0), LabelRecord("p1", 1, overwrite=True),
                                            LabelRecord("p2", 1, overwrite=True), LabelRecord("p2", 0, overwrite=True),
                                            LabelRecord("p1", 1)])
    # As if sent one by one: p1 new, p1 overwritten, p2 overwritten twice, p1 repeated.
    assert receipt == LabelReceipt(inserted=1, duplicates=1, overwritten=3, unmatched=0)
    now = clock.now()
    assert [(h.value, h.arrived_at, h.superseded_at) for h in store.label_history(model_name, "p1")] == [
        (0, now, now), (1, now, None)]
    assert [(h.value, h.arrived_at, h.superseded_at) for h in store.label_history(model_name, "p2")] == [
        (0, T0, now), (1, now, now), (0, now, None)]
    # A value replaced within its own batch was in force at no instant.
    window = store.labeled_window(model_name, now)
    assert dict(zip(window.prediction_ids, window.labels, strict=True)) == {"p1": 1, "p2": 0}
    before = store.labeled_window(model_name, now - timedelta(seconds=1))
    assert dict(zip(before.prediction_ids, before.labels, strict=True)) == {"p2": 0}


def test_one_id_twice_in_a_label_batch_needs_overwrite_on_the_later_item(store: EventStore, model_name) -> None:
    with pytest.raises(LabelConflict) as info:
        store.add_labels(model_name, [LabelRecord("p1", 0), LabelRecord("p2", 1), LabelRecord("p1", 1)])
    assert [(p.index, p.field) for p in info.value.problems] == [(2, "label")]
    assert ("prediction 'p1' already has label 0 by item 0 of this batch, got 1; send overwrite: true"
            in info.value.problems[0].problem)
    assert store.label_history(model_name, "p1") == [] and store.label_history(model_name, "p2") == []


def test_unmatched_counts_every_stored_label_row(store: EventStore, model_name) -> None:
    receipt = store.add_labels(model_name, [LabelRecord("p1", 0), LabelRecord("p1", 1, overwrite=True),
                                            LabelRecord("p2", 0)])
    assert receipt == LabelReceipt(inserted=2, duplicates=0, overwritten=1, unmatched=3)


def test_resent_prediction_without_event_time_is_a_noop(store: EventStore, clock: ManualClock, model_name) -> None:
    assert store.add_predictions(model_name, [prediction("p1", when=None)]) == ["p1"]
    stamped = clock.now()
    clock.advance(minutes=5)
    assert store.add_predictions(model_name, [prediction("p1", when=None), prediction("p2", when=None)]) == \
        ["p1", "p2"]
    assert store.get_prediction(model_name, "p1")["event_time"] == stamped  # the first stamp is kept
    assert store.get_prediction(model_name, "p2")["event_time"] == clock.now()
    with pytest.raises(PredictionConflict, match="'p1' is already stored with different content"):
        store.add_predictions(model_name, [prediction("p1", x=2.0, when=None)])
    # An explicit event time is part of the content: a different one conflicts, the stamped one is a repeat.
    with pytest.raises(PredictionConflict):
        store.add_predictions(model_name, [prediction("p1", when=stamped + timedelta(seconds=1))])
    store.add_predictions(model_name, [prediction("p1", when=stamped)])
    assert store.count_predictions(model_name) == 2


def test_one_prediction_id_twice_in_a_batch(store: EventStore, model_name) -> None:
    assert store.add_predictions(model_name, [prediction("p1"), prediction("p1")]) == ["p1", "p1"]
    with pytest.raises(PredictionConflict) as info:
        store.add_predictions(model_name, [prediction("p2"), prediction("p3"), prediction("p2", x=5.0)])
    assert [(p.index, p.field) for p in info.value.problems] == [(2, "prediction_id")]
    assert store.count_predictions(model_name) == 1  # p2 and p3 were rolled back with the batch


def test_retry_is_a_noop_for_numbers_the_database_gives_back_in_another_form(store: EventStore, model_name) -> None:
    """PostgreSQL's JSONB returns 1e16 as the integer 10000000000000000 and keeps 1.0 a float; still a repeat."""
    record = PredictionRecord({"x": 1e16, "y": 1.0, "z": -0.0, "n": float("nan"), "big": 10**20, "flag": True},
                              T0, prediction=2.5e-7, prediction_id="p1")
    store.add_predictions(model_name, [record])
    store.add_predictions(model_name, [record])
    with pytest.raises(PredictionConflict):  # True is not 1
        store.add_predictions(model_name, [PredictionRecord({**record.features, "flag": 1}, T0, prediction=2.5e-7,
                                                            prediction_id="p1")])


def test_arrival_time_never_goes_back_along_seq(writers, model_name) -> None:
    """A writer whose clock is behind another's (another host) stamps the newest arrival instead, so an as_of cut
    stays a prefix in seq order."""
    ahead, behind = writers(2)
    ahead.clock.set(T0 + timedelta(hours=1))
    behind.clock.set(T0 + timedelta(minutes=10))
    ahead.add_predictions(model_name, [prediction(f"p{i}") for i in range(3)])
    ahead.add_labels(model_name, [LabelRecord("p0", 1)])
    behind.add_labels(model_name, [LabelRecord("p1", 1)])
    ahead.clock.set(T0 + timedelta(hours=2))
    ahead.add_labels(model_name, [LabelRecord("p2", 1)])
    window = ahead.labeled_window(model_name, FAR)
    assert window.prediction_ids.tolist() == ["p0", "p1", "p2"]
    assert window.label_times.tolist() == [pd.Timestamp(T0 + timedelta(hours=1))] * 2 + [
        pd.Timestamp(T0 + timedelta(hours=2))]
    assert ahead.labeled_window(model_name, T0 + timedelta(minutes=30)).rows == 0


# ------------------------------------------------------------------------------------------ threads, one database


def test_concurrent_identical_predictions_are_noops(writers, model_name) -> None:
    """Four writers send the same 20 overlapping batches in different orders; half the items omit event_time and each
    writer's clock moves on between batches, so their stamps differ."""
    stores = writers(4)
    batches = [[f"p{j}" for j in range(start, start + 50)] for start in range(0, 500, 25)]

    def send(k: int) -> int:
        clock = stores[k].clock
        for ids in batches[k * 5:] + batches[:k * 5]:
            clock.advance(seconds=1)
            records = [prediction(pid, x=float(pid[1:]), when=T0 if int(pid[1:]) % 2 else None) for pid in ids]
            assert stores[k].add_predictions(model_name, records) == ids
        return len(batches)

    assert run_together(*(lambda k=k: send(k) for k in range(4))) == [20] * 4
    store = stores[0]
    assert store.count_predictions(model_name) == 525
    assert store.get_prediction(model_name, "p7")["features"] == {"x": 7.0, "color": "red"}


def test_concurrent_conflicting_predictions_refuse_the_loser_whole_batch(writers, model_name) -> None:
    a, b = writers(2)
    for round_ in range(6):
        shared = [f"r{round_}-{i}" for i in range(30)]
        batch_a = [prediction(pid, x=1.0) for pid in shared] + [prediction(f"r{round_}-a")]
        batch_b = [prediction(f"r{round_}-b")] + [prediction(pid, x=2.0) for pid in shared]
        result_a, result_b = run_together(partial(a.add_predictions, model_name, batch_a),
                                          partial(b.add_predictions, model_name, batch_b))
        outcomes = {type(result_a).__name__, type(result_b).__name__}
        assert outcomes == {"list", "PredictionConflict"}, (result_a, result_b)
        winner_x, loser, loser_extra, first_shared = (
            (1.0, result_b, f"r{round_}-b", 1) if isinstance(result_a, list) else (2.0, result_a, f"r{round_}-a", 0))
        assert [(p.index, p.field) for p in loser.problems] == [(first_shared + i, "prediction_id") for i in range(30)]
        assert {a.get_prediction(model_name, pid)["features"]["x"] for pid in shared} == {winner_x}
        assert a.get_prediction(model_name, loser_extra) is None  # nothing of the loser's batch was stored
    assert a.count_predictions(model_name) == 6 * 31


LABEL_CASES = {
    # name: (value A, overwrite A, value B, overwrite B, labeled before with)
    "same value": (0, False, 0, False, None),
    "different values": (0, False, 1, False, None),
    "both overwrite": (0, True, 1, True, None),
    "one overwrites": (0, False, 1, True, None),
    "same value, both overwrite": (1, True, 1, True, None),
    "both overwrite a stored label": (0, True, 1, True, 2),
}


@pytest.mark.parametrize("case", list(LABEL_CASES))
def test_concurrent_labels_under_every_overwrite_combination(writers, model_name, case: str) -> None:
    """Two writers label the same 40 ids at the same moment. Whichever commits first, the answers are exactly those
    of the two batches sent one after the other, and never a database error."""
    value_a, over_a, value_b, over_b, before = LABEL_CASES[case]
    a, b = writers(2)
    n = 40
    for round_ in range(4):
        ids = [f"{round_}-{i}" for i in range(n)]
        a.add_predictions(model_name, [prediction(pid) for pid in ids])
        if before is not None:
            a.add_labels(model_name, [LabelRecord(pid, before) for pid in ids])
        result_a, result_b = run_together(
            lambda ids=ids: a.add_labels(model_name, [LabelRecord(pid, value_a, over_a) for pid in ids]),
            lambda ids=ids: b.add_labels(model_name, [LabelRecord(pid, value_b, over_b) for pid in ids]))
        assert not any(isinstance(r, Exception) and not isinstance(r, LabelConflict) for r in (result_a, result_b))
        # Replay both orders on paper; the outcome must be one of them, with its receipts and its stored history.
        a_first = _sequential((value_a, over_a), (value_b, over_b), before, n)
        b_then_a = _sequential((value_b, over_b), (value_a, over_a), before, n)
        b_first = (b_then_a[1], b_then_a[0], b_then_a[2])
        histories = {tuple(h.value for h in a.label_history(model_name, pid)) for pid in ids}
        assert len(histories) == 1, histories  # every id went the same way: one batch committed wholly first
        assert (_answer(result_a), _answer(result_b), histories.pop()) in (a_first, b_first)


def _answer(result: Any) -> Any:
    if isinstance(result, LabelConflict):
        return ("conflict", tuple(p.index for p in result.problems))
    return result


def _sequential(first: tuple[int, bool], second: tuple[int, bool], before: int | None, n: int) -> tuple:
    """The receipts (or conflict) of two batches of n labels applied one after the other, and the history."""
    history = [] if before is None else [before]
    answers = []
    for value, overwrite in (first, second):
        if not history:
            answers.append(LabelReceipt(inserted=n, duplicates=0, overwritten=0, unmatched=0))
            history.append(value)
        elif history[-1] == value:
            answers.append(LabelReceipt(inserted=0, duplicates=n, overwritten=0, unmatched=0))
        elif overwrite:
            answers.append(LabelReceipt(inserted=0, duplicates=0, overwritten=n, unmatched=0))
            history.append(value)
        else:
            answers.append(("conflict", tuple(range(n))))
    return answers[0], answers[1], tuple(history)


def test_a_cursor_paging_with_after_seq_sees_every_label_exactly_once(writers, model_name) -> None:
    """The controller reads labels incrementally (``after_seq=cursor``). Four writers label one model while a reader
    pages from its cursor as fast as it can; on PostgreSQL, without the per-model lock, a label whose seq was taken
    before another writer's but committed after it would be skipped for good."""
    *stores, reader = writers(5)
    batches, size = 60, 10
    ids = [[f"w{k}-{j}" for j in range(batches * size)] for k in range(4)]
    reader.add_predictions(model_name, [prediction(pid) for group in ids for pid in group])
    done = threading.Event()
    seen: list[str] = []

    def write(k: int) -> None:
        for j in range(batches):
            stores[k].add_labels(model_name, [LabelRecord(pid, 1) for pid in ids[k][j * size:(j + 1) * size]])

    def read() -> None:
        cursor = 0
        while True:
            finished = done.is_set()  # read once more after the writers are done
            window = reader.labeled_window(model_name, FAR, after_seq=cursor)
            seen.extend(window.prediction_ids)
            cursor = window.last_seq or cursor
            if finished:
                return

    reader_thread = threading.Thread(target=read)
    reader_thread.start()
    try:
        results = run_together(*(lambda k=k: write(k) for k in range(4)))
    finally:
        done.set()
        reader_thread.join()
    assert results == [None] * 4
    assert len(seen) == len(set(seen)), "a label was read twice"
    missing = {pid for group in ids for pid in group} - set(seen)
    assert not missing, f"the cursor skipped {len(missing)} of {batches * size * 4} labels"


# ------------------------------------------------------------------------------------------ processes


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_processes_opening_a_fresh_folder_together_all_succeed(backend: str, tmp_path: Path, request) -> None:
    """Four processes open the event store and the local MLflow store of an empty folder at the same moment (they
    import first and start on a signal). Before the set-up locks, most of them died: `table alembic_version already
    exists`, MLflow's `duplicate column name: step`."""
    url = (f"sqlite:///{tmp_path / 'events.db'}" if backend == "sqlite"
           else request.getfixturevalue("fresh_postgres_url"))
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, str(OPEN_TOGETHER), "--store-url", url,
                               "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}", "--go", str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
             for _ in range(4)]
    try:
        go.touch()  # each process imports everything, then polls for this file
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    failures = [(p.returncode, err.strip().splitlines()[-1:]) for p, (_, err) in zip(procs, outputs, strict=True)
                if p.returncode != 0]
    assert failures == []
    assert [out.strip() for out, _ in outputs] == ["ok"] * 4
    engine = sa.create_engine(url)
    try:
        assert current_revision(engine) is not None
    finally:
        engine.dispose()


POLICY = """\
model: {model}
task: classification
target: {{name: y, classes: [a, b]}}
features:
  x: numeric
  c: categorical
storage: {{url: "{url}"}}
mlflow: {{tracking_uri: "sqlite:///{folder}/mlflow.db", artifact_location: "{folder}/mlartifacts"}}
"""


@pytest.mark.slow
@pytest.mark.postgres
def test_two_servers_on_postgres_answer_overlapping_writers_exactly(postgres_url: str, tmp_path: Path) -> None:
    """Two `driftpilot serve` processes started together on a fresh folder (one local MLflow store) and one
    PostgreSQL store; clients post overlapping predictions and labels, identical and conflicting, to both at once."""
    model = f"m-{uuid.uuid4().hex[:8]}"
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(model=model, url=postgres_url, folder=tmp_path))
    servers = ServeProcesses(policy, 2, tmp_path)
    statuses: list[int] = []
    lock = threading.Lock()
    try:
        servers.wait_healthy()
        clients = [httpx.Client(base_url=f"http://127.0.0.1:{servers.ports[k % 2]}", timeout=30) for k in range(4)]

        def post(k: int, kind: str, items: list[dict]) -> httpx.Response:
            response = clients[k].post(f"/v1/models/{model}/{kind}", json={"items": items})
            with lock:
                statuses.append(response.status_code)
            return response

        # 1. Identical predictions in overlapping batches (ids shared by up to 4 clients), half without event_time.
        def item(i: int, x: float | None = None) -> dict:
            body = {"prediction_id": f"q{i}", "features": {"x": float(i) if x is None else x, "c": "u"},
                    "prediction": "a"}
            if i % 2:
                body["event_time"] = "2026-01-01T00:00:00+00:00"
            return body

        windows = [list(range(start, start + 50)) for start in range(0, 600, 25)]  # ids 0..624

        def producer(k: int) -> list[int]:
            return [post(k, "predictions", [item(i) for i in w]).status_code for w in windows[k * 6:] + windows[:k * 6]]

        assert run_together(*(lambda k=k: producer(k) for k in range(4))) == [[200] * len(windows)] * 4

        # 2. The same 20 ids with different content from two clients on different servers: one 200, one 409.
        for round_ in range(5):
            shared = range(1000 + 100 * round_, 1020 + 100 * round_)
            r0, r1 = run_together(partial(post, 0, "predictions", [item(i, 1.0) for i in shared]),
                                  partial(post, 1, "predictions",
                                          [item(5000 + round_, 9.0)] + [item(i, 2.0) for i in shared]))
            assert sorted([r0.status_code, r1.status_code]) == [200, 409], (r0.text, r1.text)
            loser, offset = (r1, 1) if r0.status_code == 200 else (r0, 0)
            assert [(p["index"], p["field"]) for p in loser.json()["problems"]] == \
                [(offset + i, "prediction_id") for i in range(20)]

        # 3. Labels: two clients on different servers label the same 50 ids at once, every overwrite combination.
        label_rounds = {"same": ("a", False, "a", False), "differ": ("a", False, "b", False),
                        "both overwrite": ("a", True, "b", True), "one overwrites": ("a", False, "b", True)}
        label_answers = {}
        for n, (name, (va, oa, vb, ob)) in enumerate(label_rounds.items()):
            ids = [f"q{i}" for i in range(n * 50, n * 50 + 50)]
            ra, rb = run_together(
                partial(post, 0, "labels", [{"prediction_id": p, "label": va, "overwrite": oa} for p in ids]),
                partial(post, 1, "labels", [{"prediction_id": p, "label": vb, "overwrite": ob} for p in ids]))
            label_answers[name] = (ra, rb)
        for client in clients:
            client.close()
    finally:
        servers.stop(timeout_s=15)

    assert [s for s in statuses if s >= 500] == []
    for log in servers.logs:
        assert "Traceback" not in log.read_text(), log.read_text()

    def counts(response: httpx.Response) -> tuple:
        if response.status_code == 409:
            return ("409", len(response.json()["problems"]))
        body = response.json()
        return (body["inserted"], body["duplicates"], body["overwritten"], body["unmatched"])

    same = sorted(map(counts, label_answers["same"]))
    assert same == [(0, 50, 0, 0), (50, 0, 0, 0)]
    differ = sorted(map(counts, label_answers["differ"]), key=str)
    assert differ == sorted([(50, 0, 0, 0), ("409", 50)], key=str)
    assert sorted(map(counts, label_answers["both overwrite"])) == [(0, 0, 50, 0), (50, 0, 0, 0)]
    one = [counts(r) for r in label_answers["one overwrites"]]
    assert one in ([(50, 0, 0, 0), (0, 0, 50, 0)], [("409", 50), (50, 0, 0, 0)])

    store = EventStore.from_url(postgres_url, ManualClock(FAR))
    try:
        assert store.get_prediction(model, "q7")["features"] == {"x": 7.0, "c": "u"}
        client1_won = 0
        for round_ in range(5):
            values = {store.get_prediction(model, f"q{i}")["features"]["x"]
                      for i in range(1000 + 100 * round_, 1020 + 100 * round_)}
            assert values in ({1.0}, {2.0})
            # Client 1's own extra id was stored exactly when its batch won: a refused batch stores nothing.
            assert (store.get_prediction(model, f"q{5000 + round_}") is not None) == (values == {2.0})
            client1_won += values == {2.0}
        assert store.count_predictions(model) == 625 + 5 * 20 + client1_won
        window = store.labeled_window(model, FAR)
        final = dict(zip(window.prediction_ids, window.labels, strict=True))
        assert len(final) == 200
        assert {final[f"q{i}"] for i in range(50)} == {"a"}
        differ_winner = "a" if label_answers["differ"][0].status_code == 200 else "b"
        assert {final[f"q{i}"] for i in range(50, 100)} == {differ_winner}
        overwriter = "a" if counts(label_answers["both overwrite"][0])[2] == 50 else "b"
        assert {final[f"q{i}"] for i in range(100, 150)} == {overwriter}  # the later of the two
        assert {final[f"q{i}"] for i in range(150, 200)} == {"b"}  # the overwrite ends last in both orders
        assert [len(store.label_history(model, f"q{i}")) for i in (100, 150)] == \
            [2, 1 if one[0] == ("409", 50) else 2]
    finally:
        store.dispose()



def test_a_set_up_lock_held_too_long_is_a_clear_error(tmp_path: Path) -> None:
    """The set-up locks wait for another process, boundedly, then say which file is held and what to do."""
    engine = create_store_engine(f"sqlite:///{tmp_path / 'events.db'}")
    settings = RegistrySettings(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    events_lock, mlflow_lock = re.escape(str(tmp_path / "events.db.lock")), re.escape(str(tmp_path / "mlflow.db.lock"))
    with setup_lock(engine), mlflow_setup_lock(settings):  # another holder (a second open file, as in a process)
        with pytest.raises(StoreUnavailable, match=rf"held the lock file {events_lock} for over 0\.1 s.*fuser"), \
                setup_lock(engine, timeout_s=0.1):
            pass
        with pytest.raises(LineageUnavailable, match=rf"setting it up for over 0\.1 s \(it holds {mlflow_lock}\)"), \
                mlflow_setup_lock(settings, timeout_s=0.1):
            pass
    with setup_lock(engine, timeout_s=0.1), mlflow_setup_lock(settings, timeout_s=0.1):
        pass  # released
    engine.dispose()

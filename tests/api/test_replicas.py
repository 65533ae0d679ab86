"""Many API replicas on one PostgreSQL store (issue 13): real `driftpilot serve --workers 2` processes, clients that
write through all of them at once (with retries that land on another replica, labels before and after their
predictions, overwrites), and sealing running inside the servers meanwhile. Afterwards every event is stored exactly
once, nothing is half-stored, and the window reads back what the clients were told was stored."""

from __future__ import annotations

import hashlib
import random
import threading
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from controller.clock import ManualClock
from controller.store import EventStore
from controller.store.tables import sealed_ids, segments
from tests.api.serve_kit import ServeProcesses
from tests.conftest import T0
from tests.loop.daemon_kit import wait_until

FAR = T0 + timedelta(days=3650)

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


def label_of(pid: str, flipped: bool = False) -> str:
    first = "a" if hashlib.sha256(pid.encode()).digest()[0] % 2 else "b"
    return ({"a": "b", "b": "a"}[first]) if flipped else first


@pytest.mark.slow
@pytest.mark.postgres
def test_replicas_store_every_event_exactly_once(fresh_postgres_url: str, tmp_path: Path) -> None:
    model = f"m-{uuid.uuid4().hex[:8]}"
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(model=model, url=fresh_postgres_url, folder=tmp_path))
    # Small segments, so the servers' background sealing moves rows while the clients write.
    replicas = ServeProcesses(policy, 2, tmp_path, workers=2, label="replica",
                              env={"DRIFTPILOT_SEGMENT_ROWS": "300", "DRIFTPILOT_SEGMENT_KEEP_ROWS": "100"})
    clients, rounds, size = 6, 16, 40
    statuses: list[tuple[str, int, str]] = []
    flipped: set[str] = set()
    lock = threading.Lock()
    errors: list[BaseException] = []
    try:
        replicas.wait_healthy(timeout_s=180)

        def post(client: httpx.Client, rng: random.Random, kind: str, items: list[dict]) -> httpx.Response:
            port = rng.choice(replicas.ports)
            response = client.post(f"http://127.0.0.1:{port}/v1/models/{model}/{kind}", json={"items": items})
            with lock:
                statuses.append((kind, response.status_code, response.text[:300]))
            return response

        def client_job(k: int, wave: range) -> None:
            rng = random.Random(k * 1000 + wave.start)
            try:
                with httpx.Client(timeout=60) as client:
                    for r in wave:
                        ids = [f"c{k}-r{r}-{i}" for i in range(size)]
                        predictions = [{"prediction_id": p, "features": {"x": float(i), "c": f"u{i % 3}"},
                                        "prediction": "a", **({"event_time": "2026-01-01T00:00:00+00:00"}
                                                              if i % 2 else {})} for i, p in enumerate(ids)]
                        labels = [{"prediction_id": p, "label": label_of(p)} for p in ids]
                        first, second = (("labels", labels), ("predictions", predictions)) if r % 4 == 3 else \
                            (("predictions", predictions), ("labels", labels))
                        for kind, items in (first, second):
                            # Sent, then re-sent (a client retry) through whichever replica: the same answer twice.
                            one = post(client, rng, kind, items)
                            two = post(client, rng, kind, items)
                            assert one.status_code == two.status_code == 200, (one.text, two.text)
                            if kind == "predictions":
                                assert one.json()["prediction_ids"] == two.json()["prediction_ids"] == ids
                            else:
                                assert two.json()["duplicates"] == size
                        if r % 5 == 4:  # overwrite the labels of an older round (those rows may be sealed by now)
                            old = [f"c{k}-r{r - 4}-{i}" for i in range(0, size, 4)]
                            response = post(client, rng, "labels", [
                                {"prediction_id": p, "label": label_of(p, flipped=True), "overwrite": True}
                                for p in old])
                            assert response.status_code == 200 and response.json()["overwritten"] == len(old)
                            with lock:
                                flipped.update(old)
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        def run_wave(wave: range) -> None:
            threads = [threading.Thread(target=client_job, args=(k, wave)) for k in range(clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        # Two waves: a server's sealing helper process starts on its first due seal (seconds on a loaded machine),
        # so the second wave waits for a first segment: its writes, and its overwrites of rows that may be sealed by
        # then, meet sealing at work. Sealing can be well behind the clients when the second wave ends (on CI it
        # once had 600 rows sealed), so the servers keep running, and sealing, until 1,000 rows are sealed (with a
        # deadline) before they stop.
        run_wave(range(rounds // 2))
        engine = sa.create_engine(fresh_postgres_url)
        try:
            wait_until(lambda: segment_count(engine, model), f"a first segment of {model}", timeout_s=180)
            run_wave(range(rounds // 2, rounds))
            wait_until(lambda: sealed_row_count(engine, model) >= 1000, f"1,000 sealed rows of {model}",
                       timeout_s=180)
        finally:
            engine.dispose()
    finally:
        replicas.stop()
    assert errors == [], errors[:1]
    assert [s for s in statuses if s[1] != 200] == []
    for log in replicas.logs:
        assert "Traceback" not in log.read_text(), log.read_text()

    store = EventStore.from_url(fresh_postgres_url, ManualClock(FAR))
    try:
        total = clients * rounds * size
        assert store.count_predictions(model) == total
        window = store.labeled_window(model, FAR, feature_types={"x": "numeric", "c": "categorical"})
        assert window.rows == total and window.prediction_ids.is_unique
        seqs = window.label_seqs.to_numpy()
        assert (seqs[1:] > seqs[:-1]).all()
        expected = {p: label_of(p, flipped=p in flipped) for p in window.prediction_ids}
        assert dict(zip(window.prediction_ids, window.labels, strict=True)) == expected
        features = dict(zip(window.prediction_ids, window.features["x"], strict=True))
        assert all(features[p] == float(p.rsplit("-", 1)[1]) for p in window.prediction_ids)
        sample = sorted(flipped)[:20]
        assert all(len(store.label_history(model, p)) == 2 for p in sample)
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(sa.func.count()).select_from(sealed_ids)).scalar_one() > 0
    finally:
        store.dispose()


def segment_count(engine: sa.Engine, model: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(segments).where(segments.c.model == model)
                            ).scalar_one()


def sealed_row_count(engine: sa.Engine, model: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.func.coalesce(sa.func.sum(segments.c.row_count), 0))
                            .where(segments.c.model == model)).scalar_one()

"""How the API refuses what the views raise (controller/api/refusals.py): a batch over api.max_batch_items (413,
counted in the metrics), an unreachable or failing store (503, nothing written), and routes or methods that do not
exist (an error body, not FastAPI's default).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from controller.store import LabelChange
from tests.api.api_kit import Api, item
from tests.conftest import T0


def test_too_many_items_is_413_naming_the_limit(small_api: Api) -> None:
    response = small_api.predict(*(item(f"p-{i}") for i in range(4)))
    assert response.status_code == 413
    assert "batch of 4 items is over the limit of 3 (api.max_batch_items)" in response.json()["error"]
    assert small_api.stored() == 0
    labels = small_api.label(*({"prediction_id": f"p-{i}", "label": "UP"} for i in range(4)))
    assert labels.status_code == 413
    assert small_api.window_ids() == [] and small_api.store.label_history(small_api.model, "p-0") == []
    assert small_api.predict(*(item(f"p-{i}") for i in range(3))).status_code == 200  # at the limit is fine
    metrics = small_api.metrics()
    for kind in ("prediction", "label"):
        key = ("driftpilot_events_rejected_total",
               tuple(sorted({"model": small_api.model, "kind": kind, "reason": "too_large"}.items())))
        assert metrics[key] == 4


def test_an_unreachable_store_gives_503_with_a_clear_message(down_api: Api) -> None:
    for response in (down_api.predict(item("p-1")), down_api.label({"prediction_id": "p-1", "label": "UP"}),
                     down_api.client.get("/v1/models/down/stats")):
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert "event store postgresql+psycopg://postgres@127.0.0.1:1/nowhere is unreachable" in error
        assert "storage.url" in error and "nothing was written" in error
    # The other model's store is untouched and still works.
    assert down_api.store.count_predictions("down") == 0
    assert down_api.predict(item("p-1"), model="up").status_code == 200


def test_a_write_failing_mid_transaction_leaves_nothing_half_written(sqlite_api: Api, tmp_path: Path) -> None:
    """An overwrite first marks the old label superseded, then inserts the new one; fail the insert."""
    sqlite_api.predict(item("p-1"))
    sqlite_api.label({"prediction_id": "p-1", "label": "UP"})
    db = sqlite3.connect(tmp_path / "events.db")
    # A real database fault, not a mock: the trigger's missing table fails every INSERT on labels.
    db.execute("CREATE TRIGGER fail_label_insert BEFORE INSERT ON labels BEGIN INSERT INTO no_such_table "
               "VALUES (1); END")
    db.commit()
    sqlite_api.clock.advance(minutes=5)
    response = sqlite_api.label({"prediction_id": "p-1", "label": "DOWN", "overwrite": True})
    assert response.status_code == 503
    assert "failed during the request: no such table: main.no_such_table" in response.json()["error"]
    assert "rolled back; nothing was written" in response.json()["error"]
    assert sqlite_api.store.label_history(sqlite_api.model, "p-1") == [LabelChange("UP", T0, None)]
    db.execute("DROP TRIGGER fail_label_insert")
    db.commit()
    db.close()
    assert sqlite_api.label({"prediction_id": "p-1", "label": "DOWN", "overwrite": True}).status_code == 200
    assert [c.value for c in sqlite_api.store.label_history(sqlite_api.model, "p-1")] == ["UP", "DOWN"]


def test_routes_and_methods_that_do_not_exist_answer_with_an_error_body(sqlite_api: Api) -> None:
    missing = sqlite_api.client.get(f"/v1/models/{sqlite_api.model}/nothing-here")
    assert missing.status_code == 404
    assert missing.json() == {"error": f"Not Found: GET /v1/models/{sqlite_api.model}/nothing-here; see /docs for the "
                                       "endpoints"}
    wrong = sqlite_api.client.put(f"/v1/models/{sqlite_api.model}/predictions", json={"items": []})
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "POST"
    assert wrong.json()["error"].startswith("Method Not Allowed: PUT")

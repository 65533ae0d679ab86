"""Ingestion (controller/api/ingest.py, the write views of controller/api/routes/ingest.py), in-process over real
stores: predictions keep or get ids and event times, labels join their predictions whichever arrives first,
conflicts (409), overwrites recorded, and retries and repeats that are no-ops.
"""

from __future__ import annotations

from datetime import UTC, datetime

from controller.store import LabelChange
from tests.api.api_kit import Api, item, problems
from tests.conftest import T0


def test_predictions_keep_client_ids_generate_missing_ones_and_default_event_time(api: Api) -> None:
    made = datetime(2025, 12, 31, 23, 0, tzinfo=UTC)
    response = api.predict(item("p-1", event_time=made.isoformat(), model_version="3"),
                           item(features={"opt": 7}))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["accepted"] == 2
    assert body["prediction_ids"][0] == "p-1"
    generated = body["prediction_ids"][1]
    assert len(generated) == 32 and generated != "p-1"
    assert api.stored() == 2

    first = api.store.get_prediction(api.model, "p-1")
    assert first["event_time"] == made
    assert first["received_at"] == T0
    assert first["model_version"] == "3"
    assert first["features"] == {"x": 1.5, "c": "red", "b": True, "z": 0.0}
    second = api.store.get_prediction(api.model, generated)
    assert second["event_time"] == api.clock.now() == T0  # defaulted to the server clock
    assert second["features"]["opt"] == 7


def test_naive_event_time_is_taken_as_utc(sqlite_api: Api) -> None:
    assert sqlite_api.predict(item("p-1", event_time="2025-06-01T12:00:00")).status_code == 200
    assert sqlite_api.store.get_prediction(sqlite_api.model, "p-1")["event_time"] == datetime(
        2025, 6, 1, 12, tzinfo=UTC)


def test_labels_join_their_predictions(api: Api) -> None:
    api.predict(item("p-1"), item("p-2"))
    api.clock.advance(seconds=5)
    response = api.label({"prediction_id": "p-1", "label": "DOWN"})
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 1, "inserted": 1, "duplicates": 0, "overwritten": 0, "unmatched": 0}
    window = api.store.labeled_window(api.model, api.clock.now())
    assert list(window.prediction_ids) == ["p-1"]
    assert list(window.labels) == ["DOWN"]
    assert list(window.predictions) == ["UP"]


def test_a_label_before_its_prediction_joins_when_the_prediction_arrives(api: Api) -> None:
    response = api.label({"prediction_id": "late-1", "label": "UP"})
    assert response.json()["unmatched"] == 1
    assert api.window_ids() == []
    api.clock.advance(seconds=1)
    assert api.predict(item("late-1")).status_code == 200
    assert api.window_ids() == ["late-1"]


def test_a_different_label_without_overwrite_is_a_conflict_and_changes_nothing(api: Api) -> None:
    api.predict(item("p-1"), item("p-2"))
    api.label({"prediction_id": "p-1", "label": "UP"})
    api.clock.advance(minutes=1)
    response = api.label({"prediction_id": "p-2", "label": "UP"}, {"prediction_id": "p-1", "label": "DOWN"})
    assert response.status_code == 409, response.text
    assert problems(response) == [{
        "index": 1, "field": "label",
        "problem": "prediction 'p-1' already has label 'UP', got 'DOWN'; send overwrite: true to replace it "
                   "(the change is recorded)"}]
    assert api.store.label_history(api.model, "p-1") == [LabelChange("UP", T0, None)]
    assert api.store.label_history(api.model, "p-2") == []  # the good item of the refused batch was not stored


def test_overwrite_is_recorded_with_old_value_new_value_and_time(api: Api) -> None:
    api.predict(item("p-1"))
    api.label({"prediction_id": "p-1", "label": "UP"})
    changed = api.clock.advance(hours=2)
    response = api.label({"prediction_id": "p-1", "label": "DOWN", "overwrite": True})
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 1, "inserted": 0, "duplicates": 0, "overwritten": 1, "unmatched": 0}
    assert api.store.label_history(api.model, "p-1") == [LabelChange("UP", T0, changed),
                                                          LabelChange("DOWN", changed, None)]
    # Label maturity: a window as of before the change still sees the old value.
    assert list(api.store.labeled_window(api.model, T0).labels) == ["UP"]
    assert list(api.store.labeled_window(api.model, changed).labels) == ["DOWN"]


def test_the_same_label_twice_is_a_counted_no_op(api: Api) -> None:
    api.predict(item("p-1"))
    api.label({"prediction_id": "p-1", "label": "UP"})
    api.clock.advance(seconds=30)
    response = api.label({"prediction_id": "p-1", "label": "UP"}, {"prediction_id": "p-1", "label": "UP",
                                                                   "overwrite": True})
    assert response.status_code == 200
    assert response.json() == {"accepted": 2, "inserted": 0, "duplicates": 2, "overwritten": 0, "unmatched": 0}
    assert api.store.label_history(api.model, "p-1") == [LabelChange("UP", T0, None)]


def test_a_prediction_id_resent_with_other_content_is_a_conflict_and_identical_resend_is_a_no_op(api: Api) -> None:
    assert api.predict(item("p-1")).status_code == 200
    assert api.predict(item("p-1")).json() == {"accepted": 1, "prediction_ids": ["p-1"]}
    response = api.predict(item("p-2"), item("p-1", prediction="DOWN"))
    assert response.status_code == 409
    assert [(p["index"], p["field"]) for p in problems(response)] == [(1, "prediction_id")]
    assert api.stored() == 1
    assert api.store.get_prediction(api.model, "p-1")["prediction"] == "UP"


def test_a_retried_prediction_without_event_time_is_a_no_op(api: Api) -> None:
    """Issue 9 item 2 (fixed in the store): the server's stamp is not part of what the client sent."""
    first = api.predict(item("p-1"), item("p-2", event_time="2025-12-31T23:00:00Z"))
    assert first.status_code == 200, first.text
    api.clock.advance(minutes=3)
    retry = api.predict(item("p-1"), item("p-2", event_time="2025-12-31T23:00:00Z"))
    assert retry.status_code == 200, retry.text
    assert retry.json() == first.json()
    assert api.stored() == 2
    assert api.store.get_prediction(api.model, "p-1")["event_time"] == T0  # the first stamp stays
    changed = api.predict(item("p-1", features={"x": 2.5}))
    assert changed.status_code == 409  # other content under the same id is still a conflict
    assert api.store.get_prediction(api.model, "p-1")["features"]["x"] == 1.5


def test_one_label_batch_with_the_same_id_twice_applies_in_order(api: Api) -> None:
    """Issue 9 item 1 (fixed in the store): a later item with overwrite replaces the earlier one; the earlier value
    is history that was in force at no instant. Without overwrite the batch is a conflict and nothing is stored."""
    api.predict(item("p-1"))
    refused = api.label({"prediction_id": "p-1", "label": "UP"}, {"prediction_id": "p-1", "label": "DOWN"})
    assert refused.status_code == 409, refused.text
    assert [(p["index"], p["field"]) for p in problems(refused)] == [(1, "label")]
    assert api.store.label_history(api.model, "p-1") == []
    response = api.label({"prediction_id": "p-1", "label": "UP"},
                         {"prediction_id": "p-1", "label": "DOWN", "overwrite": True})
    assert response.status_code == 200, response.text
    assert (response.json()["inserted"], response.json()["overwritten"]) == (1, 1)
    assert [c.value for c in api.store.label_history(api.model, "p-1")] == ["UP", "DOWN"]
    assert list(api.store.labeled_window(api.model, api.clock.now()).labels) == ["DOWN"]

"""/predict with a real champion (controller/api/serving.py, controller/api/routes/serving.py), in-process over real
stores: hostile requests and rows the champion cannot score are refused and log nothing, retries are no-ops, a
stored id with other content is a declared 409.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from sklearn.compose import make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from controller.clock import ManualClock
from tests.api.api_kit import ServedApi, big_int_body, open_served_api, problems, raw_json, toy_rows


@pytest.mark.parametrize("body, field, problem", [
    ({"items": []}, "items", "List should have at least 1 item after validation, not 0"),
    (None, "features.x1", ("integer <integer of about 400 digits> is too large for a 64-bit float (at most about "
                          "1.8e308); send a smaller number")),
    ({"features": {"x1": 1.0, "x2": 2.0}, "items": [{"features": {"x1": 1.0, "x2": 2.0}}]}, "body",
     'send either {"features": {...}} for one row or {"items": [...]} for a batch'),
], ids=["empty batch", "huge integer", "both shapes"])
def test_predict_refuses_hostile_requests_with_422_and_logs_nothing(served: ServedApi, body: Any, field: str,
                                                                   problem: str) -> None:
    response = served.post("predict", big_int_body("predict") if body is None else body)
    assert response.status_code == 422, response.text
    (found,) = problems(response)
    assert (found["field"], found["problem"].removeprefix("Value error, ")) == (field, problem)
    assert served.store.count_predictions(served.model) == 0


def test_predict_refuses_rows_the_champion_scores_as_nan(served: ServedApi) -> None:
    """1e308 and -1e308 are valid numbers, but a linear model's score of that row is inf - inf = NaN."""
    rows = [{"features": {"x1": 1.0, "x2": 0.5}}, {"features": {"x1": 1e308, "x2": -1e308}}]
    response = served.post("predict", {"items": rows})
    assert response.status_code == 422, response.text
    assert problems(response) == [{
        "index": 1, "field": "features",
        "problem": "the champion (version 1) gives no finite prediction for this row (its values are beyond what the "
                   "model can score); send values in the range of the training data"}]
    assert served.store.count_predictions(served.model) == 0
    assert served.post("predict", {"items": rows[:1]}).status_code == 200


def frame_model(columns: list[str]) -> Any:
    """A plain scikit-learn pipeline (not driftpilot's, so it is served through DataFrames) using ``columns``."""
    rows, labels = toy_rows(100)
    frame = pd.DataFrame(rows)
    return make_pipeline(make_column_transformer((SimpleImputer(), columns)), LogisticRegression()).fit(frame, labels)


def test_predict_names_the_rows_a_model_refuses_to_score(tmp_path: Path, clock: ManualClock, model_name: str) -> None:
    """scikit-learn refuses an infinity the policy allows (z: allow_nan); the request is a 422 naming that row."""
    served = open_served_api(tmp_path, f"sqlite:///{tmp_path / 'inf.db'}", model_name, clock,
                             champion=frame_model(["x1", "x2", "z"]))
    try:
        assert type(served.runtime.champion.current.predictor).__name__ == "FramePredictor"
        body = raw_json([{"features": {"x1": 1.0, "x2": 2.0}}, {"features": {"x1": 1.0, "x2": 2.0, "z": "@Z"}}],
                        {"@Z": "Infinity"})
        response = served.post("predict", body)
        assert response.status_code == 422, response.text
        (problem,) = problems(response)
        assert (problem["index"], problem["field"]) == (1, "features")
        assert problem["problem"].startswith("the champion (version 1) cannot score this row: Input X contains "
                                             "infinity")
        assert served.store.count_predictions(model_name) == 0
        assert served.post("predict", {"features": {"x1": 1.0, "x2": 2.0, "z": 3.0}}).status_code == 200
    finally:
        served.store.dispose()


def test_a_champion_that_cannot_score_any_row_is_a_server_error_not_the_clients(tmp_path: Path, clock: ManualClock,
                                                                                 model_name: str) -> None:
    """A model fitted on other columns fails on every row: that is not the request's fault, so no 422 blames it."""
    rows, labels = toy_rows(100)
    broken = make_pipeline(SimpleImputer(), LogisticRegression()).fit(pd.DataFrame(rows)[["x1", "x2"]], labels)
    served = open_served_api(tmp_path, f"sqlite:///{tmp_path / 'broken.db'}", model_name, clock, champion=broken)
    try:
        with pytest.raises(ValueError, match="feature names should match"):
            served.post("predict", {"features": {"x1": 1.0, "x2": 2.0}})
        assert served.store.count_predictions(model_name) == 0
    finally:
        served.store.dispose()


def test_a_retried_predict_with_the_same_ids_is_a_no_op(served: ServedApi) -> None:
    body = {"items": [{"features": {"x1": 1.0, "x2": 0.5}, "prediction_id": "q-1"},
                      {"features": {"x1": -1.0, "x2": 0.5}, "prediction_id": "q-2"}]}
    first = served.post("predict", body)
    assert first.status_code == 200, first.text
    served.clock.advance(seconds=30)
    again = served.post("predict", body)
    assert again.status_code == 200, again.text
    assert again.json() == first.json()
    assert served.store.count_predictions(served.model) == 2


def test_predict_with_a_stored_id_of_other_content_is_a_declared_409(served: ServedApi) -> None:
    assert served.post("predict", {"features": {"x1": 1.0, "x2": 0.5}, "prediction_id": "q-1"}).status_code == 200
    response = served.post("predict", {"features": {"x1": -3.0, "x2": 0.5}, "prediction_id": "q-1"})
    assert response.status_code == 409, response.text
    assert [(p["index"], p["field"]) for p in problems(response)] == [(0, "prediction_id")]
    spec = served.client.get("/openapi.json").json()
    assert "409" in spec["paths"]["/v1/models/{model}/predict"]["post"]["responses"]

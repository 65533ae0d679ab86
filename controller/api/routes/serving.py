"""The serving view: ``/predict`` scores rows with the champion and logs each prediction for its natural label."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse

from controller.api.ingest import PredictRequest
from controller.api.refusals import admit_batch, first_line
from controller.api.runtime import context
from controller.api.serving import Predictions, ServedModel
from controller.api.validation import check_features, check_prediction_id, check_unique_ids
from controller.errors import InvalidBatch, Problem
from controller.store import PredictionRecord

log = logging.getLogger("driftpilot.api")


def predict(model: str, body: PredictRequest, request: Request) -> Any:
    """Predict one row (``{"features": {...}}``) or a batch (``{"items": [...]}``) with the champion.

    Every prediction is logged to the store with its id and the version that made it, so natural labels can be
    joined later. All rows of one request are served by the same version, even during a hot swap. A retry with
    the same prediction ids is a no-op while the same version serves (409 once another version would answer; with
    a race, also once a newer live state of the champion answers differently). Rows served by a live state are
    logged under the registered version it continues.
    """
    api = context(request)
    rt = api.runtime(model)
    items = body.rows()
    admit_batch(request, len(items), rt.batch_limit)
    # Batch and near-real-time features looked up by entity key and joined (as sent without feature views).
    vectors, joined, join_problems = rt.features.join(items)
    refused = {p.index for p in join_problems}
    problems = check_unique_ids([item.prediction_id for item in items])
    for index, item in enumerate(items):
        if item.prediction_id is not None:
            problems += check_prediction_id(index, item.prediction_id)
        if index not in refused:
            problems += check_features(rt.policy.config, index, vectors[index])
    problems += join_problems
    if problems:
        raise InvalidBatch(problems)
    served = rt.champion.current  # one snapshot for the whole request
    result = score(served, vectors, rt.policy.config.feature_types)
    records = [
        # event_time None: stamped by the store's clock, so a retry of the same request is a no-op. The vector
        # logged is the one served (request-time + joined features), so windows of logged rows are point-in-time.
        PredictionRecord(features=vector, event_time=None, prediction=value,
                         scores=result.scores[i] if result.scores is not None else None,
                         prediction_id=item.prediction_id, model_version=served.version, source="served")
        for i, (item, vector, value) in enumerate(zip(items, vectors, result.values, strict=True))
    ]
    ids = rt.store.add_predictions(model, records)
    api.metrics.served.labels(model, served.version).inc(len(ids))
    # Plain JSON types already: skip FastAPI's jsonable_encoder walk (1.4 ms at 100 rows).
    predictions = [
        {"prediction_id": pid, "prediction": value,
         "scores": result.scores[i] if result.scores is not None else None}
        for i, (pid, value) in enumerate(zip(ids, result.values, strict=True))
    ]
    for prediction, info in zip(predictions, joined, strict=True):
        if info is not None:
            prediction["features_served"] = info.to_dict()
    return JSONResponse({"model_version": served.version, "predictions": predictions})


def score(served: ServedModel, rows: Sequence[Mapping[str, Any]], feature_types: Mapping[str, str]) -> Predictions:
    """The champion's predictions for validated rows, or 422 naming the rows it cannot score.

    A value the schema allows can still be beyond a model (1e308 and -1e308 in one row make a linear model's score
    NaN; an allowed infinity makes scikit-learn refuse the row). Such rows are refused, never answered with NaN or a
    500. A champion that cannot score even a plain row (zeros, missing categories) is broken, not the request: that
    stays a server error, as does a batch failure that no single row reproduces.
    """
    rows = list(rows)
    try:
        with np.errstate(all="ignore"):  # overflow is expected here and checked below, not a warning per request
            result = served.predictor.predict_rows(rows)
    except (ValueError, ArithmeticError) as exc:
        plain_row = {name: {"numeric": 0.0, "boolean": False}.get(kind) for name, kind in feature_types.items()}
        if _fails(served, plain_row) is not None:
            raise  # the champion fails whatever it is sent
        problems = [Problem(index, "features", f"the champion (version {served.version}) cannot score this row: "
                                               f"{reason}")
                    for index, row in enumerate(rows) if (reason := _fails(served, row)) is not None]
        if not problems:
            raise
        log.info("refused %d row(s) the champion cannot score: %s", len(problems), first_line(exc))
        raise InvalidBatch(problems) from exc
    problems = [
        Problem(index, "features", f"the champion (version {served.version}) gives no finite prediction for this row "
                                   "(its values are beyond what the model can score); send values in the range of "
                                   "the training data")
        for index, value in enumerate(result.values)
        if not _finite(value) or (result.scores is not None and not all(map(_finite, result.scores[index].values())))
    ]
    if problems:
        raise InvalidBatch(problems)
    return result


def _fails(served: ServedModel, row: Mapping[str, Any]) -> str | None:
    """Why the champion cannot score ``row`` alone, or None when it can."""
    try:
        with np.errstate(all="ignore"):
            served.predictor.predict_rows([row])
    except (ValueError, ArithmeticError) as exc:
        return first_line(exc)
    return None


def _finite(value: Any) -> bool:
    return not isinstance(value, float) or math.isfinite(value)

"""The API's response bodies, declared per operation in the OpenAPI document (``/openapi.json``).

The handlers build plain dicts (no response_model serialization on the hot paths); these models only document them,
and the fuzz suite (tests/api/test_fuzz.py) checks every response against them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ProblemOut(BaseModel):
    """One problem of a refused batch: the item's index (null for the request as a whole), the field, what is wrong."""

    index: int | None
    field: str
    problem: str


class ErrorBody(BaseModel):
    """Every error: a message that says what was wrong and what to do."""

    model_config = ConfigDict(extra="forbid")
    error: str


class BatchErrorBody(BaseModel):
    """A refused batch (409, 422): the message and every problem found; nothing was stored."""

    model_config = ConfigDict(extra="forbid")
    error: str
    problems: list[ProblemOut]


class PredictionsAccepted(BaseModel):
    model_config = ConfigDict(extra="forbid")
    accepted: int = Field(description="Items in the batch; all are stored (retries of stored ones are no-ops).")
    prediction_ids: list[str] = Field(description="The id of each item, in order (generated where not given).")


class LabelsAccepted(BaseModel):
    model_config = ConfigDict(extra="forbid")
    accepted: int
    inserted: int = Field(description="New labels.")
    duplicates: int = Field(description="Exact repeats of the stored label (no-ops).")
    overwritten: int = Field(description="Labels that replaced a different one (overwrite: true); history is kept.")
    unmatched: int = Field(description="Labels whose prediction has not arrived yet (kept; they join later).")


class FeaturesServed(BaseModel):
    """What the feature views added to a row (only for a model with feature views)."""

    model_config = ConfigDict(extra="forbid")
    ages: dict[str, float | None] = Field(description="Feature view -> age in seconds of the values served.")
    imputed: list[str] = Field(description="Features served with the view's default (missing or stale values).")


class ServedPrediction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    prediction_id: str
    prediction: Any = Field(description="The class label, or a number for regression.")
    scores: dict[str, float] | None = Field(description="Class probabilities, when the model gives them.")
    features_served: FeaturesServed | None = Field(None, description="Present when the row's features were joined "
                                                                     "from feature views.")


class EventsAccepted(BaseModel):
    model_config = ConfigDict(extra="forbid")
    accepted: int = Field(description="Events appended to the raw-event stream(s), in order.")
    event_ids: list[str] = Field(description="The stream id of each event, in order.")


class PredictResponse(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model_version: str = Field(description="The champion version that served every row of this request.")
    predictions: list[ServedPrediction]


class DelayPercentiles(BaseModel):
    model_config = ConfigDict(extra="forbid")
    p50: float | None
    p90: float | None
    p99: float | None


class StatsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str
    as_of: str
    predictions: int = Field(description="Predictions logged, served or batch-scored (bootstrap reference rows are "
                                         "counted apart, in reference_rows).")
    by_source: dict[str, int] = Field(description="The predictions by where they came from: served (by /predict), "
                                                  "logged (POSTed), batch (driftpilot predict --log), shadow.")
    reference_rows: int = Field(description="Labeled rows stored by bootstrap as the reference window.")
    labeled: int = Field(description="Predictions (not reference rows) with a label in force.")
    pending: int = Field(description="Predictions still waiting for their label.")
    unmatched_labels: int = Field(description="Labels whose prediction has not arrived.")
    coverage: float | None = Field(description="labeled / predictions; null without predictions.")
    label_delay_seconds: DelayPercentiles = Field(description="Label arrival minus prediction event time, over the "
                                                              "labels of predictions (not reference rows).")


class HealthBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: str


class ServedStateOut(BaseModel):
    """What one process serves for a model with a race: the champion version, continued in service by ``racer``
    through label seq ``through_seq`` (a state published ``age_s`` seconds ago); null fields: served as
    registered."""

    model_config = ConfigDict(extra="forbid")
    version: str
    racer: str | None
    through_seq: int | None
    age_s: float | None


SERVED_DESCRIPTION = "Models with a race only: what this process serves (null before a champion loaded)."


class ReadyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: str
    models: list[str]
    champions: dict[str, str | None]
    served: dict[str, ServedStateOut | None] | None = Field(None, description=SERVED_DESCRIPTION)


class NotReadyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: str
    problems: dict[str, str]
    champions: dict[str, str | None]
    served: dict[str, ServedStateOut | None] | None = Field(None, description=SERVED_DESCRIPTION)


def declared(ok: type[BaseModel], *statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of an operation: its 200 body and each error status with its body and meaning."""
    meaning = {
        401: ("Missing or wrong bearer token (when the model's policy sets api.token_env).", ErrorBody),
        404: ("Unknown model (checked first, before the token and the body).", ErrorBody),
        409: ("Conflict with stored events; nothing was stored.", BatchErrorBody),
        413: ("Batch or body over api.max_batch_items / api.max_body_bytes; nothing was stored.", ErrorBody),
        422: ("Invalid request or items, each problem listed with its item index and field; nothing was stored.",
              BatchErrorBody),
        503: ("The event store is unreachable or failed (nothing was written), or, for /predict, no champion yet.",
              ErrorBody),
    }
    out: dict[int | str, dict[str, Any]] = {200: {"model": ok, "description": "Success."}}
    for status in statuses:
        description, model = meaning[status]
        out[status] = {"model": model, "description": description}
    return out

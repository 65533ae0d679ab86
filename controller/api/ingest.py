"""Turn validated request items into store records: the write path shared by the HTTP API and the CLI."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictBool, ValidationError, model_validator

from controller.api.validation import (
    ID_RULE,
    MODEL_VERSION_MAX,
    check_event_time,
    check_features,
    check_model_version,
    check_prediction_id,
    check_scores,
    check_target_value,
    check_unique_ids,
    normalize_target,
    show_value,
)
from controller.clock import Clock, ensure_utc
from controller.config import PolicyConfig
from controller.errors import InvalidBatch, Problem
from controller.store import EventStore, LabelReceipt, LabelRecord, PredictionRecord

# RFC 3339 date-time (T, t or a space between date and time); without an offset the time is taken as UTC.
EVENT_TIME_PATTERN = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})?")


def _event_time(value: Any) -> Any:
    """Only a JSON string in RFC 3339 form: pydantic's lax mode would also take numbers and numeric strings as Unix
    times, and dates without a time."""
    if isinstance(value, datetime):  # Python callers
        return value
    if not isinstance(value, str) or not EVENT_TIME_PATTERN.fullmatch(value):
        raise ValueError(f"expected an RFC 3339 date-time string such as \"2026-01-31T12:00:00Z\" (no offset = UTC), "
                         f"got {show_value(value)}")
    try:
        return datetime.fromisoformat(value.upper().replace(" ", "T"))
    except ValueError as exc:
        raise ValueError(f"{show_value(value)} is not a valid date-time: {exc}") from None


EventTime = Annotated[datetime, BeforeValidator(_event_time)]
PREDICTION_ID_SCHEMA = {"pattern": "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$", "maxLength": 128}


class PredictionIn(BaseModel):
    """A prediction made elsewhere, to be joined with its natural label later."""

    model_config = ConfigDict(extra="forbid")

    prediction_id: str | None = Field(None, description=f"Client id ({ID_RULE}); generated when absent. Labels "
                                                        "refer to it.", json_schema_extra=PREDICTION_ID_SCHEMA)
    event_time: EventTime | None = Field(None, description="When the prediction was made (RFC 3339; no offset = "
                                                           "UTC), between 1678 and 2262. Defaults to the time the "
                                                           "server received it.")
    model_version: str | None = Field(None, description="Registry version that made the prediction, if known.",
                                      json_schema_extra={"minLength": 1, "maxLength": MODEL_VERSION_MAX})
    features: dict[str, Any] = Field(description="Feature name -> value, as declared in the policy.")
    prediction: Any = Field(description="The predicted class label, or number for regression.")
    scores: dict[str, Any] | None = Field(None, description="Class probabilities, keyed by class label.")


class LabelIn(BaseModel):
    """A natural label for an earlier (or a not yet received) prediction."""

    model_config = ConfigDict(extra="forbid")

    prediction_id: str = Field(description=f"The id of the prediction this label belongs to ({ID_RULE}).",
                               json_schema_extra=PREDICTION_ID_SCHEMA)
    label: Any = Field(description="The true class label, or number for regression.")
    overwrite: StrictBool = Field(False, description="Replace a different label already stored (the change is "
                                                     "recorded). A JSON boolean: \"yes\" or 1 are refused.")


class PredictionBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[PredictionIn]


class LabelBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[LabelIn]


ENTITIES_DESCRIPTION = ("Entity key name -> key (a string or integer), for a model with feature views: its batch and "
                        "near-real-time features are looked up by these keys and joined with `features` (the "
                        "request-time ones).")


class PredictRow(BaseModel):
    """One row to score with the champion."""

    model_config = ConfigDict(extra="forbid")

    features: dict[str, Any] = Field(description="Feature name -> value, as declared in the policy.")
    prediction_id: str | None = Field(None, description="Client id for later labels; generated when absent.",
                                      json_schema_extra=PREDICTION_ID_SCHEMA)
    entities: dict[str, Any] | None = Field(None, description=ENTITIES_DESCRIPTION)


class PredictRequest(BaseModel):
    """Either one row (``features``) or a batch (``items``)."""

    model_config = ConfigDict(extra="forbid")

    features: dict[str, Any] | None = Field(None, description="One row: feature name -> value.")
    prediction_id: str | None = Field(None, description="Client id of the one row; generated when absent.",
                                      json_schema_extra=PREDICTION_ID_SCHEMA)
    items: list[PredictRow] | None = Field(None, min_length=1, description="A batch of rows (at least one).")
    entities: dict[str, Any] | None = Field(None, description="Of the one row: " + ENTITIES_DESCRIPTION)

    @model_validator(mode="after")
    def _one_shape(self) -> PredictRequest:
        if (self.items is None) == (self.features is None):
            raise ValueError("send either {\"features\": {...}} for one row or {\"items\": [...]} for a batch")
        if self.items is not None and self.entities is not None:
            raise ValueError("entities belong to each item of a batch: {\"items\": [{\"features\": {...}, "
                             "\"entities\": {...}}]}")
        return self

    def rows(self) -> list[PredictRow]:
        if self.items is not None:
            return self.items
        return [PredictRow(features=self.features or {}, prediction_id=self.prediction_id, entities=self.entities)]


class EventIn(BaseModel):
    """A raw event for the stream views (near-real-time features)."""

    model_config = ConfigDict(extra="forbid")

    event_time: EventTime | None = Field(None, description="When it happened (RFC 3339; no offset = UTC); the "
                                                           "aggregates' windows are in event time. Defaults to the "
                                                           "time the server received it.")
    data: dict[str, Any] = Field(description="Field -> value (string, number, boolean or null): the entity keys and "
                                             "the values the stream views aggregate.")


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    items: list[EventIn]


class Ingestor:
    """Validates a whole batch against one model's policy, then writes it atomically (all or nothing)."""

    def __init__(self, policy: PolicyConfig, store: EventStore, clock: Clock) -> None:
        self.policy = policy
        self.store = store
        self.clock = clock

    def add_predictions(self, items: Sequence[PredictionIn], *, source: str = "logged") -> list[str]:
        problems = check_unique_ids([item.prediction_id for item in items])
        for index, item in enumerate(items):
            if item.prediction_id is not None:
                problems += check_prediction_id(index, item.prediction_id)
            problems += check_event_time(index, item.event_time)
            problems += check_model_version(index, item.model_version)
            problems += check_features(self.policy, index, item.features)
            problems += check_target_value(self.policy, index, "prediction", item.prediction)
            problems += check_scores(self.policy, index, item.scores)
        if problems:
            raise InvalidBatch(problems)
        records = [
            PredictionRecord(
                features=item.features,
                # None: the store stamps its clock's time, and a retry that also omits it is a no-op (issue 9).
                event_time=ensure_utc(item.event_time) if item.event_time is not None else None,
                prediction=normalize_target(self.policy, item.prediction),
                scores=item.scores,
                prediction_id=item.prediction_id,
                model_version=item.model_version,
                source=source,
            )
            for item in items
        ]
        return self.store.add_predictions(self.policy.model, records)

    def add_labels(self, items: Sequence[LabelIn]) -> LabelReceipt:
        problems = []
        for index, item in enumerate(items):
            problems += check_prediction_id(index, item.prediction_id)
            problems += check_target_value(self.policy, index, "label", item.label)
        if problems:
            raise InvalidBatch(problems)
        records = [LabelRecord(item.prediction_id, normalize_target(self.policy, item.label), item.overwrite)
                   for item in items]
        return self.store.add_labels(self.policy.model, records)


Body = TypeVar("Body", bound=BaseModel)


def parse_batch(schema: type[Body], body: Mapping[str, Any]) -> Body:
    """``body`` (decoded JSON) as ``schema``, e.g. :class:`PredictionBatch`, checked as the API checks a request body:
    what does not fit raises :class:`InvalidBatch` with the problems its 422 lists. For writers without HTTP (the
    CLI's imports), before :class:`Ingestor`."""
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        raise InvalidBatch([problem_from_pydantic(err) for err in exc.errors()]) from None


def problem_from_pydantic(err: Mapping[str, Any]) -> Problem:
    """One pydantic error of a request body as a problem: the item's index, the field path and what is wrong."""
    loc = [p for p in err["loc"] if p != "body"]
    index = None
    if len(loc) >= 2 and loc[0] == "items" and isinstance(loc[1], int):
        index, loc = loc[1], loc[2:]
    field = ".".join(str(p) for p in loc) or "body"
    message = err["msg"]
    if err["type"] == "json_invalid":
        field = "body"  # its loc holds a character offset, not a key
    if err["type"] == "extra_forbidden":
        message = "unknown key; see the request schema at /openapi.json"
    elif err["type"] == "json_invalid":
        message = f"body is not valid JSON: {err.get('ctx', {}).get('error', message)}"
    elif err["type"] == "value_error":
        message = message.removeprefix("Value error, ")
    elif err["type"] == "bool_type":
        message = f"expected true or false (a JSON boolean), got {show_value(err.get('input'))}"
    return Problem(index, field, message)

"""A Python client for a running ``driftpilot serve``: log predictions and labels, predict with the champion, read
the label statistics.

It imports httpx and the standard library only, so an application that logs predictions does not pull in River,
MLflow or Evidently. All I/O goes through one ``httpx.Client``; tests hand it an ``httpx.MockTransport`` through
``transport=`` and a recording ``sleep=``, so no test waits for a backoff.

Retries are safe because the API is idempotent by prediction id: re-sending a stored prediction (same id, same
content) or the label already in force is a no-op, never a duplicate. The client therefore gives every prediction an
id *before* the first attempt (a uuid4 hex when the item has none) and re-sends the very same bytes on each retry.

    with DriftpilotClient("http://127.0.0.1:8080", token=os.environ.get("DRIFTPILOT_TOKEN")) as client:
        ids = client.log_predictions("churn", [{"features": {"tenure": 3.0}, "prediction": 1}])
        client.log_labels("churn", {ids[0]: 0})
        print(client.predict("churn", {"tenure": 3.0}).prediction, client.stats("churn").coverage)

See docs/client.md for the errors, the retry and idempotency guarantees and the batching.
"""

from __future__ import annotations

import json
import logging
import random
import re
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import Any, Self, overload
from urllib.parse import quote

import httpx

log = logging.getLogger("driftpilot.client")

#: The default of ``api.max_batch_items`` in a policy (controller.config.ApiConfig; a test keeps the two equal).
SERVER_MAX_BATCH_ITEMS = 10_000
#: Items per request until a server's 413 says its limit is lower: a retry re-sends at most this many.
DEFAULT_BATCH_SIZE = 1_000

# What a server's 413 says (controller/api/app.py): the item limit is read from it, a body over the byte limit is
# split in half until it fits.
_ITEMS_LIMIT = re.compile(r"over the limit of (\d+) \(api\.max_batch_items\)")
# Failures after which the request may or may not have reached the server: safe to re-send, as the ids are fixed.
_RETRYABLE_ERRORS = (httpx.TimeoutException, httpx.NetworkError, httpx.RemoteProtocolError)

# ----------------------------------------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class Problem:
    """One problem of a refused batch: the item's index in *your* call (null for the request as a whole), the field
    and what is wrong."""

    index: int | None
    field: str
    problem: str

    def __str__(self) -> str:
        where = "request" if self.index is None else f"item {self.index}"
        return f"{where}: {self.field}: {self.problem}"


class DriftpilotError(Exception):
    """Base class of every error this client raises.

    ``status`` is the HTTP status (None when no answer came), ``error`` the server's message, ``problems`` its list
    for 409/422. For a call split into several requests, ``stored`` counts the leading items stored before the
    failure (items from ``stored`` on were not) and ``prediction_ids`` holds the id of every item of the call,
    generated ones included: re-send the call with them and the stored items are no-ops.
    """

    def __init__(self, message: str, *, status: int | None = None, error: str | None = None,
                 problems: Sequence[Problem] = (), stored: int = 0, prediction_ids: list[str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.problems = list(problems)
        self.stored = stored
        self.prediction_ids = prediction_ids


class BadRequest(DriftpilotError):
    """The server refused the request (4xx); sending it again unchanged will fail again."""


class ValidationFailed(BadRequest):
    """422: items do not fit the model's policy (or the request's shape); ``problems`` names each; that batch was
    not stored."""


class Conflict(BadRequest):
    """409: items disagree with what is stored (a prediction id with other content, a different label without
    ``overwrite``); that batch was not stored."""


class PayloadTooLarge(BadRequest):
    """413 that splitting cannot cure: one item alone is over the server's ``api.max_body_bytes``."""


class Unauthorized(DriftpilotError):
    """401: the model's write endpoints need ``Authorization: Bearer <token>``."""


class NotFound(DriftpilotError):
    """404: the server has no policy for this model (the message lists the ones it has), or no such route."""


class Unavailable(DriftpilotError):
    """No usable answer after every retry: connection errors, timeouts, 5xx or 429. ``attempts`` says how many."""

    def __init__(self, message: str, *, attempts: int, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.attempts = attempts


# ---------------------------------------------------------------------------------------------------------- results


@dataclass(frozen=True)
class LabelsLogged:
    """The server's receipt, summed over the requests of one call. A retry of a request that the server had stored
    counts its labels as ``duplicates`` instead of ``inserted``: the label in force is the same either way."""

    accepted: int
    inserted: int
    duplicates: int
    overwritten: int
    unmatched: int


@dataclass(frozen=True)
class Prediction:
    """One row served by the champion: its id (for the label later), the answer, the class scores (None for a
    regressor) and the version that served it; ``features_served`` when feature views joined features."""

    prediction_id: str
    prediction: Any
    scores: dict[str, float] | None
    model_version: str
    features_served: dict[str, Any] | None = None


@dataclass(frozen=True)
class Stats:
    """``GET /v1/models/{model}/stats``: the model's traffic as of ``as_of`` (see StatsBody in the API docs)."""

    model: str
    as_of: str
    predictions: int
    by_source: dict[str, int]
    reference_rows: int
    labeled: int
    pending: int
    unmatched_labels: int
    coverage: float | None
    label_delay_seconds: dict[str, float | None]

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Stats:
        return cls(**{f.name: body.get(f.name) for f in fields(cls)})  # keys a newer server adds are ignored


@dataclass(frozen=True)
class Readiness:
    """``GET /readyz``: ``ready`` is False with ``problems`` (model -> why) while a store is down or a required
    champion is missing; ``champions`` maps each model to the version served (None: none yet)."""

    ready: bool
    champions: dict[str, str | None]
    problems: dict[str, str]


# ----------------------------------------------------------------------------------------------------------- retries


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait: ``retries`` more attempts after the first, the n-th (from 0) after about
    ``backoff * 2**n`` seconds, at most ``max_backoff``."""

    retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 30.0

    def __post_init__(self) -> None:
        if self.retries < 0 or self.backoff < 0 or self.max_backoff < 0:
            raise ValueError(f"retries, backoff and max_backoff must be >= 0, got {self.retries}, {self.backoff}, "
                             f"{self.max_backoff}")

    def delay(self, attempt: int, jitter: float, retry_after: float | None = None) -> float:
        """Seconds to wait after failed attempt ``attempt`` (0 = the first). Half of the exponential step is fixed,
        half scaled by ``jitter`` in [0, 1), so clients that failed together do not come back together; a server's
        ``Retry-After`` is a floor (capped at ``max_backoff`` like the rest)."""
        step = min(self.max_backoff, self.backoff * 2 ** attempt)
        wait = step / 2 + step / 2 * jitter
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.max_backoff))
        return wait


def retryable(status: int) -> bool:
    """5xx (store unreachable, no champion yet, a proxy without upstream) and 429 may pass; other answers will not."""
    return status >= 500 or status == 429


# ------------------------------------------------------------------------------------------------------------ client


class DriftpilotClient:
    """A synchronous client of one driftpilot API (``driftpilot serve`` or ``driftpilot run``).

    ``token``: the bearer token of models whose policy sets ``api.token_env``. ``timeout``: seconds per request.
    ``retries``/``backoff``/``max_backoff``: see :class:`RetryPolicy`. ``batch_size``: items per request (a server's
    413 lowers it for that model). ``transport``, ``sleep``, ``jitter`` (a float in [0, 1) per call) and ``new_id``
    (the id of a prediction sent without one) are the seams tests replace. Use it as a context manager, or call
    :meth:`close`.
    """

    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 30.0, retries: int = 5,
                 backoff: float = 0.5, max_backoff: float = 30.0, batch_size: int = DEFAULT_BATCH_SIZE,
                 transport: httpx.BaseTransport | None = None, sleep: Callable[[float], None] = time.sleep,
                 jitter: Callable[[], float] = random.random,
                 new_id: Callable[[], str] = lambda: uuid.uuid4().hex) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.base_url = base_url.rstrip("/")
        self.policy = RetryPolicy(retries, backoff, max_backoff)
        self.batch_size = batch_size
        self._sleep = sleep
        self._jitter = jitter
        self._new_id = new_id
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)
        self._limits: dict[str, int] = {}  # model -> items per request, once a 413 said less than batch_size

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------------------------------------- the verbs

    def log_predictions(self, model: str, items: Sequence[Mapping[str, Any]]) -> list[str]:
        """Store predictions made elsewhere: items like ``{"features": {...}, "prediction": 1}``, optionally with
        ``prediction_id``, ``event_time`` (a datetime or RFC 3339 string), ``model_version`` and ``scores``.
        Returns the id of each item, in order (generated here where not given; labels refer to them)."""
        ids = [item.get("prediction_id") or self._new_id() for item in items]
        body = [{**item, "prediction_id": pid} for item, pid in zip(items, ids, strict=True)]
        self._post_batches(model, "predictions", body, ids)
        return ids

    def log_labels(self, model: str, items: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> LabelsLogged:
        """Store natural labels: items like ``{"prediction_id": "p1", "label": 0}`` (``"overwrite": True`` replaces
        a different stored label), or a mapping prediction id -> label. Items apply in order."""
        if isinstance(items, Mapping):
            items = [{"prediction_id": pid, "label": label} for pid, label in items.items()]
        answers = self._post_batches(model, "labels", list(items), None)
        total = {f.name: 0 for f in fields(LabelsLogged)}
        for answer in answers:
            for name in total:
                total[name] += answer.get(name, 0)
        return LabelsLogged(**total)

    @overload
    def predict(self, model: str, rows: Mapping[str, Any], *, ids: str | None = None,
                entities: Mapping[str, Any] | None = None) -> Prediction: ...

    @overload
    def predict(self, model: str, rows: Sequence[Mapping[str, Any]], *, ids: Sequence[str | None] | None = None,
                entities: Sequence[Mapping[str, Any] | None] | None = None) -> list[Prediction]: ...

    def predict(self, model: str, rows: Any, *, ids: Any = None, entities: Any = None) -> Any:
        """Score one row (a mapping feature -> value; returns one :class:`Prediction`) or a batch (a sequence of
        them; returns a list) with the champion; the server logs every prediction. ``ids``: the prediction id(s),
        generated here where None; ``entities``: entity keys of a model with feature views (per row for a batch).

        A batch larger than the server's limit is sent in several requests, which a hot swap between them may
        serve with different versions: each :class:`Prediction` names its own."""
        single = isinstance(rows, Mapping)
        if not single and isinstance(ids, str):
            raise ValueError(f"predict got a batch of rows and one id {ids!r}; pass ids=[...] with one id per row")
        if single:
            rows, ids, entities = [rows], [ids], [entities]
        rows = list(rows)
        ids = [i or self._new_id() for i in (ids if ids is not None else [None] * len(rows))]
        entities = list(entities) if entities is not None else [None] * len(rows)
        if not len(rows) == len(ids) == len(entities):
            raise ValueError(f"predict got {len(rows)} rows, {len(ids)} ids and {len(entities)} entities; pass one "
                             "of each per row (or leave ids/entities out)")
        items = [{"features": row, "prediction_id": pid, **({"entities": ent} if ent is not None else {})}
                 for row, pid, ent in zip(rows, ids, entities, strict=True)]
        served = [
            Prediction(prediction_id=p["prediction_id"], prediction=p["prediction"], scores=p.get("scores"),
                       model_version=answer["model_version"], features_served=p.get("features_served"))
            for answer in self._post_batches(model, "predict", items, ids)
            for p in answer["predictions"]
        ]
        return served[0] if single else served

    def stats(self, model: str) -> Stats:
        """Predictions (by source), labeled, coverage, pending, unmatched labels and label-delay percentiles."""
        response = self._send("GET", f"/v1/models/{quote(model, safe='')}/stats")
        if response.is_error:
            raise self._error(response, model)
        return Stats.from_json(response.json())

    def ready(self) -> Readiness:
        """Whether the server is ready (asked once, no retries: a 503 here is an answer, not a failure)."""
        try:
            response = self._http.get("/readyz")
        except httpx.TransportError as exc:
            raise Unavailable(f"GET {self.base_url}/readyz failed: {type(exc).__name__}: {exc}; is `driftpilot "
                              "serve` running there?", attempts=1) from exc
        body = _json(response)
        if response.status_code not in (200, 503) or not isinstance(body, dict):
            raise self._error(response, None)
        return Readiness(ready=response.status_code == 200, champions=body.get("champions", {}),
                         problems=body.get("problems", {}))

    # -------------------------------------------------------------------------------------------- the machinery

    def _post_batches(self, model: str, route: str, items: list[dict[str, Any]],
                      ids: list[str] | None) -> list[dict[str, Any]]:
        """POST ``items`` in order, at most the model's limit per request; the JSON answer of each request."""
        path = f"/v1/models/{quote(model, safe='')}/{route}"
        answers: list[dict[str, Any]] = []
        start = 0
        while start < len(items):
            chunk = items[start:start + self._limits.get(model, self.batch_size)]
            content = json.dumps({"items": chunk}, default=_plain).encode()  # the same bytes on every retry
            try:
                response = self._send("POST", path, content)
            except Unavailable as exc:
                exc.stored, exc.prediction_ids = start, ids
                raise
            if response.status_code == 413:
                self._limits[model] = self._smaller(model, len(chunk), response, start, ids)
                continue
            if response.is_error:
                raise self._error(response, model, start=start, count=len(chunk), total=len(items), ids=ids)
            answers.append(response.json())
            start += len(chunk)
        return answers

    def _smaller(self, model: str, size: int, response: httpx.Response, start: int, ids: list[str] | None) -> int:
        """Items per request after a 413 for ``size`` items: the server's item limit, or half (a body over
        ``api.max_body_bytes``)."""
        message = _error_text(response)
        if (match := _ITEMS_LIMIT.search(message)) and int(match[1]) < size:
            limit = int(match[1])
        elif size > 1:
            limit = size // 2
        else:
            raise PayloadTooLarge(f"{model}: item {start} alone is too large for the server: {message}; send smaller "
                                  "items (fewer or shorter features), or raise api.max_body_bytes in the policy",
                                  status=413, error=message, stored=start, prediction_ids=ids)
        log.info("%s: the server takes at most %d items per request (%s); sending batches of %d", model, limit,
                 message, limit)
        return limit

    def _send(self, method: str, path: str, content: bytes | None = None) -> httpx.Response:
        """One request, re-sent after a connection error, a timeout, a 5xx or a 429 while retries last; any other
        answer is returned. Raises :class:`Unavailable` when retries run out."""
        headers = {"Content-Type": "application/json"} if content is not None else None
        attempt = 0
        while True:
            status: int | None = None
            cause: BaseException | None = None
            try:
                response = self._http.request(method, path, content=content, headers=headers)
            except _RETRYABLE_ERRORS as exc:
                why, retry_after, cause = f"{type(exc).__name__}: {exc or 'no detail'}", None, exc
            else:
                if not retryable(response.status_code):
                    return response
                status = response.status_code
                why, retry_after = f"HTTP {status}: {_error_text(response)}", _retry_after(response)
            if attempt >= self.policy.retries:
                raise Unavailable(
                    f"{method} {self.base_url}{path} failed {attempt + 1} time(s); the last: {why}. Is `driftpilot "
                    "serve` running and its store reachable? Re-sending the same items is safe: stored ones are "
                    "no-ops (use exc.prediction_ids for predictions sent without an id)",
                    attempts=attempt + 1, status=status) from cause
            wait = self.policy.delay(attempt, self._jitter(), retry_after)
            log.warning("%s %s failed (%s); retry %d of %d in %.2f s", method, path, why, attempt + 1,
                        self.policy.retries, wait)
            self._sleep(wait)
            attempt += 1

    def _error(self, response: httpx.Response, model: str | None, *, start: int = 0, count: int = 0,
               total: int = 0, ids: list[str] | None = None) -> DriftpilotError:
        """The typed error of a final 4xx (or unexpected) answer, problems re-indexed to the caller's items."""
        status, message = response.status_code, _error_text(response)
        body = _json(response)
        raw = body.get("problems") if isinstance(body, dict) and isinstance(body.get("problems"), list) else []
        problems = [Problem(index=p["index"] + start if isinstance(p.get("index"), int) else None,
                            field=str(p.get("field", "body")), problem=str(p.get("problem", p)))
                    for p in raw if isinstance(p, dict)]
        where = f"{model}: " if model else ""
        if total > count:
            where += (f"items {start}-{start + count - 1} of {total} were refused, as a whole; "
                      + (f"items 0-{start - 1} were stored before. " if start else ""))
        kwargs = {"status": status, "error": message, "problems": problems, "stored": start, "prediction_ids": ids}
        listed = "".join(f"\n  {p}" for p in problems[:10]) + (f"\n  (+{len(problems) - 10} more in exc.problems)"
                                                               if len(problems) > 10 else "")
        if status == 422:
            return ValidationFailed(f"{where}{message}; fix these and send again:{listed}", **kwargs)
        if status == 409:
            return Conflict(f"{where}{message}; these disagree with what is stored (a label needs "
                            f"\"overwrite\": True to replace another):{listed}", **kwargs)
        if status == 401:
            return Unauthorized(f"{where}{message}; pass DriftpilotClient(..., token=...)", **kwargs)
        if status == 404:
            return NotFound(f"{where}{message} (server {self.base_url})", **kwargs)
        if 400 <= status < 500:
            return BadRequest(f"{where}HTTP {status}: {message}", **kwargs)
        return DriftpilotError(f"{where}unexpected answer HTTP {status} from {self.base_url}: {message}", **kwargs)


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error_text(response: httpx.Response) -> str:
    """The server's ``error`` message, or the start of whatever else answered (a proxy's HTML page)."""
    body = _json(response)
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    text = response.text.strip()
    return (text[:200] + "...") if len(text) > 200 else (text or response.reason_phrase)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # absent, or an HTTP date: the backoff decides


def _plain(value: Any) -> Any:
    """JSON for what ``json`` does not know: datetimes as RFC 3339, numpy scalars and arrays as Python values."""
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if hasattr(value, "tolist"):  # numpy scalars and arrays, without importing numpy
        return value.tolist()
    raise TypeError(f"cannot send {type(value).__name__} {value!r} as JSON; send numbers, strings, booleans, None, "
                    "lists or dicts")

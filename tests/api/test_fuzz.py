"""The API fuzzed, in-process, over real stores (SQLite and PostgreSQL) and a real champion (issue 9, "keep it so").

Two generators, each checked the same way on every response: no 5xx, the status is declared for the operation in
``/openapi.json``, the body and content type conform to the declared schema, and a non-2xx response stored nothing
(rows and label supersessions counted through the store before and after).

* **schemathesis** generates requests from the OpenAPI document itself, schema-conforming (positive) and violating
  (negative) ones; a negative request must be refused with a 4xx (its check ``negative_data_rejection``). Most go to
  the served model, some to generated model names (404).
* **A policy-aware generator** builds items for the served model's own features and puts exactly one thing clients
  get wrong at a chosen site of most requests: integers beyond a float, NaN and infinities, NUL and lone surrogates,
  times near the ends of the calendar with offsets, numbers where strings belong and the reverse, lax booleans. Such
  a request must be a 422. The rest of each request is valid, and some requests are clean, so the write paths and
  /predict really run; at the end, everything accepted must read back through the windows.

Both are deterministic (``derandomize``) and bounded: ``DRIFTPILOT_FUZZ_EXAMPLES`` examples per generator and store
(default 150). Run them longer outside the suite with, e.g.,
``DRIFTPILOT_FUZZ_EXAMPLES=3000 .venv/bin/python -m pytest tests/api/test_fuzz.py -p no:cacheprovider``.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from controller.clock import ManualClock
from controller.store import LabelRecord
from controller.store.tables import labels, predictions
from tests.api.api_kit import ServedApi, open_served_api

EXAMPLES = int(os.environ.get("DRIFTPILOT_FUZZ_EXAMPLES", "150"))
CONFORMANCE = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
FUZZ_SETTINGS = settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                         phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))

pytestmark = pytest.mark.slow


@pytest.fixture
def served(store_url: str, model_name: str, clock: ManualClock, tmp_path: Path) -> Iterator[ServedApi]:
    served = open_served_api(tmp_path, store_url, model_name, clock)
    try:
        yield served
    finally:
        served.store.dispose()


def snapshot(served: ServedApi) -> tuple[int, int, int]:
    """What any write would change: the model's predictions, label rows and superseded labels."""
    with served.store.connection() as conn:
        return (
            conn.execute(sa.select(sa.func.count()).select_from(predictions)
                         .where(predictions.c.model == served.model)).scalar_one(),
            conn.execute(sa.select(sa.func.count()).select_from(labels)
                         .where(labels.c.model == served.model)).scalar_one(),
            conn.execute(sa.select(sa.func.count()).select_from(labels)
                         .where(labels.c.model == served.model, labels.c.superseded_at.is_not(None))).scalar_one(),
        )


class Tally:
    """Statuses seen per operation, and every violation found (reported together at the end)."""

    def __init__(self) -> None:
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.violations: list[str] = []

    def check(self, served: ServedApi, case: Any, response: Any, before: tuple[int, int, int], checks: list) -> None:
        self.statuses[(case.operation.path.rsplit("/", 1)[-1], response.status_code)] += 1
        try:
            case.validate_response(response, checks=checks)
        except Exception as exc:  # noqa: BLE001 - collected, then reported with the request that caused it
            self.violations.append(f"{case.method} {case.formatted_path} {case.body!r:.300}: {exc}")
        if not 200 <= response.status_code < 300 and snapshot(served) != before:
            self.violations.append(f"{response.status_code} stored something: {case.method} {case.formatted_path} "
                                   f"{case.body!r:.300}")

    def assert_clean(self, *, must_see: set[tuple[str, int]]) -> None:
        print(f"{sum(self.statuses.values())} requests; statuses: {dict(sorted(self.statuses.items()))}")
        assert not self.violations, f"{len(self.violations)} violation(s):\n" + "\n".join(self.violations[:20])
        missing = must_see - set(self.statuses)
        # The generator must reach the paths that matter, or a clean run proves nothing.
        assert not missing, f"never seen: {sorted(missing)}; seen: {dict(self.statuses)}"


def test_schemathesis_finds_no_server_error_and_no_undeclared_response(served: ServedApi) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", served.client.app)
    modes = [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
    # Three of four requests go to the served model; the rest to generated model names.
    strategy = st.one_of(*(schema.as_strategy(mode, path_parameters={"model": served.model}) for mode in modes * 3),
                         *(schema.as_strategy(mode) for mode in modes))
    tally = Tally()

    @FUZZ_SETTINGS
    @given(case=strategy)
    def fuzz(case: Any) -> None:
        before = snapshot(served)
        response = case.call()
        tally.check(served, case, response, before, CONFORMANCE + [negative_data_rejection])

    fuzz()
    tally.assert_clean(must_see={("predictions", 200), ("predictions", 422), ("labels", 422), ("predict", 422),
                                 ("predictions", 404)})


# ------------------------------------------------------------------------------------------------ policy-aware
#
# Each "bad" pool below holds only values the served policy must refuse, so a request carrying one must be a 422.


def not_in_range(when: datetime) -> bool:
    try:
        utc = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    except OverflowError:  # off the calendar in UTC
        return True
    return not datetime(1678, 1, 1, tzinfo=UTC) <= utc < datetime(2262, 1, 1, tzinfo=UTC)


def calendar_edges() -> st.SearchStrategy[datetime]:
    """Times near the ends of the calendar and of pandas' range, with fixed offsets (some fall off the calendar in
    UTC, which used to be an OverflowError)."""
    offsets = st.integers(-23 * 60 - 59, 23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))
    early = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(1, 1, 3), timezones=offsets)
    late = st.datetimes(min_value=datetime(9999, 12, 29), max_value=datetime(9999, 12, 31, 23, 59, 59),
                        timezones=offsets)
    pandas_edges = st.datetimes(min_value=datetime(1677, 9, 1), max_value=datetime(1678, 1, 2), timezones=offsets) | \
        st.datetimes(min_value=datetime(2261, 12, 30), max_value=datetime(2262, 5, 1), timezones=offsets)
    anywhere = st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=offsets)
    return st.one_of(early, late, pandas_edges, anywhere).filter(not_in_range)


BEYOND_FLOAT = st.one_of(st.integers(min_value=2**1024, max_value=10**600), st.integers(max_value=-(2**1024)))
BEYOND_INT64 = st.one_of(st.integers(min_value=2**63, max_value=2**70), st.integers(max_value=-(2**63) - 1),
                         BEYOND_FLOAT)
NON_FINITE = st.sampled_from([math.nan, math.inf, -math.inf])
# Text the store cannot keep (NUL, lone surrogates), and odd text.
KILLER_TEXT = st.one_of(st.sampled_from(["\x00", "a\x00b", "\ud800", "x\udfffy"]),
                        st.tuples(st.text(max_size=4), st.sampled_from(["\x00", "\udc80", "\ud83d"]),
                                  st.text(max_size=4)).map("".join))
TEXT = st.one_of(st.text(max_size=12), KILLER_TEXT, st.sampled_from(["", " ", "\U0001d518", "x" * 300]))
CONTAINERS = st.one_of(st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(),
                                                                            max_size=2))
NON_NUMBERS = st.one_of(st.booleans(), TEXT, CONTAINERS)
BAD_X = st.one_of(BEYOND_FLOAT, NON_FINITE, NON_NUMBERS, st.none())          # x1, x2: required, no NaN
BAD_Z = st.one_of(BEYOND_FLOAT, NON_NUMBERS)                                  # z: optional, NaN allowed
BAD_COLOR = st.one_of(KILLER_TEXT, st.booleans(), st.integers(), st.floats(), CONTAINERS)
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
GOOD_IDS = st.from_regex(r"\A[a-z][a-z0-9]{0,2}\Z").map(lambda s: f"f-{s}")  # few, so retries and repeats happen
BAD_IDS = st.one_of(KILLER_TEXT.map(lambda t: f"f-{t}"), st.sampled_from(["p-1\n", "x" * 129, "-x", "a b", ""]),
                    st.text(max_size=5).filter(lambda t: not ID_PATTERN.fullmatch(t)), st.integers(), CONTAINERS)
BAD_LABEL_IDS = BAD_IDS | st.none()  # a prediction without an id gets one; a label cannot
BAD_CLASSES = st.one_of(BEYOND_INT64, st.integers().filter(lambda v: v not in (0, 1)), TEXT, st.floats(),
                        st.booleans(), st.none(), CONTAINERS)
GOOD_TIMES = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                          timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))])).map(
    datetime.isoformat)
BAD_TIMES = st.one_of(calendar_edges().map(datetime.isoformat),
                      st.sampled_from(["2026-02-30T00:00:00Z", "2026-01-31", "1767225600", "2026-01-31T24:00:00Z",
                                       "2026-01-31T12:00:60Z", "yesterday", ""]),
                      st.integers(), st.floats(), st.booleans(), CONTAINERS)
BAD_VERSIONS = st.one_of(KILLER_TEXT, st.just("v" * 65), st.just(""), st.integers(), st.booleans(), CONTAINERS)
GOOD_SCORES = st.fixed_dictionaries({"0": st.floats(0, 1), "1": st.floats(0, 1)})
BAD_SCORES = st.one_of(
    st.fixed_dictionaries({"0": st.one_of(BEYOND_FLOAT, NON_FINITE, NON_NUMBERS, st.none(),
                                          st.floats().filter(lambda p: not 0 <= p <= 1))}),
    st.dictionaries(st.one_of(KILLER_TEXT, st.sampled_from(["2", "UP", ""])), st.floats(0, 1), min_size=1,
                    max_size=2),
    st.lists(st.floats(0, 1), max_size=2), st.floats(), TEXT)
BAD_OVERWRITE = st.one_of(st.sampled_from(["yes", "true", 1, 0, "1"]), st.integers(), TEXT, st.none(), CONTAINERS)
GOOD_NUMBER = st.one_of(st.floats(min_value=-10, max_value=10), st.sampled_from([1e308, -1e308, 5e-324]))
SITES = ("x1", "x2", "z", "color", "unknown feature", "missing feature", "prediction", "prediction_id", "event_time",
         "model_version", "scores", "label", "overwrite")


class Fault:
    """Where a hostile request gets its one bad value (None: a clean request). Once placed, the rest of the request
    stays valid, so that one value is what the server must handle, and the request must be refused."""

    def __init__(self, site: str | None) -> None:
        self.site = site
        self.placed = False

    def here(self, site: str) -> bool:
        if self.placed or self.site != site:
            return False
        self.placed = True
        return True


@st.composite
def pick(draw: st.DrawFn, site: str, good: st.SearchStrategy, bad: st.SearchStrategy, fault: Fault) -> Any:
    return draw(bad) if fault.here(site) else draw(good)


@st.composite
def features(draw: st.DrawFn, fault: Fault) -> dict[str, Any]:
    out = {"x1": draw(pick("x1", GOOD_NUMBER, BAD_X, fault)), "x2": draw(pick("x2", GOOD_NUMBER, BAD_X, fault))}
    if fault.site == "z" or draw(st.booleans()):
        out["z"] = draw(pick("z", st.one_of(GOOD_NUMBER, NON_FINITE), BAD_Z, fault))
    if fault.site == "color" or draw(st.booleans()):
        out["color"] = draw(pick("color", st.sampled_from(["red", "blue", "green"]), BAD_COLOR, fault))
    if fault.here("unknown feature"):
        out[draw(TEXT.filter(lambda t: t not in ("x1", "x2", "z", "color")))] = draw(st.one_of(GOOD_NUMBER, TEXT))
    if fault.here("missing feature"):
        del out[draw(st.sampled_from(["x1", "x2"]))]
    return out


OPTIONAL = (("prediction_id", GOOD_IDS, BAD_IDS), ("event_time", GOOD_TIMES, BAD_TIMES),
            ("model_version", st.sampled_from(["1", "2", "v" * 64]), BAD_VERSIONS), ("scores", GOOD_SCORES, BAD_SCORES))


@st.composite
def prediction_item(draw: st.DrawFn, fault: Fault) -> dict[str, Any]:
    out: dict[str, Any] = {"features": draw(features(fault)),
                           "prediction": draw(pick("prediction", st.sampled_from([0, 1]), BAD_CLASSES, fault))}
    for key, good, bad in OPTIONAL:
        if (fault.site == key and not fault.placed) or draw(st.booleans()):
            out[key] = draw(pick(key, good, bad, fault))
    return out


@st.composite
def label_item(draw: st.DrawFn, fault: Fault) -> dict[str, Any]:
    out = {"prediction_id": draw(pick("prediction_id", GOOD_IDS, BAD_LABEL_IDS, fault)),
           "label": draw(pick("label", st.sampled_from([0, 1]), BAD_CLASSES, fault))}
    if (fault.site == "overwrite" and not fault.placed) or draw(st.booleans()):
        out["overwrite"] = draw(pick("overwrite", st.booleans(), BAD_OVERWRITE, fault))
    return out


@st.composite
def predict_row(draw: st.DrawFn, fault: Fault) -> dict[str, Any]:
    out: dict[str, Any] = {"features": draw(features(fault))}
    if (fault.site == "prediction_id" and not fault.placed) or draw(st.booleans()):
        out["prediction_id"] = draw(pick("prediction_id", GOOD_IDS, BAD_IDS, fault))
    return out


@st.composite
def requests(draw: st.DrawFn) -> tuple[str, Any, bool]:
    """One request and whether it carries a bad value; most carry one, at a chosen site. A clean request can still
    be refused (a duplicate id in a batch, a conflict with an earlier request, a row the champion scores as NaN)."""
    fault = Fault(draw(st.sampled_from((None, *SITES))))
    path = draw(st.sampled_from(["predictions", "labels", "predict"]))
    at_least = int(fault.site is not None)
    if path == "predictions":
        body = {"items": draw(st.lists(prediction_item(fault), min_size=at_least, max_size=4))}
    elif path == "labels":
        body = {"items": draw(st.lists(label_item(fault), min_size=at_least, max_size=4))}
    elif draw(st.booleans()):
        body = draw(predict_row(fault))
    else:
        body = {"items": draw(st.lists(predict_row(fault), min_size=1, max_size=4))}
    return path, body, fault.placed


def test_policy_aware_hostile_values_are_refused_never_5xx_and_never_half_store(served: ServedApi) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", served.client.app)
    operations = {path: schema[f"/v1/models/{{model}}/{path}"]["POST"] for path in ("predictions", "labels", "predict")}
    tally = Tally()

    @FUZZ_SETTINGS
    @given(request=requests())
    def fuzz(request: tuple[str, Any, bool]) -> None:
        path, body, bad = request
        served.clock.advance(seconds=1)
        before = snapshot(served)
        # json.dumps writes NaN/Infinity literals and escapes lone surrogates, as a careless client would send them.
        response = served.post(path, json.dumps(body).encode())
        case = operations[path].Case(path_parameters={"model": served.model}, body=body)
        tally.check(served, case, response, before, CONFORMANCE)
        if bad and response.status_code != 422:
            tally.violations.append(f"a bad value was not refused ({response.status_code}): {path} {body!r:.300}")
        if response.status_code == 200 and path == "predictions":
            for pid in response.json()["prediction_ids"]:
                assert served.store.get_prediction(served.model, pid) is not None

    fuzz()
    tally.assert_clean(must_see={("predictions", 200), ("predictions", 422), ("labels", 200), ("labels", 422),
                                 ("predict", 200), ("predict", 422)})
    # Everything accepted can be read back through the windows (times pandas can hold, values the frames can type).
    with served.store.connection() as conn:
        stored = conn.execute(sa.select(predictions.c.prediction_id).where(predictions.c.model == served.model)).all()
    served.store.add_labels(served.model, [LabelRecord(pid, 0) for (pid,) in stored
                                           if not served.store.label_history(served.model, pid)])
    feature_types = served.runtime.policy.config.feature_types
    window = served.store.labeled_window(served.model, served.clock.now(), feature_types=feature_types)
    assert window.rows == len(stored) > 0
    assert len(served.store.predictions_frame(served.model, served.clock.now(), feature_types=feature_types)) > 0
    assert served.client.get(f"/v1/models/{served.model}/stats").status_code == 200

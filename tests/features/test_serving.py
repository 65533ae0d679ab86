"""Materialize -> lookup -> /predict with batch and near-real-time features, on the real Redis (and on SQLite): the
joined vector is what the model scores and what the store logs; stale and missing features are refused with the
feature and its age, or imputed with the view's recorded default."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from controller.clock import ManualClock
from controller.features.materialize import MaterializeError, materialize_view, to_records
from controller.features.serving import open_store
from controller.features.stream import StreamProcessor
from controller.store import LabelRecord
from tests.conftest import T0
from tests.features.conftest import event_stream, open_api, write_policy, write_profile

PROFILE = [
    {"user_id": "u-1", "avg_amount_30d": 40.0, "segment": "gold", "computed_at": "2025-12-31T23:00:00Z"},
    {"user_id": "u-2", "avg_amount_30d": 75.5, "segment": "basic", "computed_at": "2025-12-31T22:00:00Z"},
    # an older row of u-2: the newest one wins
    {"user_id": "u-2", "avg_amount_30d": 1.0, "segment": "gold", "computed_at": "2025-12-01T00:00:00Z"},
    {"user_id": 7, "avg_amount_30d": None, "segment": "basic", "computed_at": "2025-12-31T23:30:00Z"},
]


def logged(api, model: str, ids: list[str]) -> dict[str, dict]:
    """The logged vectors of ``ids``, read as retraining reads them: labels join, then ``labeled_window``."""
    store = api.runtime.store
    store.add_labels(model, [LabelRecord(pid, 0) for pid in ids])
    window = store.labeled_window(model, api.clock.now(), feature_types=api.loaded.config.feature_types)
    rows = window.features.to_dict("records")
    return {pid: rows[i] for i, pid in enumerate(window.prediction_ids)}


def materialize(api) -> None:
    policy = api.loaded.config
    for view in policy.feature_views.batch_views:
        materialize_view(view, policy.feature_types, api.runtime.features.store, api.clock)


def run_stream(api, events: list[tuple[float, dict]]) -> StreamProcessor:
    """Append events to the stream and fold them with an in-process processor."""
    stream = event_stream(api.loaded)
    stream.append(events)
    processor = StreamProcessor(api.loaded.config.feature_views.stream_views, stream, api.runtime.features.store,
                                batch_size=100, block_ms=10)
    processor.start()
    deadline = time.monotonic() + 120  # a bound: a processor that never runs dry fails instead of hanging
    while processor.step(block_ms=10):
        if time.monotonic() > deadline:
            pytest.fail(f"the stream processor still found new events after 120 s of draining {len(events)} events")
    return processor


@pytest.mark.parametrize("store", ["redis", "sqlite"])
def test_materialize_lookup_predict_logs_the_served_vector(tmp_path: Path, prefix: str, champion, store: str):
    clock = ManualClock(T0)
    write_profile(tmp_path, PROFILE)
    url = None if store == "redis" else f"sqlite:///{tmp_path}/features.db"
    api = open_api(write_policy(tmp_path, prefix, store_url=url), clock, champion)
    materialize(api)
    t = T0.timestamp()
    run_stream(api, [(t - 120, {"user_id": "u-1", "amount": 10.0}), (t - 60, {"user_id": "u-1", "amount": 5.5}),
                     (t - 30, {"user_id": "u-2", "amount": 99.0})])

    response = api.predict({"items": [
        {"features": {"amount": 120.0}, "entities": {"user_id": "u-1"}, "prediction_id": "p-1"},
        {"features": {"amount": 3.0}, "entities": {"user_id": "u-2"}, "prediction_id": "p-2"}]})

    assert response.status_code == 200, response.text
    body = response.json()
    first = body["predictions"][0]["features_served"]
    assert first["imputed"] == []
    assert first["ages"]["user_profile"] == pytest.approx(3600.0)
    assert first["ages"]["user_activity"] == pytest.approx(30.0)  # now - the stream's watermark
    vectors = logged(api, "fraud", ["p-1", "p-2"])
    assert vectors["p-1"] == {
        "amount": 120.0, "avg_amount_30d": 40.0, "segment": "gold", "txn_count_10m": 2, "amount_sum_1h": 15.5}
    assert (vectors["p-2"]["avg_amount_30d"], vectors["p-2"]["segment"]) == (75.5, "basic")
    assert (vectors["p-2"]["txn_count_10m"], vectors["p-2"]["amount_sum_1h"]) == (1, 99.0)
    # The model scored exactly the logged vector.
    served = api.runtime.champion.current.predictor.predict_rows([
        {"amount": 120.0, "avg_amount_30d": 40.0, "segment": "gold", "txn_count_10m": 2, "amount_sum_1h": 15.5}])
    assert body["predictions"][0]["prediction"] == served.values[0]
    assert body["predictions"][0]["scores"] == pytest.approx(served.scores[0])


def test_stale_batch_features_are_refused_naming_feature_and_age(tmp_path: Path, prefix: str, champion):
    clock = ManualClock(T0)
    write_profile(tmp_path, PROFILE)
    api = open_api(write_policy(tmp_path, prefix), clock, champion)
    materialize(api)
    run_stream(api, [(T0.timestamp() - 1, {"user_id": "u-1", "amount": 1.0})])
    clock.advance(days=1, minutes=1)  # u-1's profile is now 1 d 1 h 1 min old (max_age 1d); the stream 1 d old too

    response = api.predict({"features": {"amount": 10.0}, "entities": {"user_id": "u-1"}})

    assert response.status_code == 422
    problems = {p["field"]: p["problem"] for p in response.json()["problems"]}
    assert set(problems) == {"features.avg_amount_30d", "features.segment", "features.txn_count_10m",
                             "features.amount_sum_1h"}
    assert "stale" in problems["features.avg_amount_30d"]
    assert "age 1d01h" in problems["features.avg_amount_30d"] and "max_age 1d00h" in problems[
        "features.avg_amount_30d"]
    assert "user_id='u-1'" in problems["features.avg_amount_30d"]
    assert "max_age 5m00s" in problems["features.txn_count_10m"]
    assert api.runtime.store.predictions_frame("fraud", clock.now()).empty  # nothing logged


def test_stale_features_can_be_imputed_with_the_recorded_default(tmp_path: Path, prefix: str, champion):
    clock = ManualClock(T0)
    write_profile(tmp_path, PROFILE)
    api = open_api(write_policy(tmp_path, prefix, batch_stale="impute", stream_stale="impute"), clock, champion)
    materialize(api)
    run_stream(api, [(T0.timestamp() - 1, {"user_id": "u-1", "amount": 1.0})])
    clock.advance(days=2)

    response = api.predict({"features": {"amount": 10.0}, "entities": {"user_id": "u-1"}, "prediction_id": "p-9"})

    assert response.status_code == 200, response.text
    served = response.json()["predictions"][0]["features_served"]
    assert sorted(served["imputed"]) == ["amount_sum_1h", "avg_amount_30d", "segment", "txn_count_10m"]
    assert served["ages"]["user_profile"] == pytest.approx(2 * 86400 + 3600)
    row = logged(api, "fraud", ["p-9"])["p-9"]
    assert (row["avg_amount_30d"], row["segment"], row["txn_count_10m"]) == (50.0, "unknown", 0)


def test_missing_features_are_refused_or_imputed_per_view(tmp_path: Path, prefix: str, champion):
    clock = ManualClock(T0)
    write_profile(tmp_path, PROFILE)
    api = open_api(write_policy(tmp_path, prefix), clock, champion)
    materialize(api)
    run_stream(api, [(T0.timestamp() - 1, {"user_id": "u-1", "amount": 1.0})])

    # u-9 was never materialized; 7 has no avg_amount_30d. The stream view knows u-9 has no events: counts are 0.
    response = api.predict({"items": [{"features": {"amount": 1.0}, "entities": {"user_id": "u-9"}},
                                      {"features": {"amount": 1.0}, "entities": {"user_id": 7}}]})
    assert response.status_code == 422
    problems = [(p["index"], p["field"], p["problem"]) for p in response.json()["problems"]]
    assert [(i, f) for i, f, _ in problems] == [(0, "features.avg_amount_30d"), (0, "features.segment"),
                                                (1, "features.avg_amount_30d")]
    assert "never written for user_id='u-9'" in problems[0][2] and "age: unknown" in problems[0][2]
    assert "has no value for user_id='7'" in problems[2][2]

    imputing = open_api(write_policy(tmp_path, prefix, model="fraud2", batch_missing="impute"), clock,
                        api.runtime.champion.current.model)
    response = imputing.predict({"features": {"amount": 1.0}, "entities": {"user_id": "u-9"}, "prediction_id": "q"})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["features_served"]["imputed"] == ["avg_amount_30d", "segment"]
    row = logged(imputing, "fraud2", ["q"])["q"]
    assert (row["avg_amount_30d"], row["segment"], row["txn_count_10m"]) == (50.0, "unknown", 0)


def test_entity_problems_are_422_with_index_and_field(tmp_path: Path, prefix: str, champion):
    clock = ManualClock(T0)
    write_profile(tmp_path, PROFILE)
    api = open_api(write_policy(tmp_path, prefix), clock, champion)

    response = api.predict({"items": [
        {"features": {"amount": 1.0}},
        {"features": {"amount": 1.0, "segment": "gold"}, "entities": {"user_id": "u-1", "shop": "s"}},
        {"features": {"amount": 1.0}, "entities": {"user_id": True}}]})

    assert response.status_code == 422
    body = response.json()
    assert set(body) == {"error", "problems"}
    fields = [(p["index"], p["field"]) for p in body["problems"]]
    assert fields == [(0, "entities.user_id"), (1, "entities.shop"), (1, "features.segment"), (2, "entities.user_id")]
    assert 'send "entities": {"user_id": "..."}' in body["problems"][0]["problem"]
    assert "comes from feature view 'user_profile'" in body["problems"][2]["problem"]


def test_a_model_without_views_refuses_entities_and_serves_as_before(tmp_path: Path, clock: ManualClock):
    from tests.api.api_kit import open_served_api

    api = open_served_api(tmp_path, f"sqlite:///{tmp_path}/e.db", "plain", clock)
    try:
        ok = api.post("predict", {"features": {"x1": 0.5, "x2": -1.0}})
        assert ok.status_code == 200 and "features_served" not in ok.json()["predictions"][0]
        refused = api.post("predict", {"features": {"x1": 0.5, "x2": -1.0}, "entities": {"user_id": "u-1"}})
        assert refused.status_code == 422
        assert refused.json()["problems"][0]["field"] == "entities"
        assert api.client.post("/v1/events", json={"items": [{"data": {"user_id": "u"}}]}).status_code == 404
    finally:
        api.store.dispose()


def test_sources_that_do_not_fit_are_one_teaching_error(tmp_path: Path, prefix: str, champion):
    import pandas as pd

    api = open_api(write_policy(tmp_path, prefix), ManualClock(T0), champion)
    view = api.loaded.config.feature_views.view("user_profile")
    types = api.loaded.config.feature_types
    now = T0.timestamp()
    with pytest.raises(MaterializeError, match=r"no column\(s\) \['segment'\]"):
        to_records(view, types, pd.DataFrame({"user_id": ["a"], "avg_amount_30d": [1.0], "computed_at": [T0]}), now)
    with pytest.raises(MaterializeError, match="'avg_amount_30d' is numeric in the policy, but row 1 holds 'lots'"):
        to_records(view, types, pd.DataFrame({"user_id": ["a", "b"], "avg_amount_30d": [1.0, "lots"],
                                              "segment": ["x", "y"], "computed_at": [T0, T0]}), now)
    with pytest.raises(MaterializeError, match="entity column 'user_id' is empty"):
        to_records(view, types, pd.DataFrame({"user_id": [None], "avg_amount_30d": [1.0], "segment": ["x"],
                                              "computed_at": [T0]}), now)
    with pytest.raises(MaterializeError, match="does not exist"):
        materialize_view(view, types, api.runtime.features.store, api.clock)


def test_a_sql_source_materializes_through_sqlalchemy(tmp_path: Path, prefix: str, champion):
    import sqlalchemy as sa

    db = tmp_path / "warehouse.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE profile (user_id TEXT, avg_amount_30d REAL, segment TEXT)"))
        conn.execute(sa.text("INSERT INTO profile VALUES ('u-1', 12.5, 'gold'), ('u-2', 3.0, 'basic')"))
    engine.dispose()
    policy_path = write_policy(tmp_path, prefix)
    text = policy_path.read_text().replace(
        f'source: {{path: "{tmp_path}/profile.csv", timestamp_column: computed_at}}',
        f'source: {{query: "SELECT user_id, avg_amount_30d, segment FROM profile", url: "sqlite:///{db}"}}')
    policy_path.write_text(text)
    clock = ManualClock(T0)
    api = open_api(policy_path, clock, champion)
    materialize(api)
    store = open_store(api.loaded.config)
    (record,), _ = store.read([("user_profile", "u-1")])
    assert dict(record.values) == {"avg_amount_30d": 12.5, "segment": "gold"}
    assert record.timestamp == T0.timestamp()  # no timestamp column: the time of materialization
    clock.advance(hours=2)
    response = api.predict({"features": {"amount": 1.0}, "entities": {"user_id": "u-2"}})
    # The stream processor never ran: its view has no watermark, so its features are missing (and refused).
    assert response.status_code == 422
    assert {p["field"] for p in response.json()["problems"]} == {"features.txn_count_10m", "features.amount_sum_1h"}


def test_raw_events_through_the_api_feed_the_stream_views(tmp_path: Path, prefix: str, champion):
    clock = ManualClock(T0)
    write_profile(tmp_path, PROFILE)
    api = open_api(write_policy(tmp_path, prefix), clock, champion)
    materialize(api)

    refused = api.events([{"event_time": "2025-12-31T23:59:00Z", "data": {"user_id": "u-1", "amount": "12"}},
                          {"data": {"shop": "s-1"}},
                          {"data": {"user_id": {"nested": 1}}}])
    assert refused.status_code == 422
    assert [(p["index"], p["field"]) for p in refused.json()["problems"]] == [
        (0, "data.amount"), (1, "data"), (2, "data.user_id")]
    accepted = api.events([{"event_time": "2025-12-31T23:59:00Z", "data": {"user_id": "u-1", "amount": 12}},
                           {"data": {"user_id": "u-1", "amount": 8.5, "channel": "web"}}])  # no time: now
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["accepted"] == 2 and len(accepted.json()["event_ids"]) == 2

    processor = StreamProcessor(api.loaded.config.feature_views.stream_views, event_stream(api.loaded),
                                api.runtime.features.store, block_ms=10)
    processor.start()
    assert processor.step(block_ms=10) == 2
    response = api.predict({"features": {"amount": 3.0}, "entities": {"user_id": "u-1"}, "prediction_id": "p-e"})
    assert response.status_code == 200, response.text
    assert response.json()["predictions"][0]["features_served"]["ages"]["user_activity"] == 0.0
    row = logged(api, "fraud", ["p-e"])["p-e"]
    assert (row["txn_count_10m"], row["amount_sum_1h"]) == (2, 20.5)

    spec = api.client.get("/openapi.json").json()["paths"]["/v1/events"]["post"]["responses"]
    assert sorted(spec) == ["200", "401", "404", "413", "422", "503"]


def test_events_need_the_token_of_a_consuming_model(tmp_path: Path, prefix: str, champion):
    from fastapi.testclient import TestClient

    from controller.api.app import create_app
    from controller.api.service import build_runtimes
    from controller.policy_loader import load_policy
    from tests.api.api_kit import FixedChampion

    path = write_policy(tmp_path, prefix)
    path.write_text(path.read_text() + "api: {token_env: FRAUD_TOKEN}\n")
    clock = ManualClock(T0)
    runtimes = build_runtimes([load_policy(path, environ={})], clock, environ={"FRAUD_TOKEN": "s3cret"},
                              champion_sources=lambda _: FixedChampion(champion))
    client = TestClient(create_app(runtimes, clock))
    body = {"items": [{"data": {"user_id": "u-1", "amount": 1.0}}]}
    assert client.post("/v1/events", json=body).status_code == 401
    assert client.post("/v1/events", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.post("/v1/events", json=body, headers={"Authorization": "Bearer s3cret"}).status_code == 200


def test_a_refused_row_leaves_the_other_rows_problems_exact(tmp_path: Path, prefix: str, champion):
    clock = ManualClock(T0)
    write_profile(tmp_path, PROFILE)
    api = open_api(write_policy(tmp_path, prefix), clock, champion)
    materialize(api)
    run_stream(api, [(T0.timestamp() - 1, {"user_id": "u-1", "amount": 1.0})])

    response = api.predict({"items": [{"features": {"amount": 1.0}, "entities": {"user_id": "u-1"}},
                                      {"features": {"amount": 1.0}},
                                      {"features": {"amount": "x"}, "entities": {"user_id": "u-2"}}]})

    assert response.status_code == 422
    assert [(p["index"], p["field"]) for p in response.json()["problems"]] == [(2, "features.amount"),
                                                                             (1, "entities.user_id")]

"""The client against a real ``driftpilot serve`` subprocess on a loopback port: a bootstrapped toy model (champion
version 1), a bearer token and a batch limit of 50 items, so every call of more than 50 items is split the way a
server's 413 says. Counts are checked through the stats route and the store the server writes."""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from controller.client import (
    DriftpilotClient,
    LabelsLogged,
    NotFound,
    Stats,
    Unauthorized,
    ValidationFailed,
)
from tests.client.client_kit import Chaos, Server, serving, token_toy
from tests.loop.daemon_kit import Toy

pytestmark = pytest.mark.slow

LIMIT = 50
TOKEN_ENV = "DRIFTPILOT_CLIENT_TEST_TOKEN"
TOKEN = "client-test-token"


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Toy]:
    toy = token_toy(tmp_path_factory, "client", TOKEN_ENV, api=f"max_batch_items: {LIMIT}, ")
    yield toy
    toy.store.dispose()


@pytest.fixture(scope="module")
def server(toy: Toy) -> Iterator[Server]:
    with serving(toy, {TOKEN_ENV: TOKEN}) as server:
        yield server


@pytest.fixture
def client(server: Server) -> Iterator[DriftpilotClient]:
    with DriftpilotClient(server.url, token=TOKEN, retries=0) as client:
        yield client


def rows(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"x1": float(a), "x2": float(b), "color": str(c)}
            for a, b, c in zip(rng.normal(size=n), rng.normal(size=n), rng.choice(["red", "blue"], size=n),
                               strict=True)]


def predictions(n: int, seed: int) -> list[dict]:
    return [{"features": row, "prediction": int(row["x1"] + 0.5 * row["x2"] > 0)} for row in rows(n, seed)]


def delta(after: Stats, before: Stats) -> dict[str, int]:
    return {"predictions": after.predictions - before.predictions, "labeled": after.labeled - before.labeled,
            **{source: after.by_source.get(source, 0) - before.by_source.get(source, 0)
               for source in ("logged", "served")}}


def test_predictions_and_labels_over_the_server_limit_are_split_and_a_resend_is_a_no_op(
        client: DriftpilotClient, toy: Toy, caplog: pytest.LogCaptureFixture) -> None:
    before = client.stats(toy.name)
    items = predictions(130, seed=1)
    items[3]["prediction_id"] = f"own-{uuid.uuid4().hex[:8]}"
    with caplog.at_level(logging.INFO, logger="driftpilot.client"):
        ids = client.log_predictions(toy.name, items)  # 1,000 per request by default: the 413 says 50
    assert f"the server takes at most {LIMIT} items per request" in caplog.text
    assert len(set(ids)) == 130 and ids[3] == items[3]["prediction_id"]
    labels = {pid: item["prediction"] for pid, item in zip(ids, items, strict=True)}
    assert client.log_labels(toy.name, labels) == LabelsLogged(130, 130, 0, 0, 0)
    assert delta(client.stats(toy.name), before) == {"predictions": 130, "labeled": 130, "logged": 130, "served": 0}
    assert toy.store.known_prediction_ids(toy.name, ids) == set(ids)

    # The same calls again, with the ids the first one used: stored items are no-ops, never duplicates.
    again = [{**item, "prediction_id": pid} for item, pid in zip(items, ids, strict=True)]
    assert client.log_predictions(toy.name, again) == ids
    assert client.log_labels(toy.name, labels) == LabelsLogged(130, 0, 130, 0, 0)
    assert delta(client.stats(toy.name), before) == {"predictions": 130, "labeled": 130, "logged": 130, "served": 0}


def test_predict_one_row_and_a_batch_over_the_limit(client: DriftpilotClient, toy: Toy) -> None:
    before = client.stats(toy.name)
    one = client.predict(toy.name, {"x1": 3.0, "x2": 3.0, "color": "red"})
    assert (one.prediction, one.model_version) == (1, "1")
    assert set(one.scores) == {"0", "1"} and one.scores["1"] > 0.5
    batch = rows(70, seed=2) + [{"x1": -3.0, "x2": -3.0}]
    served = client.predict(toy.name, batch, ids=[f"p-{uuid.uuid4().hex[:8]}-{i}" for i in range(71)])
    assert len(served) == 71 and len({p.prediction_id for p in served}) == 71
    assert {p.model_version for p in served} == {"1"} and served[-1].prediction == 0
    assert delta(client.stats(toy.name), before) == {"predictions": 72, "labeled": 0, "logged": 0, "served": 72}
    # The label of a served prediction joins by the id the client returned.
    assert client.log_labels(toy.name, {one.prediction_id: 1}).inserted == 1


def test_a_refused_batch_is_validation_failed_with_the_problems_in_the_callers_indices(
        client: DriftpilotClient, toy: Toy) -> None:
    before = client.stats(toy.name)
    items = predictions(80, seed=3)
    items[60]["features"]["x1"] = "oops"
    items[75]["features"]["size"] = 1.0
    with pytest.raises(ValidationFailed) as caught:
        client.log_predictions(toy.name, items)
    exc = caught.value
    assert exc.status == 422 and exc.stored == LIMIT
    assert [(p.index, p.field) for p in exc.problems] == [(60, "features.x1"), (75, "features.size")]
    assert "expected a number, got a string 'oops'" in exc.problems[0].problem
    assert "items 50-79 of 80 were refused, as a whole; items 0-49 were stored before." in str(exc)
    assert delta(client.stats(toy.name), before)["predictions"] == LIMIT

    # Fixed and re-sent with the ids of the failed call: the 50 stored are no-ops, the 30 others are stored.
    items[60]["features"]["x1"] = 0.5
    del items[75]["features"]["size"]
    fixed = [{**item, "prediction_id": pid} for item, pid in zip(items, exc.prediction_ids, strict=True)]
    assert client.log_predictions(toy.name, fixed) == exc.prediction_ids
    assert delta(client.stats(toy.name), before)["predictions"] == 80


def test_an_unknown_model_is_not_found_naming_the_served_ones(client: DriftpilotClient, toy: Toy) -> None:
    with pytest.raises(NotFound, match=f"unknown model 'nope'; this server has policies for: {toy.name}"):
        client.stats("nope")
    with pytest.raises(NotFound):
        client.log_labels("nope", {"p": 1})


def test_a_write_without_the_token_is_unauthorized_and_reads_need_none(server: Server, toy: Toy) -> None:
    with DriftpilotClient(server.url, retries=0) as anonymous:
        assert anonymous.stats(toy.name).model == toy.name
        with pytest.raises(Unauthorized, match=f"\\${TOKEN_ENV}.*token="):
            anonymous.log_labels(toy.name, {"p": 1})
        readiness = anonymous.ready()
        assert readiness.ready and readiness.champions == {toy.name: "1"}


def test_sigkill_and_restart_mid_stream_loses_and_doubles_nothing(toy: Toy) -> None:
    """The server is SIGKILLed five times while the client streams predictions (ids generated by the client),
    labels and /predict batches, and started again from the client's backoff sleep. Afterwards every event is stored
    exactly once: the stats grew by what was sent, not more, and each label has one row."""
    chaotic = Server(toy.path, toy.path.parent, env={TOKEN_ENV: TOKEN})
    chaotic.start()
    chaos = Chaos(chaotic, {
        ("predictions", 3): "before",   # the second chunk of the first call: connection refused
        ("predictions", 7): "after",    # a chunk stored, its answer lost: the retry must be a no-op
        ("labels", 2): "after",         # the same for labels: the retry counts as 50 duplicates
        ("predict", 2): "after",        # /predict stored and logged; the retry, same version, is a no-op
        ("labels", 6): "during",        # whatever the race gives
    })
    delays: list[float] = []

    def sleep(seconds: float) -> None:  # the backoff: the time the restart takes, instead of a timer
        delays.append(seconds)
        if not chaotic.alive:
            chaotic.start()

    rounds, size, served_per_round = 4, 120, 10
    logged: list[str] = []
    receipts: list[LabelsLogged] = []
    served: list[str] = []
    try:
        before = Stats.from_json(toy_stats(toy))
        with DriftpilotClient(chaotic.url, token=TOKEN, retries=3, transport=chaos, sleep=sleep,
                              jitter=random.Random(0).random) as client:
            previous: list[tuple[str, int]] = []
            for number in range(rounds):
                items = predictions(size, seed=100 + number)
                ids = client.log_predictions(toy.name, items)
                logged += ids
                if previous:
                    receipts.append(client.log_labels(toy.name, dict(previous)))
                previous = [(pid, item["prediction"]) for pid, item in zip(ids, items, strict=True)]
                served += [p.prediction_id for p in client.predict(toy.name, rows(served_per_round, 200 + number))]
            receipts.append(client.log_labels(toy.name, dict(previous)))
        assert not chaos.plan, f"planned kills that never fired: {chaos.plan}"
        assert chaotic.starts == 6 and len(delays) >= 5, (chaotic.starts, delays, chaos.failures)
    finally:
        chaotic.kill()

    after = Stats.from_json(toy_stats(toy))
    assert len(set(logged)) == rounds * size and len(set(served)) == rounds * served_per_round
    assert delta(after, before) == {"predictions": rounds * (size + served_per_round), "labeled": rounds * size,
                                    "logged": rounds * size, "served": rounds * served_per_round}
    assert toy.store.known_prediction_ids(toy.name, logged + served) == set(logged + served)
    assert all(len(toy.store.label_history(toy.name, pid)) == 1 for pid in logged)
    total = LabelsLogged(*(sum(getattr(r, name) for r in receipts) for name in LabelsLogged.__dataclass_fields__))
    assert total.accepted == total.inserted + total.duplicates == rounds * size
    # The labels chunk stored before its answer was lost comes back as 50 duplicates; the one killed "during", as 50
    # more if the kill came after its commit.
    assert total.duplicates in (LIMIT, 2 * LIMIT), chaos.failures
    print(f"kills: {chaos.fired}; transport errors seen: {chaos.failures}; backoff sleeps: {len(delays)}; "
          f"label duplicates from retries: {total.duplicates}")


def toy_stats(toy: Toy) -> dict:
    """The stats as the route computes them, read from the store directly (the server may be down)."""
    return toy.store.label_stats(toy.name).to_dict()

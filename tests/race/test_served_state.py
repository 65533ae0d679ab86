"""The online champion's live state reaches the API processes (controller/api/serving.py) and the CLI shows it.

* The holder, with counting fakes: the state's bytes are read only when its write time changed; a state of another
  version is ignored; a refresh between the alias move and the new version's publish keeps the live learner.
* The API on a real SQLite store with real River models: /predict answers with a published state (logged under the
  registered version), /readyz and /metrics say what serves.
* End to end (real registry, real Controller with the daemon's StorePublisher): a learner takes over, keeps learning
  in service, and the API follows its state without any new MLflow version; ``status`` shows the served state and
  the standings, ``decisions`` the switch with its evidence.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from fastapi.testclient import TestClient

from controller.actions.bootstrap import bootstrap
from controller.actions.datafiles import features_from_table, target_from_table
from controller.actions.model_registry import RegistryChampionSource, open_registry
from controller.api.app import create_app
from controller.api.service import build_runtimes, reload_interval
from controller.api.serving import ChampionHolder, NoLiveState, UnreadableState, predictor_for
from controller.cli.loop_commands import _decision_line, _race_lines
from controller.cli.main import main
from controller.clock import ManualClock, SystemClock
from controller.config import LoadedPolicy
from controller.loop.controller import Controller
from controller.loop.daemon import Daemon, publisher_for
from controller.policy_loader import load_policy
from controller.race.publish import NoPublisher, ServedState, StorePublisher, read_served
from controller.store import EventStore, LabelRecord, PredictionRecord
from controller.store.tables import predictions
from tests.conftest import T0
from tests.toy import toy_table, write_policy
from trainers.online import online_learner

RACE = """
monitors:
  data_drift: {enabled: false}
  concept_drift: {detector: adwin, params: {delta: 0.01}}
  performance: {window_rows: 200, min_labels: 60, max_drop: 0.1}
race:
  racers:
    - name: logreg
      estimator:
        pipeline: [{class: river.preprocessing.StandardScaler}, {class: river.linear_model.LogisticRegression}]
  warm_start_rows: 400
  persist_every: 200
  checkpoint: {every_updates: 300}
"""


def race_policy(tmp_path: Path, name: str) -> LoadedPolicy:
    path = write_policy(tmp_path, tmp_path, name)
    path.write_text(path.read_text() + RACE)
    return load_policy(path, environ={})


def rows_of(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [{"x1": float(r.x1), "x2": float(r.x2), "color": r.color} for r in table.itertuples()]


def river_learner(loaded: LoadedPolicy, table: pd.DataFrame) -> Any:
    """The policy's racer after learning ``table`` (a real River pipeline)."""
    config = loaded.config
    learner = online_learner(config.race.racers[0].estimator, config.feature_types, config.task, classes=(0, 1),
                             seed=0)
    learner.learn_records(rows_of(table), table.y.astype(int).tolist())
    return learner


# ------------------------------------------------------------------------------------- the holder, with fakes


class Versions:
    """A ChampionSource: registered models by version, the alias, and every load counted."""

    def __init__(self, models: dict[str, Any], champion: str) -> None:
        self.models = models
        self.champion = champion
        self.loads: list[str] = []

    def champion_version(self, name: str) -> str | None:
        return self.champion

    def load_version(self, name: str, version: str) -> Any:
        self.loads.append(version)
        return self.models[version]


class Published:
    """A LiveState: what the daemon published and when, with every read of the bytes counted."""

    def __init__(self) -> None:
        self.state: ServedState | None = None
        self.at: datetime | None = None
        self.reads = 0
        self.broken = False

    def publish(self, state: ServedState, at: datetime) -> None:
        self.state, self.at = state, at

    def written_at(self) -> datetime | None:
        return self.at

    def read(self) -> ServedState:
        self.reads += 1
        if self.broken:
            raise UnreadableState("these bytes are not a driftpilot served state")
        assert self.state is not None
        return self.state


def test_the_holder_reads_the_state_only_when_it_was_written_again(tmp_path: Path) -> None:
    loaded = race_policy(tmp_path, "holder")
    early, late = river_learner(loaded, toy_table(40, seed=1)), river_learner(loaded, toy_table(400, seed=1))
    source, live = Versions({"1": "registered v1", "2": "registered v2"}, champion="1"), Published()
    holder = ChampionHolder("holder", source, loaded.config.feature_types, live=live)

    assert holder.refresh() and holder.current.model == "registered v1" and not holder.current.live
    assert live.reads == 0  # nothing published: the write time alone said so

    live.publish(ServedState("1", "logreg", 40, early.served_model()), T0)
    assert holder.refresh()
    assert (holder.current.version, holder.current.racer, holder.current.through_seq) == ("1", "logreg", 40)
    assert holder.current.model is early.served_model() and live.reads == 1
    for _ in range(3):  # the same write time: no read of the bytes, no swap
        assert not holder.refresh()
    assert live.reads == 1

    live.publish(ServedState("1", "logreg", 400, late.served_model()), T0 + timedelta(seconds=60))
    assert holder.refresh() and holder.current.through_seq == 400 and live.reads == 2
    assert source.loads == ["1"]  # the live states came without a registry load

    # The daemon moves the alias before it publishes the new version's state, and publishes a state of a version
    # the alias does not name yet: a refresh in between keeps the live learner, never the older registered one.
    live.publish(ServedState("2", "logreg", 460, late.served_model()), T0 + timedelta(seconds=120))
    assert not holder.refresh() and holder.current.through_seq == 400 and live.reads == 3
    source.champion = "2"
    assert holder.refresh() and (holder.current.version, holder.current.through_seq) == ("2", 460)
    assert live.reads == 3 and source.loads == ["1"]

    # A rollback to a version with no live state: the registered version serves, the newer state is ignored.
    source.champion = "1"
    assert holder.refresh() and holder.current.model == "registered v1" and not holder.current.live
    assert holder.current.describe(T0) == {"version": "1", "racer": None, "through_seq": None, "age_s": None}


def test_a_state_that_cannot_be_loaded_is_read_once_and_the_registered_version_serves(tmp_path: Path,
                                                                                       caplog) -> None:
    # Another test in this worker may have run the CLI in-process, which sets the root level (to ERROR, say):
    # pin this logger's own level so the warning reaches caplog whatever ran before.
    caplog.set_level(logging.WARNING, logger="driftpilot.serving")
    loaded = race_policy(tmp_path, "broken")
    source, live = Versions({"1": "registered v1"}, champion="1"), Published()
    live.broken = True
    live.publish(ServedState("1", "logreg", 10, None), T0)
    holder = ChampionHolder("broken", source, loaded.config.feature_types, live=live)
    assert holder.refresh() and holder.current.model == "registered v1"
    assert not holder.refresh() and live.reads == 1  # broken bytes are not read again every refresh
    assert "not a driftpilot served state" in caplog.text


def test_without_a_race_the_holder_never_asks_for_a_state(tmp_path: Path) -> None:
    loaded = race_policy(tmp_path, "plain")
    holder = ChampionHolder("plain", Versions({"1": "v1"}, champion="1"), loaded.config.feature_types)
    assert isinstance(holder.live, NoLiveState)
    assert holder.refresh() and not holder.refresh() and holder.current.model == "v1"
    with pytest.raises(LookupError, match="without a race"):
        NoLiveState().read()


# --------------------------------------------------------------------------------- the API on a real store


def test_predict_serves_a_published_state_without_a_new_version(tmp_path: Path, clock: ManualClock) -> None:
    loaded = race_policy(tmp_path, "served")
    registered = river_learner(loaded, toy_table(60, seed=1))          # v1 as the registry holds it
    continued = river_learner(loaded, toy_table(60, seed=1))
    continued.learn_records(rows_of(toy_table(600, seed=2, concept="b")),  # the same learner, labels of a new concept
                            toy_table(600, seed=2, concept="b").y.astype(int).tolist())
    source = Versions({"1": registered.served_model()}, champion="1")
    runtimes = build_runtimes([loaded], clock, environ={}, champion_sources=lambda _: source)
    runtime = runtimes["served"]
    store = runtime.store
    client = TestClient(create_app(runtimes, clock))
    rows = rows_of(toy_table(20, seed=3, concept="b"))

    def predict(prefix: str) -> dict[str, Any]:
        response = client.post("/v1/models/served/predict", json={"items": [
            {"prediction_id": f"{prefix}-{i}", "features": row} for i, row in enumerate(rows)]})
        assert response.status_code == 200, response.text
        return response.json()

    def scores(body: dict[str, Any]) -> list[dict[str, float]]:
        return [p["scores"] for p in body["predictions"]]

    runtime.champion.refresh()
    as_registered = predict("a")
    assert as_registered["model_version"] == "1"
    assert client.get("/readyz").json()["served"] == {
        "served": {"version": "1", "racer": None, "through_seq": None, "age_s": None}}

    StorePublisher(store).publish("served", ServedState("1", "logreg", 660, continued.served_model()))
    clock.advance(seconds=42)
    assert runtime.champion.refresh()
    live = predict("b")
    expected = predictor_for(continued.served_model(), loaded.config.feature_types).predict_rows(rows)
    assert scores(live) == expected.scores and scores(live) != scores(as_registered)
    assert live["model_version"] == "1"  # logged under the registered version it continues
    with store.engine.connect() as conn:
        logged = conn.execute(sa.select(predictions.c.model_version).where(
            predictions.c.model == "served", predictions.c.prediction_id.like("b-%"))).scalars().all()
    assert logged == ["1"] * len(rows)
    assert source.loads == ["1"]  # no registry load for the live state
    assert client.get("/readyz").json()["served"] == {
        "served": {"version": "1", "racer": "logreg", "through_seq": 660, "age_s": 42.0}}
    metrics = client.get("/metrics").text
    assert 'driftpilot_served_state_age_seconds{model="served"} 42.0' in metrics
    assert 'driftpilot_served_state_through_seq{model="served"} 660.0' in metrics

    # A state of another version (published before the alias reached it) is ignored: the live v1 keeps serving,
    # and a process that starts now serves the registered v1.
    StorePublisher(store).publish("served", ServedState("2", "logreg", 700, registered.served_model()))
    assert not runtime.champion.refresh()
    assert scores(predict("c")) == expected.scores
    fresh = build_runtimes([loaded], clock, environ={}, champion_sources=lambda _: source)["served"]
    assert fresh.champion.refresh() and not fresh.champion.current.live
    assert fresh.champion.current.model is registered.served_model()
    fresh.store.dispose()
    store.dispose()


def test_the_daemon_publishes_a_race_through_the_store(tmp_path: Path, clock: ManualClock) -> None:
    loaded = race_policy(tmp_path, "daemon")
    store = EventStore.from_url(loaded.config.storage.url, clock)
    daemon = Daemon([loaded], {"daemon": store}, {"daemon": None}, clock,
                    scheduler_url=f"sqlite:///{tmp_path}/jobs.db", max_workers=1, owner="test")
    publisher = daemon.controllers["daemon"].race.publisher
    assert isinstance(publisher, StorePublisher) and publisher.store is store
    store.dispose()


def test_a_race_refreshes_at_least_once_per_tick(tmp_path: Path) -> None:
    loaded = race_policy(tmp_path, "often")
    slow = loaded.config.model_copy(update={
        "serving": loaded.config.serving.model_copy(update={"reload_interval_s": 300.0}),
        "loop": loaded.config.loop.model_copy(update={"tick": timedelta(seconds=20)})})
    assert reload_interval([loaded._replace(config=slow)]) == 20.0
    plain = slow.model_copy(update={"race": None})
    assert reload_interval([loaded._replace(config=plain)]) == 300.0
    assert isinstance(publisher_for(loaded._replace(config=plain), None), NoPublisher)


# ------------------------------------------------------------------------------ end to end, with the CLI


class Run:
    """A race driven tick by tick as the daemon would: the daemon's publisher, a real registry and store; the
    stream's labels arrive one minute after their rows."""

    def __init__(self, tmp_path: Path) -> None:
        # The CLI reads the system clock: the run happened in the last hours, so ages read as they would live.
        self.clock = ManualClock(SystemClock().now().replace(microsecond=0) - timedelta(hours=2))
        self.loaded = race_policy(tmp_path, "live")
        self.store = EventStore.from_url(self.loaded.config.storage.url, self.clock)
        self.registry = open_registry(self.loaded.config, self.clock)
        boot = toy_table(400, seed=0, concept="a")
        bootstrap(self.loaded, features_from_table(boot, self.loaded.config, "t"),
                  target_from_table(boot, self.loaded.config, "t"), store=self.store, registry=self.registry,
                  clock=self.clock)
        self.controller = Controller(self.loaded, self.store, self.registry, self.clock,
                                     publisher=publisher_for(self.loaded, self.store))
        self.stream = toy_table(1000, seed=1, concept="b")
        self.position, self.ids, self.waiting = 0, itertools.count(), []

    def minute(self) -> None:
        self.clock.advance(seconds=60)
        self.store.add_labels("live", [LabelRecord(pid, y) for pid, y in self.waiting])
        report = self.controller.tick(self.clock.now())
        assert report.error is None, report.error
        chunk = self.stream.iloc[self.position:self.position + 10]
        self.position += len(chunk)
        pids = [f"r{next(self.ids)}" for _ in range(len(chunk))]
        self.store.add_predictions("live", [
            PredictionRecord(row, self.clock.now(), prediction=0, prediction_id=pid,
                             model_version=self.controller.champion_version())
            for pid, row in zip(pids, rows_of(chunk), strict=True)])
        self.waiting = list(zip(pids, chunk.y.astype(int).tolist(), strict=True))

    def versions(self) -> int:
        return len(self.registry.tree("live"))


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    run = Run(tmp_path_factory.mktemp("live"))
    while read_served(run.store, "live") is None:  # until the learner took over and learned in service
        assert run.position < 600, "the online learner should have taken over within 600 rows of concept b"
        run.minute()
    yield run
    run.store.dispose()


def test_the_api_follows_the_live_champion_without_new_versions(run: Run) -> None:
    runtimes = build_runtimes([run.loaded], run.clock, environ={},
                              champion_sources=lambda _: RegistryChampionSource(run.registry))
    holder = runtimes["live"].champion
    client = TestClient(create_app(runtimes, run.clock))
    assert holder.refresh()
    first = holder.current
    assert first.live and first.racer == "logreg" and first.version == run.registry.champion_version("live")
    seen, same_version = [first.through_seq], 0
    for _ in range(6):  # six ticks of learning in service; a checkpoint (every 300 labels) may fall among them
        versions, version = run.versions(), holder.current.version
        run.minute()
        assert holder.refresh()  # every tick that learned published a newer state
        state = read_served(run.store, "live")
        assert holder.current.through_seq == state.through_seq > seen[-1]
        assert holder.current.version == state.version == run.registry.champion_version("live")
        if run.versions() == versions:  # no checkpoint in this tick: the same registered version, continued
            assert holder.current.version == version
            same_version += 1
        seen.append(holder.current.through_seq)
    assert same_version >= 4, seen
    body = client.post("/v1/models/live/predict", json={"features": rows_of(toy_table(1, seed=9))[0]}).json()
    assert body["model_version"] == holder.current.version
    ready = client.get("/readyz").json()
    assert ready["served"]["live"]["racer"] == "logreg" and ready["served"]["live"]["age_s"] == 0.0
    runtimes["live"].store.dispose()


def cli(*args: str) -> str:
    result = CliRunner().invoke(main, ["--log-level", "WARNING", *args])
    assert result.exit_code == 0, result.output
    return result.output


def test_status_shows_the_served_state_and_the_standings(run: Run) -> None:
    path = str(run.loaded.path)
    out = cli("status", "--config", path)
    state = read_served(run.store, "live")
    assert re.search(rf"served state: v{state.version} continued by logreg through label seq {state.through_seq}, "
                     r"updated \d+ min ago\n", out), out
    assert re.search(r"race on accuracy as of .*: champion logreg; a challenger takes over at evidence >= \d+", out)
    header = next(line for line in out.splitlines() if line.strip().startswith("racer"))
    assert re.split(r"\s{2,}", header.strip()) == ["racer", "kind", "origin", "version", "rolling accuracy",
                                                   "rows scored", "evidence / threshold"]
    table = out.split(header)[1].split("left the race:")[0].splitlines()[1:]
    assert re.match(r"\s+logreg \*\s+online\s+policy\s+v\d+\s+0\.\d+ \(\d+\)\s+\d+\s+champion", table[0]), out
    # The champion it replaced races on, frozen (its duel against the new champion shows once it has rows).
    assert any(re.match(r"\s+v1\s+frozen\s+champion\s+v1\s+0\.\d+ \(\d+\)\s+\d+\s+(-|[\d.e+-]+ / 140)$", row)
               for row in table), out
    assert "left the race: " in out

    body = json.loads(cli("status", "--config", path, "--json"))
    served = body["race"]["served"]
    assert (served["version"], served["racer"], served["through_seq"], served["serving"]) == \
        (state.version, "logreg", state.through_seq, True)
    assert served["age_s"] > 0
    standings = body["race"]["standings"]
    assert standings["champion"] == "logreg" and {r["racer"] for r in standings["racers"]} >= {"logreg", "v1"}


def test_decisions_show_the_switch_with_its_evidence(run: Run) -> None:
    out = cli("decisions", "--config", str(run.loaded.path))
    switch = next(line for line in out.splitlines() if " promote " in line and "trigger" not in line)
    assert re.search(r"rule=race strategy=online v1 -> v2 \(promoted logreg \[online, policy\] over v1: accuracy "
                     r"0\.\d+ vs 0\.\d+ on \d+ paired rows, evidence [\d.e+]+ >= threshold \d+ \(K=7, "
                     r"alpha=0\.05\)\)", switch), switch


def test_the_standings_read_as_a_table() -> None:
    race = {"served": {"version": "7", "racer": "arf", "through_seq": 12345, "age_s": 3.2, "serving": True,
                       "updated_at": "2026-01-01T00:00:00+00:00"},
            "standings": {"as_of": "2026-01-01T00:00:00+00:00", "metric": "accuracy", "champion": "arf",
                          "threshold": 140.0, "k": 7, "alpha": 0.05,
                          "racers": [
                              {"racer": "arf", "kind": "online", "origin": "policy", "version": "7",
                               "champion": True, "rolling": 0.91234, "rolling_rows": 500, "scored": 12000,
                               "evidence": None, "threshold": 140.0, "note": ""},
                              {"racer": "v3", "kind": "frozen", "origin": "past", "version": "3",
                               "champion": False, "rolling": 0.8, "rolling_rows": 500, "scored": 900,
                               "evidence": 0.25, "threshold": 140.0, "note": ""}],
                          "left": [{"key": "v2", "reason": "worse than the champion arf"}]}}
    assert _race_lines(race) == [
        "served state: v7 continued by arf through label seq 12345, updated 3 s ago",
        ("race on accuracy as of 2026-01-01T00:00:00: champion arf; a challenger takes over at evidence >= 140 "
         "(K/alpha, K=7, alpha=0.05)"),
        "  racer  kind    origin  version  rolling accuracy  rows scored  evidence / threshold",
        "  arf *  online  policy  v7       0.9123 (500)      12000        champion",
        "  v3     frozen  past    v3       0.8 (500)         900          0.25 / 140",
        "left the race: v2 (worse than the champion arf)",
    ]
    stale = {**race, "served": {**race["served"], "serving": False, "age_s": 5400.0}}
    assert _race_lines(stale)[0].startswith("served state: v7 continued by arf through label seq 12345, updated "
                                            "90 min ago (not served: the champion alias names another version")
    assert _race_lines({"served": None, "standings": None}) == [
        ("served state: none published yet (the registered champion serves until the daemon publishes the state of "
         "an online champion)"),
        "race: not started yet (it starts on the daemon's first tick with a champion)"]


def test_race_decisions_read_as_switches_and_checkpoints() -> None:
    base = {"created_at": "2026-01-01T00:00:00+00:00", "status": "done", "trigger": "race", "rule": "race",
            "verdict": "promote", "error": None}
    back = {**base, "decision_id": "race-1", "action": "rollback", "strategy": "frozen", "champion_version": "4",
            "challenger_version": "1",
            "evidence": {"race": {"challenger": "v1", "champion": "logreg", "evidence": 163.2, "threshold": 140.0,
                                  "rows": 212, "challenger_metric": 0.93, "champion_metric": 0.61, "k": 7,
                                  "alpha": 0.05, "metric": "accuracy", "challenger_kind": "frozen",
                                  "challenger_origin": "past", "re_promoted": True}}}
    assert _decision_line(back).endswith(
        "rule=race strategy=frozen v4 -> v1 (re-promoted v1 [frozen, past] over logreg: accuracy 0.93 vs 0.61 on "
        "212 paired rows, evidence 163.2 >= threshold 140 (K=7, alpha=0.05))")
    checkpoint = {**base, "decision_id": "checkpoint-1", "action": "checkpoint", "strategy": "incremental",
                  "champion_version": "2", "challenger_version": "3", "evidence": {"racer": "logreg", "learned": 900}}
    assert _decision_line(checkpoint).endswith(
        "strategy=incremental v2 -> v3 (checkpoint of the serving racer logreg, 900 labels learned)")
    entered = {**base, "decision_id": "retrain-1", "trigger": "concept_drift", "rule": "drift", "action": "retrain",
               "strategy": "stateless", "verdict": "race", "champion_version": "2", "challenger_version": "5",
               "evidence": {"race": {"entered": ["5"], "refused": {}}}}
    assert _decision_line(entered).endswith("v2 vs v5 -> race (joined the race: v5)")

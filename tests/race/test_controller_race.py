"""The controller with a race (Controller.tick): switches, lineage, checkpoints, a past version coming back.

A toy stream A -> B -> A: the bootstrap champion (a batch logistic regression) knows concept A; an online logistic
regression races it. Real store, real MLflow registry, real models, a ManualClock.
"""

from __future__ import annotations

import itertools

import pandas as pd

from controller.actions.bootstrap import bootstrap
from controller.actions.datafiles import features_from_table, target_from_table
from controller.actions.model_registry import open_registry
from controller.clock import ManualClock
from controller.loop.controller import Controller
from controller.policy_loader import load_policy
from controller.race.publish import InProcessPublisher
from controller.store import EventStore, LabelRecord, PredictionRecord
from controller.store.control import DecisionLog
from tests.toy import toy_table, write_policy

RACE = """
monitors:
  data_drift: {enabled: false}
  concept_drift: {detector: adwin, params: {delta: 0.01}}
  performance: {window_rows: 200, min_labels: 60, max_drop: 0.1}
race:
  racers:
    - name: logreg
      estimator: {pipeline: [{class: river.preprocessing.StandardScaler}, {class: river.linear_model.LogisticRegression}]}
  warm_start_rows: 400
  persist_every: 200
  checkpoint: {every_updates: 300}
"""


def test_a_b_a_the_learner_takes_over_then_the_old_version_comes_back(tmp_path, clock: ManualClock) -> None:
    path = write_policy(tmp_path, tmp_path, "aba")
    path.write_text(path.read_text() + RACE)
    loaded = load_policy(path, environ={})
    store = EventStore.from_url(loaded.config.storage.url, clock)
    registry = open_registry(loaded.config, clock)
    boot = toy_table(400, seed=0, concept="a")
    bootstrap(loaded, features_from_table(boot, loaded.config, "t"), target_from_table(boot, loaded.config, "t"),
              store=store, registry=registry, clock=clock)
    publisher = InProcessPublisher()
    controller = Controller(loaded, store, registry, clock, publisher=publisher)
    stream = pd.concat([toy_table(700, seed=1, concept="b"), toy_table(900, seed=2, concept="a")],
                       ignore_index=True)
    ids = itertools.count()
    waiting: list[tuple[str, int]] = []
    served: list[str] = []
    for start in range(0, len(stream), 10):
        clock.advance(seconds=60)
        store.add_labels("aba", [LabelRecord(pid, y) for pid, y in waiting])  # last minute's labels
        report = controller.tick(clock.now())
        assert report.error is None
        version = controller.champion_version()
        chunk = stream.iloc[start:start + 10]
        pids = [f"r{next(ids)}" for _ in range(len(chunk))]
        store.add_predictions("aba", [PredictionRecord({"x1": float(r.x1), "x2": float(r.x2), "color": r.color},
                                                       clock.now(), prediction=0, prediction_id=pid,
                                                       model_version=version)
                                      for pid, r in zip(pids, chunk.itertuples(), strict=True)])
        waiting = list(zip(pids, chunk.y.astype(int).tolist(), strict=True))
        served += [version] * len(chunk)

    decisions = list(reversed(DecisionLog(store, clock).list("aba", limit=None)))
    switches = [d for d in decisions if d.trigger == "race" and d.action in ("promote", "rollback")]
    checkpoints = [d for d in decisions if d.action == "checkpoint"]
    # 1. B arrives: the online learner beats the champion that knows A, and is registered when it is promoted.
    first = switches[0]
    assert first.action == "promote" and first.champion_version == "1"
    assert first.evidence["race"]["challenger"] == "logreg"
    assert first.evidence["race"]["evidence"] >= first.evidence["race"]["threshold"]
    v2 = registry.get("aba", first.challenger_version)
    assert v2.record.strategy == "stateless" and v2.record.trigger == "race"
    assert v2.record.parent_version == "1" and v2.record.extra["racer"] == "logreg"
    assert served.index(first.challenger_version) < 250  # within a few hundred rows of B's start
    # 2. It keeps learning in service: checkpoints continue it, `previous` stays the champion it replaced.
    assert checkpoints, "the serving learner should have been checkpointed every 300 labels"
    v3 = registry.get("aba", checkpoints[0].challenger_version)
    assert v3.record.strategy == "incremental" and v3.record.parent_version == first.challenger_version
    assert v3.record.chain_depth == 1
    # 3. A returns: version 1, which knows A, is re-promoted without any training.
    back = [d for d in switches if d.challenger_version == "1"]
    assert back, [(d.action, d.challenger_version) for d in switches]
    assert back[0].evidence["race"]["re_promoted"] is True
    assert back[0].action == "rollback"  # v1 was `previous`
    assert served.index("1", 700) < 700 + 300
    history = registry.alias_history("aba")
    assert [e.action for e in history if e.action != "advance"][-1] in ("promote", "rollback")
    # The served state of an online champion was published for the API processes.
    assert "aba" in publisher.latest
    # No training decision was ever made: everything came from the race.
    assert not [d for d in decisions if d.action == "retrain"]
    store.dispose()

"""The race of one model against the store and the registry: reads, joins, checkpoints and restarts.

:class:`RaceDriver` owns a :class:`~controller.race.race.Race` and does its I/O, one :meth:`RaceDriver.tick` per
controller tick:

* reads the rows logged since the last tick (``[cut, now)`` of the store's arrival time) and the labels matured
  since the last one (seq after ``cursor``, in force at ``now``) in one snapshot
  (:meth:`~controller.store.EventStore.recent_events`), scores a seeded sample of the rows when there are more than
  ``race.max_rows_per_tick``, then lets the race mature the labels;
* builds the race on the first tick: the champion (online when it is a River / partial_fit model, else frozen), the
  policy's racers (warm-started on the newest ``race.warm_start_rows`` matured rows), the most recent past
  champions (frozen); past champions join again after every drift alarm; fresh challengers join by :meth:`enter`;
* saves the race state (learners, duels, pending predictions, cursors) with the outcome log's new block in one
  transaction every ``race.persist_every`` learned labels and after every change of the racers, so a restart resumes
  from the last save: it neither re-learns the history nor learns a label twice (the rows after the save are read
  and learned again, from the state that had not learned them);
* registers an online racer as a version when it is promoted, and an online champion at ``race.checkpoint``'s cadence
  (lineage: parent = its last registered version, strategy incremental, the labels learned since);
* publishes the online champion's state after every tick it learned (:mod:`controller.race.publish`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from controller.actions.model_job import ModelJob
from controller.actions.run_params import training_params
from controller.actions.training import CANDIDATE, FIRST_SEQ, LAST_SEQ
from controller.api.serving import predictor_for
from controller.clock import Clock
from controller.config import LoadedPolicy
from controller.race.outcomes import OutcomeBuffer
from controller.race.publish import NoPublisher, ServedState, ServedStatePublisher
from controller.race.race import Dropped, Race, Racer, Switch
from controller.race.saved_state import STATE_KEY, RacerMeta, restore, state_blobs
from controller.store import EventStore
from lineage import LineageRecord, ModelRegistry, VersionInfo
from trainers.online import RowPredictions, as_online, online_learner

log = logging.getLogger("driftpilot.race")

RACER_TAG = "racer"          # lineage extra: the race key of the racer a version was registered from


class FrozenModel:
    """A registered version racing frozen: scored, never trained (the serving path's predictor, so a race scores a
    version exactly as /predict would)."""

    def __init__(self, model: Any, feature_types: dict[str, str], classes: Sequence[Any]) -> None:
        self.model = model
        self.predictor = predictor_for(model, feature_types)
        self.classes = list(classes)

    def predict_records(self, records: Sequence[dict[str, Any]]) -> RowPredictions:
        predicted = self.predictor.predict_rows(records)
        proba = None
        if predicted.scores is not None and self.classes:
            proba = np.array([[row.get(str(c), 0.0) for c in self.classes] for row in predicted.scores])
        return RowPredictions(values=list(predicted.values), proba=proba)


@dataclass
class RaceTick:
    """What the race did in one tick."""

    scored: int = 0                       # new rows the racers predicted
    matured: int = 0                      # labels matured since the last tick
    learned: dict[str, int] = field(default_factory=dict)
    switch: Switch | None = None
    left: list[Dropped] = field(default_factory=list)
    joined: list[str] = field(default_factory=list)
    champion_scores: list[float] = field(default_factory=list)
    checkpoint_due: bool = False
    read_after: int | None = None         # the label cursor the tick read from
    read: Any = None                      # the labels it read (MaturedRows), for the monitors
    logged: int = 0                       # predictions logged since the last tick (all of them, before sampling)
    newest_event_time: datetime | None = None


class RaceDriver(ModelJob):
    """The race of one model; see the module docstring."""

    def __init__(self, loaded: LoadedPolicy, store: EventStore, registry: ModelRegistry, clock: Clock, *,
                 publisher: ServedStatePublisher | None = None) -> None:
        super().__init__(loaded, store, registry, clock)
        self.config = self.policy.race
        if self.config is None:
            raise ValueError(f"{loaded.path}: the policy has no race section")
        self.publisher = publisher or NoPublisher()
        self.metric = self.config.metric_for(self.policy.task, self.policy.gate.metric)
        self.classes = tuple(self.policy.target.classes or ())
        self.race: Race | None = None
        self.cut: datetime | None = None         # logged rows are read from here (inclusive) to now (exclusive)
        self.cursor: int | None = None           # labels are read after this seq
        self.meta: dict[str, RacerMeta] = {}
        self.outcomes = OutcomeBuffer()
        self.unsaved = 0                         # labels learned since the last save
        self.ticks = 0

    @property
    def name(self) -> str:
        return self.policy.registered_model

    # ----------------------------------------------------------------------------------------------------- tick

    def tick(self, now: datetime, champion: VersionInfo) -> RaceTick:
        out = RaceTick()
        if self.race is None:
            self._open(now, champion, out)
        self._follow(now, champion, out)
        race = self.race
        assert race is not None and self.cut is not None
        logged, matured = self.store.recent_events(self.policy.model, logged_from=self.cut, logged_before=now,
                                                   labels_after=self.cursor, as_of=now)
        out.read_after = self.cursor
        out.logged, out.newest_event_time = len(logged), logged.newest_event_time
        if not matured.complete:
            matured = self._matured_from_window(now)
        else:
            out.read = matured
        ids, records = self._sample(logged.ids, logged.records)
        out.scored = race.score(ids, records)
        step = race.mature(matured.seqs, matured.ids, matured.records, matured.labels)
        self.cut, self.ticks = now, self.ticks + 1
        if matured.seqs:
            self.cursor = matured.seqs[-1]
        out.matured, out.learned, out.champion_scores = step.rows, step.learned, step.champion_scores
        for key, learned in step.learned.items():
            meta = self.meta.get(key)
            if meta is not None and meta.first_seq is None and learned:
                meta.first_seq = matured.seqs[-learned]
        self.outcomes.add(step.outcomes)
        self.unsaved += step.rows
        out.switch, out.left = race.verdict()
        changed = bool(out.left or out.joined)
        if changed or self.unsaved >= self.config.persist_every:
            self.save(now)
        champ = race.racers[race.champion]
        if champ.online and step.learned.get(champ.key):
            meta = self.meta[champ.key]
            out.checkpoint_due = self.config.checkpoint.due(now, champ.learned - meta.learned_at_version,
                                                            meta.registered_at)
            self.publish(champ)
        return out

    def _sample(self, ids: list[str], records: list[dict[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
        cap = self.config.max_rows_per_tick
        if cap is None or len(ids) <= cap:
            return ids, records
        rng = np.random.default_rng([self.config.seed, self.ticks])
        keep = np.sort(rng.choice(len(ids), size=cap, replace=False))
        return [ids[i] for i in keep], [records[i] for i in keep]

    def _matured_from_window(self, now: datetime) -> Any:
        """Labels after the cursor when some of them are sealed: the columnar window reader knows segments."""
        from controller.store.recent import MaturedRows

        window = self.store.labeled_window(self.policy.model, now, after_seq=self.cursor)
        return MaturedRows(seqs=[int(s) for s in window.label_seqs], ids=window.prediction_ids.tolist(),
                           labels=[_plain(v) for v in window.labels.tolist()],
                           records=[{k: _plain(v) for k, v in row.items()}
                                    for row in window.features.to_dict(orient="records")])

    # -------------------------------------------------------------------------------------------- membership

    def enter(self, now: datetime, version: str, origin: str = "retrain") -> str | None:
        """A registered version joins the race frozen (a fresh challenger, or a past version); returns why not."""
        race = self._require()
        key = f"v{version}"
        if key in race.racers:
            return None
        try:
            racer = self._frozen(version, origin)
        except Exception as exc:  # noqa: BLE001 - a version that cannot load does not race; recorded by the caller
            return f"v{version} cannot be loaded: {type(exc).__name__}: {exc}"
        refused = race.add(racer)
        if refused is None:
            self.meta[key] = RacerMeta(since=now)
            self.save(now)
        return refused

    def promote(self, now: datetime, key: str, *, decision_id: str, trigger: str = "race") -> str:
        """The version to move the champion alias to for ``key``: a frozen racer's version, or an online racer's
        state registered now (so rollback and lineage still hold)."""
        race = self._require()
        racer = race.racers[key]
        if racer.kind == "frozen" and racer.version is not None:
            return racer.version
        return self.register(now, key, decision_id=decision_id, trigger=trigger)

    def crowned(self, now: datetime, key: str) -> None:
        """The alias moved to ``key``'s version: it serves from now on."""
        race = self._require()
        race.crown(key)
        racer = race.racers[key]
        if racer.online:
            self.publish(racer)
        self.save(now)

    def register(self, now: datetime, key: str, *, decision_id: str, trigger: str = "race") -> str:
        """Register an online racer's current state as a version (lineage: what it continued, what it learned)."""
        race = self._require()
        racer = race.racers[key]
        meta = self.meta.setdefault(key, RacerMeta(since=now))
        learner = racer.model
        parent = racer.version
        parent_info = self.registry.get(self.name, parent) if parent is not None else None
        champion = race.racers[race.champion].version if race.champion in race.racers else None
        stateful = parent is not None
        rolling = [s for s in racer.rolling if not np.isnan(s)]
        metrics = {f"race_{self.metric}": float(np.mean(rolling))} if rolling else {}
        spec = self._spec_of(key)
        # The window it learned since its last registration, as the store sees it (fingerprint, times): a later
        # drift check or refresh finds exactly these rows by their label-seq range.
        window = self.store.labeled_window(self.policy.model, now, after_seq=meta.first_seq - 1,
                                           through_seq=racer.learned_through) \
            if meta.first_seq is not None and racer.learned_through is not None else None
        known = window is not None and window.rows > 0
        record = LineageRecord(
            parent_version=parent if stateful else champion,
            strategy="incremental" if stateful else "stateless", trigger=trigger,
            window_start=window.start if known else min(meta.since, now), window_end=window.end if known else now,
            window_rows=window.rows if known else 0,
            window_fingerprint=window.fingerprint if known else f"race-{key}-nothing-learned", maturity_cut=now,
            event_time_start=window.event_times.min().to_pydatetime() if known else None,
            event_time_end=window.event_times.max().to_pydatetime() if known else None,
            holdout_metrics=metrics, champion_metrics={},
            chain_depth=(parent_info.record.chain_depth + 1 if parent_info and parent_info.record else 1)
            if stateful else 0,
            policy_hash=self.loaded.sha256, decision_id=decision_id,
            extra={FIRST_SEQ: meta.first_seq, LAST_SEQ: racer.learned_through, RACER_TAG: key, CANDIDATE: key,
                   "n_updates": int(learner.n_updates), "race_rows_scored": racer.scored})
        info = self.registry.register(self.name, learner.served_model(), record, params=training_params(
            spec, "incremental" if stateful else "stateless", seed=self.config.seed,
            extra={"racer": key, "labels_learned": racer.learned - meta.learned_at_version}))
        racer.version = str(info.version)
        meta.learned_at_version, meta.registered_at, meta.first_seq, meta.since = racer.learned, now, None, now
        log.info("%s: registered racer %s as v%s (%s)", self.policy.model, key, info.version, record.strategy)
        self.save(now)
        return racer.version

    def publish(self, racer: Racer) -> None:
        if racer.version is None:
            return
        self.publisher.publish(self.policy.model, ServedState(version=racer.version, racer=racer.key,
                                                              through_seq=racer.learned_through,
                                                              model=racer.model.served_model()))

    def standings(self) -> list[dict[str, Any]]:
        return self.race.standings() if self.race is not None else []

    # ------------------------------------------------------------------------------------------ start, follow

    def _require(self) -> Race:
        if self.race is None:
            raise RuntimeError("the race has not started yet (it starts on the first tick with a champion)")
        return self.race

    def _open(self, now: datetime, champion: VersionInfo, out: RaceTick) -> None:
        """Restore the saved race, or start one: the champion, the policy's racers, the past champions."""
        if self._restore():
            return
        race = Race(self.config, task=self.policy.task, metric=self.metric, classes=self.classes)
        self.race = race
        newest = self.store.labeled_count(self.policy.model, now)[1]
        self.cursor, self.cut = newest, now
        key = self._champion_racer(champion, now, through=newest)
        race.crown(key)
        for spec in self.config.racers:
            learner = online_learner(spec.estimator, self.policy.feature_types, self.policy.task,
                                     classes=self.classes, seed=self.config.seed)
            racer = Racer(key=spec.name, kind="online", origin="policy", model=learner)
            first = self._catch_up(racer, now, through=newest, rows=self.config.warm_start_rows)
            self.meta[spec.name] = RacerMeta(since=now, first_seq=first)
            race.add(racer)
            out.joined.append(spec.name)
        out.joined += self._join_past(now, champion)
        log.info("%s: race started with %s", self.policy.model, ", ".join(race.racers))
        self.save(now)

    def _champion_racer(self, champion: VersionInfo, now: datetime, *, through: int | None) -> str:
        """The champion joins: online (catching up on the labels since its training window) or frozen."""
        race = self._require()
        loaded = self.registry.load(self.name, version=champion.version)
        extra = loaded.record.extra if loaded.record else {}
        try:
            learner = as_online(loaded.model, self.policy.task, classes=self.classes,
                                feature_types=self.policy.feature_types)
        except Exception:  # noqa: BLE001 - not an online learner: it races frozen
            learner = None
        if learner is None or not _is_river(loaded.model):
            # A batch model (or a partial_fit one trained in one piece) serves as registered.
            racer = Racer(key=f"v{champion.version}", kind="frozen", origin="champion",
                          model=FrozenModel(loaded.model, self.policy.feature_types, self.classes),
                          version=champion.version)
        else:
            key = str(extra.get(RACER_TAG) or f"v{champion.version}")
            racer = Racer(key=key, kind="online", origin="champion", model=learner, version=champion.version,
                          learned_through=extra.get(LAST_SEQ))
        first = self._catch_up(racer, now, through=through, rows=None) if racer.online else None
        race.add(racer)
        # What it learned since its registered version counts toward its next checkpoint.
        self.meta[racer.key] = RacerMeta(since=now, first_seq=first, registered_at=now)
        return racer.key

    def _catch_up(self, racer: Racer, now: datetime, *, through: int | None, rows: int | None) -> int | None:
        """Learn the matured labels after the racer's own seq up to ``through`` (the newest ``rows`` at most);
        returns the first seq it learned."""
        if through is None or (racer.learned_through is not None and racer.learned_through >= through):
            return None
        if rows == 0:
            racer.learned_through = through
            return None
        window = self.store.labeled_window(self.policy.model, now, after_seq=racer.learned_through,
                                           through_seq=through, max_rows=rows)
        first = None
        if window.rows:
            records = [{k: _plain(v) for k, v in row.items() if v is not None}
                       for row in window.features.to_dict(orient="records")]
            racer.learned += racer.model.learn_records(records, [_plain(v) for v in window.labels.tolist()])
            first = int(window.label_seqs.iloc[0])
        racer.learned_through = through
        return first

    def _frozen(self, version: str, origin: str) -> Racer:
        loaded = self.registry.load(self.name, version=version)
        return Racer(key=f"v{version}", kind="frozen", origin=origin,  # type: ignore[arg-type]
                     model=FrozenModel(loaded.model, self.policy.feature_types, self.classes), version=version)

    def join_past(self, now: datetime, champion: VersionInfo) -> list[str]:
        """After a drift alarm: the most recent distinct past champions race (again) frozen, their duels starting
        afresh, so a returning concept brings its version back without training."""
        if self.race is None or not self.config.past_versions:
            return []
        joined = self._join_past(now, champion)
        if joined:
            self.save(now)
        return joined

    def _join_past(self, now: datetime, champion: VersionInfo) -> list[str]:
        race = self._require()
        try:
            events = self.registry.alias_history(self.name)
        except Exception as exc:  # noqa: BLE001 - the race goes on without them
            log.warning("%s: past versions cannot join, the alias history is unreadable: %s", self.policy.model, exc)
            return []
        current = {r.version for r in race.racers.values() if r.key == race.champion}
        past: list[str] = []
        for event in reversed(events):
            # The champion each real change replaced, in its last state (a checkpoint's "advance" is the same
            # learner continued, not a past champion).
            version = event.before.get("champion") if event.action != "advance" else None
            if version and version not in current and version not in past:
                past.append(str(version))
        joined = []
        for version in past[: self.config.past_versions]:
            key = f"v{version}"
            if key in race.racers:
                race.add(race.racers[key])   # already racing: its duel starts again
                joined.append(key)
                continue
            if self.enter(now, version, origin="past") is None:
                joined.append(key)
        return joined

    def _follow(self, now: datetime, champion: VersionInfo, out: RaceTick) -> None:
        """The champion alias moved outside the race (a promote or rollback by hand, bootstrap --force): follow."""
        race = self._require()
        current = race.racers.get(race.champion)
        if current is not None and current.version == champion.version:
            return
        for racer in race.racers.values():
            if racer.version == champion.version:
                race.crown(racer.key)
                self.save(now)
                return
        key = self._champion_racer(champion, now, through=self.cursor)
        out.joined.append(key)
        race.crown(key)
        self.save(now)

    def _spec_of(self, key: str) -> Any:
        for spec in self.config.racers:
            if spec.name == key:
                return spec.estimator
        member = self.policy.pool_members().get(key)
        return member.estimator if member is not None else self.policy.estimator

    # ---------------------------------------------------------------------------------------------- persistence

    def save(self, now: datetime) -> None:
        """The race state and the outcome log's new block, in one transaction. The matured rows collected for the
        next batch are judged first, so the log holds every row matured so far."""
        race = self._require()
        self.outcomes.add(race.judge().outcomes)
        self.store.put_states(self.policy.model, state_blobs(
            race, now, config=self.config, metric=self.metric, cut=self.cut, cursor=self.cursor, ticks=self.ticks,
            meta=self.meta), outcome_block=self.outcomes.block())
        self.unsaved = 0

    def _restore(self) -> bool:
        saved = restore(
            self.store.get_state(self.policy.model, STATE_KEY), model=self.policy.model,
            new_race=lambda: Race(self.config, task=self.policy.task, metric=self.metric, classes=self.classes),
            frozen=lambda version: FrozenModel(self.registry.load(self.name, version=version).model,
                                               self.policy.feature_types, self.classes),
            rolling_rows=self.config.rolling_rows)
        if saved is None:
            return False
        self.race, self.cut, self.cursor, self.ticks, self.meta = (saved.race, saved.cut, saved.cursor, saved.ticks,
                                                                   saved.meta)
        log.info("%s: race restored (%d racers, labels after seq %s)", self.policy.model, len(saved.race.racers),
                 self.cursor)
        return True


def _is_river(model: Any) -> bool:
    from trainers import RiverModel

    return isinstance(model, RiverModel)


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and np.isnan(value):
        return None
    return value

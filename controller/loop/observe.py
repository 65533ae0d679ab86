"""The monitors on what arrived since the last tick: a tick's cost follows the new events, not the history.

* One read per tick: the labeled rows after the cursor. They advance the counters, feed the concept-drift detector
  (state per champion in the store) and join the newest ``2 x window_rows`` rows the performance monitor reads,
  kept in memory; the live metric is recomputed after a tenth of its window arrived.
* Data drift runs when ``loop.data_drift_every_rows`` new predictions arrived since the last check. Its reference —
  a seeded sample (``monitors.data_drift.sample_cap`` rows) of the champion's training window — is built once per
  champion, kept in memory and in the store (``loop.reference``), so neither a tick nor a restart re-reads the
  champion's whole window.
"""

from __future__ import annotations

import io
import logging
import pickle
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

import pandas as pd

from controller.actions.monitoring import MonitorCycle
from controller.actions.training import LAST_SEQ
from controller.loop import costs
from controller.loop.config import LoopConfig
from controller.loop.rules import ManualRequest, Observation
from controller.loop.state import LoopState
from controller.store import LabeledWindow
from lineage import VersionInfo

log = logging.getLogger("driftpilot.loop.observe")

REFERENCE_KEY = "loop.reference"


def last_seq(version: VersionInfo | Any) -> int | None:
    """The newest label seq a version trained on (None for a version without driftpilot lineage)."""
    record = getattr(version, "record", None)
    value = record.extra.get(LAST_SEQ) if record is not None else None
    return int(value) if value is not None else None


class Observer:
    """Runs one model's monitors incrementally; build once per model."""

    def __init__(self, cycle: MonitorCycle, loop: LoopConfig) -> None:
        self.cycle = cycle
        self.loop = loop
        self._reference: tuple[str, pd.DataFrame] | None = None
        self._recent: LabeledWindow | None = None
        self._arrived: list[LabeledWindow] = []
        # The newest signal object of each monitor in this process (strategy auto reads their details).
        self.latest: dict[str, Any] = {}

    @property
    def policy(self) -> Any:
        return self.cycle.policy

    def observe(self, now: datetime, champion: VersionInfo, state: LoopState,
                manual: ManualRequest | None = None, *, read: tuple[int | None, LabeledWindow] | None = None,
                traffic: tuple[int, datetime | None] | None = None,
                race: tuple[str, Callable[[], list[dict[str, Any]]]] | None = None) -> Observation:
        """``read``: (cursor, rows) when the caller already read the labeled rows after ``cursor`` as of ``now``
        (the race does); used when its cursor is this loop's, else the observer reads them itself. ``traffic``:
        (predictions logged since the last tick, their newest event time) when the caller counted them (the race
        read them). ``race``: (the race's metric, a call that gives its standings), the cost trigger's reference when it
        has one; the standings are built only on a tick with new labels."""
        store, model = self.cycle.store, self.policy.model
        if state.champion != champion.version:
            self._rebase(now, champion, state)
        # One read per tick: the labeled rows after the cursor feed the counters, the detector and the live metric.
        previous = state.label_cursor
        if read is not None and read[0] == previous:
            rows = read[1]
        else:
            rows = store.labeled_window(model, now, after_seq=previous, feature_types=self.policy.feature_types)
        concept = performance = data = None
        if rows.rows:
            state.label_cursor = rows.last_seq
            state.unlearned += rows.rows
            state.new_labels += rows.rows
            state.labels_pending += rows.rows
            concept = self.cycle.concept_drift(champion.version, now, rows, read_through=previous)
        cost = self._cost(champion, state, rows, race) if rows.rows and self.policy.costs is not None else None
        self._remember(now, rows)
        # The live metric over the newest window moves little per row: recomputed after a tenth of a window.
        if state.labels_pending >= max(1, self.policy.monitors.performance.window_rows // 10):
            performance = self._performance(champion)
            state.labels_pending = 0
        count, newest_time = traffic if traffic is not None else store.traffic_since(model, now, state.traffic_after)
        state.traffic_pending += count
        if newest_time is not None and (state.traffic_after is None or newest_time > state.traffic_after):
            state.traffic_after = newest_time
        if state.traffic_pending >= self.loop.data_drift_every_rows:
            data = self.cycle.monitors.data_drift.run(self.reference(champion), self.cycle.current_features(now),
                                                      self.policy.feature_types)
            state.traffic_pending = 0
        for kind, signal in (("concept_drift", concept), ("performance", performance), ("data_drift", data),
                             ("cost", cost)):
            if signal is not None:
                self.latest[kind] = signal
                state.signals[kind] = {"at": now.isoformat(), **signal.to_dict()}
        return Observation(now=now, data_drift=data, concept_drift=concept, performance=performance,
                           unlearned_rows=state.unlearned, new_labels=state.new_labels, manual=manual, cost=cost)

    def _cost(self, champion: VersionInfo, state: LoopState, rows: LabeledWindow,
              race: tuple[str, Callable[[], list[dict[str, Any]]]] | None) -> costs.CostSignal:
        """The served losses of the new rows, added to the staleness ledger and weighed against a retrain."""
        policy = self.policy
        losses = costs.row_losses(policy.task, rows.labels.tolist(), rows.predictions.tolist())
        reference = None
        if race is not None:
            reference = costs.race_reference(policy.task, race[0], race[1](), policy.costs.reference_min_rows)
            reference = (reference[0], f"race:{reference[1]}") if reference is not None else None
        if reference is None:
            own = costs.holdout_reference(policy.task, champion.record.holdout_metrics if champion.record else None)
            reference = (own, "holdout") if own is not None else None
        return costs.signal(state.staleness, policy.costs, losses, reference)

    def _remember(self, now: datetime, rows: LabeledWindow) -> None:
        """The newest ``2 x performance.window_rows`` labeled rows, kept in memory (read once after a start). New
        rows wait in a list and are joined when the live metric needs them: a tick of one row does no concat."""
        keep = self.policy.monitors.performance.window_rows * 2
        if self._recent is None:
            store = self.cycle.store
            since = store.tail_start(self.policy.model, now, keep)
            self._recent = _without_features(store.labeled_window(self.policy.model, now, since=since,
                                                                  max_rows=keep))
            self._arrived = []
        elif rows.rows:
            self._arrived.append(_without_features(rows))

    def recent(self) -> LabeledWindow:
        """The newest ``2 x performance.window_rows`` labeled rows (see :meth:`_remember`)."""
        if self._arrived:
            keep = self.policy.monitors.performance.window_rows * 2
            self._recent = _tail(self._recent, _concat(self._arrived), keep)
            self._arrived = []
        return self._recent

    def reference(self, champion: VersionInfo) -> pd.DataFrame:
        """The champion's training window as a seeded sample: memory, then the store, then rebuilt once."""
        if self._reference is not None and self._reference[0] == champion.version:
            return self._reference[1]
        store, model = self.cycle.store, self.policy.model
        raw = store.get_state(model, REFERENCE_KEY)
        frame = None
        if raw:
            saved = pickle.loads(raw)
            if saved["version"] == champion.version:
                frame = pd.read_parquet(io.BytesIO(saved["frame"]))
        if frame is None:
            from monitors.data_drift import sample_rows

            config = self.policy.monitors.data_drift
            frame = sample_rows(self.cycle.reference_features(champion), config.sample_cap, config.seed, 0)
            buffer = io.BytesIO()
            frame.to_parquet(buffer, index=False)
            store.put_state(model, REFERENCE_KEY, pickle.dumps({"version": champion.version,
                                                                "frame": buffer.getvalue()}))
            log.info("built the data-drift reference of %s v%s: %d rows", model, champion.version, len(frame))
        self._reference = (champion.version, frame)
        return frame

    def _rebase(self, now: datetime, champion: VersionInfo, state: LoopState) -> None:
        """A new champion: counters start from its training window; the data-drift check runs on the next rows."""
        store, model = self.cycle.store, self.policy.model
        trained = last_seq(champion)
        state.unlearned, state.label_cursor = store.labeled_count(model, now, after_seq=trained)
        if state.label_cursor is None:
            state.label_cursor = trained
        state.new_labels = store.labeled_count(model, now, after_seq=_newest(trained, state.last_retrain_seq))[0]
        self.cycle.start_detector(champion.version, trained)
        state.champion = champion.version
        state.traffic_pending = self.loop.data_drift_every_rows  # judge the new champion's reference at once
        state.labels_pending = self.policy.monitors.performance.window_rows  # and its live metric
        state.signals = {}
        state.staleness.restart()  # a new champion: its staleness starts now
        self.latest = {}

    def _performance(self, champion: VersionInfo) -> Any:
        config = self.policy.monitors.performance
        metric = config.metric_for(self.policy.task)
        reference = champion.record.holdout_metrics.get(metric) if champion.record else None
        return self.cycle.monitors.performance.evaluate(self.recent(), reference, model_version=champion.version)


def _without_features(window: LabeledWindow) -> LabeledWindow:
    """A window without its feature columns: the live metric reads labels, predictions and scores only."""
    return replace(window, features=pd.DataFrame(index=pd.RangeIndex(window.rows)), fingerprint="")


def _tail(old: LabeledWindow, new: LabeledWindow, keep: int) -> LabeledWindow:
    """The newest ``keep`` rows of ``old`` followed by ``new``."""
    def cat(a: Any, b: Any) -> Any:
        if a is None and b is None:
            return None
        joined = pd.concat([x for x in (a, b) if x is not None], ignore_index=True)
        return joined.iloc[-keep:].reset_index(drop=True)

    rows = min(keep, old.rows + new.rows)
    scores = None if old.scores is None and new.scores is None else cat(
        old.scores if old.scores is not None else pd.DataFrame(index=pd.RangeIndex(old.rows)),
        new.scores if new.scores is not None else pd.DataFrame(index=pd.RangeIndex(new.rows)))
    return replace(
        new, features=pd.DataFrame(index=pd.RangeIndex(rows)), labels=cat(old.labels, new.labels),
        predictions=cat(old.predictions, new.predictions), scores=scores,
        prediction_ids=cat(old.prediction_ids, new.prediction_ids), event_times=cat(old.event_times, new.event_times),
        label_times=cat(old.label_times, new.label_times), model_versions=cat(old.model_versions, new.model_versions),
        label_seqs=cat(old.label_seqs, new.label_seqs), fingerprint="")


def _concat(windows: list[LabeledWindow]) -> LabeledWindow:
    """Featureless windows one after the other (their own order), each column joined once."""
    if len(windows) == 1:
        return windows[0]

    def cat(name: str) -> Any:
        return pd.concat([getattr(w, name) for w in windows], ignore_index=True)

    rows = sum(w.rows for w in windows)
    scores = None
    if any(w.scores is not None for w in windows):
        scores = pd.concat([w.scores if w.scores is not None else pd.DataFrame(index=pd.RangeIndex(w.rows))
                            for w in windows], ignore_index=True)
    return replace(windows[-1], features=pd.DataFrame(index=pd.RangeIndex(rows)), labels=cat("labels"),
                   predictions=cat("predictions"), scores=scores, prediction_ids=cat("prediction_ids"),
                   event_times=cat("event_times"), label_times=cat("label_times"),
                   model_versions=cat("model_versions"), label_seqs=cat("label_seqs"), fingerprint="")


def _newest(*seqs: int | None) -> int | None:
    known = [s for s in seqs if s is not None]
    return max(known) if known else None

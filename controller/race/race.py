"""The race: every racer predicts each new row before any of those rows' labels is learned; matured labels score
the predictions and then teach the online racers; a sequential test decides when a challenger has beaten the champion.

Pure logic, no I/O (the store and the registry are :mod:`controller.race.driver`'s). One :class:`Race` per model.

Per tick, in this order (the order is what makes it leak-free):

1. :meth:`Race.score` — the rows logged since the last tick: every online racer predicts them; the predictions wait
   in ``pending`` for their labels. No label of these rows has been learned yet, so no score can use one.
2. :meth:`Race.mature` — the labels matured since the last tick, in label-seq (arrival) order: every
   ``race.batch_rows`` matured rows the frozen racers predict them (a frozen model answers the same at any time, and
   a 100-tree gradient boosting model costs as much for 20 rows as for one), every racer's prediction is scored
   (per racer, per row), and each challenger's :class:`Duel` with the champion is fed the paired score differences of
   the rows both predicted; then the online racers learn the labels.
3. :meth:`Race.verdict` — a challenger whose evidence of being better than the champion by the margin reaches
   ``K / alpha`` is the switch to make (the largest evidence if several); a frozen challenger whose evidence of being
   worse reaches the same bound leaves the race, and so does one that stays undecided for ``challenger_rows`` rows.

A racer that raises while predicting or learning is dropped with the reason (the champion is not dropped: it stops
learning and races frozen), and the tick goes on.

Scores per row: accuracy 1/0; log_loss, mae (absolute error) and rmse (squared error) as losses. A duel turns the
pair into ``x`` in [-1, 1], positive = challenger better: the accuracy difference, or the clipped loss difference
``(min(l_champion, c) - min(l_challenger, c)) / c`` with ``c`` fixed when the duel starts (twice the 99th percentile
of the champion's recent losses: from the past only, so the test stays valid). The margin is in the metric's units
(relative margins on the champion's rolling metric when the duel starts) and becomes ``delta`` in ``x`` units.
See :mod:`controller.loop.sequential` for the test and its guarantee.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from controller.loop.sequential import SequentialTest, threshold
from controller.race.config import RaceConfig
from trainers.online import RowPredictions

Kind = Literal["online", "frozen"]
Origin = Literal["policy", "champion", "retrain", "past"]
LOSS_METRICS = ("log_loss", "mae", "rmse")
_EPS = 1e-15


class Predicts(Protocol):
    """A frozen racer's model: predicts stored feature dicts."""

    def predict_records(self, records: Sequence[Mapping[str, Any]]) -> RowPredictions: ...


@dataclass
class Racer:
    """One model in the race. ``key`` names it in standings: the policy racer's name, or ``v<version>``."""

    key: str
    kind: Kind
    origin: Origin
    model: Any                                  # OnlineLearner (online) or Predicts (frozen)
    version: str | None = None                  # the registered version it is (frozen) or was last registered as
    joined_row: int = 0                         # the race's matured-row counter when it joined
    learned_through: int | None = None          # newest label seq it learned (online)
    learned: int = 0                            # labels learned since it joined
    scored: int = 0                             # matured rows it was scored on
    rolling: deque = field(default_factory=deque)
    note: str = ""                              # e.g. why the champion stopped learning

    @property
    def online(self) -> bool:
        return self.kind == "online"


@dataclass
class Duel:
    """A challenger against the champion since ``started_row``: the test that it is better by the margin and the
    test that it is worse, fed with the paired differences of the rows both predicted."""

    challenger: str
    champion: str
    started_row: int
    delta: float
    clip: float | None
    better: SequentialTest
    worse: SequentialTest
    rows: int = 0
    challenger_sum: float = 0.0
    champion_sum: float = 0.0

    def feed(self, challenger: np.ndarray, champion: np.ndarray, x: np.ndarray) -> None:
        self.better.update(x)
        self.worse.update(-x)
        self.rows += len(x)
        self.challenger_sum += float(challenger.sum())
        self.champion_sum += float(champion.sum())

    def to_dict(self) -> dict[str, Any]:
        return {"challenger": self.challenger, "champion": self.champion, "started_row": self.started_row,
                "delta": self.delta, "clip": self.clip, "better": self.better.to_dict(),
                "worse": self.worse.to_dict(), "rows": self.rows, "challenger_sum": self.challenger_sum,
                "champion_sum": self.champion_sum}

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> Duel:
        return cls(challenger=body["challenger"], champion=body["champion"], started_row=body["started_row"],
                   delta=body["delta"], clip=body["clip"], better=SequentialTest.from_dict(body["better"]),
                   worse=SequentialTest.from_dict(body["worse"]), rows=body["rows"],
                   challenger_sum=body["challenger_sum"], champion_sum=body["champion_sum"])


@dataclass(frozen=True)
class Switch:
    """The race's verdict: ``challenger`` beat ``champion`` (evidence >= threshold) on ``rows`` paired rows."""

    challenger: str
    champion: str
    evidence: float
    threshold: float
    rows: int
    challenger_metric: float | None
    champion_metric: float | None
    delta: float
    k: int
    alpha: float

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in vars(self).items()}


@dataclass
class Matured:
    """What one :meth:`Race.mature` call did."""

    rows: int = 0                               # matured labels read
    scored: int = 0                             # of them, rows the race had predicted
    learned: dict[str, int] = field(default_factory=dict)
    champion_scores: list[float] = field(default_factory=list)   # the champion's score per scored row
    outcomes: list[tuple[int, str, dict[str, float]]] = field(default_factory=list)  # (seq, id, racer -> score)


@dataclass
class Dropped:
    key: str
    reason: str


class Race:
    """One model's race. Build it, :meth:`add` racers, :meth:`crown` the champion, then tick (see module doc)."""

    def __init__(self, config: RaceConfig, *, task: str, metric: str, classes: Sequence[Any] = ()) -> None:
        self.config = config
        self.task = task
        self.metric = metric
        self.classes = list(classes)
        self.loss = metric in LOSS_METRICS
        self.racers: dict[str, Racer] = {}
        self.champion: str | None = None
        self.duels: dict[str, Duel] = {}
        # prediction id -> (its features, online racer -> prediction made before any of its labels was learned);
        # oldest first, bounded.
        self.pending: OrderedDict[str, tuple[dict[str, Any], dict[str, Any]]] = OrderedDict()
        # Matured rows waiting to be judged: (seq, id, label, features, online predictions, matured counter).
        self.unjudged: list[tuple[int, str, Any, dict[str, Any], dict[str, Any], int]] = []
        self.matured = 0         # matured rows the race had predicted, ever (the clock of joins)
        self.rows = 0            # of them, rows judged (scored and fed to the duels)
        self.dropped: list[Dropped] = []

    # ----------------------------------------------------------------------------------------------- membership

    @property
    def k(self) -> int:
        """Challengers sharing alpha: every racer but the champion, at most."""
        return self.config.max_racers - 1

    @property
    def threshold(self) -> float:
        return threshold(self.k, self.config.alpha)

    def add(self, racer: Racer) -> str | None:
        """Let ``racer`` join (it predicts from the next new rows on); returns why it cannot, or None. A full race
        makes room by retiring the frozen non-champion racer with the worst rolling metric."""
        if racer.key in self.racers:
            self._rejoin(racer.key)
            return None
        if len(self.racers) >= self.config.max_racers:
            frozen = [r for r in self.racers.values() if r.kind == "frozen" and r.key != self.champion]
            if not frozen:
                return f"the race is full ({self.config.max_racers} racers, none of them a frozen challenger)"
            worst = min(frozen, key=lambda r: self._sortable(r))
            self.drop(worst.key, f"retired to make room for {racer.key}")
        racer.joined_row = self.matured
        racer.rolling = deque(racer.rolling, maxlen=self.config.rolling_rows)
        self.racers[racer.key] = racer
        return None

    def _rejoin(self, key: str) -> None:
        """A racer already racing (a past version after a drift alarm): its duel starts again from now."""
        self.racers[key].joined_row = self.matured
        self.duels.pop(key, None)

    def crown(self, key: str) -> None:
        """``key`` serves from now on; every duel starts again against it."""
        if key not in self.racers:
            raise KeyError(f"{key!r} is not racing; racers: {sorted(self.racers)}")
        self.champion = key
        self.duels.clear()

    def drop(self, key: str, reason: str) -> None:
        if key == self.champion:
            raise ValueError(f"the champion {key!r} cannot leave the race; crown another racer first")
        if self.racers.pop(key, None) is not None:
            self.duels.pop(key, None)
            self.dropped.append(Dropped(key, reason))

    # ---------------------------------------------------------------------------------------------------- tick

    def score(self, ids: Sequence[str], records: Sequence[Mapping[str, Any]]) -> int:
        """The online racers predict the new rows (before any of their labels is learned); returns the rows kept.

        Frozen racers never learn, so their answer does not depend on when they give it: they predict the rows
        when the labels have matured, ``race.batch_rows`` rows per call (see :meth:`mature`)."""
        if not len(ids):
            return 0
        rows: list[dict[str, Any]] = [dict() for _ in ids]
        for racer in [r for r in self.racers.values() if r.online]:
            try:
                predicted = racer.model.predict_records(records)
            except Exception as exc:  # noqa: BLE001 - one bad racer must not stop the race
                self._failed(racer, "predict", exc)
                continue
            for i, value in enumerate(predicted.values):
                proba = predicted.proba[i] if predicted.proba is not None and self.metric == "log_loss" else None
                rows[i][racer.key] = (value, proba)
        for pid, record, row in zip(ids, records, rows, strict=True):
            self.pending[pid] = (record, row)
            self.pending.move_to_end(pid)
        limit = 100 * (self.config.max_rows_per_tick or 1000)
        while len(self.pending) > max(limit, 100_000):  # labels that never come: forget the oldest predictions
            self.pending.popitem(last=False)
        return len(ids)

    def mature(self, seqs: Sequence[int], ids: Sequence[str], records: Sequence[Mapping[str, Any]],
               labels: Sequence[Any]) -> Matured:
        """Collect the matured rows the race predicted; every ``race.batch_rows`` of them the frozen racers predict
        them in one call, all racers are scored and the duels fed. Then the online racers learn the labels."""
        out = Matured(rows=len(seqs))
        for seq, pid, label in zip(seqs, ids, labels, strict=True):
            found = self.pending.pop(pid, None)
            if found is not None:
                record, predictions = found
                self.unjudged.append((int(seq), pid, label, record, predictions, self.matured))
                self.matured += 1
        if len(self.unjudged) >= self.config.batch_rows:
            self.judge(out)
        for racer in list(self.racers.values()):
            if racer.online:
                self._learn(racer, seqs, records, labels, out)
        return out

    def judge(self, out: Matured | None = None) -> Matured:
        """Score the collected matured rows now (the frozen racers predict them) and feed the duels."""
        out = out if out is not None else Matured()
        rows, self.unjudged = self.unjudged, []
        if not rows:
            return out
        predictions = [dict(row[4]) for row in rows]
        records = [row[3] for row in rows]
        for racer in [r for r in self.racers.values() if not r.online]:
            # Rows that matured after it joined: none of them can be in its training window.
            mine = [i for i, row in enumerate(rows) if row[5] >= racer.joined_row]
            if not mine:
                continue
            try:
                predicted = racer.model.predict_records([records[i] for i in mine])
            except Exception as exc:  # noqa: BLE001 - one bad racer must not stop the race
                self._failed(racer, "predict", exc)
                continue
            for j, i in enumerate(mine):
                proba = predicted.proba[j] if predicted.proba is not None and self.metric == "log_loss" else None
                predictions[i][racer.key] = (predicted.values[j], proba)
        self._judge_rows([(row[0], row[1]) for row in rows], [row[2] for row in rows], predictions, out)
        return out

    def verdict(self) -> tuple[Switch | None, list[Dropped]]:
        """The switch to make (if a challenger's evidence reached the threshold) and the racers that leave."""
        if self.champion is None:
            return None, []
        bound = self.threshold
        leaving: list[Dropped] = []
        best: Duel | None = None
        for duel in self.duels.values():
            racer = self.racers.get(duel.challenger)
            if racer is None:
                continue
            if duel.better.evidence >= bound:
                if best is None or duel.better.evidence > best.better.evidence:
                    best = duel
            elif racer.kind == "frozen" and racer.origin in ("retrain", "past"):
                if duel.worse.evidence >= bound:
                    leaving.append(Dropped(racer.key, f"worse than the champion {self.champion}: evidence "
                                                      f"{duel.worse.evidence:.3g} >= {bound:.3g} on {duel.rows} rows"))
                elif duel.rows >= self.config.challenger_rows:
                    leaving.append(Dropped(racer.key, f"undecided after {duel.rows} rows (race.challenger_rows)"))
        for gone in leaving:
            self.drop(gone.key, gone.reason)
        if best is None:
            return None, leaving
        return Switch(challenger=best.challenger, champion=self.champion, evidence=best.better.evidence,
                      threshold=bound, rows=best.rows,
                      challenger_metric=best.challenger_sum / best.rows if best.rows else None,
                      champion_metric=best.champion_sum / best.rows if best.rows else None,
                      delta=best.delta, k=self.k, alpha=self.config.alpha), leaving

    # ------------------------------------------------------------------------------------------------ standings

    def standings(self) -> list[dict[str, Any]]:
        """One row per racer: its rolling metric, rows scored, and its duel with the champion."""
        bound = self.threshold
        out = []
        for racer in self.racers.values():
            duel = self.duels.get(racer.key)
            rolling = [s for s in racer.rolling if not math.isnan(s)]
            out.append({
                "racer": racer.key, "kind": racer.kind, "origin": racer.origin, "version": racer.version,
                "champion": racer.key == self.champion, "metric": self.metric,
                "rolling": float(np.mean(rolling)) if rolling else None, "rolling_rows": len(rolling),
                "scored": racer.scored, "learned": racer.learned,
                "evidence": duel.better.evidence if duel else None,
                "evidence_worse": duel.worse.evidence if duel else None,
                "duel_rows": duel.rows if duel else None, "threshold": bound, "note": racer.note})
        higher = not self.loss
        return sorted(out, key=lambda r: (not r["champion"], -(r["rolling"] or 0.0) if higher
                                          else (r["rolling"] if r["rolling"] is not None else math.inf)))

    # ------------------------------------------------------------------------------------------------ internals

    def _judge_rows(self, ids: list[tuple[int, str]], labels: list[Any], predictions: list[dict[str, Any]],
                    out: Matured) -> None:
        keys = list(self.racers)
        scores = np.full((len(ids), len(keys)), np.nan)
        # Every racer's predictions of these rows scored in one call: (row, racer) pairs stacked.
        where = [(i, j) for j, key in enumerate(keys) for i, row in enumerate(predictions) if key in row]
        if where:
            rows_, cols = (np.fromiter(side, dtype=np.int64, count=len(where)) for side in zip(*where, strict=True))
            scores[rows_, cols] = self._row_scores([labels[i] for i in rows_],
                                                   [predictions[i][keys[j]] for i, j in where])
        for j, key in enumerate(keys):
            racer = self.racers[key]
            column = scores[:, j]
            seen = column[~np.isnan(column)]
            racer.scored += len(seen)
            racer.rolling.extend(seen.tolist())
        self.rows += len(ids)
        champion = keys.index(self.champion) if self.champion in keys else None
        if champion is not None:
            out.champion_scores = [float(v) for v in scores[:, champion] if not np.isnan(v)]
            self._feed_duels(keys, scores, champion)
        out.scored = len(ids)
        out.outcomes = [(seq, pid, {key: float(scores[i, j]) for j, key in enumerate(keys)
                                    if not np.isnan(scores[i, j])}) for i, (seq, pid) in enumerate(ids)]

    def _feed_duels(self, keys: list[str], scores: np.ndarray, champion: int) -> None:
        base = scores[:, champion]
        for j, key in enumerate(keys):
            if j == champion:
                continue
            duel = self.duels.get(key) or self._start_duel(key)
            if duel is None:
                continue
            both = ~np.isnan(scores[:, j]) & ~np.isnan(base)
            if not both.any():
                continue
            mine, theirs = scores[both, j], base[both]
            if self.loss:
                c = duel.clip
                x = (np.minimum(theirs, c) - np.minimum(mine, c)) / c
            else:
                x = mine - theirs
            duel.feed(mine, theirs, np.clip(x, -1.0, 1.0))

    def _start_duel(self, key: str) -> Duel | None:
        """A duel starts once the champion has ``min_rows`` recent scores (its loss scale and a relative margin come
        from them: the past only)."""
        champion = self.racers[self.champion]
        history = np.array([s for s in champion.rolling if not math.isnan(s)])
        if len(history) < self.config.min_rows:
            return None
        reference = float(history.mean())
        required = self.config.margin.required(reference)
        clip = None
        if self.loss:
            clip = max(2.0 * float(np.quantile(history, 0.99)), _EPS)
            delta = min(required / clip, 0.5)
        else:
            delta = min(required, 0.5)
        restart = self.config.restart_every
        duel = Duel(challenger=key, champion=self.champion, started_row=self.rows, delta=delta, clip=clip,
                    better=SequentialTest(margin=delta, restart_every=restart),
                    worse=SequentialTest(margin=0.0, restart_every=restart))
        self.duels[key] = duel
        return duel

    def _row_scores(self, labels: list[Any], predictions: list[tuple[Any, Any]]) -> np.ndarray:
        from monitors.metrics import row_scores

        values = [p[0] for p in predictions]
        proba = None
        if self.metric == "log_loss":
            proba = np.vstack([p[1] if p[1] is not None else np.full(len(self.classes), np.nan)
                               for p in predictions])
        return row_scores(self.metric, labels, values, proba=proba, classes=self.classes)

    def _learn(self, racer: Racer, seqs: Sequence[int], records: Sequence[Mapping[str, Any]],
               labels: Sequence[Any], out: Matured) -> None:
        start = 0
        if racer.learned_through is not None:
            start = int(np.searchsorted(np.asarray(seqs, dtype=np.int64), racer.learned_through, side="right"))
        if start >= len(seqs):
            return
        try:
            learned = racer.model.learn_records(records[start:], labels[start:])
        except Exception as exc:  # noqa: BLE001 - one bad racer must not stop the race
            self._failed(racer, "learn", exc)
            return
        racer.learned += learned
        racer.learned_through = int(seqs[-1])
        out.learned[racer.key] = learned

    def _failed(self, racer: Racer, verb: str, exc: Exception) -> None:
        reason = f"{verb} raised {type(exc).__name__}: {exc}"
        if racer.key == self.champion:
            if verb == "learn" and racer.kind == "online":
                racer.kind = "frozen"  # keeps serving what it learned so far
                racer.note = f"stopped learning: {reason}"
            return
        self.drop(racer.key, reason)

    def _sortable(self, racer: Racer) -> float:
        rolling = [s for s in racer.rolling if not math.isnan(s)]
        if not rolling:
            return -math.inf
        value = float(np.mean(rolling))
        return value if not self.loss else -value

"""Retention: delete (optionally archive) a model's old events, never what lineage or an in-flight decision needs.

What goes is decided per *prediction id*, so a kept id never loses part of its history and a pruned one leaves no
stray rows behind:

* an id with labels goes when every label row of it has ``seq <= cut.label_seq`` and none of them is protected;
  with it go its prediction and every label row of it (row tables and segments alike);
* a prediction without any label row goes when it was received before ``cut.received_before``;
* protected: label seqs inside a registered version's training window or holdout (``first_label_seq`` ..
  ``last_label_seq``, ``holdout_first_seq`` .. ``holdout_last_seq`` in its lineage record) and everything from the
  holdout of an in-flight decision on. While a decision is training nothing of the model is pruned (its window is
  being read). The model's newest label row is kept too: it is where the next label's seq and arrival time follow.

The cut: ``max_age`` keeps labels that arrived (and unlabeled predictions received) within that age of now;
``max_rows`` keeps the newest that many label rows; with both, the stricter wins.

Work is done in short transactions (one segment, or a slice of the row tables, at a time), each holding the model's
label and seal locks, so writers wait at most for one of them; on PostgreSQL each also holds the decision table in
SHARE mode, so a decision cannot start between its check and the delete.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from controller.clock import ensure_utc
from controller.store import archive, sealed
from controller.store import segments as seg
from controller.store.db import advisory_xact_lock
from controller.store.events import EventStore
from controller.store.rows import fetch_block, from_us, labeled_rows, one_of, to_us
from controller.store.seal_prepare import segment_metadata
from controller.store.tables import (
    IN_FLIGHT_STATUSES,
    decisions,
    labels,
    predictions,
    sealed_ids,
    sealed_supersessions,
    segments,
    store_models,
)

log = logging.getLogger("driftpilot.store")

# Rows of the row tables handled per transaction.
HOT_BATCH = 20_000
# The last seq of a protected range that has no end (an in-flight decision's gate reads everything after).
OPEN_END = 2**62


@dataclass(frozen=True)
class Protected:
    """A label-seq range that must stay (inclusive), and why."""

    reason: str
    first_seq: int
    last_seq: int


@dataclass(frozen=True)
class Cut:
    label_seq: int | None  # label rows with seq <= this may go
    received_before: datetime | None  # predictions without labels received before this may go
    why: str = ""


@dataclass
class PruneReport:
    model: str
    dry_run: bool
    cut: Cut | None = None
    labeled_predictions: int = 0  # ids with labels that went (prediction and every label row)
    label_rows: int = 0
    unmatched_labels: int = 0  # label rows that went without a prediction (it was never stored)
    unlabeled_predictions: int = 0
    kept_for_lineage: int = 0  # label rows inside the cut kept because they (or their id) are protected
    first_arrival: datetime | None = None
    last_arrival: datetime | None = None
    protected: list[Protected] = field(default_factory=list)
    skipped: str | None = None
    archived: list[str] = field(default_factory=list)

    def _seen(self, arrivals: np.ndarray) -> None:
        if arrivals.size:
            first, last = from_us(int(arrivals.min())), from_us(int(arrivals.max()))
            self.first_arrival = first if self.first_arrival is None else min(self.first_arrival, first)
            self.last_arrival = last if self.last_arrival is None else max(self.last_arrival, last)

    def lines(self) -> list[str]:
        """What ``driftpilot db prune`` prints for the model."""
        verb = "would delete" if self.dry_run else "deleted"
        if self.skipped:
            return [f"{self.model}: nothing pruned: {self.skipped}"]
        if self.cut is None:
            return [f"{self.model}: nothing to prune (no retention limit reached)"]
        out = [f"{self.model}: {self.cut.why}"]
        span = (f" (labels arrived {self.first_arrival.isoformat()} .. {self.last_arrival.isoformat()})"
                if self.first_arrival and self.last_arrival else "")
        out.append(f"  {verb} {self.labeled_predictions:,} labeled predictions with {self.label_rows:,} label rows"
                   f"{span}, {self.unmatched_labels:,} labels that never met their prediction, "
                   f"{self.unlabeled_predictions:,} unlabeled predictions")
        if self.kept_for_lineage:
            out.append(f"  kept {self.kept_for_lineage:,} label rows inside the cut that lineage or a decision needs")
        for item in self.protected:
            upto = "" if item.last_seq >= OPEN_END else str(item.last_seq)
            out.append(f"  protected: label seqs {item.first_seq}..{upto} ({item.reason})")
        for path in self.archived:
            out.append(f"  archived to {path}")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model, "dry_run": self.dry_run, "skipped": self.skipped,
            "cut": None if self.cut is None else {
                "label_seq": self.cut.label_seq, "why": self.cut.why,
                "received_before": self.cut.received_before.isoformat() if self.cut.received_before else None},
            "labeled_predictions": self.labeled_predictions, "label_rows": self.label_rows,
            "unmatched_labels": self.unmatched_labels, "unlabeled_predictions": self.unlabeled_predictions,
            "kept_for_lineage": self.kept_for_lineage,
            "first_arrival": self.first_arrival.isoformat() if self.first_arrival else None,
            "last_arrival": self.last_arrival.isoformat() if self.last_arrival else None,
            "protected": [vars(p) for p in self.protected], "archived": list(self.archived),
        }


def protected_by_versions(versions: Iterable[Any], store: EventStore | None = None,
                          model: str | None = None) -> list[Protected]:
    """The label-seq ranges registered versions point at (``lineage.VersionInfo`` objects: ``.version`` and
    ``.record``). A version without a driftpilot record protects nothing (it was trained elsewhere).

    A holdout recorded only by its size (bootstrap's: every labeled row after the training window as of the maturity
    cut) is found through ``store``: ``labeled_count`` after the window's last seq, as of that cut."""
    out: list[Protected] = []
    for info in versions:
        record = getattr(info, "record", None)
        extra = dict(getattr(record, "extra", None) or {})
        for first_key, last_key, what in (("first_label_seq", "last_label_seq", "training window"),
                                          ("holdout_first_seq", "holdout_last_seq", "holdout")):
            first, last = extra.get(first_key), extra.get(last_key)
            if first is not None and last is not None:
                out.append(Protected(f"version {info.version}: {what}", int(first), int(last)))
        if (extra.get("holdout_first_seq") is None and extra.get("holdout_rows") and store is not None
                and model is not None and extra.get("last_label_seq") is not None):
            after = int(extra["last_label_seq"])
            _, newest = store.labeled_count(model, record.maturity_cut, after_seq=after)
            if newest is not None:
                out.append(Protected(f"version {info.version}: holdout", after + 1, newest))
    return out


def prune(store: EventStore, model: str, *, max_age: timedelta | None, max_rows: int | None,
          protected: Sequence[Protected], now: datetime, dry_run: bool = False,
          archive: Path | None = None) -> PruneReport:
    """Apply a retention policy to one model (see the module docstring); ``dry_run`` only counts."""
    now = ensure_utc(now)
    report = PruneReport(model=model, dry_run=dry_run, protected=list(protected))
    with store.read() as conn:
        flight = _in_flight(conn, model)
        cut = _cut(conn, model, max_age, max_rows, now)
    if flight is not None and flight["status"] == "training":
        report.skipped = (f"decision {flight['decision_id']} is training (its window is being read); prune again once "
                          "it is judged")
        return report
    if flight is not None:
        holdouts = [int(r["holdout_first_seq"]) for r in flight["evidence"].get("challengers", [])
                    if r.get("ok") and r.get("holdout_first_seq") is not None]
        if holdouts:
            report.protected.append(Protected(f"decision {flight['decision_id']} ({flight['status']}): its gate "
                                              "reads from the holdout on", min(holdouts), OPEN_END))
    if cut is None:
        return report
    report.cut = cut
    ranges = np.array([(p.first_seq, p.last_seq) for p in report.protected], dtype=np.int64).reshape(-1, 2)
    job = _Job(store, model, cut, ranges, report, dry_run, archive, now)
    if cut.label_seq is not None:
        job.segments()
        job.row_tables()
    if cut.received_before is not None:
        job.unlabeled()
    return report


def _in_flight(conn: sa.Connection, model: str) -> dict[str, Any] | None:
    row = conn.execute(sa.select(decisions.c.decision_id, decisions.c.status, decisions.c.evidence)
                       .where(decisions.c.model == model, decisions.c.status.in_(IN_FLIGHT_STATUSES))).first()
    return dict(row._mapping) if row is not None else None


def _cut(conn: sa.Connection, model: str, max_age: timedelta | None, max_rows: int | None,
         now: datetime) -> Cut | None:
    """The label seq and receipt time before which events may go (None: nothing reaches a limit)."""
    newest = _newest_label(conn, model)
    seq_cut: int | None = None
    received: datetime | None = None
    reasons = []
    if max_age is not None:
        before = now - max_age
        received = before
        reasons.append(f"older than {max_age} (before {before.isoformat()})")
        seq_cut = _last_seq_before(conn, model, before)
    if max_rows is not None and newest is not None:
        boundary = _nth_newest(conn, model, max_rows + 1)
        if boundary is not None:
            reasons.append(f"outside the newest {max_rows:,} label rows")
            seq_cut = boundary[0] if seq_cut is None else max(seq_cut, boundary[0])
            # Unlabeled predictions go when received before the oldest kept label's prediction was: a prediction
            # still waiting for its label (received after it) stays.
            oldest_kept = _received(conn, model, boundary[1])
            if oldest_kept is not None:
                received = oldest_kept if received is None else max(received, oldest_kept)
    if newest is not None and seq_cut is not None:
        seq_cut = min(seq_cut, newest - 1)  # the newest label stays: the next seq and arrival follow from it
    if seq_cut is None and received is None:
        return None
    return Cut(seq_cut, received, "prune events " + " and ".join(reasons) if reasons else "")


def _newest_label(conn: sa.Connection, model: str) -> int | None:
    hot = conn.execute(sa.select(sa.func.max(labels.c.seq)).where(labels.c.model == model)).scalar()
    cold = conn.execute(sa.select(sa.func.max(segments.c.last_seq)).where(segments.c.model == model)).scalar()
    found = [int(v) for v in (hot, cold) if v is not None]
    return max(found) if found else None


def _last_seq_before(conn: sa.Connection, model: str, before: datetime) -> int | None:
    """The largest seq of the model's labels that arrived before ``before`` (arrival never decreases along seq)."""
    hot = conn.execute(sa.select(sa.func.max(labels.c.seq)).where(labels.c.model == model,
                                                                  labels.c.arrived_at < before)).scalar()
    found = [int(hot)] if hot is not None else []
    whole = conn.execute(sa.select(sa.func.max(segments.c.last_seq)).where(
        segments.c.model == model, segments.c.last_arrival < before)).scalar()
    if whole is not None:
        found.append(int(whole))
    straddling = sealed.metas(conn, model, as_of=before - timedelta(microseconds=1))
    for meta, part, _ in sealed.parts(conn, model, [m for m in straddling if m.last_arrival >= before],
                                      ["arrived_at"]):
        seqs = part.ints("seq")[part.ints("arrived_at") < to_us(before)]
        if seqs.size:
            found.append(int(seqs.max()))
    return max(found) if found else None


def _nth_newest(conn: sa.Connection, model: str, n: int) -> tuple[int, str] | None:
    """The seq of the model's n-th newest label row (row tables and segments) and the id of the (n-1)-th (the oldest
    one kept), or None with fewer than n rows."""
    hot = conn.execute(sa.select(labels.c.seq, labels.c.prediction_id).where(labels.c.model == model)
                       .order_by(labels.c.arrived_at.desc(), labels.c.seq.desc()).limit(n)).all()
    seqs = [int(r.seq) for r in hot]
    ids = [r.prediction_id for r in hot]
    metas = sorted(sealed.metas(conn, model), key=lambda m: m.last_seq)
    for meta, part, _ in sealed.parts(conn, model, metas, ["prediction_id"], newest_first=True):
        if len(seqs) >= n and meta.last_seq < sorted(seqs)[-n]:
            break
        seqs += part.ints("seq").tolist()
        ids += part.objects("prediction_id").tolist()
    if len(seqs) < n:
        return None
    order = np.argsort(np.array(seqs))[::-1]
    return seqs[order[n - 1]], ids[order[n - 2]]


def _received(conn: sa.Connection, model: str, prediction_id: str) -> datetime | None:
    """When the model's prediction ``prediction_id`` was received (None: never stored)."""
    found = conn.execute(sa.select(predictions.c.received_at).where(
        predictions.c.model == model, predictions.c.prediction_id == prediction_id)).scalar()
    if found is not None:
        return found
    mid = sealed.model_id(conn, model)
    where = sealed.lookup(conn, mid, [prediction_id]) if mid is not None else {}
    if not where:
        return None
    return sealed.predictions_of(conn, where)[prediction_id]["received_at"]


def _protected(seqs: np.ndarray, ranges: np.ndarray) -> np.ndarray:
    mask = np.zeros(len(seqs), dtype=bool)
    for first, last in ranges:
        mask |= (seqs >= first) & (seqs <= last)
    return mask


class _Job:
    """One model's prune, transaction by transaction."""

    def __init__(self, store: EventStore, model: str, cut: Cut, ranges: np.ndarray, report: PruneReport,
                 dry_run: bool, archive: Path | None, now: datetime) -> None:
        self.store, self.model, self.cut, self.ranges = store, model, cut, ranges
        self.report, self.dry_run, self.archive, self.now = report, dry_run, archive, now
        self.label_cut = cut.label_seq if cut.label_seq is not None else -1
        self._archive_n = 0
        self._counted: set[str] = set()

    # ----------------------------------------------------------------------------------------------- transactions

    def _begin(self) -> Any:
        return self.store.read() if self.dry_run else self.store.transaction()

    def _lock(self, conn: sa.Connection) -> bool:
        """The model's label and seal locks, and no decision may start meanwhile. False: a decision started
        training since the prune began (stop; it reads windows now)."""
        if self.dry_run:
            return True
        advisory_xact_lock(conn, f"labels:{self.model}")
        sealed.seal_lock(conn, self.model)
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("LOCK TABLE decisions IN SHARE MODE")
        flight = _in_flight(conn, self.model)
        if flight is not None and flight["status"] == "training":
            self.report.skipped = (f"decision {flight['decision_id']} started training while pruning; the rest is "
                                   "pruned next time")
            return False
        return True

    def segments(self) -> None:
        with self.store.read() as conn:
            ids = [m.segment_id for m in sealed.metas(conn, self.model, through_seq=self.label_cut)]
        for segment_id in ids:
            with self._begin() as conn:
                if not self._lock(conn):
                    return
                found = conn.execute(sa.select(segments.c.segment_id).where(segments.c.segment_id == segment_id)
                                     ).scalar()
                if found is None:
                    continue  # removed by an earlier step of this prune (an id spanning segments)
                part = sealed.load(conn, segment_id)
                seqs = part.ints("seq")
                candidates = (seqs <= self.label_cut) & ~_protected(seqs, self.ranges)
                self.report.kept_for_lineage += int(((seqs <= self.label_cut) & ~candidates).sum())
                pids = list(dict.fromkeys(part.objects("prediction_id")[candidates]))
                self._prune_ids(conn, pids)

    def row_tables(self) -> None:
        after = -1
        while True:
            with self._begin() as conn:
                if not self._lock(conn):
                    return
                rows = conn.execute(
                    sa.select(labels.c.seq, labels.c.prediction_id)
                    .where(labels.c.model == self.model, labels.c.seq > after, labels.c.seq <= self.label_cut)
                    .order_by(labels.c.seq).limit(HOT_BATCH)).all()
                if not rows:
                    return
                seqs = np.array([r.seq for r in rows], dtype=np.int64)
                protected = _protected(seqs, self.ranges)
                self.report.kept_for_lineage += int(protected.sum())
                pids = list(dict.fromkeys(r.prediction_id for r, p in zip(rows, protected, strict=True) if not p))
                self._prune_ids(conn, pids)
                after = int(seqs[-1])

    def unlabeled(self) -> None:
        before = self.cut.received_before
        while True:
            with self._begin() as conn:
                if not self._lock(conn):
                    return
                labeled = sa.exists().where(labels.c.model == predictions.c.model,
                                            labels.c.prediction_id == predictions.c.prediction_id)
                query = (sa.select(predictions.c.prediction_id).where(
                    predictions.c.model == self.model, predictions.c.received_at < before, ~labeled)
                    .order_by(predictions.c.received_at))
                if self.dry_run:
                    self.report.unlabeled_predictions = int(conn.execute(
                        sa.select(sa.func.count()).select_from(query.subquery())).scalar_one())
                    return
                ids = list(conn.execute(query.limit(HOT_BATCH)).scalars())
                if not ids:
                    return
                if self.archive is not None:
                    records = conn.execute(sa.select(predictions).where(
                        predictions.c.model == self.model, one_of(conn, predictions.c.prediction_id, ids))).all()
                    self._write_archive(archive.prediction_table([dict(r._mapping) for r in records]), "unlabeled")
                conn.execute(predictions.delete().where(predictions.c.model == self.model,
                                                        one_of(conn, predictions.c.prediction_id, ids)))
                self.report.unlabeled_predictions += len(ids)
                if len(ids) < HOT_BATCH:
                    return

    # ---------------------------------------------------------------------------------------------------- ids

    def _prune_ids(self, conn: sa.Connection, candidates: list[str]) -> None:
        """Delete every row of those candidate ids that have no label row past the cut or protected (anywhere)."""
        if not candidates:
            return
        mid = sealed.model_id(conn, self.model)
        where = sealed.lookup(conn, mid, candidates) if mid is not None else {}
        hot = conn.execute(sa.select(labels.c.seq, labels.c.prediction_id, labels.c.arrived_at).where(
            labels.c.model == self.model, one_of(conn, labels.c.prediction_id, candidates))).all()
        hot_seqs = np.array([r.seq for r in hot], dtype=np.int64)
        hot_ids = np.array([r.prediction_id for r in hot], dtype=object)
        keep = set(hot_ids[(hot_seqs > self.label_cut) | _protected(hot_seqs, self.ranges)])
        # Sealed rows of the candidates, in every segment that holds one.
        segment_ids = sorted({s for w in where.values() for s in range(w.segment_id, w.last_segment_id + 1)})
        metas = [m for m in sealed.metas(conn, self.model) if m.segment_id in set(segment_ids)]
        cold: list[tuple[int, seg.Part, np.ndarray]] = []
        wanted = pa.array(candidates, pa.string())
        for meta, part, _ in sealed.parts(conn, self.model, metas, ["prediction_id"]):
            mask = np.asarray(pa.compute.is_in(part.table.column("prediction_id"), value_set=wanted))
            seqs = part.ints("seq")
            ids = part.objects("prediction_id")
            keep |= set(ids[mask & ((seqs > self.label_cut) | _protected(seqs, self.ranges))])
            cold.append((meta.segment_id, part, mask))
        gone = [pid for pid in candidates if pid not in keep and pid not in self._counted]
        if not gone:
            return
        gone_set = pa.array(gone, pa.string())
        if self.dry_run:
            # Nothing is deleted, so an id with rows in several places would be met (and counted) again.
            self._counted |= {pid for pid in gone if pid in where and (where[pid].segment_id !=
                                                                       where[pid].last_segment_id or pid in hot_ids)}
        hot_gone = np.isin(hot_ids, gone) if len(hot_ids) else np.zeros(0, dtype=bool)
        hot_rows = hot_seqs[hot_gone]
        self.report._seen(np.array([to_us(r.arrived_at) for r, g in zip(hot, hot_gone, strict=True) if g],
                                   dtype=np.int64))
        hot_predictions = set(conn.execute(sa.select(predictions.c.prediction_id).where(
            predictions.c.model == self.model, one_of(conn, predictions.c.prediction_id, gone))).scalars())
        with_prediction = hot_predictions | {pid for pid in gone if pid in where}
        self.report.labeled_predictions += len(with_prediction)
        matched = np.isin(hot_ids[hot_gone], list(with_prediction)) if hot_rows.size else np.zeros(0, dtype=bool)
        self.report.label_rows += int(matched.sum())
        self.report.unmatched_labels += int((~matched).sum())
        archived: list[pa.Table] = []
        if self.archive is not None and (hot_rows.size or cold):
            block = fetch_block(conn, labeled_rows(conn, mid, [
                labels.c.model == self.model, one_of(conn, labels.c.seq, hot_rows.tolist(), "seqs", sa.BigInteger)]),
                sealed.payload_source(conn, self.model, mid))
            if len(block):
                archived.append(archive.label_table(block))
        for segment_id, part, _ in cold:
            full = sealed.load(conn, segment_id)
            drop = np.asarray(pa.compute.is_in(full.table.column("prediction_id"), value_set=gone_set))
            if not drop.any():
                continue
            self.report.label_rows += int(drop.sum())
            self.report._seen(full.ints("arrived_at")[drop])
            if self.archive is not None:
                archived.append(archive.label_table(seg.block_rows(full.take(np.flatnonzero(drop)))))
            if not self.dry_run:
                _rewrite(conn, segment_id, full, np.flatnonzero(~drop))
        if archived and not self.dry_run:
            self._write_archive(pa.concat_tables(archived, promote_options="default"), "labeled")
        if self.dry_run:
            return
        if hot_rows.size:
            conn.execute(labels.delete().where(one_of(conn, labels.c.seq, hot_rows.tolist(), "seqs", sa.BigInteger)))
        if hot_predictions:
            conn.execute(predictions.delete().where(predictions.c.model == self.model,
                                                    one_of(conn, predictions.c.prediction_id, list(hot_predictions))))
        sealed_gone = [pid for pid in gone if pid in where]
        if sealed_gone:
            conn.execute(sealed_ids.delete().where(sealed_ids.c.model_id == mid,
                                                   one_of(conn, sealed_ids.c.prediction_id, sealed_gone)))
        pruned_seqs = [int(s) for _, part, mask in cold for s in part.ints("seq")[
            np.asarray(pa.compute.is_in(part.table.column("prediction_id"), value_set=gone_set))]]
        if pruned_seqs:
            conn.execute(sealed_supersessions.delete().where(
                sealed_supersessions.c.model == self.model,
                one_of(conn, sealed_supersessions.c.seq, pruned_seqs, "seqs", sa.BigInteger)))

    def _write_archive(self, table: pa.Table, kind: str) -> None:
        assert self.archive is not None
        folder = self.archive / self.model
        folder.mkdir(parents=True, exist_ok=True)
        self._archive_n += 1
        stamp = self.now.strftime("%Y%m%dT%H%M%SZ")
        path = folder / f"{stamp}-{kind}-{self._archive_n:05d}.parquet"
        pq.write_table(table, path, compression="zstd")
        self.report.archived.append(str(path))


def _rewrite(conn: sa.Connection, segment_id: int, part: seg.Part, keep: np.ndarray) -> None:
    """A segment without the pruned rows: re-encoded with its new metadata, or deleted when nothing stays."""
    if keep.size == 0:
        conn.execute(segments.delete().where(segments.c.segment_id == segment_id))
        return
    block = seg.block_rows(part.take(keep))
    conn.execute(segments.update().where(segments.c.segment_id == segment_id).values(
        **segment_metadata(block), data=seg.to_bytes(seg.encode(block))))


__all__ = ["Cut", "Protected", "PruneReport", "protected_by_versions", "prune", "store_models"]

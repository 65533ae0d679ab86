"""Bootstrap: train the first version of a model from a labeled file and make it champion.

The file's rows are first recorded in the event store as the labeled reference window (predictions with source
``reference`` plus their labels), then read back through ``labeled_window`` — the same accessor every later training
uses — so the first version's data window is as traceable as any other. Reference rows get deterministic ids
(``ref-<file digest>-<row>``), so re-running the same file stores nothing twice.

``holdback_rows`` keeps the newest rows of the file out of the bootstrap: they are what later traffic replays (the
demo of a stream like Elec2), and the champion's lineage records where they start (``source_rows_used``).
"""

from __future__ import annotations

import hashlib
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from controller.actions.run_params import training_params
from controller.actions.training import FIRST_SEQ, LAST_SEQ, plain, training_context
from controller.clock import Clock
from controller.config import LoadedPolicy
from controller.errors import DriftpilotError
from controller.store import EventStore, LabeledWindow, LabelRecord, PredictionRecord
from lineage import LineageRecord, ModelRegistry
from trainers import NO_PARENT, get_trainer
from trainers.metrics import evaluate

STORE_BATCH = 5_000


class BootstrapError(DriftpilotError):
    """Bootstrap cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class BootstrapResult:
    version: str
    rows_stored: int
    train_rows: int
    holdout_rows: int
    holdout_metrics: dict[str, float]
    window_fingerprint: str
    holdback_rows: int = 0

    @property
    def source_rows_used(self) -> int:
        """The file's first rows that were bootstrapped on; the rows after them were held back."""
        return self.rows_stored

    def to_dict(self) -> dict:
        return self.__dict__.copy()


def bootstrap(
    loaded: LoadedPolicy,
    features: pd.DataFrame,
    target: pd.Series,
    *,
    store: EventStore,
    registry: ModelRegistry,
    clock: Clock,
    event_times: pd.Series | None = None,
    force: bool = False,
    holdback_rows: int = 0,
    progress: Callable[[int], None] = lambda _rows: None,
) -> BootstrapResult:
    """Store the rows as the reference window, fit the policy's estimator on its older part, register, promote.

    The newest ``holdback_rows`` rows are left out entirely (not stored, not trained on): traffic to replay later.
    """
    policy = loaded.config
    name = policy.registered_model
    context = training_context(policy, str(loaded.path))
    champion = registry.champion_version(name)
    if champion is not None and not force:
        raise BootstrapError(f"model {name!r} already has a champion (version {champion}); bootstrap makes the "
                             "first version. Use --force to bootstrap a new lineage root anyway.")
    if not 0 <= holdback_rows < len(features):
        raise BootstrapError(f"cannot hold back {holdback_rows} of the file's {len(features)} rows; hold back fewer "
                             "rows (or a fraction below 1, e.g. --holdback 0.5)")
    if holdback_rows:
        keep = len(features) - holdback_rows
        features, target = features.iloc[:keep], target.iloc[:keep]
        event_times = event_times.iloc[:keep] if event_times is not None else None
    if len(features) < 10:
        raise BootstrapError(f"bootstrap needs at least 10 labeled rows, the file has {len(features)}"
                             + (f" after holding back {holdback_rows}" if holdback_rows else ""))

    stored = store_reference_rows(policy.model, features, target, store, clock, event_times, progress)
    window = store.labeled_window(policy.model, clock.now(), feature_types=policy.feature_types)
    split = round(window.rows * (1 - policy.bootstrap.holdout_fraction))
    train, holdout = window.slice(0, split), window.slice(split)

    result = get_trainer("stateless").train(train, NO_PARENT, context)
    # The monitor's positive class: these holdout metrics are the champion's reference live metric.
    metrics = evaluate(result.model, holdout.features, holdout.labels, policy.task,
                       positive_class=policy.monitors.performance.positive_class)
    decision_id = f"bootstrap-{uuid.uuid4().hex[:12]}"
    extra = {"holdout_rows": holdout.rows, "holdout_fingerprint": holdout.fingerprint,
             "source_rows_used": stored, "holdback_rows": holdback_rows}
    record = _lineage_record(loaded, train, metrics, decision_id, {**result.report.details, **extra})
    info = registry.register(
        name, result.model, record,
        params=training_params(policy.estimator, "bootstrap", seed=policy.bootstrap.seed,
                               extra={"train_rows": train.rows, **extra}),
        training_data=(train.features, train.labels),
    )
    registry.promote(name, info.version, decision_id=decision_id, reason="bootstrap: the first version")
    return BootstrapResult(version=str(info.version), rows_stored=stored, train_rows=train.rows,
                           holdout_rows=holdout.rows, holdout_metrics=metrics,
                           window_fingerprint=train.fingerprint, holdback_rows=holdback_rows)


def store_reference_rows(model: str, features: pd.DataFrame, target: pd.Series, store: EventStore, clock: Clock,
                          event_times: pd.Series | None, progress: Callable[[int], None]) -> int:
    prefix = reference_id_prefix(features, target)
    now = clock.now()
    records = features.to_dict(orient="records")
    for start in range(0, len(records), STORE_BATCH):
        stop = min(start + STORE_BATCH, len(records))
        ids = [f"{prefix}{i}" for i in range(start, stop)]
        # The id carries the file's digest, so a known id is the same row from an earlier run of the same file.
        known = store.known_prediction_ids(model, ids)
        store.add_predictions(model, [
            PredictionRecord(features=jsonable(records[i]), prediction_id=ids[i - start], source="reference",
                             event_time=(event_times.iloc[i].to_pydatetime() if event_times is not None else now))
            for i in range(start, stop) if ids[i - start] not in known
        ])
        store.add_labels(model, [LabelRecord(ids[i - start], plain(target.iloc[i])) for i in range(start, stop)])
        progress(stop - start)
    return len(records)


def reference_id_prefix(features: pd.DataFrame, target: pd.Series) -> str:
    """``ref-<digest of the rows>-``: the prediction ids of a file's reference rows are this plus the row number."""
    digest = hashlib.sha256(pd.util.hash_pandas_object(features.assign(_target=target.astype(str)),
                                                       index=True).values.tobytes()).hexdigest()[:12]
    return f"ref-{digest}-"


def _lineage_record(loaded: LoadedPolicy, train: LabeledWindow, metrics: dict[str, float], decision_id: str,
                    details: dict) -> LineageRecord:
    return LineageRecord(
        parent_version=None, strategy="bootstrap", trigger="bootstrap",
        window_start=train.start, window_end=train.end, window_rows=train.rows,
        window_fingerprint=train.fingerprint, maturity_cut=train.as_of,
        holdout_metrics=metrics, champion_metrics={}, chain_depth=0,
        policy_hash=loaded.sha256, decision_id=decision_id,
        extra={**{k: plain(v) for k, v in details.items()},
               FIRST_SEQ: int(train.label_seqs.iloc[0]), LAST_SEQ: int(train.label_seqs.iloc[-1])},
        # Arrival times say when labels matured; event times say which period of the world the rows cover.
        event_time_start=train.event_times.min().to_pydatetime() if train.rows else None,
        event_time_end=train.event_times.max().to_pydatetime() if train.rows else None,
    )


def jsonable(row: dict) -> dict:
    """NaN in a numeric column means "missing" in a file: store it as null, like a missing optional value."""
    return {k: (None if isinstance(v, float) and math.isnan(v) else plain(v)) for k, v in row.items()}

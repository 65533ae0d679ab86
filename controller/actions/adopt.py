"""Adopt: register a model trained outside driftpilot as the policy's first champion (``driftpilot adopt``).

The model comes from an MLflow URI (``models:/NAME/3``, ``runs:/<run>/<path>``, a local MLflow model folder) and is
checked against the policy before anything is written: its signature's input columns (or, without a signature, its
``feature_names_in_`` / ``n_features_in_``) must be the policy's features, its task the policy's task, its classes
within ``target.classes``, and it must score the reference rows. Then, as bootstrap does, the labeled reference file
goes into the event store (source ``reference``, ids ``ref-<file digest>-<row>``, so a re-run stores nothing twice)
and is read back through ``labeled_window``; the model is scored on it (these metrics are the champion's reference
for the performance monitor, and the rows are the data-drift reference), registered with strategy ``adopted`` (no
parent; the source URI, its run and when it was adopted in the lineage record) and promoted, which records the alias
event with the decision id ``adopt-…``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd
import sklearn.base

from controller.actions.bootstrap import BootstrapError, reference_id_prefix, store_reference_rows
from controller.actions.training import FIRST_SEQ, LAST_SEQ, plain
from controller.api.serving import predict_frame
from controller.clock import Clock
from controller.config import LoadedPolicy, PolicyConfig
from controller.store import EventStore, LabeledWindow
from lineage import ForeignModel, LineageRecord, ModelRegistry
from trainers import RiverModel
from trainers.metrics import evaluate

STRATEGY = "adopted"
#: Signature types a numeric (or boolean) feature cannot be fed to, and those a categorical (text) one cannot.
_TEXT_TYPES = ("string", "binary", "datetime")
_DECIMAL_TYPES = ("double", "float")


class AdoptError(BootstrapError):
    """The model cannot be adopted as it is; the message names the mismatch and what to do."""


class ModelMismatch(AdoptError):
    """The model does not fit the policy (features, task, classes); nothing was stored or registered."""


@dataclass(frozen=True)
class AdoptResult:
    version: str
    source: str
    flavor: str
    reference_rows: int
    reference_metrics: dict[str, float]
    window_fingerprint: str


def prepare(foreign: ForeignModel, policy: PolicyConfig, reference: pd.DataFrame, labels: pd.Series,
            source: str) -> object:
    """The model driftpilot will register (a bare River estimator gets driftpilot's DataFrame wrapper), after every
    check against the policy; :class:`ModelMismatch` names the first problem."""
    check_inputs(foreign, policy)
    model = foreign.model
    if foreign.flavor == "river" and getattr(model, "learner", None) is None:
        classes = policy.target.classes or sorted({plain(v) for v in labels}, key=str)
        model = RiverModel(model, policy.feature_types, policy.task,
                           classes=classes if policy.task == "classification" else ())
    check_task(model, foreign, policy)
    try:
        predict_frame(model, reference.head(50))
    except Exception as exc:  # noqa: BLE001 - any failure to score is the model not fitting the rows
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelMismatch(f"{foreign.uri} cannot score the rows of {source} as the policy types them: {reason}. "
                            "Check that the policy's feature types match what the model was trained on") from None
    return model


def check_inputs(foreign: ForeignModel, policy: PolicyConfig) -> None:
    """The model's input columns (signature, else feature_names_in_ / n_features_in_) are the policy's features."""
    features = list(policy.features)
    types = policy.feature_types
    names: Sequence[str] | None = None
    where = "signature"
    if foreign.inputs is not None:
        names = [n for n, _ in foreign.inputs]
    elif getattr(foreign.model, "feature_names_in_", None) is not None:
        names, where = [str(n) for n in foreign.model.feature_names_in_], "feature_names_in_"
    if names is not None:
        missing = [n for n in names if n not in types]
        unused = [f for f in features if f not in names]
        if missing or unused:
            parts = ([f"the model's {where} needs {missing}, which the policy does not declare"] if missing else []) \
                + ([f"the policy's features {unused} are not inputs of the model"] if unused else [])
            raise ModelMismatch(f"{foreign.uri} does not fit the policy: {'; '.join(parts)} (model inputs: "
                                f"{list(names)}; policy features: {features}). Make the policy's features: the "
                                "model's inputs, or adopt a model trained on the policy's features")
        if list(names) != features and where == "feature_names_in_":
            raise ModelMismatch(f"{foreign.uri} was fitted on the columns in the order {list(names)}, the policy lists "
                                f"them as {features}; list the policy's features in the model's order")
        for name, kind in foreign.inputs or ():
            feature = types[name]
            if (feature in ("numeric", "boolean") and kind in _TEXT_TYPES) or (
                    feature == "categorical" and kind in _DECIMAL_TYPES):
                raise ModelMismatch(f"{foreign.uri} does not fit the policy: its signature types {name!r} as {kind}, "
                                    f"the policy declares it {feature}; fix the feature's type in the policy")
        return
    count = getattr(foreign.model, "n_features_in_", None)
    if count is not None and int(count) != len(features):
        raise ModelMismatch(f"{foreign.uri} does not fit the policy: the model was fitted on {int(count)} features "
                            f"(no signature, no feature names), the policy declares {len(features)}: {features}")


def check_task(model: object, foreign: ForeignModel, policy: PolicyConfig) -> None:
    classes = list(getattr(model, "classes_", [])) if policy.task == "classification" else []
    classifier = (sklearn.base.is_classifier(model) if foreign.flavor == "sklearn"
                  else getattr(model, "task", policy.task) == "classification")
    if classifier != (policy.task == "classification"):
        kind = "a classifier" if classifier else "a regressor"
        raise ModelMismatch(f"{foreign.uri} is {kind}, the policy's task is {policy.task}; adopt a "
                            f"{policy.task} model or change the policy's task")
    allowed = policy.target.classes
    if allowed is not None and classes:
        unknown = [plain(c) for c in classes if plain(c) not in allowed]
        if unknown:
            raise ModelMismatch(f"{foreign.uri} predicts classes {unknown} outside the policy's target.classes "
                                f"{list(allowed)}; fix target.classes or adopt a model trained on those labels")


def adopt(loaded: LoadedPolicy, foreign: ForeignModel, features: pd.DataFrame, target: pd.Series, *,
          store: EventStore, registry: ModelRegistry, clock: Clock, reference_source: str,
          event_times: pd.Series | None = None, force: bool = False,
          progress: Callable[[int], None] = lambda _rows: None) -> AdoptResult:
    """Check ``foreign`` against the policy, store the reference rows, score, register (strategy adopted), promote."""
    policy = loaded.config
    name = policy.registered_model
    champion = registry.champion_version(name)
    if champion is not None and not force:
        raise AdoptError(f"model {name!r} already has a champion (version {champion}); adopt makes the first "
                         "version. Use --force to adopt a new lineage root anyway, or --if-missing to do nothing")
    if len(features) < 10:
        raise AdoptError(f"the reference file {reference_source} has {len(features)} rows; a reference window needs "
                         "at least 10 labeled rows (a few thousand judge drift far better)")
    model = prepare(foreign, policy, features, target, reference_source)

    _, before = store.labeled_count(policy.model, clock.now())
    stored = store_reference_rows(policy.model, features, target, store, clock, event_times, progress)
    window = _reference_window(store, policy, clock, before, reference_id_prefix(features, target), stored)
    metrics = evaluate(model, window.features, window.labels, policy.task,
                       positive_class=policy.monitors.performance.positive_class)
    decision_id = f"adopt-{uuid.uuid4().hex[:12]}"
    adopted_at = clock.now()
    extra = {
        "source_uri": foreign.uri, "source_run_id": foreign.run_id, "source_model_id": foreign.model_id,
        "source_flavors": ",".join(foreign.mlflow_flavors), "adopted_at": adopted_at.isoformat(),
        "reference_file": reference_source, "reference_rows": window.rows,
        "reference": "the reference rows the model was scored on; it was trained outside driftpilot",
        FIRST_SEQ: int(window.label_seqs.iloc[0]), LAST_SEQ: int(window.label_seqs.iloc[-1]),
    }
    record = LineageRecord(
        parent_version=None, strategy=STRATEGY, trigger="manual",
        window_start=window.start, window_end=window.end, window_rows=window.rows,
        window_fingerprint=window.fingerprint, maturity_cut=window.as_of,
        holdout_metrics=metrics, champion_metrics={}, chain_depth=0,
        policy_hash=loaded.sha256, decision_id=decision_id, extra=extra,
        event_time_start=window.event_times.min().to_pydatetime(),
        event_time_end=window.event_times.max().to_pydatetime(),
    )
    params = {"strategy": STRATEGY, "source_uri": foreign.uri, "source_flavor": foreign.flavor,
              "model_class": f"{type(foreign.model).__module__}.{type(foreign.model).__qualname__}",
              "reference_rows": window.rows}
    info = registry.register(name, model, record, params=params,
                             training_data=(window.features, window.labels))
    registry.promote(name, info.version, decision_id=decision_id, reason=f"adopted {foreign.uri}")
    return AdoptResult(version=str(info.version), source=foreign.uri, flavor=foreign.flavor,
                       reference_rows=window.rows, reference_metrics=metrics,
                       window_fingerprint=window.fingerprint)


def _reference_window(store: EventStore, policy: PolicyConfig, clock: Clock, before: int | None, prefix: str,
                      rows: int) -> LabeledWindow:
    """The reference rows just stored; on a re-run (they were stored before) the same rows found by their ids."""
    window = store.labeled_window(policy.model, clock.now(), after_seq=before, feature_types=policy.feature_types)
    if window.rows == rows and window.prediction_ids.str.startswith(prefix).all():
        return window
    window = store.labeled_window(policy.model, clock.now(), feature_types=policy.feature_types)
    positions = window.prediction_ids.index[window.prediction_ids.str.startswith(prefix)]
    if len(positions) != rows or positions[-1] - positions[0] + 1 != rows:
        raise AdoptError(f"the reference rows of this file are not one run of the event store's labeled rows "
                         f"({len(positions)} of {rows} found); adopt with a reference file not imported before")
    return window.slice(int(positions[0]), int(positions[-1]) + 1)

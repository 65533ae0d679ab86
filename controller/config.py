"""The policy file's schema: one YAML file per model, as typed, strict pydantic models.

Every section forbids unknown keys, so a typo fails at start-up; :mod:`controller.policy_loader` reads a file into
:class:`PolicyConfig` (``load_policy``) and words each error with the file, the line, the key path, the bad value and
what is accepted. The sections the packages own (trainers, monitors, the loop, the race, feature views) are composed
here.
"""

from __future__ import annotations

import re
import typing
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from controller.features.config import FeatureViewsConfig
from controller.loop.config import (
    AutoConfig,
    CostsConfig,
    Duration,
    LoopConfig,
    PoolConfig,
    ProbationConfig,
    Rule,
)
from controller.loop.gate_config import GateConfig
from controller.race.config import RaceConfig
from monitors import MonitorsConfig
from trainers.estimator_spec import EstimatorSpec
from trainers.finetune import FinetuneConfig
from trainers.incremental import IncrementalConfig
from trainers.stateless import StatelessConfig

FeatureType = Literal["numeric", "categorical", "boolean"]
Task = Literal["classification", "regression"]

MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FeatureSpec(_Strict):
    """One input feature. In YAML, ``amount: numeric`` is short for ``amount: {type: numeric}``."""

    type: FeatureType
    required: bool = Field(True, description="A missing required feature makes the item invalid.")
    allow_nan: bool = Field(False, description="numeric only: accept NaN/inf values instead of refusing them.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"type": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _nan_only_for_numeric(self) -> FeatureSpec:
        if self.allow_nan and self.type != "numeric":
            raise ValueError(f"allow_nan only applies to numeric features, not {self.type}")
        return self


class TargetSpec(_Strict):
    """The label column. ``target: is_fraud`` is short for ``target: {name: is_fraud}``."""

    name: str
    classes: list[int | str | bool] | None = Field(
        None, description="classification only: the accepted label values; labels outside are refused."
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class RetentionConfig(_Strict):
    """How long a model's events are kept (``driftpilot db prune`` applies it). A labeled prediction goes once its
    newest label is older than ``max_age`` or outside the newest ``max_rows`` label rows; an unlabeled one once it was
    received before that cut. Never pruned: rows a registered version's lineage points at (its training window and
    holdout), rows of an in-flight decision, and the model's newest label."""

    max_age: Duration | None = Field(None, description='Keep events this long, e.g. "90d" (at least "1h").')
    max_rows: int | None = Field(None, ge=1, description="Keep the newest this many label rows per model.")
    archive: str | None = Field(None, description="Folder for a Parquet file of every pruned batch (none: deleted).")

    @model_validator(mode="after")
    def _some_limit(self) -> RetentionConfig:
        if self.max_age is None and self.max_rows is None:
            raise ValueError("storage.retention needs max_age (e.g. 90d) and/or max_rows (e.g. 5000000); remove the "
                             "retention section to keep every event")
        if self.max_age is not None and self.max_age < timedelta(hours=1):
            raise ValueError(f"storage.retention.max_age must be at least 1h, got {self.max_age}; labels arrive late "
                             "and the loop reads recent windows, so a shorter retention would delete rows in use")
        return self


class StorageConfig(_Strict):
    url: str = Field(
        "sqlite:///.driftpilot/events.db",
        description="SQLAlchemy URL of the event store: sqlite:///path (relative to the working directory) or "
        "postgresql+psycopg://user@host/db.",
    )

    @field_validator("url")
    @classmethod
    def _known_backend(cls, url: str) -> str:
        if not url.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
            raise ValueError(
                f"unsupported store URL {url!r}; use sqlite:///path/events.db or "
                "postgresql+psycopg://user@host:5432/db"
            )
        return url

    retention: RetentionConfig | None = Field(
        None, description="What `driftpilot db prune` deletes; none: every event is kept.")


class MlflowConfig(_Strict):
    tracking_uri: str = Field("sqlite:///.driftpilot/mlflow.db", description="MLflow tracking URI (sqlite or http).")
    registry_uri: str | None = Field(None, description="Model registry URI; defaults to the tracking URI.")
    experiment: str | None = Field(None, description="Experiment name; defaults to driftpilot/<model>.")
    artifact_location: str | None = Field(
        ".driftpilot/mlartifacts", description="Artifact folder for a new experiment (ignored if it exists)."
    )
    registered_model: str | None = Field(None, description="Registered model name; defaults to the policy's model name.")


class ApiConfig(_Strict):
    max_batch_items: int = Field(10_000, ge=1, description="Largest batch accepted by the write endpoints (413 above).")
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1024, description="Largest request body in bytes (413 above).")
    token_env: str | None = Field(
        None,
        description="Name of an environment variable holding a bearer token; when set, write endpoints need "
        "'Authorization: Bearer <token>'.",
    )


class BootstrapConfig(_Strict):
    holdout_fraction: float = Field(
        0.2, gt=0.0, lt=0.9, description="Newest share of the bootstrap file held out (time order) for metrics.")
    seed: int = Field(0, description="Seed for estimators that take a random_state.")


class RetrainConfig(_Strict):
    """How `driftpilot retrain` and the incremental learner build a challenger."""

    holdout_fraction: float = Field(
        0.2, gt=0.0, lt=0.9,
        description="Newest share of the rows matured since the champion's window, held out to compare the "
                    "challenger with the champion on the same rows (neither trains on them).")
    min_rows: int = Field(50, ge=2, description="Fewer matured rows than this: no retrain (clear error).")
    fallback_to_stateless: bool = Field(
        True, description="When the estimator cannot be fine-tuned soundly, retrain stateless and record why.")
    stateless: StatelessConfig = StatelessConfig()
    finetune: FinetuneConfig = FinetuneConfig()
    incremental: IncrementalConfig = IncrementalConfig()


class ServingConfig(_Strict):
    reload_interval_s: float = Field(
        5.0, ge=0.05, description="How often /predict checks whether the champion alias moved.")
    require_champion: bool = Field(
        False, description="/readyz answers 503 until a champion is loaded (for replicas that serve /predict).")


class Candidate(_Strict):
    """A member of the candidate pool: a named estimator that may challenge the champion."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
                               description="Short name, recorded in each version's lineage (`candidate`).")]
    estimator: EstimatorSpec


class PolicyConfig(_Strict):
    """A model's policy file."""

    model: Annotated[str, Field(pattern=MODEL_NAME_PATTERN, description="Model name, used in URLs and the registry.")]
    task: Task
    target: TargetSpec
    features: dict[str, FeatureSpec] = Field(min_length=1)
    storage: StorageConfig = StorageConfig()
    mlflow: MlflowConfig = MlflowConfig()
    api: ApiConfig = ApiConfig()
    estimator: EstimatorSpec | None = Field(
        None, description="What to train: `class` + `params`, or a `pipeline` of steps (scikit-learn or River).")
    bootstrap: BootstrapConfig = BootstrapConfig()
    retrain: RetrainConfig = RetrainConfig()
    monitors: MonitorsConfig = Field(default_factory=MonitorsConfig,
                                     description="Data drift, concept drift and live performance monitors.")
    serving: ServingConfig = ServingConfig()
    loop: LoopConfig = Field(default_factory=LoopConfig,
                             description="How the daemon ticks this model; hygiene of automatic retrains.")
    rules: list[Rule] = Field(default_factory=list, description="Triggers -> actions; the first that fires acts. "
                                                                "None: the daemon only monitors.")
    auto: AutoConfig = Field(default_factory=AutoConfig, description="Thresholds of strategy auto.")
    gate: GateConfig = Field(default_factory=GateConfig,
                             description="Promotion gate: champion vs challenger on the same matured rows.")
    probation: ProbationConfig = Field(default_factory=ProbationConfig,
                                       description="Automatic rollback of a new champion that does worse.")
    candidates: list[Candidate] = Field(default_factory=list,
                                        description="More estimators that compete as challengers (the `estimator` "
                                                    "is the pool member named default).")
    pool: PoolConfig = Field(default_factory=PoolConfig, description="Cost bound of the candidate pool.")
    costs: CostsConfig | None = Field(
        None, description="A retrain's and an error's cost: the `cost` trigger retrains when staleness cost more "
                          "than a retrain; backtests report the total cost.")
    race: RaceConfig | None = Field(
        None, description="Models racing the champion on natural labels, and the sequential test that switches "
                          "between them (controller/race). None: the gate judges each challenger once on its "
                          "holdout and probation watches a new champion.")
    feature_views: FeatureViewsConfig = Field(
        default_factory=FeatureViewsConfig,
        description="Batch and near-real-time features /predict looks up by entity key (see controller/features).")

    @field_validator("features")
    @classmethod
    def _feature_names(cls, features: dict[str, FeatureSpec]) -> dict[str, FeatureSpec]:
        bad = [name for name in features if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.-]*", name)]
        if bad:
            raise ValueError(f"feature names must be identifiers (letters, digits, _ . -): {bad}")
        return features

    @model_validator(mode="after")
    def _monitors_fit_the_model(self) -> PolicyConfig:
        from monitors import (
            build_monitors,  # builds nothing heavy; checks losses, metrics and per-feature tests
        )

        build_monitors(self.monitors, task=self.task, feature_types=self.feature_types,
                       classes=self.target.classes)
        return self

    @model_validator(mode="after")
    def _gate_judges_the_monitored_metric(self) -> PolicyConfig:
        """An unset ``gate.metric`` / ``gate.positive_class`` is the performance monitor's: the gate promotes on the
        metric the monitor then watches (a retrain triggered by an f1 drop is judged on f1), and a version's holdout
        metric, the monitor's reference, is computed with the same positive class."""
        performance, gate = self.monitors.performance, self.gate
        inherited = {name: getattr(performance, name) for name in ("metric", "positive_class")
                     if getattr(gate, name) is None and getattr(performance, name) is not None}
        if inherited:
            # Frozen model, and an after-validator must return self: replace the section in place, once, here.
            object.__setattr__(self, "gate", gate.model_copy(update=inherited))
        return self

    @model_validator(mode="after")
    def _feature_views_fit(self) -> PolicyConfig:
        self.feature_views.check_against(self.feature_types)
        return self

    @model_validator(mode="after")
    def _target_is_not_a_feature(self) -> PolicyConfig:
        if self.target.name in self.features:
            raise ValueError(f"target {self.target.name!r} is also listed as a feature; remove it from features")
        if self.task == "regression" and self.target.classes is not None:
            raise ValueError("target.classes only applies to task: classification")
        return self

    @model_validator(mode="after")
    def _rules_fit_the_pool(self) -> PolicyConfig:
        names = [c.name for c in self.candidates]
        duplicates = sorted({n for n in names if names.count(n) > 1} | ({"default"} & set(names)))
        if duplicates:
            raise ValueError(f"candidate names must be unique and not 'default' (the policy's estimator): "
                             f"{duplicates}")
        rule_names = [r.name for r in self.rules if r.name]
        repeated = sorted({n for n in rule_names if rule_names.count(n) > 1})
        if repeated:
            raise ValueError(f"rule names must be unique: {repeated}")
        pool = self.pool_members()
        for i, rule in enumerate(self.rules):
            wanted = rule.do.candidates
            if wanted != "all":
                unknown = [n for n in wanted if n not in pool]
                if unknown:
                    raise ValueError(f"rules[{i}].do.candidates: unknown candidate(s) {unknown}; the pool has "
                                     f"{list(pool) or ['(none: add an estimator)']}")
            if rule.do.strategy != "incremental":
                continue
            river = [n for n, c in pool.items() if c.estimator.family == "river"]
            if not river:
                raise ValueError(f"rules[{i}] uses strategy incremental, which continues a River model, but no "
                                 "estimator of the pool is a river.* model; use stateless/finetune/auto, or add a "
                                 "River estimator")
        if self.costs is None and any(rule.when.key == "cost" for rule in self.rules):
            raise ValueError("a rule `when: {cost: pays}` weighs staleness against a retrain's cost: add a `costs:` "
                             "section, e.g. costs: {retrain: 200, error: 1} (a retrain costs as much as 200 errors)")
        if self.rules and not pool:
            raise ValueError("rules need something to train: add an `estimator:` section")
        self.gate.metric_for(self.task)  # a metric that does not fit the task fails at load, not at the first gate
        return self

    @model_validator(mode="after")
    def _racers_learn_online(self) -> PolicyConfig:
        if self.race is None:
            return self
        self.race.metric_for(self.task, self.gate.metric)
        for i, racer in enumerate(self.race.racers):
            if re.fullmatch(r"v\d+", racer.name):
                raise ValueError(f"race.racers[{i}].name {racer.name!r} looks like a version name (v<number> names "
                                 "registered versions in the race); pick another name")
            steps = racer.estimator.instantiate()
            final = steps[-1]
            if racer.estimator.family == "river":
                continue
            if not hasattr(final, "partial_fit"):
                raise ValueError(f"race.racers[{i}] ({racer.name}): {type(final).__name__} has no partial_fit, so it "
                                 "cannot learn every label; racers are River models or scikit-learn estimators "
                                 "with partial_fit (SGD*, PassiveAggressive*, Perceptron, *NB, MLP). A batch model "
                                 "races as a challenger from a retrain instead")
        return self

    def pool_members(self) -> dict[str, Candidate]:
        """The candidate pool by name: the policy's ``estimator`` as ``default``, then ``candidates`` in order."""
        pool = {"default": Candidate(name="default", estimator=self.estimator)} if self.estimator else {}
        pool.update({c.name: c for c in self.candidates})
        return pool

    def rule_name(self, index: int) -> str:
        rule = self.rules[index]
        return rule.name or f"{rule.trigger}-{index + 1}"

    @property
    def feature_types(self) -> dict[str, str]:
        return {name: spec.type for name, spec in self.features.items()}

    @property
    def registered_model(self) -> str:
        return self.mlflow.registered_model or self.model

    @property
    def experiment(self) -> str:
        return self.mlflow.experiment or f"driftpilot/{self.model}"


class LoadedPolicy(typing.NamedTuple):
    """A validated policy plus where it came from (the hash goes into every lineage record)."""

    config: PolicyConfig
    path: Path
    sha256: str


def policy_json_schema() -> dict:
    """The JSON Schema of a policy file, for editor completion (``driftpilot config schema``)."""
    return PolicyConfig.model_json_schema()

"""The policy file: one YAML file per model, loaded into typed, strict pydantic models.

Every section forbids unknown keys, so a typo fails at start-up with the file, the line, the key path, the bad value and
what is accepted (see :func:`load_policy`). ``${VAR}`` and ``${VAR:-default}`` in string values are replaced from the
environment after parsing, so secrets and URLs stay out of the file.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from controller.errors import ConfigError
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


# --------------------------------------------------------------------------------------------------------------------
# Loading with file:line error reports


_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_policy(path: str | Path, environ: Mapping[str, str] | None = None) -> LoadedPolicy:
    """Read, substitute and validate one policy file; raise :class:`ConfigError` listing every problem."""
    path = Path(path)
    environ = os.environ if environ is None else environ
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), [f"{path}: cannot read the policy file: {exc.strerror}"]) from None
    text = raw.decode("utf-8", errors="replace")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(str(path), [f"{path}{line}: YAML syntax error: {exc.problem}"]) from None
    if root is None or not isinstance(root, yaml.MappingNode):
        raise ConfigError(str(path), [f"{path}:1: the policy file must be a mapping (key: value), got {_kind(root)}"])
    data = yaml.SafeLoader(text).get_single_data()
    lines = _line_index(root)

    env_problems: dict[tuple, str] = {}
    data = _substitute_env(data, (), environ, env_problems, path, lines)
    try:
        config = PolicyConfig.model_validate(data)
    except ValidationError as exc:
        # An unset variable also fails its field's own check; report it once, as the variable problem.
        problems = list(env_problems.values()) + [
            _describe(err, path, lines) for err in exc.errors() if tuple(err["loc"]) not in env_problems
        ]
        raise ConfigError(str(path), sorted(problems, key=_line_number)) from None
    if env_problems:
        raise ConfigError(str(path), list(env_problems.values()))
    return LoadedPolicy(config=config, path=path, sha256=hashlib.sha256(raw).hexdigest())


def _line_number(problem: str) -> int:
    match = re.search(r":(\d+): ", problem)
    return int(match.group(1)) if match else 0


def policy_json_schema() -> dict:
    """The JSON Schema of a policy file, for editor completion (``driftpilot config schema``)."""
    return PolicyConfig.model_json_schema()


def _kind(node: yaml.Node | None) -> str:
    return {None: "an empty file", yaml.ScalarNode: "a scalar", yaml.SequenceNode: "a list"}.get(
        type(node) if node is not None else None, "something else"
    )


def _line_index(root: yaml.Node) -> dict[tuple, int]:
    """Map each key path, e.g. ``("features", "amount", "type")``, to its 1-based line in the file."""
    index: dict[tuple, int] = {}

    def walk(node: yaml.Node, path: tuple) -> None:
        index[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = key_node.value
                walk(value_node, path + (key,))
                # A key's own line beats the line its (block) value starts on.
                index[path + (key,)] = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, path + (i,))

    walk(root, ())
    return index


def _line_of(lines: dict[tuple, int], loc: tuple) -> int:
    """The line of the deepest known prefix of ``loc`` (a missing key is reported at its parent)."""
    loc = tuple(str(p) if not isinstance(p, int) else p for p in loc)
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in lines:
            return lines[loc[:cut]]
    return 1


def _substitute_env(value: Any, loc: tuple, environ: Mapping[str, str], problems: dict[tuple, str], path: Path,
                    lines: dict[tuple, int]) -> Any:
    if isinstance(value, dict):
        return {k: _substitute_env(v, loc + (k,), environ, problems, path, lines) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_env(v, loc + (i,), environ, problems, path, lines) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        problems[loc] = (
            f"{path}:{_line_of(lines, loc)}: {_dotted(loc)}: environment variable {name} is not set; "
            f"export it, or give a default with ${{{name}:-value}}"
        )
        return match.group(0)

    return _ENV_PATTERN.sub(replace, value)


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _describe(err: Mapping[str, Any], path: Path, lines: dict[tuple, int]) -> str:
    """One teaching line per pydantic error: file:line: key.path: problem (got value); accepted."""
    loc = tuple(err["loc"])
    where = f"{path}:{_line_of(lines, loc)}: {_dotted(loc)}"
    kind = err["type"]
    if kind == "extra_forbidden":
        key = loc[-1] if loc else "?"
        valid = _valid_keys(loc[:-1])
        close = difflib.get_close_matches(str(key), valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"{where}: unknown key {key!r}; valid keys here: {', '.join(valid)}.{hint}"
    if kind == "missing":
        return f"{where}: required key is missing"
    message = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    if isinstance(got, float) and math.isnan(got):
        got_text = "NaN"
    else:
        got_text = repr(got)
    if isinstance(got, (dict, list)):
        return f"{where}: {message}"
    return f"{where}: {message} (got {got_text})"


def _valid_keys(loc: tuple) -> list[str]:
    """Field names accepted at ``loc`` (walking the PolicyConfig annotations); empty if unknown."""
    annotation: Any = PolicyConfig
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return []
            annotation = field.annotation
        elif typing.get_origin(annotation) in (dict, Mapping):
            annotation = typing.get_args(annotation)[1]
        elif typing.get_origin(annotation) is list:
            annotation = typing.get_args(annotation)[0]
        else:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    """Strip Optional/Annotated so the walk reaches the model class."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation

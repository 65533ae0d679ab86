"""The policy file's `estimator:` section: which estimator to build, validated at load time.

```yaml
estimator:                       # a single class
  class: sklearn.linear_model.SGDClassifier
  params: {loss: log_loss, random_state: 0}
estimator:                       # a pipeline (scikit-learn: make_pipeline; River: a | b | c)
  pipeline:
    - class: river.preprocessing.StandardScaler
    - class: river.linear_model.LogisticRegression
      params: {l2: 0.0, optimizer: {class: river.optim.SGD, params: {lr: 0.05}}}
  allow_packages: [lightgbm]     # top-level packages allowed besides sklearn and river
```
A parameter value written as `{class: ..., params: ...}` is itself built (same allow-list).
`build()` puts schema-derived preprocessing in front of the steps (see `sklearn_adapter` and
`river_adapter` for what is frozen after bootstrap and what keeps learning) and fills
`random_state` (scikit-learn) or `seed` (River) from the training seed unless set here.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from trainers import river_adapter, sklearn_adapter
from trainers.errors import EstimatorSpecError
from trainers.schema import check_feature_types, check_task

BUILTIN_PACKAGES: tuple[str, ...] = ("sklearn", "river")
SEED_PARAMS: tuple[str, ...] = ("random_state", "seed")


class StepSpec(BaseModel):
    """One class with its constructor parameters."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    class_path: str = Field(alias="class", min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class EstimatorSpec(BaseModel):
    """Either `class` (+ `params`) or `pipeline`; validated (importable, allowed, params) at load."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    class_path: str | None = Field(default=None, alias="class")
    params: dict[str, Any] = Field(default_factory=dict)
    pipeline: tuple[StepSpec, ...] = ()
    allow_packages: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _validate(self) -> EstimatorSpec:
        if (self.class_path is None) == (not self.pipeline):
            raise EstimatorSpecError(
                "the estimator section needs exactly one of `class` (one estimator) or "
                "`pipeline` (a list of steps, each with `class`). Got "
                + ("both." if self.class_path else "neither.")
            )
        if self.pipeline and self.params:
            raise EstimatorSpecError(
                "`params` sits next to `pipeline`; put each step's params under that step "
                "(pipeline: [{class: ..., params: {...}}])."
            )
        self.instantiate()  # imports, allow-list, parameter names and values, family, shape
        return self

    @property
    def steps(self) -> tuple[StepSpec, ...]:
        if self.class_path is not None:
            return (StepSpec(class_path=self.class_path, params=self.params),)
        return self.pipeline

    @property
    def allowed_packages(self) -> tuple[str, ...]:
        return BUILTIN_PACKAGES + tuple(p for p in self.allow_packages if p not in BUILTIN_PACKAGES)

    @property
    def family(self) -> str:
        """`river` or `sklearn` (scikit-learn compatible, e.g. lightgbm)."""
        return _family(resolve_class(self.steps[0].class_path, self.allowed_packages, "class"))

    def describe(self) -> str:
        return " | ".join(step.class_path for step in self.steps)

    def instantiate(self, seed: int | None = None) -> list[Any]:
        """The bare step objects (no preprocessing), checked to form a valid pipeline."""
        allowed = self.allowed_packages
        many = len(self.steps) > 1
        objects = [
            _instantiate(step, allowed, f"pipeline[{i}]" if many else "class", seed)
            for i, step in enumerate(self.steps)
        ]
        families = [_family(type(obj)) for obj in objects]
        if len(set(families)) > 1:
            listing = ", ".join(f"{s.class_path} ({f})" for s, f in zip(self.steps, families))
            raise EstimatorSpecError(
                f"a pipeline must not mix scikit-learn and River steps: {listing}. River "
                "learners take one dict at a time and scikit-learn estimators take arrays, so "
                "use only river.* steps or only scikit-learn(-compatible) steps."
            )
        adapter = river_adapter if families[0] == "river" else sklearn_adapter
        for i, (step, obj) in enumerate(zip(self.steps[:-1], objects[:-1])):
            if not adapter.is_transformer(obj):
                raise EstimatorSpecError(
                    f"pipeline[{i}] {step.class_path} is not a transformer; only the last "
                    "pipeline step may be a predictor. Move it last or remove it."
                )
        if not adapter.is_predictor(objects[-1]):
            raise EstimatorSpecError(
                f"the last step {self.steps[-1].class_path} does not predict (no "
                f"{'predict_one' if families[0] == 'river' else 'predict'}); the last step "
                "must be a classifier or regressor."
            )
        return objects

    def build(
        self,
        feature_types: Mapping[str, str],
        task: str,
        *,
        seed: int | None = None,
        classes: Sequence[Any] = (),
    ) -> Any:
        """An unfitted model that accepts the policy DataFrame (preprocessing included).

        scikit-learn -> `Pipeline([("features", ColumnTransformer), *steps])`;
        River -> `RiverModel` (`classes` seeds the class list a River classifier predicts over).
        """
        feature_types = check_feature_types(feature_types)
        check_task(task)
        objects = self.instantiate(seed)
        adapter = river_adapter if _family(type(objects[0])) == "river" else sklearn_adapter
        if not adapter.matches_task(objects[-1], task):
            raise EstimatorSpecError(
                f"{self.steps[-1].class_path} is not a {task} estimator, but the policy's task "
                f"is {task!r}. Pick a {'classifier' if task == 'classification' else 'regressor'}"
                " or change the task."
            )
        if adapter is river_adapter:
            return river_adapter.assemble(objects, feature_types, task, classes)
        return sklearn_adapter.assemble(objects, feature_types)


def build(
    spec: EstimatorSpec, feature_types: Mapping[str, str], task: str, *, seed: int | None = None
) -> Any:
    """Function form of `EstimatorSpec.build`."""
    return spec.build(feature_types, task, seed=seed)


# --- resolution ------------------------------------------------------------------------


def _family(cls: type) -> str:
    return "river" if river_adapter.is_river_class(cls) else "sklearn"


def resolve_class(path: str, allowed: Sequence[str], where: str) -> type:
    """Import `pkg.module.Class` after checking its package is allowed; teach on failure."""
    if path.count(".") < 1:
        raise EstimatorSpecError(
            f"{where}: {path!r} is not a full class path; write the module too, e.g. "
            "sklearn.linear_model.SGDClassifier or river.linear_model.LogisticRegression."
        )
    package = path.split(".")[0]
    if package not in allowed:
        raise EstimatorSpecError(
            f"{where}: package {package!r} is not allowed (allowed: {list(allowed)}). If you "
            f"trust it, add it to the estimator section: `allow_packages: [{package}]`."
        )
    module_path, name = path.rsplit(".", 1)
    module = _import_module(module_path, where)
    cls = getattr(module, name, None)
    if cls is None or name.startswith("_"):
        candidates = _public_estimators(module)
        close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6) or [
            c for c in candidates if c.lower() == name.lower()
        ]
        suggestion = (
            f"Did you mean {', '.join(f'{module_path}.{c}' for c in close)}?"
            if close
            else f"Public estimators in {module_path}: {', '.join(candidates[:40]) or 'none'}."
        )
        raise EstimatorSpecError(f"{where}: {module_path} has no class {name!r}. {suggestion}")
    if not inspect.isclass(cls):
        raise EstimatorSpecError(
            f"{where}: {path} is a {type(cls).__name__}, not a class; name an estimator class."
        )
    return cls


def _import_module(module_path: str, where: str) -> ModuleType:
    try:
        return importlib.import_module(module_path)
    except ModuleNotFoundError as err:
        missing = err.name or module_path
        if "." not in missing or missing.split(".")[0] != module_path.split(".")[0]:
            raise EstimatorSpecError(
                f"{where}: cannot import {module_path!r} because {missing!r} is not installed. "
                f"Install it into the driftpilot environment (pip install {missing.split('.')[0]})."
            ) from err
        parent_path, child = missing.rsplit(".", 1)
        parent = importlib.import_module(parent_path)
        modules = [m.name for m in pkgutil.iter_modules(getattr(parent, "__path__", []))
                   if not m.name.startswith("_")]
        close = difflib.get_close_matches(child, modules, n=3, cutoff=0.6)
        hint = (f"Did you mean {', '.join(f'{parent_path}.{c}' for c in close)}?" if close
                else f"Modules in {parent_path}: {', '.join(sorted(modules))}.")
        raise EstimatorSpecError(f"{where}: there is no module {missing!r}. {hint}") from err


def _public_estimators(module: ModuleType) -> list[str]:
    names = getattr(module, "__all__", None) or dir(module)
    found = []
    for name in names:
        obj = getattr(module, name, None)
        if name.startswith("_") or not inspect.isclass(obj):
            continue
        if any(hasattr(obj, verb) for verb in ("fit", "learn_one", "transform_one", "transform")):
            found.append(name)
    return sorted(found)


def _param_names(cls: type) -> tuple[list[str], bool]:
    """Constructor parameter names, and whether it also takes **kwargs."""
    signature = inspect.signature(cls.__init__)
    names, open_ended = [], False
    for param in list(signature.parameters.values())[1:]:
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            open_ended = True
        elif param.kind is not inspect.Parameter.VAR_POSITIONAL:
            names.append(param.name)
    return names, open_ended


def _instantiate(step: StepSpec, allowed: Sequence[str], where: str, seed: int | None) -> Any:
    cls = resolve_class(step.class_path, allowed, where)
    valid, open_ended = _param_names(cls)
    unknown = [name for name in step.params if name not in valid]
    if unknown and not open_ended:
        close = {u: difflib.get_close_matches(u, valid, n=1) for u in unknown}
        did_you_mean = "; ".join(f"{u!r} -> did you mean {c[0]!r}?" for u, c in close.items() if c)
        raise EstimatorSpecError(
            f"{where}: {cls.__name__} has no parameter(s) {unknown}. Valid parameters: "
            f"{', '.join(valid)}." + (f" {did_you_mean}" if did_you_mean else "")
        )
    kwargs = {
        name: _param_value(value, allowed, f"{where}.params.{name}", seed)
        for name, value in step.params.items()
    }
    if seed is not None:
        # The training seed fills the class's own seed parameter unless the policy pinned it.
        for name in SEED_PARAMS:
            if name in valid and name not in kwargs:
                kwargs[name] = seed
                break
    try:
        obj = cls(**kwargs)
    except Exception as err:  # constructors raise anything; the message is what matters
        raise EstimatorSpecError(
            f"{where}: {step.class_path}(**{step.params}) failed: {err}. Check the values "
            "against the class documentation."
        ) from err
    validate = getattr(obj, "_validate_params", None)
    if callable(validate):
        # scikit-learn checks its _parameter_constraints only inside fit; do it at load.
        try:
            validate()
        except (ValueError, TypeError) as err:
            raise EstimatorSpecError(f"{where}: {err}") from err
    return obj


def _param_value(value: Any, allowed: Sequence[str], where: str, seed: int | None) -> Any:
    if isinstance(value, Mapping) and "class" in value and set(value) <= {"class", "params"}:
        return _instantiate(StepSpec.model_validate(value), allowed, where, seed)
    if isinstance(value, list):
        return [_param_value(v, allowed, f"{where}[{i}]", seed) for i, v in enumerate(value)]
    return value

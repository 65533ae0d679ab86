"""How each kind of model is saved to and loaded from MLflow.

* scikit-learn (any estimator or Pipeline, trees, MLPs and custom transformers included): ``mlflow.sklearn``
  with cloudpickle, because MLflow's default skops format refuses tree and MLP internals and custom classes.
* River: a pyfunc "model from code" (:mod:`lineage.river_pyfunc_model`) around the cloudpickled estimator;
  loading gives back the live River object, so it can keep learning. A wrapper that holds a River estimator in
  ``.learner`` and predicts DataFrames (such as the trainers' ``RiverModel``) is saved the same way, whole.

Every log passes pinned ``pip_requirements`` built from the installed versions: without them MLflow spends
3-4 s per log inferring them.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Mapping
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import cloudpickle
import mlflow.pyfunc
import mlflow.sklearn
import river.base
import sklearn.base
from mlflow.models.model import ModelInfo

from lineage.errors import LineageError

#: Name of the model inside its run / LoggedModel.
MODEL_NAME = "model"
_RIVER_CODE = Path(__file__).with_name("river_pyfunc_model.py")


class Flavor(Protocol):
    """Saves one family of models to MLflow and loads it back as the native object."""

    name: str

    def accepts(self, model: object) -> bool: ...

    def log(self, model: Any, *, input_example: Any, tags: Mapping[str, str]) -> ModelInfo:
        """Log ``model`` into the active MLflow run."""
        ...

    def load(self, model_uri: str) -> Any: ...


class SklearnFlavor:
    name = "sklearn"

    def accepts(self, model: object) -> bool:
        return isinstance(model, sklearn.base.BaseEstimator)

    def log(self, model: Any, *, input_example: Any, tags: Mapping[str, str]) -> ModelInfo:
        return mlflow.sklearn.log_model(
            model,
            name=MODEL_NAME,
            serialization_format="cloudpickle",
            input_example=input_example,
            pip_requirements=list(
                pinned_requirements(
                    "mlflow", "scikit-learn", "cloudpickle", "numpy", "scipy", "pandas"
                )
            ),
            tags=dict(tags),
        )

    def load(self, model_uri: str) -> Any:
        with download_dir() as tmp:
            return mlflow.sklearn.load_model(model_uri, dst_path=tmp)


class RiverFlavor:
    name = "river"

    def accepts(self, model: object) -> bool:
        return isinstance(model, river.base.Estimator) or isinstance(
            getattr(model, "learner", None), river.base.Estimator
        )

    def log(self, model: Any, *, input_example: Any, tags: Mapping[str, str]) -> ModelInfo:
        with tempfile.TemporaryDirectory(prefix="driftpilot-river-") as tmp:
            path = Path(tmp) / "river_model.pkl"
            # cloudpickle rather than pickle: River pipelines may hold lambdas (FuncTransformer).
            path.write_bytes(cloudpickle.dumps(model))
            return mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=str(_RIVER_CODE),
                artifacts={"river_model": str(path)},
                input_example=input_example,
                pip_requirements=list(
                    pinned_requirements("mlflow", "river", "cloudpickle", "numpy", "pandas")
                ),
                tags=dict(tags),
            )

    def load(self, model_uri: str) -> Any:
        with download_dir() as tmp:
            return mlflow.pyfunc.load_model(model_uri, dst_path=tmp).unwrap_python_model().model


# River first: a River estimator is never a scikit-learn one, and the order is the documented preference.
FLAVORS: dict[str, Flavor] = {"river": RiverFlavor(), "sklearn": SklearnFlavor()}


def flavor_for(model: object) -> Flavor:
    """The flavor that can save ``model``, or a :class:`LineageError` naming what is accepted."""
    for flavor in FLAVORS.values():
        if flavor.accepts(model):
            return flavor
    raise LineageError(
        f"cannot register a {type(model).__module__}.{type(model).__qualname__}: driftpilot registers "
        "scikit-learn estimators and Pipelines (subclasses of sklearn.base.BaseEstimator) and River "
        "estimators (river.base.Estimator); wrap other models in a scikit-learn estimator class"
    )


def flavor_named(name: str) -> Flavor:
    try:
        return FLAVORS[name]
    except KeyError:
        raise LineageError(
            f"unknown model flavor {name!r} in the version's tags; this driftpilot loads: {', '.join(FLAVORS)}"
        ) from None


def download_dir() -> tempfile.TemporaryDirectory:
    """A temporary folder to load a model through (``dst_path``), deleted when the ``with`` block ends.

    Without dst_path MLflow downloads remote artifacts into a temp dir it never deletes; a daemon
    reloading the champion after each promotion would fill the disk. The loaded object lives in memory.
    """
    return tempfile.TemporaryDirectory(prefix="driftpilot-load-")


@cache
def pinned_requirements(*distributions: str) -> tuple[str, ...]:
    """``name==installed version`` for each distribution (missing ones are left out)."""
    pins: list[str] = []
    for dist in distributions:
        try:
            pins.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return tuple(pins)


class _DropCloudpickleNotice(logging.Filter):
    """cloudpickle is chosen on purpose (see module docstring); MLflow's notice would repeat on every log."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "pickle or cloudpickle format" not in record.getMessage()


logging.getLogger("mlflow.sklearn").addFilter(_DropCloudpickleNotice())

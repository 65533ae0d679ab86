"""Models logged outside driftpilot (``driftpilot adopt``): load one from an MLflow URI and say what it expects.

Accepted: a scikit-learn model (MLflow flavor ``sklearn``, as ``mlflow.sklearn.log_model`` writes it), and a River
model logged as a pyfunc whose python model keeps the River estimator in ``.model`` (driftpilot's own layout, see
:mod:`lineage.river_pyfunc_model`, and the usual hand-written one). The URI is anything MLflow resolves:
``models:/NAME/3``, ``models:/NAME@alias``, ``runs:/<run id>/<path>``, or a local MLflow model folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow.models
import mlflow.pyfunc
import mlflow.sklearn

from lineage.errors import LineageError
from lineage.flavors import RiverFlavor, download_dir


@dataclass(frozen=True)
class ForeignModel:
    """A model loaded from outside driftpilot, with what its MLflow metadata says about its input."""

    model: Any
    #: driftpilot's flavor for it: "sklearn" or "river".
    flavor: str
    uri: str
    #: The MLflow signature's input columns as (name, MLflow type name), or None without a (column) signature.
    inputs: tuple[tuple[str, str], ...] | None
    #: MLflow's flavors of the logged model (``python_function``, ``sklearn``...).
    mlflow_flavors: tuple[str, ...]
    run_id: str | None = None
    model_id: str | None = None


def model_uri(text: str) -> str:
    """The URI MLflow should load: a local folder becomes its absolute path (MLflow reads it as is)."""
    if "://" in text or text.startswith(("models:/", "runs:/")):
        return text
    return str(Path(text).expanduser().resolve())


def load_foreign(uri: str) -> ForeignModel:
    """Load ``uri`` with the process's current MLflow settings (call inside a gateway scope)."""
    uri = model_uri(uri)
    info = mlflow.models.get_model_info(uri)
    flavors = tuple(info.flavors or {})
    inputs = None
    signature = info.signature
    if signature is not None and signature.inputs is not None and signature.inputs.has_input_names():
        inputs = tuple((str(c.name), _type_name(c)) for c in signature.inputs.inputs)
    ids = {"run_id": info.run_id or None, "model_id": getattr(info, "model_id", None) or None}
    with download_dir() as tmp:
        if "sklearn" in flavors:
            model = mlflow.sklearn.load_model(uri, dst_path=tmp)
            return ForeignModel(model, "sklearn", uri, inputs, flavors, **ids)
        if "python_function" in flavors:
            try:
                wrapped = mlflow.pyfunc.load_model(uri, dst_path=tmp).unwrap_python_model()
            except Exception:  # noqa: BLE001 - not a python model (e.g. an ONNX pyfunc): said below
                wrapped = None
            inner = getattr(wrapped, "model", None)
            if inner is not None and RiverFlavor().accepts(inner):
                return ForeignModel(inner, "river", uri, inputs, flavors, **ids)
    raise LineageError(
        f"cannot adopt {uri}: its MLflow flavors are {', '.join(flavors) or '(none)'}; driftpilot adopts "
        "scikit-learn models (flavor sklearn, logged with mlflow.sklearn.log_model) and River models logged as a "
        "pyfunc whose python model holds the River estimator in `.model`. Log the model in one of those forms"
    )


def _type_name(column: Any) -> str:
    kind = getattr(column, "type", None)
    return str(getattr(kind, "name", kind))

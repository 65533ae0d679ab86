"""A small labeled stream with a known concept, and a policy template, shared by the controller's end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tests.policy_kit import write_policy_file

POLICY = """\
model: {name}
task: classification
target: {{name: y, classes: [0, 1]}}
features:
  x1: numeric
  x2: numeric
  color: {{type: categorical, required: false}}
storage: {{url: "sqlite:///{tmp}/events.db"}}
mlflow: {{tracking_uri: "sqlite:///{mlflow}/mlflow.db", artifact_location: "{mlflow}/artifacts"}}
estimator:
  class: {estimator}
  params: {params}
bootstrap: {{holdout_fraction: 0.25}}
retrain: {{holdout_fraction: 0.25, min_rows: 40}}
serving: {{reload_interval_s: 0.1}}
"""


def write_policy(tmp_path: Path, mlflow_dir: Path, name: str,
                 estimator: str = "sklearn.linear_model.LogisticRegression", params: str = "{}") -> Path:
    return write_policy_file(tmp_path, name, POLICY.format(tmp=tmp_path, mlflow=mlflow_dir, name=name,
                                                         estimator=estimator, params=params))


def toy_table(n: int = 400, seed: int = 0, concept: str = "a") -> pd.DataFrame:
    """Concept "a": y = [x1 + 0.5 x2 > 0]; concept "b" (after an abrupt change): y = [x1 - x2 < 0]; concept "c"
    (no linear model can learn it): y = [x1 * x2 > 0]."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    y = {"a": x1 + 0.5 * x2 > 0, "b": x1 - x2 < 0, "c": x1 * x2 > 0}[concept]
    return pd.DataFrame({"x1": x1, "x2": x2, "color": rng.choice(["red", "blue"], size=n), "y": y.astype(int)})

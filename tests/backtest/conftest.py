"""Policies and files shared by the backtest tests: a small, fast classification policy (one scikit-learn estimator,
a performance rule, a short cooldown) whose stores live in a temporary folder, the same policy with a race of two
cheap online racers, and a user file with an abrupt change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from tests.policy_kit import write_policy_file

POLICY = """\
model: {name}
task: classification
target: {{name: y, classes: [0, 1]}}
features: {{x1: numeric, x2: numeric, color: {{type: categorical, required: false}}}}
storage: {{url: "sqlite:///{folder}/events.db"}}
mlflow: {{tracking_uri: "sqlite:///{folder}/mlflow.db", artifact_location: "{folder}/artifacts"}}
estimator: {{class: sklearn.linear_model.SGDClassifier, params: {{loss: log_loss, random_state: 0}}}}
retrain: {{holdout_fraction: 0.25, min_rows: 40}}
loop: {{cooldown: 3h, min_matured_rows: 150, data_drift_every_rows: 500, max_retrains_per_day: 20}}
monitors:
  performance: {{window_rows: 200, min_labels: 100, max_drop: 0.05}}
rules:
  - name: concept-drift
    when: {{concept_drift: drift}}
    do: {{strategy: auto, window: since_drift}}
  - name: accuracy-drop
    when: {{performance_drop: {{relative: 0.05}}}}
    do: {{strategy: stateless, window: {{last_rows: 400}}}}
gate: {{min_rows: 150, margin: {{absolute: 0.0}}, alpha: 0.05}}
probation: {{duration: 2h, min_rows: 100, max_drop: 0.02}}
"""


# The scikit-learn champion raced by River's logistic regression and a no-change classifier (both learn a row in
# microseconds), with no past versions racing, so the racers are the three of them plus any retrained challenger.
RACE = """\
race:
  racers:
    - name: logreg
      estimator:
        pipeline: [{class: river.preprocessing.StandardScaler}, {class: river.linear_model.LogisticRegression}]
    - name: no-change
      estimator: {class: river.dummy.NoChangeClassifier}
  past_versions: 0
"""


def write_policy(folder: Path, name: str = "bt-model", *, race: bool = False) -> Path:
    return write_policy_file(folder, name, POLICY.format(name=name, folder=folder) + (RACE if race else ""))


def user_table(rows: int = 1000, change_at: int = 500, seed: int = 0) -> pd.DataFrame:
    """The policy's columns, one prediction a minute, labels 5 to 15 minutes later; the concept flips at
    ``change_at`` (y = [x1 + 0.5 x2 > 0] before, y = [x1 - x2 < 0] after)."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=rows), rng.normal(size=rows)
    before = np.arange(rows) < change_at
    y = np.where(before, x1 + 0.5 * x2 > 0, x1 - x2 < 0).astype(int)
    events = pd.date_range("2026-03-01", periods=rows, freq="1min", tz="UTC")
    labels = events + pd.to_timedelta(rng.integers(5, 16, size=rows), unit="min")
    return pd.DataFrame({"event_time": events.strftime("%Y-%m-%dT%H:%M:%SZ"), "x1": x1, "x2": x2,
                         "color": rng.choice(["red", "blue"], size=rows), "y": y,
                         "label_time": labels.strftime("%Y-%m-%dT%H:%M:%SZ")})

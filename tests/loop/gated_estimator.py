"""A real scikit-learn classifier whose ``fit`` lasts as long as a test wants: training that is slow on purpose.

``fit`` first appends its process id to ``started_file`` (so a test knows which worker process trains), then waits
until ``gate_file`` exists, then fits a logistic regression. The daemon tests use it as a candidate-pool member
(``allow_packages: [tests]``) to kill or stop a daemon while a training worker is busy, without burning a CPU core
on a huge model; once the gate file exists, the same estimator trains in milliseconds.

Kept apart from the other test helpers so that the daemon's worker processes import nothing else to load it.
"""

from __future__ import annotations

import os
import threading
import time
from numbers import Real
from pathlib import Path
from typing import ClassVar

from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression


class GatedClassifier(ClassifierMixin, BaseEstimator):
    _parameter_constraints: ClassVar[dict] = {"gate_file": [str], "started_file": [str], "max_wait_s": [Real]}

    def __init__(self, gate_file: str = "", started_file: str = "", max_wait_s: float = 600.0) -> None:
        self.gate_file = gate_file
        self.started_file = started_file
        self.max_wait_s = max_wait_s

    def fit(self, X, y):
        if self.started_file:
            with open(self.started_file, "a") as out:
                out.write(f"{os.getpid()}\n")
        deadline = time.monotonic() + self.max_wait_s
        while self.gate_file and not Path(self.gate_file).exists():
            if time.monotonic() > deadline:  # a bound, so a forgotten worker never trains forever
                raise TimeoutError(f"{self.gate_file} did not appear within {self.max_wait_s} s")
            threading.Event().wait(0.05)
        self.model_ = LogisticRegression().fit(X, y)
        self.classes_ = self.model_.classes_
        return self

    def predict(self, X):
        return self.model_.predict(X)

    def predict_proba(self, X):
        return self.model_.predict_proba(X)

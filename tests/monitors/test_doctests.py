"""The monitors' docstrings keep their runnable examples. pytest runs them (``--doctest-modules`` over the packages,
see pyproject.toml); what it does not check is that they are there: a module whose examples were all deleted would
pass silently."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize(
    "module", ["monitors.metrics", "monitors.losses", "monitors.concept_drift", "monitors.factory"]
)
def test_docstring_examples_are_there(module):
    tests = doctest.DocTestFinder().find(importlib.import_module(module))
    assert sum(len(t.examples) for t in tests) > 0

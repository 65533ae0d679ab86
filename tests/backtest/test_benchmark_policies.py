"""The `auto` policies of the decision-quality benchmark (benchmarks/policies.py) validate, and fit every stream they
are replayed on: the classification one each classification scenario and Elec2's schema, the regression one the
regression scenario."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from controller.backtest.replay import policy_for_stream
from controller.backtest.streams import SCENARIOS, scenario
from controller.cli.main import main
from controller.config import load_policy
from tests.conftest import REPO

POLICIES = {"classification": REPO / "config" / "backtest-auto.yaml",
            "regression": REPO / "config" / "backtest-auto-regression.yaml"}


def test_the_benchmark_policies_validate() -> None:
    result = CliRunner().invoke(main, ["config", "validate", *map(str, POLICIES.values())])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_the_benchmark_policy_fits_every_scenario(name: str, tmp_path: Path) -> None:
    stream = scenario(name, rows=200, seed=0)
    loaded = policy_for_stream(load_policy(POLICIES[stream.spec.task]), stream.spec, tmp_path)
    assert list(loaded.config.features) == list(stream.spec.features)
    assert len(loaded.config.pool_members()) >= 2  # auto competes with a candidate pool
    assert str(tmp_path) in loaded.config.storage.url  # never the policy's own stores

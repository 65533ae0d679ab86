"""Opening what the API needs for a set of policies (controller/api/service.py): build_runtimes refuses a token
variable that is unset or empty and a store that does not answer, before any app exists.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.api.service import build_runtimes
from controller.clock import ManualClock
from controller.errors import ConfigError, StoreUnavailable
from controller.policy_loader import load_policy
from tests.api.api_kit import DEAD_POSTGRES, write_policy


@pytest.mark.parametrize("environ", [{}, {"DP_TOKEN": ""}], ids=["unset", "empty"])
def test_build_runtimes_refuses_a_missing_token_variable(tmp_path: Path, clock: ManualClock, environ: dict) -> None:
    path = write_policy(tmp_path, "m", f"sqlite:///{tmp_path / 'e.db'}", api={"token_env": "DP_TOKEN"})
    with pytest.raises(ConfigError) as info:
        build_runtimes([load_policy(path, environ={})], clock, environ=environ)
    (problem,) = info.value.problems
    assert "api.token_env names DP_TOKEN" in problem
    assert "export the token, or remove api.token_env" in problem


def test_build_runtimes_refuses_an_unreachable_store(tmp_path: Path, clock: ManualClock) -> None:
    path = write_policy(tmp_path, "down", DEAD_POSTGRES)
    with pytest.raises(StoreUnavailable, match="127.0.0.1:1/nowhere is unreachable"):
        build_runtimes([load_policy(path, environ={})], clock, environ={})

"""`driftpilot demo` (what `make run` runs) from an empty folder: a real daemon subprocess, traffic through the API,
decisions on screen, and the closing summary — never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_demo_runs_the_loop_from_an_empty_folder_and_ends_with_a_summary(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "from controller.cli.main import main; main()", "--log-level", "WARNING", "demo",
               "--rows", "8000", "--rate", "2000", "--label-delay", "0.5"]
    done = subprocess.run(command, check=False, cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert "Traceback" not in output
    assert "bootstrap: version 1 is champion" in output
    assert "served accuracy (natural labels), by version" in output
    assert "lineage\nv1" in output and "mlflow ui --backend-store-uri sqlite:///.driftpilot/demo/mlflow.db" in output
    # The daemon stopped gracefully and its log is where the demo says.
    assert (tmp_path / ".driftpilot" / "demo" / "daemon.log").is_file()
    assert "Traceback" not in (tmp_path / ".driftpilot" / "demo" / "daemon.log").read_text()

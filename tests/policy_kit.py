"""Policy files for the tests: every helper that writes one goes through :func:`write_policy_file`.

The suites keep their own templates and parameters, each in a ``write_policy`` of its own that formats its template
and hands the text here: tests/toy.py (the end-to-end toy model: estimator and params), tests/api/api_kit.py (the
ingestion API: store URL, task, ``api:`` section), tests/features/conftest.py (feature views: Redis prefix, online
store, staleness and batch settings) and tests/backtest/conftest.py (backtests: optional race). The kits that write
a policy as one step of a bigger set-up (tests/api/api_kit.py's served API, tests/loop/daemon_kit.py's toy daemon,
tests/race/race_kit.py's regression race) use it too.
"""

from __future__ import annotations

from pathlib import Path


def write_policy_file(folder: Path, name: str, text: str) -> Path:
    """Write the policy ``text`` to ``<folder>/<name>.yaml`` (creating ``folder`` if needed); the file's path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(text)
    return path

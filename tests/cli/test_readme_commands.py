"""Every command of the README's CLI reference runs on each example policy, and none ends in a traceback (issue 10,
item 1): on an empty store, right after the bootstrap, with traffic, and for the user's mistakes.

The example policies are used as shipped, with their relative `.driftpilot/` paths anchored in a temporary folder
(as if run from there). The classification example bootstraps from Elec2 the way `make run` does (BOOTSTRAP_ARGS of
the Makefile: the newer half held back as traffic); the regression example from a seeded synthetic file.
`serve` and `run` start as real processes, polled on their health endpoint with a bounded timeout; `replay` plays a
few rows against the `serve` process.

The feature-view example (`config/example-features.yaml`, data in `examples/features/`) runs its prediction modes as
the README shows them: bootstrap, offline `predict`, `features materialize` and `get`, and, against the `serve`
process, a real `driftpilot stream`, `POST /v1/events` and `/predict` with entities; once with the embedded SQLite
online store and once with the Redis on 127.0.0.1:6379 (keys under a prefix of this test, deleted afterwards).
"Put your own model under driftpilot" runs too: examples/own_model/train_elsewhere.py logs a model with plain MLflow,
`adopt`, `predictions import` and `labels import` take it and its app's log, `serve`/`run` serve it and `replay`
plays rows against it.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from controller.cli.main import main
from controller.policy_loader import load_policy
from tests.conftest import ELEC2_ZIP, EXAMPLE_CLASSIFICATION, EXAMPLE_REGRESSION, REPO
from tests.ports import free_port

pytestmark = pytest.mark.slow

EXAMPLE_FEATURES = REPO / "config" / "example-features.yaml"
REDIS_URL = "redis://127.0.0.1:6379/0"


def readme_commands() -> set[str]:
    """The commands of the README's CLI reference table that work on a policy (`config validate`, `report drift`,
    `run`, ...; not `demo`, which brings its own policy and stream and has its own test)."""
    text = (REPO / "README.md").read_text()
    section = text[text.index("## CLI reference"):]
    section = section[: section.index("\n## ", 1)]
    rows = re.finditer(r"^\| `driftpilot ([a-z]+(?: [a-z]+)?)([^`]*)`", section, re.MULTILINE)
    return {m.group(1) for m in rows if "FILE" in m.group(2) or m.group(1) == "config schema"}


def makefile_bootstrap_args() -> list[str]:
    match = re.search(r"^BOOTSTRAP_ARGS \?= (.*)$", (REPO / "Makefile").read_text(), re.MULTILINE)
    assert match, "the Makefile defines BOOTSTRAP_ARGS for the Elec2 bootstrap of `make run`"
    return shlex.split(match.group(1))


def _anchored(example: Path, folder: Path) -> Path:
    """The example policy with its relative .driftpilot/ paths under ``folder`` (nothing else changed)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / example.name
    path.write_text(example.read_text().replace(".driftpilot/", f"{folder}/.driftpilot/"))
    return path


def _house_prices(rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    area = rng.uniform(40, 200, rows)
    rooms = np.round(area / 30 + rng.normal(0, 0.5, rows)).clip(1)
    district = rng.choice(["north", "south", "centre"], rows)
    garden = rng.random(rows) < 0.4
    year = np.where(rng.random(rows) < 0.9, rng.integers(1900, 2024, rows), np.nan)
    price = 3000 * area + 20000 * rooms + np.where(district == "centre", 80000, 0) + 15000 * garden
    return pd.DataFrame({"area_m2": area, "rooms": rooms, "district": district, "has_garden": garden,
                         "year_built": year, "price": price + rng.normal(0, 20000, rows)})


class Cli:
    def __init__(self) -> None:
        self.ran: set[str] = set()

    def __call__(self, *args: str, expect: int | tuple[int, ...] = 0) -> str:
        words = [a for a in args if not a.startswith("-")][:2]
        self.ran.add(" ".join(words[:2]) if words[0] in ("config", "db", "report", "features", "labels", "predictions")
                     else words[0])
        result = CliRunner().invoke(main, ["--log-level", "WARNING", *args])
        assert "Traceback" not in result.output and not (
            result.exception and not isinstance(result.exception, SystemExit)), (
            f"`driftpilot {' '.join(args)}` ended in a traceback:\n{result.output}")
        codes = expect if isinstance(expect, tuple) else (expect,)
        assert result.exit_code in codes, f"`driftpilot {' '.join(args)}` exited {result.exit_code}:\n{result.output}"
        return result.output


def _daemon(command: str, policies: list[Path], folder: Path, while_up: Callable[[str], None] = lambda url: None
            ) -> None:
    """`driftpilot serve|run` as a real process for all ``policies``: ready, ``while_up(its URL)``, then a graceful
    stop on SIGTERM."""
    port = free_port()
    log = folder / f"{command}.log"
    configs = [arg for policy in policies for arg in ("--config", str(policy))]
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("driftpilot")), "--log-level", "WARNING",
                                 command, *configs, "--port", str(port)],
                                cwd=folder, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                    ready = json.loads(response.read())
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`driftpilot {command}` did not become ready:\n{log.read_text()[-3000:]}")
            try:
                proc.wait(timeout=0.25)
            except subprocess.TimeoutExpired:
                pass
        names = {load_policy(p, environ={}).config.model for p in policies}
        assert set(ready["models"]) == names and all(ready["champions"][n] for n in names), ready
        while_up(f"http://127.0.0.1:{port}")
        assert "Traceback" not in log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    # `run` exits 0; `serve` is plain uvicorn, which re-raises SIGTERM after its graceful shutdown.
    allowed = (0,) if command == "run" else (0, -signal.SIGTERM)
    assert proc.returncode in allowed, f"`driftpilot {command}` did not stop cleanly:\n{log.read_text()[-3000:]}"
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def _lifecycle(policy: Path, folder: Path, data: Path, bootstrap_args: list[str], traffic: pd.DataFrame,
               target: str) -> set[str]:
    cli = Cli()
    P = ("--config", str(policy))
    assert "OK" in cli("config", "validate", str(policy))
    json.loads(cli("config", "schema"))
    cli("db", "upgrade", *P)
    # An empty store: each command says what to do first.
    assert "run `driftpilot bootstrap` first" in cli("report", "drift", *P, expect=1)
    assert "no registered model" in cli("lineage", *P, expect=1)
    cli("stats", *P)

    cli("bootstrap", *P, "--data", str(data), *bootstrap_args)
    # A champion exists: adopt --if-missing does nothing (tests/actions/test_adopt.py adopts for real).
    assert "nothing to do" in cli("adopt", *P, "--model-uri", "models:/elsewhere/1", "--reference", str(data),
                                  "--if-missing")
    # Right after the bootstrap: too little current traffic is said plainly.
    assert "too little current traffic for a data-drift report" in cli("report", "drift", *P)

    to_score = folder / "traffic.csv"
    traffic.drop(columns=[target]).to_csv(to_score, index=False)
    scored = folder / "scored.parquet"
    cli("predict", *P, "--input", str(to_score), "--output", str(scored), "--log")
    config = load_policy(policy, environ={}).config
    # Their natural labels from a file, as `labels import` stores them (through the API's checks); again: no-ops.
    labels = folder / "labels.csv"
    pd.DataFrame({"prediction_id": pd.read_parquet(scored)["prediction_id"], target: traffic[target]}).to_csv(
        labels, index=False)
    assert f"{len(traffic):,} new labels" in cli("labels", "import", *P, "--input", str(labels))
    assert f"0 new labels, {len(traffic):,} already stored" in cli("labels", "import", *P, "--input", str(labels))
    stats = json.loads(cli("stats", *P))
    assert stats["labeled"] == len(traffic)
    # Predictions made elsewhere, from a file (the first 50 traffic rows under ids of their own); again: no-ops.
    made = folder / "made-elsewhere.parquet"
    traffic.head(50).drop(columns=[target]).assign(prediction_id=[f"elsewhere-{i}" for i in range(50)],
                                                   prediction=traffic[target].head(50)).to_parquet(made, index=False)
    assert "50 new predictions" in cli("predictions", "import", *P, "--input", str(made))
    assert "0 new predictions, 50 already stored" in cli("predictions", "import", *P, "--input", str(made))
    assert json.loads(cli("stats", *P))["predictions"] == stats["predictions"] + 50
    report = json.loads(cli("report", "drift", *P, "--output", str(folder / "drift.html")).split("\nnote:")[0])
    assert report["html_report"] == str(folder / "drift.html")

    cli("retrain", *P, "--strategy", "stateless", expect=(0, 1))
    cli("decisions", *P)
    cli("status", *P)
    cli("promote", *P, expect=(0, 1))
    cli("rollback", *P, expect=(0, 1))
    assert "River" in cli("learn", *P, expect=1)
    assert "Alias history" in cli("lineage", *P)
    json.loads(cli("lineage", *P, "--json"))
    assert "no storage.retention section" in cli("db", "prune", *P, "--dry-run")  # the examples keep every event
    assert re.search(r"sealed \d+ label rows into \d+ segments", cli("db", "compact", *P))
    stream = "elec2" if config.task == "classification" else "friedman-gradual"
    cli("backtest", *P, "--stream", stream, "--rows", "800", "--tick-every", "100", "--out", str(folder / "bt"))
    # The examples have no feature views: each feature command says so (tests/features/ runs them on views).
    assert "no batch views" in cli("features", "materialize", *P)
    assert "no feature view 'profile'" in cli("features", "get", *P, "--view", "profile", "--key", "u-1", expect=2)
    assert "no stream views" in cli("stream", *P, expect=2)
    return cli.ran


def _features_example(folder: Path, tag: str, online_store: str) -> Path:
    """The feature-view example as shipped, anchored like the others, its data file at the repository's
    examples/features/, its Redis keys under ``tag``; ``online_store`` "redis" sets the Redis online store (and a
    model name of its own, so both variants are served by one process)."""
    path = _anchored(EXAMPLE_FEATURES, folder)
    text = path.read_text().replace("examples/features/", f"{REPO}/examples/features/")
    text = text.replace("driftpilot:card-fraud:events", f"{tag}events").replace(
        "${DRIFTPILOT_FEATURES_PREFIX:-driftpilot:}", f'"{tag}"')
    if online_store == "redis":
        text = re.sub(r"\$\{DRIFTPILOT_FEATURES_URL:-sqlite:[^}]*\}", REDIS_URL, text)
        text = text.replace("model: card-fraud", "model: card-fraud-redis")
    path.write_text(text)
    return path


def _features_lifecycle(policy: Path) -> set[str]:
    """The README's prediction-mode commands that need no server, as a fresh clone runs them."""
    cli = Cli()
    P = ("--config", str(policy))
    assert "OK (model card-fraud" in cli("config", "validate", str(policy))
    cli("bootstrap", *P, "--data", str(REPO / "examples/features/train.csv"))
    scored = policy.parent / "scored.parquet"
    assert "scored 20 rows" in cli("predict", *P, "--input", str(REPO / "examples/features/to_score.csv"),
                                   "--output", str(scored))
    assert "user_profile: 200 entities from 200 rows" in cli("features", "materialize", *P)
    record = json.loads(cli("features", "get", *P, "--view", "user_profile", "--key", "u-0001"))
    assert record["values"]["segment"] in ("regular", "premium", "new")
    return cli.ran


def _own_model(folder: Path) -> tuple[Path, set[str]]:
    """The README's "Put your own model under driftpilot": a model logged with plain MLflow by
    examples/own_model/train_elsewhere.py (run from ``folder``, as from a clone), adopted, and what the app logged
    imported. The classification example under a model name of its own, so `serve` and `run` take both."""
    policy = _anchored(EXAMPLE_CLASSIFICATION, folder)
    policy.write_text(policy.read_text().replace("model: electricity-updown", "model: my-electricity"))
    script = subprocess.run([sys.executable, str(REPO / "examples/own_model/train_elsewhere.py"), "--data",
                             str(ELEC2_ZIP)], cwd=folder, capture_output=True, text=True, timeout=300)
    assert script.returncode == 0, script.stdout + script.stderr
    assert "next: driftpilot adopt --config config/example-classification.yaml --model-uri models:/my-elec2-model/1 " \
           "--reference .driftpilot/own-model/reference.csv" in script.stdout
    own = folder / ".driftpilot/own-model"
    cli = Cli()
    P = ("--config", str(policy))
    assert "my-electricity version 1 is champion: adopted models:/my-elec2-model/1 (sklearn)" in cli(
        "adopt", *P, "--model-uri", "models:/my-elec2-model/1", "--reference", str(own / "reference.csv"))
    assert "1,000 new predictions" in cli("predictions", "import", *P, "--input", str(own / "predictions.csv"))
    assert "1,000 new labels" in cli("labels", "import", *P, "--input", str(own / "labels.csv"))
    assert "adopted (manual)" in cli("lineage", *P)
    assert cli("status", *P).startswith("model my-electricity: champion v1")
    return policy, cli.ran


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _stream_and_predict(url: str, policies: list[Path]) -> None:
    """`driftpilot stream` per policy as a real process, the README's event and /predict with entities, then a
    graceful stop."""
    procs = []
    try:
        for policy in policies:
            log = policy.parent / "stream.log"
            with open(log, "wb") as out:
                procs.append((subprocess.Popen(
                    [str(Path(sys.executable).with_name("driftpilot")), "--log-level", "INFO", "stream", "--config",
                     str(policy)], cwd=policy.parent, stdout=out, stderr=subprocess.STDOUT, start_new_session=True),
                    log))
        # As in the README: two payments of u-0001, no event_time (the server stamps them).
        assert _post(f"{url}/v1/events", {"items": [{"data": {"user_id": "u-0001", "amount": 12.5}},
                                                    {"data": {"user_id": "u-0001", "amount": 80.0}}]})["accepted"] == 2
        for policy in policies:
            deadline = time.monotonic() + 60
            while True:
                got = json.loads(Cli()("features", "get", "--config", str(policy), "--view", "user_activity",
                                       "--key", "u-0001"))
                if got["values"] == {"txn_count_10m": 2, "amount_sum_1h": 92.5}:
                    break
                assert time.monotonic() < deadline, f"the stream processor did not fold the events: {got}"
                time.sleep(0.25)
            model = load_policy(policy, environ={}).config.model
            answer = _post(f"{url}/v1/models/{model}/predict",
                           {"features": {"amount": 80.0}, "entities": {"user_id": "u-0001"}})
            [row] = answer["predictions"]
            assert row["prediction"] in (0, 1) and set(row["features_served"]["ages"]) == {"user_profile",
                                                                                           "user_activity"}
    finally:
        for proc, log in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, log.read_text()[-3000:]
            assert "Traceback" not in log.read_text() and "stream processor stopped" in log.read_text()


def test_the_readme_lists_the_commands_this_test_runs():
    assert readme_commands() >= {"config validate", "config schema", "bootstrap", "report drift", "lineage", "run",
                                 "serve", "backtest", "labels import", "predictions import", "replay", "adopt"}
    assert "demo" not in readme_commands()


@pytest.mark.skipif(not ELEC2_ZIP.is_file(), reason=f"Elec2 is not at {ELEC2_ZIP} (see ../shared/data/README.md)")
def test_every_readme_command_runs_on_each_example_policy(tmp_path: Path):
    from controller.actions.datafiles import read_table

    # Classification: bootstrapped as `make daemon` does; traffic is the first held-back rows of Elec2.
    classification = _anchored(EXAMPLE_CLASSIFICATION, tmp_path / "classification")
    traffic = read_table(ELEC2_ZIP).iloc[22656:23656].reset_index(drop=True)
    ran = _lifecycle(classification, tmp_path / "classification", ELEC2_ZIP, makefile_bootstrap_args(), traffic,
                     "class")
    # Regression: a seeded synthetic house-price file.
    regression = _anchored(EXAMPLE_REGRESSION, tmp_path / "regression")
    data = tmp_path / "houses.csv"
    _house_prices(600, seed=0).to_csv(data, index=False)
    assert _lifecycle(regression, tmp_path / "regression", data, ["--holdback", "0.2"], _house_prices(300, seed=1),
                      "price") == ran
    # The feature-view example, with the SQLite online store (as shipped) and with Redis.
    tag = f"dpreadme:{uuid.uuid4().hex[:10]}:"
    features = [_features_example(tmp_path / f"features-{kind}", tag + kind + ":", kind) for kind in ("sqlite", "redis")]
    for policy in features:
        ran.update(_features_lifecycle(policy))
    own, own_ran = _own_model(tmp_path / "own-model")
    ran.update(own_ran)
    replay_houses = tmp_path / "houses-replay.csv"
    _house_prices(30, seed=2).to_csv(replay_houses, index=False)

    def replay(url: str) -> None:
        """Live traffic for both models: Elec2's newest 40 rows (the end of what `make daemon` holds back), and a
        file of houses."""
        cli = Cli()
        out = cli("replay", "--config", str(classification), "--input", str(ELEC2_ZIP), "--holdback", "40", "--url",
                  url, "--rate", "200")
        assert "replaying rows 45,272..45,311" in out and "sent 40 labels; served accuracy" in out
        assert "sent 30 labels; served MAE" in cli("replay", "--config", str(regression), "--input",
                                                   str(replay_houses), "--url", url, "--batch-size", "10")
        # The adopted model serves the end of Elec2's held-back half.
        assert "sent 40 labels; served accuracy" in cli("replay", "--config", str(own), "--input", str(ELEC2_ZIP),
                                                        "--holdback", "40", "--url", url, "--rate", "200")
        ran.update(cli.ran)
        _stream_and_predict(url, features)
        ran.add("stream")

    # The two long-running commands, once for all policies (each takes several --config).
    try:
        for command in ("serve", "run"):
            _daemon(command, [classification, regression, *features, own], tmp_path,
                    while_up=replay if command == "serve" else lambda url: None)
            ran.add(command)
    finally:
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        keys = list(client.scan_iter(match=tag + "*", count=1000))
        if keys:
            client.delete(*keys)
    assert ran >= readme_commands(), f"README commands not run: {readme_commands() - ran}"

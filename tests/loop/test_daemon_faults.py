"""`driftpilot run` under faults, with real daemon subprocesses: kill -9 in the middle of a retrain, a restart, SIGTERM
during the next retrain; a model whose MLflow is unreachable next to a healthy one.

Training is slow on purpose: a manual request trains the gated pool member (tests/loop/gated_estimator.py), whose fit
waits until the test creates the gate file, in a real spawned worker process of the daemon."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.loop.daemon_kit import (
    GATED_RULES,
    Daemon,
    gated_candidate,
    make_toy,
    process_gone,
    shared_mlflow_dir,
    wait_until,
    worker_pids,
)
from tests.ports import free_port
from tests.toy import toy_table

pytestmark = pytest.mark.slow


@pytest.fixture
def daemons():
    """Start daemons through this; each is killed with its process group at the end, whatever happened."""
    started: list[Daemon] = []

    def start(*args, **kwargs) -> Daemon:
        daemon = Daemon(*args, **kwargs)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.cleanup()


def test_kill_9_in_a_retrain_then_restart_then_sigterm_in_the_next_one(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, daemons, model_name: str) -> None:
    toy = make_toy(tmp_path, model_name, rules=GATED_RULES, extra=gated_candidate(tmp_path), lease_ttl="4s",
                   mlflow_dir=shared_mlflow_dir(tmp_path_factory))
    toy.stream(toy_table(200, seed=5))  # matured rows the champion has not learned: a retrain may start
    first = daemons(tmp_path, [toy.path], label="first")
    first.wait_until(lambda: first.owns(getattr(toy.lease(), "holder", None)), "the first daemon's lease")
    toy.request_retrain()
    training = first.wait_until(lambda: [d for d in toy.decisions(("retrain",)) if d.status == "training"],
                                "a training decision")[0]
    worker = first.wait_until(lambda: worker_pids(tmp_path), "the training worker in fit")[0]
    assert not process_gone(worker)

    # 1. kill -9 of the daemon in the middle of the retrain.
    first.kill9()
    # The worker watches its parent: it exits within a few seconds instead of finishing a decision nobody owns.
    wait_until(lambda: process_gone(worker), f"worker {worker} to exit after its daemon died", 10)
    # Nothing moved: the worker never registers before fit returns, and only the controller moves aliases.
    assert toy.aliases() == {"champion": "1"}
    assert toy.decision(training.decision_id).status == "training"  # nobody has noticed yet

    # 2. A restart (with the API this time) marks the interrupted decision failed, once the dead lease expired.
    second = daemons(tmp_path, [toy.path], label="second", api=True)
    failed = second.wait_until(lambda: (d := toy.decision(training.decision_id)).status == "failed" and d,
                               "the interrupted decision marked failed", 90)
    assert failed.error.startswith("interrupted: no training worker knows this decision")
    assert second.owns(toy.lease().holder)
    assert toy.aliases() == {"champion": "1"}
    assert [v.version for v in toy.registry.tree(toy.loaded.config.registered_model)] == ["1"]  # no stray version

    # The daemon goes on: a later trigger trains again, this time to the end, and the gate judges the challenger.
    (tmp_path / "gate-open").touch()
    toy.request_retrain("after the crash")
    again = second.wait_until(
        lambda: [d for d in toy.decisions(("retrain",))
                 if d.decision_id != training.decision_id and d.verdict is not None],
        "a second retrain that trains and gets a gate verdict", 90)[0]
    assert (again.trigger, again.status, again.verdict) == ("manual", "done", "reject")  # same concept: no better
    assert [c["version"] for c in again.evidence["challengers"]] == ["2"]
    assert second.owns(again.owner)
    assert toy.registry.get(toy.loaded.config.registered_model, "2").record.decision_id == again.decision_id
    assert without_challenger(toy.aliases()) == {"champion": "1"}  # a rejected v2 may stay `challenger`

    # 3. SIGTERM in the middle of the next retrain: a graceful stop.
    (tmp_path / "gate-open").unlink()
    toy.request_retrain("to be stopped")
    third = second.wait_until(lambda: [d for d in toy.decisions(("retrain",)) if d.status == "training"],
                              "a third training decision")[0]
    worker = second.wait_until(lambda: len(pids := worker_pids(tmp_path)) == 3 and pids[2], "the third worker")
    code, _ = second.terminate(timeout_s=30)  # uvicorn handles the signal first, then the loop stops
    assert code == 0, second.output()
    # The stop did not wait for the training: the gate never opened, so the worker's fit could not return (it waits
    # up to 600 s), and the daemon killed the worker instead.
    assert not (tmp_path / "gate-open").exists()
    wait_until(lambda: process_gone(worker), f"the third worker {worker} to be killed by the graceful stop", 30)
    stopped = toy.decision(third.decision_id)
    assert (stopped.status, stopped.error) == ("failed", "stopped: the daemon was shut down while it trained")
    assert toy.lease() is None  # released: another daemon can take over at once
    assert process_gone(worker)  # killed and reaped by the daemon before it exited
    assert without_challenger(toy.aliases()) == {"champion": "1"}
    assert any(line["message"].endswith(" stopped") for line in second.log_lines())


def without_challenger(aliases: dict[str, str]) -> dict[str, str]:
    return {alias: version for alias, version in aliases.items() if alias != "challenger"}


VOLUME_RULE = """\
  - name: volume
    when: {new_labels: {at_least: 100}}
    do: {strategy: stateless, window: all}
"""


def test_a_model_whose_mlflow_is_unreachable_does_not_stop_the_other_model(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, daemons, model_name: str) -> None:
    good = make_toy(tmp_path, f"{model_name}-ok", rules=VOLUME_RULE, mlflow_dir=shared_mlflow_dir(tmp_path_factory))
    down = make_toy(tmp_path, f"{model_name}-down", tracking=f"http://127.0.0.1:{free_port()}",
                    do_bootstrap=False)
    daemon = daemons(tmp_path, [good.path, down.path], label="daemon", api=True)
    daemon.wait_http("/healthz")
    # Ingestion goes on for both models.
    response = httpx.post(f"{daemon.url}/v1/models/{down.name}/predictions", timeout=10, json={"items": [
        {"prediction_id": "d-1", "features": {"x1": 0.1, "x2": 0.2, "color": "red"}, "prediction": 1}]})
    assert response.status_code == 200, response.text
    good.stream(toy_table(300, seed=5))
    retrain = daemon.wait_until(lambda: [d for d in good.decisions(("retrain",)) if d.verdict is not None],
                                "the healthy model's retrain judged by the gate", 90)[0]
    assert retrain.trigger == "data_volume"
    assert retrain.owner.split(":")[-2] == str(daemon.pid)
    served = httpx.post(f"{daemon.url}/v1/models/{good.name}/predict", timeout=10,
                        json={"features": {"x1": 0.5, "x2": 0.1, "color": "red"}})
    assert served.status_code == 200, served.text

    ticks = daemon.wait_until(lambda: len(t := down.decisions(("tick",))) >= 3 and t,
                              "three failed ticks of the model whose MLflow is down", 60)[::-1]  # oldest first
    assert all(t.status == "failed" and t.error.startswith("LineageUnavailable: MLflow at http://127.0.0.1:")
               for t in ticks), [t.error for t in ticks]
    assert [t.evidence["failures"] for t in ticks] == list(range(1, len(ticks) + 1))
    retry_at = [datetime.fromisoformat(t.evidence["retry_at"]) for t in ticks]
    for k in range(1, len(ticks)):
        assert ticks[k].created_at >= retry_at[k - 1]  # never retried before its backoff ended
        delay = min(2 * 2 ** k, 8)  # loop.backoff {initial: 2s, max: 8s}, doubling per failure
        assert (retry_at[k] - retry_at[k - 1]).total_seconds() >= delay
    # The healthy model never failed a tick and is still ticking.
    assert good.decisions(("tick",)) == []
    daemon.wait_until(lambda: good.state().last_tick > ticks[-1].created_at, "another tick of the healthy model")

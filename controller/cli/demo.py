"""``driftpilot demo``: the whole loop on this machine in a few minutes.

It bootstraps a champion on the early part of a stream whose concept changes halfway (River's Agrawal generator,
function 0 -> 2), starts ``driftpilot run`` (API + decision loop) as a subprocess on the embedded default (SQLite +
local MLflow store in ``.driftpilot/demo``), and plays production: rows are sent to ``/predict`` now and their natural
labels to ``/labels`` a little later. The screen shows the stream's progress with the live accuracy, and each
decision the daemon takes, as it takes it. At the end: a summary table, the lineage tree and the ``mlflow ui``
command to browse lineage and comparisons.
"""

from __future__ import annotations

import collections
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from controller.cli.main import _clear_errors, _fail, _load_one, main

DEMO_POLICY = Path(__file__).resolve().parents[2] / "config" / "demo.yaml"
BATCH = 100


@main.command("demo")
@click.option("--config", "config_path", default=str(DEMO_POLICY), show_default=True,
              type=click.Path(dir_okay=False, path_type=Path), help="The demo's policy file.")
@click.option("--rows", default=30_000, show_default=True, type=click.IntRange(min=4_000),
              help="Rows of production traffic after the bootstrap.")
@click.option("--change-at", default=0.35, show_default=True, type=click.FloatRange(0.05, 0.95),
              help="Where in the traffic the concept changes (a share of --rows).")
@click.option("--bootstrap-rows", default=3_000, show_default=True, type=click.IntRange(min=500))
@click.option("--rate", default=500, show_default=True, type=click.IntRange(min=50),
              help="Rows per second sent to /predict.")
@click.option("--label-delay", default=2.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Seconds until each row's natural label is sent.")
@click.option("--keep", is_flag=True, help="Keep the previous demo's folder instead of starting fresh.")
def demo_command(config_path: Path, rows: int, change_at: float, bootstrap_rows: int, rate: int,
                 label_delay: float, keep: bool) -> None:
    """Run the whole loop on a drifting stream: bootstrap, daemon, traffic, drift, retrain, gate, promotion."""
    import httpx
    from tqdm import tqdm

    from controller.actions.bootstrap import bootstrap
    from controller.actions.model_registry import open_registry
    from controller.backtest.streams import scenario
    from controller.clock import SystemClock
    from controller.store import EventStore
    from controller.store.control import DecisionLog

    loaded = _load_one(config_path)
    policy = loaded.config
    folder = Path(".driftpilot/demo")
    if folder.exists() and not keep:
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    total = bootstrap_rows + rows
    stream = scenario("agrawal-abrupt", rows=total, seed=7, label_delay=timedelta(0),
                      change_at=(bootstrap_rows + int(rows * change_at)) / total)
    frame = stream.frame.rename(columns={"y": policy.target.name})
    features = list(policy.features)
    change = stream.spec.change_points[0]
    click.echo(f"driftpilot demo: model {policy.model!r} ({policy.estimator.describe()}), {bootstrap_rows:,} rows to "
               f"bootstrap, then {rows:,} rows of traffic; the concept changes at traffic row {change - bootstrap_rows:,}")

    clock = SystemClock()
    with _clear_errors():
        store = EventStore.from_url(policy.storage.url, clock)
        registry = open_registry(policy, clock)
        boot = frame.iloc[:bootstrap_rows]
        result = bootstrap(loaded, boot[features].reset_index(drop=True),
                           boot[policy.target.name].reset_index(drop=True), store=store, registry=registry,
                           clock=clock, force=keep)
    metric = ", ".join(f"{k} {v:.3f}" for k, v in result.holdout_metrics.items())
    click.echo(f"bootstrap: version {result.version} is champion ({metric} on {result.holdout_rows} held-out rows)")

    port = _free_port()
    log_path = folder / "daemon.log"
    daemon = _start_daemon(config_path, port, folder, log_path)
    decisions = DecisionLog(store, clock)
    seen: dict[str, str] = {}
    try:
        base = f"http://127.0.0.1:{port}/v1/models/{policy.model}"
        with httpx.Client(timeout=30) as client:
            _wait_ready(client, port, daemon, log_path)
            pending: collections.deque[tuple[float, list[dict[str, Any]]]] = collections.deque()
            recent: collections.deque[int] = collections.deque(maxlen=500)
            tally: collections.defaultdict[tuple[str, str], list[int]] = collections.defaultdict(lambda: [0, 0])
            traffic = frame.iloc[bootstrap_rows:]
            started = time.monotonic()
            with tqdm(total=len(traffic), desc="traffic", unit="row", dynamic_ncols=True) as bar:
                for i in range(0, len(traffic), BATCH):
                    part = traffic.iloc[i:i + BATCH]
                    answer = _post(client, f"{base}/predict", {"items": [
                        {"features": _plain(row)} for row in part[features].to_dict(orient="records")]})
                    truth = part[policy.target.name].tolist()
                    served = answer["predictions"]
                    hits = [int(p["prediction"] == y) for p, y in zip(served, truth, strict=True)]
                    recent.extend(hits)
                    phase = "after" if bootstrap_rows + i >= change else "before"
                    tally[(answer["model_version"], phase)][0] += sum(hits)
                    tally[(answer["model_version"], phase)][1] += len(hits)
                    pending.append((time.monotonic() + label_delay, [
                        {"prediction_id": p["prediction_id"], "label": int(y)}
                        for p, y in zip(served, truth, strict=True)]))
                    while pending and pending[0][0] <= time.monotonic():
                        _post(client, f"{base}/labels", {"items": pending.popleft()[1]})
                    bar.update(len(part))
                    bar.set_postfix_str(f"v{answer['model_version']} serving, accuracy (last 500) "
                                        f"{sum(recent) / len(recent):.3f}")
                    _show_decisions(decisions, policy.model, seen, bar.write)
                    # Pace the traffic at `rate` rows per second.
                    ahead = (i + len(part)) / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
                while pending:
                    time.sleep(max(0.0, pending[0][0] - time.monotonic()))
                    _post(client, f"{base}/labels", {"items": pending.popleft()[1]})
            _settle(store, decisions, policy.model, seen, click.echo, daemon)
    finally:
        _stop(daemon)
    _summary(decisions, policy, registry, folder, tally)


def _start_daemon(config_path: Path, port: int, folder: Path, log_path: Path) -> subprocess.Popen:
    command = [sys.executable, "-c", "from controller.cli.main import main; main()", "--log-level", "WARNING",
               "run", "--config", str(config_path), "--port", str(port),
               "--scheduler-db", f"sqlite:///{(folder / 'scheduler.db').resolve()}"]
    log = log_path.open("w")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_ready(client: Any, port: int, daemon: subprocess.Popen, log_path: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if daemon.poll() is not None:
            _fail(f"the daemon exited with code {daemon.returncode} before it served; see {log_path}")
        try:
            if client.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return
        except Exception:  # noqa: BLE001,S110 - not listening yet
            pass
        time.sleep(0.2)
    _fail(f"the daemon did not answer /readyz within 90 s; see {log_path}")


def _post(client: Any, url: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(url, json=body)
    if response.status_code != 200:
        _fail(f"POST {url} answered {response.status_code}: {response.text[:300]}")
    return response.json()


def _show_decisions(log: Any, model: str, seen: dict[str, str], write: Any) -> None:
    """Print each decision once when it appears, and again when what is said about it changes (a promotion's
    ``promoting`` and ``done`` read the same: printed once)."""
    for decision in reversed(log.list(model, limit=20)):
        if decision.action == "tick":
            continue
        line = _line(decision)
        key = line.split(" ", 1)[1]  # without the time of day
        if seen.get(decision.decision_id) == key:
            continue
        seen[decision.decision_id] = key
        write("  " + line)


def _line(d: Any) -> str:
    when = d.updated_at or d.created_at
    head = f"{when:%H:%M:%S} {d.action} ({d.trigger}, rule {d.rule or '-'})"
    if d.action in ("retrain", "learn"):
        choice = d.evidence.get("strategy_choice", {})
        body = f"{d.strategy}: {choice.get('rationale', '')[:100]}"
        if d.status == "training":
            return f"{head} started, {body}"
        if d.status == "failed":
            return f"{head} failed: {d.error}"
        verdicts = d.evidence.get("gate", {}).get("verdicts", {})
        if d.status == "held" and not verdicts:
            versions = [str(c.get("version")) for c in d.evidence.get("challengers", []) if c.get("ok")]
            return f"{head} trained v{', v'.join(versions)}; the gate judges it on matured labels"
        reasons = "; ".join(f"v{v}: {x.get('reason')}" for v, x in verdicts.items())
        return f"{head} gate {d.verdict}: {reasons}"
    if d.action == "rollback":
        return f"{head}: v{d.champion_version} -> v{d.challenger_version} ({d.evidence.get('probation', {})})"
    return f"{head} {d.status}: {d.error or ''}"


def _settle(store: Any, log: Any, model: str, seen: dict[str, str], write: Any,
            daemon: subprocess.Popen) -> None:
    """After the traffic: give the daemon up to a minute to tick past the last labels sent and to finish a decision
    in flight or a retrain waiting for rows of the new concept, printing as it goes."""
    from datetime import UTC, datetime

    from controller.loop.state import load_state

    newest = store.labeled_count(model, datetime.now(UTC))[1]

    def busy() -> bool:
        state = load_state(store, model)
        behind = newest is not None and (state.label_cursor is None or state.label_cursor < newest)
        return behind or state.deferred is not None or log.in_flight(model) is not None

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and daemon.poll() is None and busy():
        _show_decisions(log, model, seen, write)
        time.sleep(0.5)
    _show_decisions(log, model, seen, write)
    if load_state(store, model).deferred is not None:
        write("note: a retrain is still waiting for enough labeled rows of the new concept (loop.min_matured_rows)")


def _stop(daemon: subprocess.Popen) -> None:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)


def _summary(log: Any, policy: Any, registry: Any, folder: Path, tally: dict[tuple[str, str], list[int]]) -> None:
    from controller.cli.lineage_view import lineage_rows, render_tree

    click.echo("\nserved accuracy (natural labels), by version and by side of the concept change")
    click.echo(f"  {'version':<8} {'before':>16} {'after':>16}")
    for version in sorted({v for v, _ in tally}, key=int):
        cells = []
        for phase in ("before", "after"):
            right, total = tally.get((version, phase), [0, 0])
            cells.append(f"{right / total:.3f} ({total:,})" if total else "-")
        click.echo(f"  v{version:<7} {cells[0]:>16} {cells[1]:>16}")
    rows = [d for d in reversed(log.list(policy.model, limit=None)) if d.action != "tick"]
    counts = collections.Counter((d.action, d.verdict or d.status) for d in rows)
    click.echo("\nsummary")
    click.echo(f"  {'decision':<12} {'outcome':<10} count")
    for (action, outcome), n in sorted(counts.items()):
        click.echo(f"  {action:<12} {outcome:<10} {n}")
    aliases = registry.aliases(policy.registered_model)
    click.echo("  aliases: " + ", ".join(f"{a} v{v}" for a, v in sorted(aliases.items())))
    click.echo("\nlineage")
    with _clear_errors():
        click.echo(render_tree(lineage_rows(registry, policy.registered_model)))
    shown = DEMO_POLICY.relative_to(Path.cwd()) if DEMO_POLICY.is_relative_to(Path.cwd()) else DEMO_POLICY
    click.echo(f"\nbrowse lineage and comparisons:  .venv/bin/mlflow ui --backend-store-uri "
               f"{policy.mlflow.tracking_uri}\n"
               f"decisions with their evidence:   .venv/bin/driftpilot decisions --config {shown}\n"
               f"the daemon's log:                {folder / 'daemon.log'}")
    if not any(d.verdict == "promote" for d in rows):
        click.echo("note: no challenger was promoted in this run (the gate found none significantly better)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}

"""``driftpilot demo``, the command: its options, the bootstrap, and the traffic loop that plays production against
the daemon (see :mod:`controller.cli.demo` for the whole picture)."""

from __future__ import annotations

import collections
import shutil
import time
from pathlib import Path
from typing import Any

import click

from controller.cli.common import clear_errors, fail, load_one
from controller.cli.demo.daemon_process import free_port, post, settle, start_daemon, stop, wait_ready
from controller.cli.demo.screen import Screen
from controller.cli.demo.stream import BATCH, Concept, agrawal_stream
from controller.cli.demo.summary import story, summary
from controller.cli.group import main

DEMO_POLICY = Path(__file__).resolve().parents[3] / "config" / "demo.yaml"


@main.command("demo")
@click.option("--config", "config_path", default=str(DEMO_POLICY), show_default=True,
              type=click.Path(dir_okay=False, path_type=Path), help="The demo's policy file.")
@click.option("--rows", default=21_000, show_default=True, type=click.IntRange(min=4_000),
              help="Rows of production traffic after the bootstrap.")
@click.option("--change-at", default=0.15, show_default=True, type=click.FloatRange(0.05, 0.9),
              help="Where in the traffic concept B arrives (a share of --rows).")
@click.option("--return-at", default=0.58, show_default=True, type=click.FloatRange(0.1, 0.95),
              help="Where in the traffic concept A comes back (a share of --rows, after --change-at).")
@click.option("--bootstrap-rows", default=3_000, show_default=True, type=click.IntRange(min=500))
@click.option("--rate", default=300, show_default=True, type=click.IntRange(min=50),
              help="Rows per second sent to /predict (the daemon's race must keep up with them).")
@click.option("--label-delay", default=2.0, show_default=True, type=click.FloatRange(min=0.0),
              help="Seconds until each row's natural label is sent.")
@click.option("--keep", is_flag=True, help="Keep the previous demo's folder instead of starting fresh.")
def demo_command(config_path: Path, rows: int, change_at: float, return_at: float, bootstrap_rows: int, rate: int,
                 label_delay: float, keep: bool) -> None:
    """Run the whole loop on an A -> B -> A stream: bootstrap, daemon, traffic, the race, drift, retrains, switches,
    and the old version coming back with its concept."""
    began = time.monotonic()
    import httpx
    from tqdm import tqdm

    from controller.actions.bootstrap import bootstrap
    from controller.actions.model_registry import open_registry
    from controller.clock import SystemClock
    from controller.store import EventStore
    from controller.store.control import DecisionLog

    if return_at <= change_at:
        fail(f"--return-at {return_at} must come after --change-at {change_at} (both are shares of --rows)")
    loaded = load_one(config_path)
    policy = loaded.config
    if policy.race is None:
        fail(f"{config_path} has no race: section; the demo shows the race (see config/demo.yaml)")
    folder = Path(".driftpilot/demo")
    if folder.exists() and not keep:
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    concepts = [Concept("A", "A", 0, 0), Concept("B", "B", 2, int(rows * change_at)),
                Concept("A", "A again", 0, int(rows * return_at))]
    frame = agrawal_stream(policy, bootstrap_rows, rows, concepts, seed=7)
    features = list(policy.features)
    target = policy.target.name
    click.echo(f"driftpilot demo: model {policy.model!r} ({policy.estimator.describe()}); {bootstrap_rows:,} rows of "
               f"concept A to bootstrap, then {rows:,} rows of traffic at {rate:,} rows/s, labels {label_delay:g} s "
               f"later:\n  concept A (Agrawal function 0) -> B (function 2) at traffic row {concepts[1].start:,} "
               f"-> A again at row {concepts[2].start:,}")
    racers = ", ".join(f"{r.name} ({_short(r.estimator.describe())})" for r in policy.race.racers)
    click.echo(f"  the race: online learners {racers}\n  race the champion on the natural labels; batch "
               f"retrains join as challengers; after a drift alarm the {policy.race.past_versions} most recent past "
               "champions race again")

    clock = SystemClock()
    with clear_errors():
        store = EventStore.from_url(policy.storage.url, clock)
        registry = open_registry(policy, clock)
        boot = frame.iloc[:bootstrap_rows]
        result = bootstrap(loaded, boot[features].reset_index(drop=True), boot[target].reset_index(drop=True),
                           store=store, registry=registry, clock=clock, force=keep)
    metric = ", ".join(f"{k} {v:.3f}" for k, v in result.holdout_metrics.items())
    click.echo(f"bootstrap: version {result.version} is champion ({metric} on {result.holdout_rows} held-out rows "
               "of concept A)")

    port = free_port()
    log_path = folder / "daemon.log"
    daemon = start_daemon(config_path, port, folder, log_path)
    screen = Screen(store, DecisionLog(store, clock), policy.model, concepts, label_delay,
                    bootstrap=str(result.version), knew={str(result.version): "A"})
    traffic = frame.iloc[bootstrap_rows:].reset_index(drop=True)
    try:
        base = f"http://127.0.0.1:{port}/v1/models/{policy.model}"
        with httpx.Client(timeout=30) as client:
            wait_ready(client, port, daemon, log_path)
            pending: collections.deque[tuple[float, list[dict[str, Any]]]] = collections.deque()
            recent: collections.deque[int] = collections.deque(maxlen=500)
            started = time.monotonic()
            with tqdm(total=len(traffic), desc="traffic", unit="row", dynamic_ncols=True) as bar:
                screen.write = bar.write
                for i in range(0, len(traffic), BATCH):
                    part = traffic.iloc[i:i + BATCH]
                    screen.before_batch(i)
                    answer = post(client, f"{base}/predict", {"items": [
                        {"features": _plain(row)} for row in part[features].to_dict(orient="records")]})
                    truth = part[target].tolist()
                    served = answer["predictions"]
                    hits = [int(p["prediction"] == y) for p, y in zip(served, truth, strict=True)]
                    recent.extend(hits)
                    screen.after_batch(i, answer["model_version"], hits, [p["prediction_id"] for p in served])
                    pending.append((time.monotonic() + label_delay, [
                        {"prediction_id": p["prediction_id"], "label": int(y)}
                        for p, y in zip(served, truth, strict=True)]))
                    while pending and pending[0][0] <= time.monotonic():
                        post(client, f"{base}/labels", {"items": pending.popleft()[1]})
                    bar.update(len(part))
                    bar.set_postfix_str(f"concept {screen.concept_at(i).name}, v{answer['model_version']} serving, "
                                        f"accuracy (last 500) {sum(recent) / len(recent):.3f}")
                    screen.poll()
                    # Pace the traffic at `rate` rows per second.
                    ahead = (i + len(part)) / rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)
                while pending:
                    time.sleep(max(0.0, pending[0][0] - time.monotonic()))
                    post(client, f"{base}/labels", {"items": pending.popleft()[1]})
            screen.write = click.echo
            settle(store, screen, policy.model, daemon)
            screen.table(f"racers at the end of the traffic ({len(traffic):,} rows)")
    finally:
        stop(daemon)
    story(screen, time.monotonic() - began)
    summary(screen, policy, registry, folder, DEMO_POLICY)


def _short(description: str) -> str:
    """river.tree.HoeffdingAdaptiveTreeClassifier -> HoeffdingAdaptiveTreeClassifier (each pipeline step)."""
    return " | ".join(step.rsplit(".", 1)[-1] for step in description.split(" | "))


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}

"""``driftpilot backtest``: replay a stream through a policy with the daemon's own controller code, on a simulated
clock, and write what it would have done (summary.md, metric.png, decisions.jsonl)."""

from __future__ import annotations

import logging
import shutil
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from controller.cli.common import SINGLE_CONFIG, bad_input_file, clear_errors, load_one
from controller.cli.group import main

DEFAULT_SCENARIO_ROWS = 10_000
DEFAULT_LABEL_DELAY = "10m"
# What replay() puts in its work folder; a folder holding anything else is not ours to clear.
_WORK_NAMES = ("events.db", "mlflow.db", "mlartifacts")


def _usage(message: str) -> None:
    """A problem with the command's input (stream, file, options, a policy that does not fit): one line, exit 2."""
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


@main.command("backtest")
@SINGLE_CONFIG
@click.option("--stream", "stream_arg", required=True, metavar="SCENARIO|elec2|PATH",
              help="A synthetic scenario (sea-abrupt, sea-gradual, sea-recurring, hyperplane-incremental, "
                   "agrawal-abrupt, friedman-gradual), elec2, or a .csv/.parquet file with the policy's features, "
                   "its target, event_time and label_time.")
@click.option("--rows", type=click.IntRange(min=20), default=None,
              help=f"Rows of a scenario (default {DEFAULT_SCENARIO_ROWS:,}); for elec2 or a file, its first N rows.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of a synthetic scenario.")
@click.option("--label-delay", default=None,
              help=f"How late labels arrive: for a scenario (default {DEFAULT_LABEL_DELAY}), or a file without a "
                   "label_time column. Durations: 90s, 10m, 12h, 1d.")
@click.option("--bootstrap-rows", type=click.IntRange(min=10), default=None,
              help="Rows that train the first champion (default: a tenth of the stream, at least 200).")
@click.option("--tick-every", type=click.IntRange(min=1), default=None,
              help="Rows between two controller ticks (default: a tick at every loop.tick of the stream's event "
                   "time, as the daemon would tick; a larger N is faster but serves each row from an older state).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for summary.md, metric.png, decisions.jsonl and the backtest's own stores (work/) "
                   "(default: .driftpilot/backtests/<model>-<stream>).")
@click.option("--log-mlflow", is_flag=True,
              help="Also log the summary numbers and both files as a run of the policy's own MLflow experiment "
                   "(<experiment>/decisions).")
@click.pass_context
def backtest_command(ctx: click.Context, config_path: Path, stream_arg: str, rows: int | None, seed: int,
                     label_delay: str | None, bootstrap_rows: int | None, tick_every: int | None, out_dir: Path | None,
                     log_mlflow: bool) -> None:
    """Replay a stream through the policy — the daemon's own controller, trainers, monitors and gate on a simulated
    clock, with a throwaway event store and MLflow store — and report what it would have done: the prequential
    metric over time, retrains, promotions, held and rejected challengers, rollbacks, detection delays, compute;
    with a race, each racer's metric, the rows it served and the race's switches."""
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from controller.backtest.replay import policy_for_stream, replay
    from controller.backtest.report import registry_loader, summarize, write_report

    loaded = load_one(config_path)
    policy = loaded.config
    stream = _stream(stream_arg, policy, rows=rows, seed=seed, label_delay=label_delay)
    bootstrap_rows = bootstrap_rows or max(200, stream.rows // 10)
    if bootstrap_rows >= stream.rows - 1:
        _usage(f"--bootstrap-rows {bootstrap_rows} leaves nothing to replay: the stream has {stream.rows} rows; "
               "pass fewer bootstrap rows or a longer stream (--rows)")
    out = out_dir or Path(".driftpilot") / "backtests" / f"{policy.model}-{stream.spec.name}"
    work = out / "work"
    _clear_work(work)
    with _fits():
        policy_for_stream(loaded, stream.spec, work)  # the policy must fit the stream before anything is trained

    debug = ctx.find_root().params.get("log_level", "INFO").upper() == "DEBUG"
    with clear_errors(), bad_input_file(), _quiet_libraries(debug), logging_redirect_tqdm(), \
            tqdm(total=stream.rows, desc=f"replaying {stream.spec.name}", unit="row", disable=None) as bar:
        result = replay(loaded, stream, work, bootstrap_rows=bootstrap_rows, tick_every=tick_every,
                        progress=bar.update, name=str(config_path))
    race_metric = policy.race.metric_for(policy.task, policy.gate.metric) if policy.race is not None else None
    with clear_errors(), bad_input_file(), _quiet_libraries(debug):
        summary = summarize(result, stream, load=registry_loader(loaded, result), race_metric=race_metric,
                            costs=loaded.config.costs)
        files = write_report(result, summary, out)

    click.echo(_table(summary))
    click.echo(f"wrote {files.summary}, {files.plot} and {files.decisions}")
    click.echo(f"the backtest's versions and comparisons: mlflow ui --backend-store-uri "
               f"sqlite:///{(work / 'mlflow.db').resolve()}")
    if log_mlflow:
        _log_to_mlflow(loaded, summary, files, stream_arg=stream_arg, rows=stream.rows, seed=seed,
                       label_delay=label_delay, bootstrap_rows=bootstrap_rows, tick_every=tick_every)


# ------------------------------------------------------------------------------------------------------ the stream


def _stream(arg: str, policy: Any, *, rows: int | None, seed: int, label_delay: str | None) -> Any:
    """A scenario, Elec2 or the user's file; any problem with it ends the command with one line and exit code 2."""
    from controller.actions.datafiles import DataFileError
    from controller.backtest.result import ReplayStream
    from controller.backtest.streams import SCENARIOS, StreamError, elec2, from_file, scenario

    delay = _delay(label_delay)
    try:
        if arg in SCENARIOS:
            return scenario(arg, rows=rows or DEFAULT_SCENARIO_ROWS, seed=seed,
                            label_delay=delay or _delay(DEFAULT_LABEL_DELAY))
        if arg == "elec2":
            if delay is not None:
                _usage("--label-delay does not apply to elec2: its labels arrive with the next row, 30 minutes later")
            return elec2(rows=rows)
        path = Path(arg)
        if not path.exists():
            _usage(f"--stream {arg!r} is neither a scenario ({', '.join(SCENARIOS)}), nor elec2, nor an existing "
                   ".csv/.parquet file")
        stream = from_file(path, policy, label_delay=delay)
        if rows is not None and rows < stream.rows:
            stream = ReplayStream(stream.spec, stream.frame.iloc[:rows].reset_index(drop=True))
        return stream
    except (StreamError, DataFileError) as exc:
        _usage(str(exc))


def _delay(text: str | None) -> timedelta | None:
    if text is None:
        return None
    from trainers.windows import parse_duration

    try:
        delay = parse_duration(text)
    except ValueError:
        _usage(f"--label-delay {text!r} is not a duration; write e.g. 90s, 10m, 12h or 1d")
    if delay < timedelta(0):
        _usage(f"--label-delay must not be negative, got {text!r}")
    return delay


@contextmanager
def _fits() -> Iterator[None]:
    from controller.backtest.replay import BacktestError

    try:
        yield
    except BacktestError as exc:
        _usage(str(exc))


def _clear_work(work: Path) -> None:
    """The backtest's stores start empty: remove the previous run's, but never a folder that is not a backtest's."""
    if not work.exists():
        return
    foreign = [p.name for p in work.iterdir() if not p.name.startswith(_WORK_NAMES)]
    if not work.is_dir() or foreign:
        _usage(f"{work} exists and holds files that are not a backtest's ({', '.join(foreign[:5])}); pass another "
               "--out folder")
    shutil.rmtree(work)


@contextmanager
def _quiet_libraries(debug: bool) -> Iterator[None]:
    """MLflow announces every table and model signature, and the controller every decision: the report has them
    all, so below DEBUG the progress bar stays alone on the terminal (warnings still show)."""
    levels = {"mlflow": logging.ERROR, "driftpilot": logging.WARNING, "alembic": logging.WARNING}
    if debug:
        yield
        return
    saved = {name: logging.getLogger(name).level for name in levels}
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


# ---------------------------------------------------------------------------------------------------------- output


def _table(summary: dict[str, Any]) -> str:
    stream, metric, retrains = summary["stream"], summary["metric"], summary["retrains"]
    harm = summary["harmful_promotions"]
    compute = summary["compute"]
    name = metric["name"] if metric["name"] == "accuracy" else metric["name"].upper()
    by_strategy = ", ".join(f"{s} {n}" for s, n in sorted(retrains["by_strategy"].items()))
    delays = []
    for p in summary["detections"]["per_change_point"]:
        detected = f"drift +{p['delay']:,} rows" if p["delay"] is not None else "drift not detected"
        retrain = f"first retrain +{p['retrain_delay']:,}" if p["retrain_delay"] is not None else "no retrain"
        delays.append(f"row {p['change_point']:,}: {detected}, {retrain}")
    value = "n/a" if metric["value"] is None else f"{metric['value']:.4f}"
    lines = [
        (f"backtest of {summary['policy']} on {stream['name']}: {stream['rows']:,} rows "
         f"({stream['bootstrap_rows']:,} bootstrap), change points "
         f"{', '.join(f'{p:,}' for p in stream['change_points']) or 'none known'}"),
        f"  {'prequential ' + name:<22} {value} ({'higher' if metric['higher_is_better'] else 'lower'} is better)",
        f"  retrains               {retrains['total']}" + (f" ({by_strategy})" if by_strategy else ""),
        f"  promotions             {summary['promotions']}"
        + (" by the gate (the race's switches are below)" if summary.get("race") is not None else ""),
        f"  rejected / held        {summary['rejected']} / {summary['held']}",
        f"  rollbacks              {summary['rollbacks']}",
        "  harmful promotions     " + (f"{harm['count']} of {len(harm['promotions'])}" if harm["checked"]
                                        else "not checked")
        + (" (the race's switches are judged below)" if summary.get("race") is not None else ""),
    ]
    if delays:
        lines.append("  detection delay        " + "; ".join(delays))
    lines.append(f"  compute                {compute['ticks']:,} ticks, {compute['controller_seconds']:.1f} s in the "
                 f"controller, {compute['wall_seconds']:.1f} s wall")
    costs = summary.get("costs")
    if costs is not None:
        prices = ([f"at the policy's costs {costs['policy']['total']:,.0f}"] if costs["policy"] else []) + [
            f"{r['name']} ({r['retrain']:g}/retrain) {r['total']:,.0f}" for r in costs["ratios"]]
        lines.append(f"  total cost             {'; '.join(prices)} ({costs['unit']} + retrains x their cost)")
    if summary.get("race") is not None:
        lines += _race_lines(summary["race"])
    return "\n".join(lines)


def _race_lines(race: dict[str, Any]) -> list[str]:
    """The race at the end of the table: its switches, then one line per racer, best first."""
    from controller.backtest.report import race_metric_label

    switches, harm = race["switches"], race["harmful"]
    back = sum(s["re_promoted"] for s in switches)
    name = race_metric_label(race["metric"])
    lines = [f"  race switches          {len(switches)}" + (f" ({back} re-promoted)" if back else "")
             + f", harmful {harm['count']} of {harm['judged']} judged; {race['checkpoints']} checkpoints",
             f"  racers                 {name} on the rows each predicted "
             f"({'higher' if race['higher_is_better'] else 'lower'} is better)"]
    sign = -1 if race["higher_is_better"] else 1
    ranked = sorted(race["racers"], key=lambda r: (r["value"] is None, sign * (r["value"] or 0.0)))
    width = max((len(r["racer"]) for r in ranked), default=0)
    for r in ranked:
        value = "n/a" if r["value"] is None else f"{r['value']:.4f}"
        line = f"    {r['racer']:<{width}}  {value} on {r['rows']:,} rows"
        if r["served_rows"]:
            line += f", served {r['served_rows']:,}"
        if r["promoted"]:
            line += f", promoted {r['promoted']}×"
        lines.append(line)
    return lines


def _log_to_mlflow(loaded: Any, summary: dict[str, Any], files: Any, **params: Any) -> None:
    """One run in the policy's own MLflow (``<experiment>/decisions``) with the numbers and both files."""
    from controller.actions.model_registry import open_registry
    from controller.backtest.report import headline_metrics
    from controller.clock import SystemClock

    policy = loaded.config
    run_key = f"backtest-{uuid.uuid4().hex[:12]}"
    try:
        with clear_errors(), _quiet_libraries(debug=False):
            registry = open_registry(policy, SystemClock())
            run_id = registry.log_decision(
                policy.registered_model, decision_id=run_key, metrics=headline_metrics(summary),
                params={"policy": str(loaded.path), "stream": params["stream_arg"], "rows": params["rows"],
                        "seed": params["seed"], "label_delay": params["label_delay"] or "stream's",
                        "bootstrap_rows": params["bootstrap_rows"], "tick_every": params["tick_every"]},
                tags={"driftpilot.backtest": summary["stream"]["name"]},
                artifacts=[files.summary, files.plot])
    except SystemExit:
        click.echo(f"(the report files were written to {files.summary.parent} before MLflow failed)", err=True)
        raise
    click.echo(f"logged to MLflow {policy.mlflow.tracking_uri}: run {run_id} ({run_key}) in experiment "
               f"{policy.experiment}/decisions")


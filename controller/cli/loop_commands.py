"""The decision loop from the command line: ``run`` (the daemon), ``status``, ``decisions``, and the manual verbs
``retrain``, ``promote`` and ``rollback`` — which go through the same controller code as the daemon."""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from controller.cli.common import CONFIG_OPTION, SINGLE_CONFIG, clear_errors, fail, load_all, load_one
from controller.cli.group import main


def _open(loaded: Any, clock: Any) -> tuple[Any, Any]:
    from controller.actions.model_registry import open_registry
    from controller.store import EventStore

    return EventStore.from_url(loaded.config.storage.url, clock), open_registry(loaded.config, clock)


def _controller(loaded: Any, *, owner: str | None = None) -> Any:
    from controller.clock import SystemClock
    from controller.loop.controller import Controller
    from controller.store.control import Leases

    clock = SystemClock()
    store, registry = _open(loaded, clock)
    return Controller(loaded, store, registry, clock, leases=Leases(store, clock),
                      owner=owner or f"cli:{os.getpid()}")


@main.command("run")
@CONFIG_OPTION
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--no-api", is_flag=True, help="Run only the controller loop (no HTTP API in this process).")
@click.option("--scheduler-db", default=None,
              help="SQLAlchemy URL of the scheduler's job store (default: sqlite:///.driftpilot/scheduler.db).")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1),
              help="Training worker processes at most at once.")
@click.pass_context
def run_command(ctx: click.Context, config_paths: tuple[Path, ...], host: str, port: int, no_api: bool,
                scheduler_db: str | None, workers: int) -> None:
    """Run the daemon: the API plus a scheduler that ticks every model (monitors -> rules -> retrain -> gate ->
    promotion / rollback). SIGTERM or Ctrl-C stops it gracefully."""
    from controller.actions.model_registry import RegistryChampionSource
    from controller.clock import SystemClock
    from controller.loop.daemon import (
        Daemon,
        default_scheduler_url,
        keep_running_after_uvicorn_signals,
        open_registries,
    )

    clock = SystemClock()
    policies = load_all(config_paths)
    log = logging.getLogger("driftpilot")
    with clear_errors():
        registries = open_registries(policies, clock)  # an MLflow that is down fails its model's ticks, not the start
        if no_api:
            from controller.store import EventStore

            urls: dict[str, EventStore] = {}
            stores = {p.config.model: urls.setdefault(p.config.storage.url,
                                                      EventStore.from_url(p.config.storage.url, clock))
                      for p in policies}
            runtimes = None
        else:
            from controller.api.service import build_runtimes

            runtimes = build_runtimes(policies, clock, champion_sources=lambda loaded: RegistryChampionSource(
                registries[loaded.config.model]))
            stores = {model: rt.store for model, rt in runtimes.items()}
        daemon = Daemon(policies, stores, registries, clock, scheduler_url=scheduler_db or default_scheduler_url(),
                        max_workers=workers)
    daemon.start()
    try:
        if runtimes is None:
            daemon.wait()
            return
        import uvicorn

        from controller.api.app import create_app
        from controller.api.service import reload_interval
        from controller.api.serving import ChampionWatcher

        for rt in runtimes.values():
            try:
                rt.champion.refresh()
            except Exception as exc:  # noqa: BLE001 - /predict answers 503 until a champion loads
                log.warning("no champion loaded for %s yet: %s", rt.name, exc)
        # The API in this process reads the live state the ticks publish through the store, as a replica would.
        watcher = ChampionWatcher({name: rt.champion for name, rt in runtimes.items()},
                                  interval=reload_interval(policies))
        watcher.start()
        level = ctx.find_root().params["log_level"].lower()
        try:
            # uvicorn handles SIGTERM/SIGINT: it returns, and the daemon stops below.
            keep_running_after_uvicorn_signals()  # else uvicorn re-raises SIGTERM and kills us before daemon.stop()
            uvicorn.run(create_app(runtimes, clock), host=host, port=port, log_level=level,
                        access_log=level == "debug")
        finally:
            watcher.stop()
    finally:
        daemon.stop()


@main.command("status")
@SINGLE_CONFIG
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status_command(config_path: Path, as_json: bool) -> None:
    """Champion, challenger, the decision in flight, last signals, last decisions and label coverage; with a race, the
    state serving now (the online champion continued in service), the standings and the racers that left."""
    from controller.loop.state import load_state
    from controller.store.control import DecisionLog, Leases

    loaded = load_one(config_path)
    policy = loaded.config
    with clear_errors():
        controller = _controller(loaded)
        store, registry = controller.store, controller.registry
        aliases = registry.aliases(policy.registered_model)
        state = load_state(store, policy.model)
        decisions = DecisionLog(store, controller.clock)
        lease = Leases(store, controller.clock).current(policy.model)
        stats = store.label_stats(policy.model)
        body = {
            "model": policy.model, "aliases": aliases,
            "in_flight": (decisions.in_flight(policy.model) or _Absent()).to_dict(),
            "controller": {"lease": lease.holder if lease else None,
                           "lease_expires": lease.expires_at.isoformat() if lease else None,
                           "last_tick": state.last_tick.isoformat() if state.last_tick else None,
                           "failures": state.failures, "last_error": state.last_error,
                           "retry_at": state.retry_at.isoformat() if state.retry_at else None,
                           "probation": _probation(state.probation)},
            "rows": {"unlearned": state.unlearned, "since_last_retrain": state.new_labels},
            "labels": stats.to_dict(),
            "signals": {kind: _signal_line(signal) for kind, signal in state.signals.items()},
            "last_decisions": [d.to_dict() for d in decisions.list(policy.model, limit=5)],
        }
        if policy.race is not None:
            body["race"] = _race_status(store, policy.model, controller.clock.now(), aliases.get("champion"))
    if as_json:
        click.echo(json.dumps(body, indent=2, default=str))
        return
    click.echo(f"model {policy.model}: " + (", ".join(f"{a} v{v}" for a, v in sorted(aliases.items()))
                                            or "no versions yet (driftpilot bootstrap)"))
    ctl = body["controller"]
    click.echo(f"controller: {'lease held by ' + ctl['lease'] if ctl['lease'] else 'no daemon holds the lease'}"
               f"; last tick {ctl['last_tick'] or 'never'}"
               + (f"; {ctl['failures']} failed tick(s), retry at {ctl['retry_at']}: {ctl['last_error']}"
                  if ctl["failures"] else "")
               + (f"; probation of v{ctl['probation']['version']} until {ctl['probation']['until']}"
                  if ctl["probation"] else ""))
    flight = body["in_flight"]
    click.echo("in flight: " + (f"{flight['decision_id']} ({flight['status']}, {flight['strategy']}, "
                                f"challenger v{flight['challenger_version']})" if flight else "nothing"))
    labels = body["labels"]
    coverage = f"{labels['coverage']:.1%}" if labels["coverage"] is not None else "n/a"
    click.echo(f"labels: {labels['labeled']} of {labels['predictions']} predictions labeled ({coverage}), "
               f"{labels['pending']} pending; delay p50 {labels['label_delay_seconds']['p50']} s; "
               f"{state.unlearned} matured rows the champion has not learned")
    for kind, line in body["signals"].items():
        click.echo(f"signal {kind}: {line}")
    if "race" in body:
        for line in _race_lines(body["race"]):
            click.echo(line)
    click.echo("last decisions:")
    for d in body["last_decisions"]:
        click.echo("  " + _decision_line(d))


@main.command("decisions")
@SINGLE_CONFIG
@click.option("--since", default=None, help="Only decisions since: a duration back from now (1d, 12h) or an ISO time.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines with the full evidence.")
def decisions_command(config_path: Path, since: str | None, limit: int, as_json: bool) -> None:
    """The decision log, newest first: trigger, rule, action, strategy, verdict, versions and status."""
    from controller.clock import SystemClock
    from controller.store import EventStore
    from controller.store.control import DecisionLog

    policy = load_one(config_path).config
    clock = SystemClock()
    cut = _since(since, clock.now()) if since else None
    with clear_errors():
        rows = DecisionLog(EventStore.from_url(policy.storage.url, clock), clock).list(policy.model, since=cut,
                                                                                      limit=limit)
    if as_json:
        for decision in rows:
            click.echo(json.dumps(decision.to_dict(), default=str))
        return
    if not rows:
        click.echo("no decisions yet" + (f" since {cut.isoformat()}" if cut else ""))
    for decision in rows:
        click.echo(_decision_line(decision.to_dict()))


@main.command("retrain")
@SINGLE_CONFIG
@click.option("--strategy", default="auto", show_default=True,
              type=click.Choice(["auto", "stateless", "finetune", "incremental"]),
              help="auto chooses from the evidence; stateless: a fresh model; finetune: continue the champion.")
@click.option("--window", default=None,
              help="Stateless window: all, since_drift, last_rows=N or last_duration=7d (default: the policy's).")
def retrain_command(config_path: Path, strategy: str, window: str | None) -> None:
    """Retrain now, by hand: one decision through the same loop as the daemon (challenger(s) from the candidate
    pool, then the promotion gate). With a daemon running, the request is queued for its next tick."""
    from controller.loop.rules import ManualRequest
    from controller.loop.state import request_manual

    loaded = load_one(config_path)
    with clear_errors():
        controller = _controller(loaded)
        now = controller.clock.now()
        request = ManualRequest(requested_at=now, strategy=strategy, window=_window(window),
                                note="driftpilot retrain")
        request_manual(controller.store, loaded.config.model, request)
        report = controller.tick(now)
        if report.skipped and report.skipped.startswith("lease held"):
            click.echo(f"queued: a daemon holds {loaded.config.model} ({report.skipped}); it acts on its next tick. "
                       "Follow it with `driftpilot decisions`.")
            return
        controller.leases.release(loaded.config.model, controller.owner)
    if report.error:
        fail(report.error)
    for line in report.events:
        click.echo(line)
    refused = [s for s in report.suppressed if s["trigger"] == "manual"]
    if refused:
        fail(f"not retrained: {refused[0]['detail']}")
    if not report.decisions and not report.events:
        fail(report.skipped or "nothing was started; see `driftpilot decisions`")
    decision = controller.decisions.get(report.decisions[-1]) if report.decisions else None
    if decision is not None:
        click.echo(_outcome(decision))


@main.command("promote")
@SINGLE_CONFIG
@click.option("--version", default=None, help="Version to promote (default: the challenger).")
@click.option("--force", is_flag=True, help="Promote even if the gate says no (the override is recorded).")
def promote_command(config_path: Path, version: str | None, force: bool) -> None:
    """Make a version champion through the promotion gate (same matured rows, margin, significance)."""
    loaded = load_one(config_path)
    with clear_errors():
        decision, verdict = _controller(loaded).promote_by_hand(version, force=force)
    click.echo(f"gate: {verdict.verdict} — {verdict.reason}")
    if decision.status == "done" and decision.verdict != "promote" and not force:
        fail(f"not promoted (decision {decision.decision_id}); promote anyway with --force")
    forced = " (forced: the gate said " + verdict.verdict + ")" if verdict.verdict != "promote" else ""
    click.echo(f"version {decision.challenger_version} is champion{forced}; previous is version "
               f"{decision.champion_version} (decision {decision.decision_id})")


@main.command("rollback")
@SINGLE_CONFIG
def rollback_command(config_path: Path) -> None:
    """Make the previous champion champion again (recorded as a decision)."""
    from lineage import LineageError

    loaded = load_one(config_path)
    try:
        with clear_errors():
            decision = _controller(loaded).rollback_by_hand()
    except LineageError as exc:  # pragma: no cover - clear_errors turns it into a message
        fail(str(exc))
    click.echo(f"version {decision.challenger_version} is champion again (was version {decision.champion_version}; "
               f"decision {decision.decision_id})")


# ---------------------------------------------------------------------------------------------------------- helpers


class _Absent:
    def to_dict(self) -> None:
        return None


def _probation(probation: Any) -> dict[str, Any] | None:
    if probation is None:
        return None
    return {"version": probation.version, "previous": probation.previous, "until": probation.until.isoformat(),
            "decision_id": probation.decision_id}


def _signal_line(signal: dict[str, Any]) -> str:
    kind = signal.get("kind")
    at = signal.get("at", "")
    if not signal.get("enabled", True):
        return "disabled"
    if kind == "data_drift":
        return (f"{signal.get('verdict')}: drift share {signal.get('drift_share'):.2f} "
                f"({', '.join(f['feature'] for f in signal.get('features', []) if f.get('drifted')) or 'none'}) "
                f"at {at}")
    if kind == "concept_drift":
        return (f"{'DRIFT' if signal.get('drift') else 'warning' if signal.get('warning') else 'ok'} "
                f"({signal.get('detector')}, {signal.get('rows_seen')} rows since reset) at {at}")
    if kind == "performance":
        value = signal.get("value")
        return (f"{signal.get('verdict')}: {signal.get('metric')} "
                f"{value if value is None else round(value, 4)} vs reference {signal.get('reference')} "
                f"on {signal.get('rows')} rows at {at}")
    return json.dumps(signal, default=str)


def _decision_line(d: dict[str, Any]) -> str:
    versions = f"v{d['champion_version']}" + (f" vs v{d['challenger_version']}" if d.get("challenger_version")
                                              else "")
    verdict = f" -> {d['verdict']}" if d.get("verdict") else ""
    error = f": {d['error']}" if d.get("error") else ""
    race = _race_detail(d)
    if d.get("trigger") == "race" and d.get("challenger_version"):
        # A race switch or checkpoint is done when recorded: the alias moved from the first version to the second.
        versions, verdict = f"v{d['champion_version']} -> v{d['challenger_version']}", ""
    return (f"{d['created_at'][:19]}  {d['decision_id']:<22} {d['status']:<9} {d['action']:<10} "
            f"{d['trigger']:<16} rule={d.get('rule') or '-'} strategy={d.get('strategy') or '-'} {versions}"
            f"{verdict}{race}{error}")


def _race_detail(d: dict[str, Any]) -> str:
    """Why the race moved the champion, from the decision's evidence (empty for every other decision)."""
    evidence = d.get("evidence") or {}
    race = evidence.get("race") or {}
    if d.get("trigger") != "race":  # a retrain whose challengers entered the race instead of facing the gate
        return f" (joined the race: v{', v'.join(race['entered'])})" if race.get("entered") else ""
    if d.get("action") == "checkpoint":
        return (f" (checkpoint of the serving racer {evidence.get('racer', '?')}, {evidence.get('learned', '?')} "
                "labels learned)")
    switch = race
    if "challenger" not in switch:
        return ""
    metric = switch.get("metric") or "metric"
    what = "re-promoted" if switch.get("re_promoted") else "promoted"
    return (f" ({what} {switch['challenger']} [{switch.get('challenger_kind', '?')}, "
            f"{switch.get('challenger_origin', '?')}] over {switch.get('champion')}: {metric} "
            f"{_num(switch.get('challenger_metric'))} vs {_num(switch.get('champion_metric'))} on "
            f"{switch.get('rows')} paired rows, evidence {_num(switch.get('evidence'))} >= threshold "
            f"{_num(switch.get('threshold'))} (K={switch.get('k')}, alpha={switch.get('alpha')}))")


def _race_status(store: Any, model: str, now: datetime, champion: str | None) -> dict[str, Any]:
    """The state serving now and the standings (as of the race's last save), for ``status``."""
    from controller.api.serving import StoreLiveState, UnreadableState
    from controller.race.saved_state import read_standings

    live = StoreLiveState(store, model)
    written = live.written_at()
    served: dict[str, Any] | None = None
    if written is not None:
        served = {"updated_at": written.isoformat(), "age_s": round((now - written).total_seconds(), 3)}
        try:
            state = live.read()
        except UnreadableState as exc:
            served["error"] = str(exc)
        else:
            served.update(version=state.version, racer=state.racer, through_seq=state.through_seq,
                          serving=state.version == champion)
    return {"served": served, "standings": read_standings(store, model)}


def _race_lines(race: dict[str, Any]) -> list[str]:
    served, standings = race["served"], race["standings"]
    if served is None:
        lines = [("served state: none published yet (the registered champion serves until the daemon publishes the "
                  "state of an online champion)")]
    elif "error" in served:
        lines = [f"served state: updated {_ago(served['age_s'])}, unreadable here: {served['error']}"]
    else:
        lines = [f"served state: v{served['version']} continued by {served['racer']} through label seq "
                 f"{served['through_seq'] if served['through_seq'] is not None else '-'}, updated "
                 f"{_ago(served['age_s'])}"
                 + ("" if served["serving"] else " (not served: the champion alias names another version, which "
                                                  "serves as registered until its own state is published)")]
    if standings is None:
        return [*lines, "race: not started yet (it starts on the daemon's first tick with a champion)"]
    lines.append(f"race on {standings['metric']} as of {standings['as_of'][:19]}: champion {standings['champion']}; "
                 f"a challenger takes over at evidence >= {_num(standings['threshold'])} (K/alpha, "
                 f"K={standings['k']}, alpha={standings['alpha']})")
    header = ("racer", "kind", "origin", "version", f"rolling {standings['metric']}", "rows scored",
              "evidence / threshold")
    rows = [header]
    for r in standings["racers"]:
        evidence = ("champion" if r["champion"] else
                    f"{_num(r['evidence'])} / {_num(r['threshold'])}" if r["evidence"] is not None else "-")
        rolling = f"{_num(r['rolling'])} ({r['rolling_rows']})" if r["rolling"] is not None else "-"
        rows.append((r["racer"] + (" *" if r["champion"] else ""), r["kind"], r["origin"],
                     f"v{r['version']}" if r["version"] else "-", rolling, str(r["scored"]),
                     evidence + (f"  {r['note']}" if r.get("note") else "")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1]
              for row in rows]
    left = standings.get("left") or []
    lines.append("left the race: " + ("; ".join(f"{d['key']} ({d['reason']})" for d in reversed(left))
                                      if left else "none"))
    return lines


def _num(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _ago(seconds: float) -> str:
    """3 s ago, 4 min ago, 2.5 h ago, 3.0 d ago: enough to tell a live state from a stale one."""
    if seconds < 0:  # written on another host whose clock is ahead of this one
        return f"{-seconds:.0f} s in the future (the writer's clock is ahead of this one)"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} d ago"


def _outcome(decision: Any) -> str:
    """One line on where a manual retrain left the model."""
    if decision.status == "failed":
        return f"decision {decision.decision_id} failed: {decision.error}"
    if decision.verdict == "promote":
        return (f"champion is now version {decision.challenger_version} (was version {decision.champion_version}); "
                "probation has started")
    if decision.verdict == "hold":
        return (f"version {decision.challenger_version} is held: the gate waits for more matured labels; the daemon "
                "judges it again on later ticks (or run `driftpilot promote` later)")
    if decision.verdict == "reject":
        return (f"champion stays version {decision.champion_version}; version {decision.challenger_version} is the "
                "challenger. Re-judge it later with `driftpilot promote`, or override the gate with "
                f"`driftpilot promote --version {decision.challenger_version} --force`")
    return f"decision {decision.decision_id}: {decision.status}"


def _since(text: str, now: datetime) -> datetime:
    try:
        from trainers.windows import parse_duration

        return now - parse_duration(text)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(f"{text!r} is neither a duration (1d, 12h) nor an ISO time "
                                 "(2026-01-31T12:00:00)", param_hint="--since") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _window(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    if text in ("all", "since_drift"):
        return {"kind": text}
    key, _, value = text.partition("=")
    if key == "last_rows" and value.isdigit():
        return {"kind": "last_rows", "rows": int(value)}
    if key == "last_duration" and value:
        return {"kind": "last_duration", "duration": value}
    raise click.BadParameter(f"{text!r}: write all, since_drift, last_rows=N or last_duration=7d",
                             param_hint="--window")

"""What the demo prints at the end: the story (how the daemon answered each change of concept, and whether a past
version came back), the accuracy each version served per concept, the decisions, the aliases, the lineage tree and
where to look next."""

from __future__ import annotations

import collections
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from controller.cli.common import clear_errors
from controller.cli.demo.screen import Screen
from controller.cli.demo.stream import BATCH


def story(screen: Screen, seconds: float) -> None:
    """How the daemon answered each change of concept, in rows and seconds; whether a past version came back."""
    click.echo(f"\nthe story (labels arrive {screen.label_delay:g} s after their rows; the daemon ticks every "
               "second)")
    came_back: str | None = None
    starts = [next((t for row, t in screen.sent if row >= c.start), None) for c in screen.concepts]
    for n, concept in enumerate(screen.concepts[1:], start=1):
        at = starts[n]
        verb = "arrived" if concept.name != "A" else "returned"
        if at is None:
            click.echo(f"  concept {concept.name} never {verb} (the traffic stopped before row {concept.start:,})")
            continue
        # The switches made after this concept's first labels could arrive and before the next concept's could.
        after = at + timedelta(seconds=screen.label_delay)
        following = starts[n + 1] if n + 1 < len(starts) else None
        until = following + timedelta(seconds=screen.label_delay) if following is not None else None
        answers = [s for s in screen.switches if s.at >= after and (until is None or s.at < until)]
        if not answers:
            click.echo(f"  concept {concept.name} {verb} at row {concept.start:,}: no switch followed; "
                       f"v{_serving_at(screen, concept.start)} kept serving")
            continue
        # The answer to a returning concept is the version that knew it coming back; otherwise the first switch.
        back = [s for s in answers if s.re_promoted and screen.knew.get(s.version) == concept.name]
        main = back[0] if back else answers[0]
        if back and concept.name == "A":
            came_back = main.version
        delay = (main.at - at).total_seconds()
        served = next((row for row, v in screen.served_from if v == main.version and row >= main.row - BATCH), None)
        what = (f"{main.winner} re-promoted over {main.loser}, without training," if main.re_promoted
                else f"{main.winner} took over from {main.loser}")
        click.echo(f"  concept {concept.name} {verb} at row {concept.start:,}: {what} after {delay:.1f} s / "
                   f"{max(main.row - concept.start, 0):,} rows (label delay {screen.label_delay:g} s + "
                   f"{max(delay - screen.label_delay, 0):.1f} s)"
                   + (f"; served from row {served:,}" if served is not None else ""))
        for other in answers:
            if other is not main:
                click.echo(f"    {'before' if other.at < main.at else 'then'}: {other.winner} replaced "
                           f"{other.loser} after {(other.at - at).total_seconds():.1f} s"
                           + (" (re-promoted)" if other.re_promoted else ""))
    if came_back:
        click.echo(f"  a past version re-promoted when its concept returned: yes, v{came_back} (it knew concept "
                   "A), without any training")
    else:
        click.echo("  a past version re-promoted when its concept returned: NO, not in this run (the version that "
                   "knew concept A did not win the race back; see the decisions and the racers above)")
    click.echo(f"  the demo took {seconds:.0f} s")


def _serving_at(screen: Screen, row: int) -> str:
    """The version serving at traffic ``row``."""
    version = screen.served_from[0][1] if screen.served_from else "?"
    for start, v in screen.served_from:
        if start > row:
            break
        version = v
    return version


def summary(screen: Screen, policy: Any, registry: Any, folder: Path, demo_policy: Path) -> None:
    from controller.cli.lineage_view import lineage_rows, render_tree

    labels = list(dict.fromkeys(c.label for c in screen.concepts))
    click.echo("\nserved accuracy (natural labels), by version and by concept")
    click.echo(f"  {'version':<8}" + "".join(f" {'concept ' + label:>16}" for label in labels))
    for version in sorted({v for v, _ in screen.tally}, key=int):
        cells = []
        for label in labels:
            right, total = screen.tally.get((version, label), [0, 0])
            cells.append(f"{right / total:.3f} ({total:,})" if total else "-")
        click.echo(f"  v{version:<7}" + "".join(f" {cell:>16}" for cell in cells))
    rows = [d for d in reversed(screen.log.list(policy.model, limit=None)) if d.action != "tick"]
    counts = collections.Counter((d.action, d.trigger if d.trigger == "race" else d.rule or "-", _outcome(d))
                                 for d in rows)
    click.echo("\ndecisions")
    click.echo(f"  {'action':<12} {'by':<16} {'outcome':<16} count")
    for (action, by, outcome), n in sorted(counts.items()):
        click.echo(f"  {action:<12} {by:<16} {outcome:<16} {n}")
    aliases = registry.aliases(policy.registered_model)
    click.echo("  aliases: " + ", ".join(f"{a} v{v}" for a, v in sorted(aliases.items())))
    click.echo("\nlineage")
    with clear_errors():
        click.echo(render_tree(lineage_rows(registry, policy.registered_model)))
    shown = demo_policy.relative_to(Path.cwd()) if demo_policy.is_relative_to(Path.cwd()) else demo_policy
    click.echo(f"\nbrowse lineage and comparisons:  .venv/bin/mlflow ui --backend-store-uri "
               f"{policy.mlflow.tracking_uri}\n"
               f"decisions with their evidence:   .venv/bin/driftpilot decisions --config {shown}\n"
               f"the race's standings now:        .venv/bin/driftpilot status --config {shown}\n"
               f"the daemon's log:                {folder / 'daemon.log'}")
    if not screen.switches:
        click.echo("note: the champion never changed in this run (no racer or challenger won the race)")


def _outcome(d: Any) -> str:
    """A decision's outcome in a word; a retrain's challengers join the race or are not admitted to it."""
    if d.action == "retrain" and d.status == "done" and "race" in d.evidence:
        return "joined the race" if d.evidence["race"].get("entered") else "not admitted"
    if d.trigger == "race" and d.action in ("promote", "rollback"):
        return "switch"
    return d.verdict or d.status

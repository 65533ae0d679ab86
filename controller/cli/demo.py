"""``driftpilot demo``: the whole loop on this machine in about two minutes.

It bootstraps a champion (v1) on concept A of River's Agrawal generator, starts ``driftpilot run`` (API + decision
loop) as a subprocess on the embedded default (SQLite + local MLflow store in ``.driftpilot/demo``), and plays
production: rows are sent to ``/predict`` now and their natural labels to ``/labels`` a little later. The stream goes
A -> B -> A (classification function 0 -> 2 -> 0). The policy (``config/demo.yaml``) has a ``race:`` section: online
learners race the champion on the natural labels and take over when an anytime-valid test says so; batch retrains
join the race as challengers; when A comes back, the version that knew it can win again without any training.

The screen shows the traffic's progress with the live accuracy, each decision the daemon takes as it takes it, and
the race's standings (``controller.race.driver.read_standings``) at each change of concept, after each switch and
every few seconds in between. At the end: how long each response took after the concept changed, whether a past
version was re-promoted, the accuracy each version served per concept, the lineage tree and the ``mlflow ui`` command.
"""

from __future__ import annotations

import bisect
import collections
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from controller.cli.common import clear_errors, fail, load_one
from controller.cli.group import main
from controller.loop.results import challengers

DEMO_POLICY = Path(__file__).resolve().parents[2] / "config" / "demo.yaml"
BATCH = 100
#: Seconds between two standings tables when nothing else printed one (a switch or a change of concept does).
TABLE_EVERY = 10.0
#: How the racers' origins read in the table.
ORIGINS = {"policy": "online learner", "champion": "champion when the race began",
           "retrain": "retrained challenger", "past": "past champion"}


@dataclass(frozen=True)
class Concept:
    """One stretch of the traffic: Agrawal classification ``function`` from traffic row ``start`` on."""

    name: str       # "A", "B"
    label: str      # how the summary names the stretch: "A", "B", "A again"
    function: int
    start: int


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
    frame = _stream(policy, bootstrap_rows, rows, concepts, seed=7)
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

    port = _free_port()
    log_path = folder / "daemon.log"
    daemon = _start_daemon(config_path, port, folder, log_path)
    screen = Screen(store, DecisionLog(store, clock), policy.model, concepts, label_delay,
                    bootstrap=str(result.version), knew={str(result.version): "A"})
    traffic = frame.iloc[bootstrap_rows:].reset_index(drop=True)
    try:
        base = f"http://127.0.0.1:{port}/v1/models/{policy.model}"
        with httpx.Client(timeout=30) as client:
            _wait_ready(client, port, daemon, log_path)
            pending: collections.deque[tuple[float, list[dict[str, Any]]]] = collections.deque()
            recent: collections.deque[int] = collections.deque(maxlen=500)
            started = time.monotonic()
            with tqdm(total=len(traffic), desc="traffic", unit="row", dynamic_ncols=True) as bar:
                screen.write = bar.write
                for i in range(0, len(traffic), BATCH):
                    part = traffic.iloc[i:i + BATCH]
                    screen.before_batch(i)
                    answer = _post(client, f"{base}/predict", {"items": [
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
                        _post(client, f"{base}/labels", {"items": pending.popleft()[1]})
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
                    _post(client, f"{base}/labels", {"items": pending.popleft()[1]})
            screen.write = click.echo
            _settle(store, screen, policy.model, daemon)
            screen.table(f"racers at the end of the traffic ({len(traffic):,} rows)")
    finally:
        _stop(daemon)
    screen.story(time.monotonic() - began)
    _summary(screen, policy, registry, folder)


def _stream(policy: Any, bootstrap_rows: int, rows: int, concepts: list[Concept], *, seed: int) -> Any:
    """The bootstrap rows (concept A) then the traffic, concept after concept, as one frame with the policy's
    target name; categorical features as strings (as a client would send them)."""
    import pandas as pd
    from river import datasets

    def generator(function: int, offset: int) -> Any:
        return iter(datasets.synth.Agrawal(classification_function=function, seed=seed + offset, perturbation=0.05))

    first = generator(concepts[0].function, 0)
    parts = [itertools.islice(first, bootstrap_rows)]
    ends = [c.start for c in concepts[1:]] + [rows]
    for n, (concept, end) in enumerate(zip(concepts, ends, strict=True)):
        source = first if n == 0 else generator(concept.function, n)  # the bootstrap's concept A continues
        parts.append(itertools.islice(source, end - concept.start))
    pairs = list(itertools.chain(*parts))
    frame = pd.DataFrame([x for x, _ in pairs])
    for name, kind in policy.feature_types.items():
        if kind == "categorical":
            frame[name] = frame[name].astype(str)
    frame[policy.target.name] = [int(y) for _, y in pairs]
    return frame


@dataclass
class Switch:
    """A change of champion the demo saw: a race switch, or a promotion / rollback through the gate or by hand."""

    at: datetime
    row: int                 # traffic rows sent when the daemon decided
    champion: str            # the version it replaced
    version: str             # the version that serves from then on
    winner: str              # how to name the new champion: "hat (v2)", "v1"
    loser: str               # and the one it replaced
    re_promoted: bool


@dataclass
class Screen:
    """What the demo prints while the traffic runs, and what it remembers for the summary."""

    store: Any
    log: Any
    model: str
    concepts: list[Concept]
    label_delay: float
    bootstrap: str                            # the bootstrap version (trained on concept A)
    knew: dict[str, str]                      # version -> the concept it was trained on, or first served
    write: Any = click.echo
    seen: dict[str, str] = field(default_factory=dict)
    sent: list[tuple[int, datetime]] = field(default_factory=list)        # (first row of a batch, when it was sent)
    served_from: list[tuple[int, str]] = field(default_factory=list)      # (row, version) when the version changed
    first_served: dict[str, datetime] = field(default_factory=dict)       # version -> when /predict first named it
    rows_by_id: dict[str, int] = field(default_factory=dict)              # prediction id -> traffic row
    tally: collections.defaultdict = field(default_factory=lambda: collections.defaultdict(lambda: [0, 0]))
    switches: list[Switch] = field(default_factory=list)
    racers: dict[str, str] = field(default_factory=dict)                  # racer -> origin, as last shown
    left: set = field(default_factory=set)
    shown_as_of: str | None = None
    next_table: float = 0.0
    next_standings: float = 0.0
    row: int = 0

    def concept_at(self, row: int) -> Concept:
        return [c for c in self.concepts if c.start <= row][-1]

    def before_batch(self, row: int) -> None:
        self.sent.append((row, datetime.now(UTC)))
        self.row = row
        for concept in self.concepts[1:]:
            if row <= concept.start < row + BATCH:
                self.write(f"\n== traffic row {concept.start:,}: concept {concept.name} "
                           f"{'arrives' if concept.name != 'A' else 'returns'} (Agrawal function {concept.function}); "
                           f"its labels follow {self.label_delay:g} s later ==")
                self.table(f"racers as concept {concept.name} {'arrives' if concept.name != 'A' else 'returns'}")

    def after_batch(self, row: int, version: str, hits: list[int], ids: list[str]) -> None:
        self.rows_by_id.update((pid, row + k) for k, pid in enumerate(ids))
        if not self.served_from or self.served_from[-1][1] != version:
            self.served_from.append((row, version))
        self.first_served.setdefault(version, datetime.now(UTC))
        self.knew.setdefault(version, self.concept_at(row).name)
        label = self.concept_at(row).label
        self.tally[(version, label)][0] += sum(hits)
        self.tally[(version, label)][1] += len(hits)

    def poll(self) -> None:
        """New decisions (each printed once, and again when what is said about it changes); racers that joined or
        left; the standings table when it is due."""
        # In the order things happened (a retrain that ended after a switch is told after it).
        for decision in sorted(self.log.list(self.model, limit=20), key=lambda d: d.updated_at or d.created_at):
            if decision.action == "tick":
                continue
            if decision.trigger == "race" and decision.decision_id in self.seen:
                continue  # a switch or a checkpoint is done when recorded: said once
            line = self._line(decision)
            if self.seen.get(decision.decision_id) == line:
                continue
            self.seen[decision.decision_id] = line
            if not line:
                continue
            when = decision.updated_at or decision.created_at
            self.write(f"  {when.astimezone():%H:%M:%S} {line}")
            if self._is_switch(decision):
                self.table(f"racers after the switch to v{decision.challenger_version}")
        now = time.monotonic()
        if now >= self.next_standings:
            self.next_standings = now + 1.0
            self._joins_and_leaves()
        if now >= self.next_table:
            self.table()

    def table(self, title: str | None = None) -> None:
        """The standings as saved by the daemon; a periodic table only when they changed since the last one."""
        standings = self._standings()
        scored = standings is not None and any(r["rolling"] is not None for r in standings["racers"])
        if not scored or (title is None and standings["as_of"] == self.shown_as_of):
            self.next_table = time.monotonic() + 1.0
            return
        self.shown_as_of = standings["as_of"]
        self.next_table = time.monotonic() + TABLE_EVERY
        concept = self.concept_at(self.row)
        title = title or f"racers at row {self.row:,} (concept {concept.name} since row {concept.start:,})"
        self.write(f"  {title}; {standings['metric']} on the last labeled rows, a challenger takes over at evidence "
                   f">= {_num(standings['threshold'])}")
        rows = [("", "racer", "kind", standings["metric"], "rows", "evidence / threshold")]
        for r in standings["racers"]:
            evidence = ("champion, serving" if r["champion"] else
                        f"{_num(r['evidence'])} / {_num(r['threshold'])} after {r['duel_rows']:,} rows"
                        if r["evidence"] is not None else "-")
            rows.append(("*" if r["champion"] else "", r["racer"], _kind(r, self.bootstrap), _fixed(r["rolling"]),
                         f"{r['rolling_rows']:,}", evidence + (f"  ({r['note']})" if r.get("note") else "")))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].ljust(widths[2]),
                     row[3].rjust(widths[3]), row[4].rjust(widths[4]), row[5]]
            self.write("    " + "  ".join(cells).rstrip())

    def _standings(self) -> dict[str, Any] | None:
        from controller.race.driver import read_standings

        return read_standings(self.store, self.model)

    def _joins_and_leaves(self) -> None:
        standings = self._standings()
        if standings is None:
            return
        now = {r["racer"]: r["origin"] for r in standings["racers"]}
        if self.racers:
            joined: dict[str, list[str]] = collections.defaultdict(list)
            for key in [k for k in now if k not in self.racers]:
                joined[ORIGINS.get(now[key], now[key])].append(key)
            for origin, keys in joined.items():
                self.write(f"  race: {', '.join(keys)} joined ({origin}{'s' if len(keys) > 1 else ''}, frozen)"
                           if origin != ORIGINS["policy"] else f"  race: {', '.join(keys)} joined ({origin})")
        left: dict[str, list[str]] = collections.defaultdict(list)
        for gone in standings.get("left") or []:
            mark = (gone["key"], gone["reason"])
            if mark not in self.left:
                self.left.add(mark)
                left[gone["reason"].split(":")[0]].append(gone["key"])
        for reason, keys in left.items():
            self.write(f"  race: {', '.join(keys)} left the race ({reason})")
        self.racers = now

    # ------------------------------------------------------------------------------------------- decision lines

    @staticmethod
    def _is_switch(d: Any) -> bool:
        return (d.action in ("promote", "rollback") and d.status == "done" and d.challenger_version is not None
                and d.champion_version != d.challenger_version)

    def _line(self, d: Any) -> str:
        head = f"{d.action} ({d.trigger}, rule {d.rule or '-'})"
        if d.trigger == "race" and d.action in ("promote", "rollback"):
            return self._race_switch(d)
        if d.action == "checkpoint":
            return (f"checkpoint: {d.evidence.get('racer', '?')} keeps learning in service; its state is registered "
                    f"as v{d.challenger_version} (continues v{d.champion_version}, "
                    f"{d.evidence.get('learned', 0):,} labels learned)")
        if d.action in ("retrain", "learn"):
            choice = d.evidence.get("strategy_choice", {})
            rationale = choice.get("rationale", "")
            body = f"{d.strategy}: {rationale[:140]}{'...' if len(rationale) > 140 else ''}"
            if d.status == "training":
                return f"{head} started, {body}"
            if d.status in ("failed", "superseded"):
                moved = [s for s in self.switches if d.created_at <= s.at <= (d.updated_at or s.at)]
                return (f"{head} {d.status}: {d.error}"
                        + (f" (the race made v{moved[-1].version} champion while it trained)" if moved else ""))
            race = d.evidence.get("race")
            if race is not None:
                trained = [str(c.version) for c in challengers(d.evidence) if c.ok]
                joined = (f"v{', v'.join(race['entered'])} joined the race as challenger(s)" if race.get("entered")
                          else "no challenger joined the race")
                refused = "; ".join(f"v{v} not admitted: {why}" for v, why in (race.get("refused") or {}).items())
                return f"{head} trained v{', v'.join(trained)}; {joined}" + (f"; {refused}" if refused else "")
            verdicts = d.evidence.get("gate", {}).get("verdicts", {})
            if d.status == "held" and not verdicts:
                return ""  # trained: the next tick enters its challengers into the race (or the gate judges them)
            reasons = "; ".join(f"v{v}: {x.get('reason')}" for v, x in verdicts.items())
            return f"{head} gate {d.verdict}: {reasons}"
        if d.action in ("promote", "rollback") and d.status == "done":
            self._remember(d, winner=None, loser=None, re_promoted=self._served_before(d))
            return f"{head}: v{d.champion_version} -> v{d.challenger_version}"
        return f"{head} {d.status}: {d.error or ''}".rstrip(": ")

    def _race_switch(self, d: Any) -> str:
        race = d.evidence.get("race", {})
        winner, loser = race.get("challenger", "?"), race.get("champion", "?")
        version = str(d.challenger_version)
        # A version that served before (or v1, bootstrapped on A) coming back is a re-promotion, whatever its origin
        # in the race (a champion that stayed in the race frozen after it was replaced comes back the same way).
        again = bool(race.get("re_promoted")) or self._served_before(d)
        loser_name = loser if loser == f"v{d.champion_version}" else f"{loser} (v{d.champion_version})"
        self._remember(d, winner=winner if winner == f"v{version}" else f"{winner} (v{version})", loser=loser_name,
                       re_promoted=again)
        metric = race.get("metric", "metric")
        rolling = {r["racer"]: r for r in d.evidence.get("standings", [])}
        mine, theirs = rolling.get(winner, {}), rolling.get(loser, {})
        concept = self.concept_at(self.row_at(d.created_at))
        since = self._since(concept, winner, loser) if concept.start > 0 else None
        if since is not None:
            compared = (f"{metric} {_fixed(since[1], 2)} vs {_fixed(since[2], 2)} on the {since[0]:,} labeled rows of "
                        f"concept {concept.name} so far")
        elif mine.get("rolling") is not None and theirs.get("rolling") is not None:
            compared = (f"{metric} {_fixed(mine['rolling'], 2)} vs {_fixed(theirs['rolling'], 2)} on the last "
                        f"{min(mine['rolling_rows'], theirs['rolling_rows']):,} labeled rows")
        else:
            compared = (f"{metric} {_fixed(race.get('challenger_metric'), 2)} vs "
                        f"{_fixed(race.get('champion_metric'), 2)}")
        text = (f"race: {winner} beat {loser_name} ({compared}; evidence {_num(race.get('evidence'))} >= "
                f"{_num(race.get('threshold'))} after {race.get('rows', 0):,} paired rows) -> ")
        if again:
            knew = self.knew.get(version)
            return text + (f"re-promoted v{version}" + (f" (it knew concept {knew})" if knew else "")
                           + ", without any training")
        if winner == f"v{version}":
            return text + f"promoted v{version}"
        return text + f"promoted as v{version}"

    def _since(self, concept: Concept, winner: str, loser: str) -> tuple[int, float, float] | None:
        """Rows of ``concept`` both racers were scored on (the race's outcome log), and their mean scores: what the
        switch was about, unlike a rolling window that still holds rows of the previous concept."""
        from controller.race.outcomes import decode

        frame = decode(self.store.race_outcome_blocks(self.model))
        if winner not in frame.columns or loser not in frame.columns:
            return None
        rows = frame["prediction_id"].map(self.rows_by_id)
        end = min([c.start for c in self.concepts if c.start > concept.start], default=float("inf"))
        both = frame.loc[rows.notna() & (rows >= concept.start) & (rows < end), [winner, loser]].dropna()
        if len(both) < 30:
            return None
        return len(both), float(both[winner].mean()), float(both[loser].mean())

    def _remember(self, d: Any, *, winner: str | None, loser: str | None, re_promoted: bool) -> None:
        if any(s.at == d.created_at and s.version == d.challenger_version for s in self.switches):
            return
        self.switches.append(Switch(at=d.created_at, row=self.row_at(d.created_at), champion=str(d.champion_version),
                                    version=str(d.challenger_version), winner=winner or f"v{d.challenger_version}",
                                    loser=loser or f"v{d.champion_version}", re_promoted=re_promoted))

    def _served_before(self, d: Any) -> bool:
        """The version a decision made champion had served before it (or is the bootstrap version): a comeback."""
        version = str(d.challenger_version)
        first = self.first_served.get(version)
        return version == self.bootstrap or (first is not None and first < d.created_at)

    def row_at(self, when: datetime) -> int:
        """Traffic rows sent by ``when``."""
        times = [t for _, t in self.sent]
        i = bisect.bisect_right(times, when)
        return self.sent[i - 1][0] + BATCH if i else 0

    # ---------------------------------------------------------------------------------------------- the story

    def story(self, seconds: float) -> None:
        """How the daemon answered each change of concept, in rows and seconds; whether a past version came back."""
        click.echo(f"\nthe story (labels arrive {self.label_delay:g} s after their rows; the daemon ticks every "
                   "second)")
        came_back: str | None = None
        starts = [next((t for row, t in self.sent if row >= c.start), None) for c in self.concepts]
        for n, concept in enumerate(self.concepts[1:], start=1):
            at = starts[n]
            verb = "arrived" if concept.name != "A" else "returned"
            if at is None:
                click.echo(f"  concept {concept.name} never {verb} (the traffic stopped before row {concept.start:,})")
                continue
            # The switches made after this concept's first labels could arrive and before the next concept's could.
            after = at + timedelta(seconds=self.label_delay)
            following = starts[n + 1] if n + 1 < len(starts) else None
            until = following + timedelta(seconds=self.label_delay) if following is not None else None
            answers = [s for s in self.switches if s.at >= after and (until is None or s.at < until)]
            if not answers:
                click.echo(f"  concept {concept.name} {verb} at row {concept.start:,}: no switch followed; "
                           f"v{self._serving_at(concept.start)} kept serving")
                continue
            # The answer to a returning concept is the version that knew it coming back; otherwise the first switch.
            back = [s for s in answers if s.re_promoted and self.knew.get(s.version) == concept.name]
            main = back[0] if back else answers[0]
            if back and concept.name == "A":
                came_back = main.version
            delay = (main.at - at).total_seconds()
            served = next((row for row, v in self.served_from if v == main.version and row >= main.row - BATCH), None)
            what = (f"{main.winner} re-promoted over {main.loser}, without training," if main.re_promoted
                    else f"{main.winner} took over from {main.loser}")
            click.echo(f"  concept {concept.name} {verb} at row {concept.start:,}: {what} after {delay:.1f} s / "
                       f"{max(main.row - concept.start, 0):,} rows (label delay {self.label_delay:g} s + "
                       f"{max(delay - self.label_delay, 0):.1f} s)"
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

    def _serving_at(self, row: int) -> str:
        version = self.served_from[0][1] if self.served_from else "?"
        for start, v in self.served_from:
            if start > row:
                break
            version = v
        return version


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
            fail(f"the daemon exited with code {daemon.returncode} before it served; see {log_path}")
        try:
            if client.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                return
        except Exception:  # noqa: BLE001,S110 - not listening yet
            pass
        time.sleep(0.2)
    fail(f"the daemon did not answer /readyz within 90 s; see {log_path}")


def _post(client: Any, url: str, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(url, json=body)
    if response.status_code != 200:
        fail(f"POST {url} answered {response.status_code}: {response.text[:300]}")
    return response.json()


def _settle(store: Any, screen: Screen, model: str, daemon: subprocess.Popen) -> None:
    """After the traffic: give the daemon up to half a minute to tick past the last labels sent (the race judges
    them), printing as it goes. A retrain still training then is not waited for: its challengers could only join a
    race that has no more traffic."""
    from controller.loop.state import load_state

    newest = store.labeled_count(model, datetime.now(UTC))[1]

    def behind() -> bool:
        cursor = load_state(store, model).label_cursor
        return newest is not None and (cursor is None or cursor < newest)

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and daemon.poll() is None and behind():
        screen.poll()
        time.sleep(0.5)
    screen.poll()
    training = screen.log.in_flight(model)
    if training is not None:
        screen.write(f"note: {training.action} {training.decision_id} (rule {training.rule}) was still "
                     f"{training.status} when the traffic ended; the demo does not wait for it")


def _stop(daemon: subprocess.Popen) -> None:
    if daemon.poll() is None:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)


def _summary(screen: Screen, policy: Any, registry: Any, folder: Path) -> None:
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
    shown = DEMO_POLICY.relative_to(Path.cwd()) if DEMO_POLICY.is_relative_to(Path.cwd()) else DEMO_POLICY
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


def _num(value: Any) -> str:
    """Evidence and thresholds: 3 significant digits (1.2e+07 when large)."""
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _kind(racer: dict[str, Any], bootstrap: str) -> str:
    """How a racer reads in the table: online learners with the version they were last registered as, frozen
    versions with where they come from."""
    if racer["kind"] == "online":
        return "online" + (f", registered as v{racer['version']}" if racer["version"] else "")
    if racer["origin"] == "champion" and racer["version"] == bootstrap:
        return "frozen, the bootstrap version"
    return f"frozen, {ORIGINS.get(racer['origin'], racer['origin'])}"


def _short(description: str) -> str:
    """river.tree.HoeffdingAdaptiveTreeClassifier -> HoeffdingAdaptiveTreeClassifier (each pipeline step)."""
    return " | ".join(step.rsplit(".", 1)[-1] for step in description.split(" | "))


def _fixed(value: Any, decimals: int = 3) -> str:
    return "-" if value is None else f"{value:.{decimals}f}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}

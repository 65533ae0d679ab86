"""What the demo prints while the traffic runs (the decisions as the daemon takes them, racers joining and leaving,
the race's standings), and what it remembers for the story and the summary (what was sent when, which version
served which rows, the switches)."""

from __future__ import annotations

import bisect
import collections
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import click

from controller.cli.demo.stream import BATCH, Concept
from controller.loop.results import challengers

#: Seconds between two standings tables when nothing else printed one (a switch or a change of concept does).
TABLE_EVERY = 10.0
#: How the racers' origins read in the table.
ORIGINS = {"policy": "online learner", "champion": "champion when the race began",
           "retrain": "retrained challenger", "past": "past champion"}


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
        from controller.race.saved_state import read_standings

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


def _fixed(value: Any, decimals: int = 3) -> str:
    return "-" if value is None else f"{value:.{decimals}f}"


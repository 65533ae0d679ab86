"""``Aliases``: the registered model's aliases as one controller reads and moves them, and its one way to MLflow's
registry.

Every alias move the loop makes goes through here (a gate promotion, a probation rollback, a race switch or
checkpoint, a person's promote or rollback), so each one is counted and the next read of the champion cannot trust the
alias from before it. A move made elsewhere shows as a change of the model's decision log (a `driftpilot promote` /
`rollback` run by another process, another daemon's decisions), or after ``ALIAS_REFRESH`` at the latest.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from controller.clock import Clock
from controller.store.control import DecisionLog
from lineage import AliasChange, ModelRegistry, VersionInfo

#: How long a tick trusts the champion alias it read last. Its own moves re-read it at once, and so does any change
#: of the model's decision log (a `driftpilot promote` / `rollback`, another daemon's decisions); this bounds how
#: late a move that leaves no decision is noticed (the MLflow UI, a raw MLflow client, `bootstrap --force`). The alias read is
#: eight MLflow statements, a third of an idle tick (docs/benchmarks-controller.md).
ALIAS_REFRESH = timedelta(minutes=5)


class Aliases:
    """The aliases of registered model ``name`` (policy model ``model``): the champion read cached, moves counted."""

    def __init__(self, registry: ModelRegistry, name: str, model: str, decisions: DecisionLog, clock: Clock) -> None:
        self.registry = registry
        self.name = name
        self.model = model
        self.decisions = decisions
        self.clock = clock
        # A version's lineage never changes: read it from MLflow once. Alias moves made here are counted, so a tick
        # re-reads the champion only when it moved it.
        self._versions: dict[str, VersionInfo] = {}
        self.moves = 0
        self._read: tuple[datetime, Any, str] | None = None  # (when, decision-log mark, champion version)

    def champion(self) -> VersionInfo | None:
        """The champion version with its lineage; None before the first bootstrap."""
        version = self._champion_alias()
        if version is None:
            return None
        if version not in self._versions:
            self._versions[version] = self.registry.get(self.name, version)
        return self._versions[version]

    def champion_version(self, *, recheck: bool = True) -> str | None:
        """The champion alias as this controller knows it (read again only when something may have moved it).
        ``recheck=False`` trusts what this controller read or moved last, without a store read: for a caller in the
        same thread right after a tick (the backtest), where nothing else moves the aliases."""
        if not recheck and self._read is not None and self._read[1][0] == self.moves:
            return self._read[2]
        return self._champion_alias()

    def current(self) -> dict[str, str]:
        """alias -> version, read from MLflow now."""
        return self.registry.aliases(self.name)

    # ------------------------------------------------------------------------------------------------- the moves

    def promote(self, version: str | None, *, decision_id: str, reason: str) -> AliasChange:
        change = self.registry.promote(self.name, version, decision_id=decision_id, reason=reason)
        self.moves += 1
        return change

    def advance(self, version: str, *, decision_id: str, reason: str) -> AliasChange:
        change = self.registry.advance(self.name, version, decision_id=decision_id, reason=reason)
        self.moves += 1
        return change

    def rollback(self, *, decision_id: str, reason: str) -> AliasChange:
        change = self.registry.rollback(self.name, decision_id=decision_id, reason=reason)
        self.moves += 1
        return change

    def set_challenger(self, version: str) -> AliasChange:
        """Not a move of the champion: nothing to re-read."""
        return self.registry.set_challenger(self.name, version)

    def _champion_alias(self) -> str | None:
        """The champion alias, re-read from MLflow only when something may have moved it (see ALIAS_REFRESH)."""
        now = self.clock.now()
        newest = self.decisions.newest_mark(self.model)
        # A hand promotion opens its decision before it moves the alias and marks it done after: the status is part
        # of the mark, so a read between the two is not trusted past the move.
        mark = (self.moves, *(newest or ()))
        cached = self._read
        if cached is not None and cached[1] == mark and now - cached[0] < ALIAS_REFRESH:
            return cached[2]
        version = self.registry.champion_version(self.name)
        # No champion yet is never cached: a bootstrap made by hand is picked up on the next tick.
        self._read = (now, mark, version) if version is not None else None
        return version

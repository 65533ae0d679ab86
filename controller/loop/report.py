"""``TickReport``: what one tick did, for logs, tests and backtests; every part of the tick notes its decisions here."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

log = logging.getLogger("driftpilot.loop")


@dataclass
class TickReport:
    """What one tick did, for logs, tests and backtests."""

    model: str
    now: datetime
    champion: str | None = None
    skipped: str | None = None
    signals: dict[str, Any] = field(default_factory=dict)
    proposal: dict[str, Any] | None = None
    suppressed: list[dict[str, Any]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    decisions: list[str] = field(default_factory=list)
    race: dict[str, Any] | None = None
    error: str | None = None

    def note(self, decision_id: str, text: str) -> None:
        if decision_id not in self.decisions:
            self.decisions.append(decision_id)
        self.events.append(text)
        log.info("%s: %s", self.model, text, extra={"model": self.model, "decision_id": decision_id})

    def to_dict(self) -> dict[str, Any]:
        body = asdict(self)
        body["now"] = self.now.isoformat()
        return body

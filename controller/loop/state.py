"""What the loop remembers about one model between ticks, stored as JSON in the store's ``controller_state``.

Cursors and counters let a tick cost what arrived since the last one; the rule state carries debounce streaks and
schedule due times; backoff and probation survive restarts like everything else.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any

from controller.loop.config import Action
from controller.loop.costs import StalenessLedger
from controller.loop.rules import ManualRequest, Proposal, RuleState
from controller.store import EventStore

STATE_KEY = "loop.state"
MANUAL_KEY = "loop.manual"


@dataclass
class Probation:
    decision_id: str
    version: str
    previous: str
    since_seq: int | None       # rows after this seq were served/matured after the promotion
    until: datetime                  # the earliest end: a verdict on min_rows rows after this ends it
    checked_seq: int | None = None   # the label cursor at the last check (a check needs new rows)
    ends_by: datetime | None = None  # the latest end (max_duration): passed without a verdict if rows are still few


@dataclass(frozen=True)
class DeferredProposal:
    """A proposal waiting for enough rows of the new concept (a since_drift retrain right after a drift). Stored in
    the loop state as ``{"rule", "trigger", "since" (ISO time), "action" (the Action's JSON), "evidence"}``."""

    rule: str
    trigger: str
    since: datetime                  # when it was first deferred (gate.max_hold counts from here)
    action: Action
    evidence: dict[str, Any]

    @classmethod
    def of(cls, proposal: Proposal, since: datetime) -> DeferredProposal:
        return cls(proposal.rule, proposal.trigger, since, proposal.action, proposal.evidence)

    def proposal(self) -> Proposal:
        """The proposal again, to start when the rows are there."""
        return Proposal(self.rule, self.trigger, self.action, self.evidence)

    def to_dict(self) -> dict[str, Any]:
        return {"rule": self.rule, "trigger": self.trigger, "since": self.since.isoformat(),
                "action": self.action.model_dump(mode="json"), "evidence": self.evidence}

    @classmethod
    def from_dict(cls, body: dict[str, Any] | None) -> DeferredProposal | None:
        if not body:
            return None
        return cls(body["rule"], body["trigger"], datetime.fromisoformat(body["since"]),
                   Action.model_validate(body["action"]), body["evidence"])


@dataclass
class LoopState:
    champion: str | None = None            # the champion version the cursors below belong to
    rules: RuleState = field(default_factory=RuleState)
    # Labeled rows counted incrementally: both counts grow by the rows after label_cursor on every tick.
    label_cursor: int | None = None
    unlearned: int = 0                     # rows after the champion's training window (its last label seq)
    new_labels: int = 0                    # rows after the last retrain's cut too (the volume trigger)
    last_retrain_seq: int | None = None
    traffic_after: datetime | None = None  # newest prediction event time seen by the data-drift check
    traffic_pending: int = 0               # predictions since the last data-drift check
    labels_pending: int = 0                # labeled rows since the last performance check
    failures: int = 0
    retry_at: datetime | None = None
    last_error: str | None = None
    probation: Probation | None = None
    # A proposal waiting for enough rows of the new concept (a since_drift retrain right after a drift).
    deferred: DeferredProposal | None = None
    last_tick: datetime | None = None
    signals: dict[str, Any] = field(default_factory=dict)   # the newest signal of each monitor, as JSON
    staleness: StalenessLedger = field(default_factory=StalenessLedger)  # the cost trigger's ledger

    def content(self) -> bytes:
        """The state without its ``last_tick``: equal before and after a tick that changed nothing."""
        body = self._body()
        body["last_tick"] = None
        return json.dumps(body, default=_encode, sort_keys=True).encode()

    def to_json(self) -> bytes:
        return json.dumps(self._body(), default=_encode).encode()

    def _body(self) -> dict[str, Any]:
        # Field by field, not dataclasses.asdict: asdict deep-copies the signals on every tick (3 ms of a 1-row tick).
        body = {f.name: getattr(self, f.name) for f in fields(self)}
        body["rules"] = self.rules.to_dict()
        body["probation"] = asdict(self.probation) if self.probation is not None else None
        body["deferred"] = self.deferred.to_dict() if self.deferred is not None else None
        body["staleness"] = self.staleness.to_dict()
        return body

    @classmethod
    def from_json(cls, raw: bytes | None) -> LoopState:
        if not raw:
            return cls()
        body = json.loads(raw)
        return cls(
            champion=body.get("champion"), rules=RuleState.from_dict(body.get("rules", {})),
            label_cursor=body.get("label_cursor"), unlearned=body.get("unlearned", 0),
            new_labels=body.get("new_labels", 0),
            last_retrain_seq=body.get("last_retrain_seq"), traffic_after=_time(body.get("traffic_after")),
            traffic_pending=body.get("traffic_pending", 0), labels_pending=body.get("labels_pending", 0),
            failures=body.get("failures", 0),
            retry_at=_time(body.get("retry_at")), last_error=body.get("last_error"),
            probation=_probation(body.get("probation")), deferred=DeferredProposal.from_dict(body.get("deferred")),
            last_tick=_time(body.get("last_tick")),
            signals=body.get("signals", {}), staleness=StalenessLedger.from_dict(body.get("staleness")),
        )


def load_state(store: EventStore, model: str) -> LoopState:
    return LoopState.from_json(store.get_state(model, STATE_KEY))


def save_state(store: EventStore, model: str, state: LoopState) -> None:
    store.put_state(model, STATE_KEY, state.to_json())


def pending_manual(store: EventStore, model: str) -> ManualRequest | None:
    return _manual(store.get_state(model, MANUAL_KEY))


def load_tick_state(store: EventStore, model: str) -> tuple[LoopState, ManualRequest | None]:
    """The loop state and a person's pending request, in one read (what every tick starts with)."""
    found = store.get_states(model, (STATE_KEY, MANUAL_KEY))
    return LoopState.from_json(found.get(STATE_KEY)), _manual(found.get(MANUAL_KEY))


def _manual(raw: bytes | None) -> ManualRequest | None:
    return ManualRequest.from_dict(json.loads(raw)) if raw else None


def request_manual(store: EventStore, model: str, request: ManualRequest) -> None:
    """Queue a person's retrain request for the model's next tick (replacing an older one)."""
    store.put_state(model, MANUAL_KEY, json.dumps(request.to_dict()).encode())


def clear_manual(store: EventStore, model: str) -> None:
    store.put_state(model, MANUAL_KEY, b"")


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot store {type(value).__name__} in the loop state")


def _time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _probation(body: dict[str, Any] | None) -> Probation | None:
    if not body:
        return None
    ends_by = body.get("ends_by")
    return Probation(**{**body, "until": datetime.fromisoformat(body["until"]),
                        "ends_by": datetime.fromisoformat(ends_by) if ends_by else None})

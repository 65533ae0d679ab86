"""What a training job reports for each candidate it trained: :class:`CandidateResult`.

:func:`~controller.loop.runners.train_candidates` returns one per candidate. Between processes (a spawned worker's
pipe, a Dask task's result) and in a retrain decision's evidence (``evidence["challengers"]``) a result travels as the
plain JSON of :meth:`CandidateResult.to_dict`, whose keys and values are the ones the loop has always stored:

* a candidate that trained: ``{"candidate", "ok": true, <every field of RefreshOutcome but candidate>, "cpu_seconds"}``
  (the outcome's fields in their order, ``candidate`` first);
* a candidate that could not be trained: ``{"candidate", "ok": false, "error"}``.

:meth:`CandidateResult.from_dict` reads that JSON back (and older records that lack some keys: those fields are None).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from controller.actions.refresh import RefreshOutcome


@dataclass(frozen=True)
class CandidateResult:
    """One candidate of a training job: the version it registered (``ok``) or why it could not be trained."""

    candidate: str
    ok: bool
    error: str | None = None                       # ok False: why the candidate could not be trained
    # ok True: the refresh's outcome (controller.actions.refresh.RefreshOutcome, field for field, in its order) ...
    version: str | None = None
    strategy: str | None = None
    requested_strategy: str | None = None
    parent_version: str | None = None
    train_rows: int | None = None
    holdout_rows: int | None = None
    holdout_metrics: dict[str, float] | None = None
    champion_metrics: dict[str, float] | None = None
    chain_depth: int | None = None
    decision_id: str | None = None
    fallback_reason: str | None = None
    details: dict[str, Any] | None = None
    holdout_first_seq: int | None = None           # the holdout is every matured row from this label seq on
    holdout_fingerprint: str | None = None
    comparison_run_id: str | None = None
    # ... and the CPU seconds the worker spent on this candidate (a retrain's compute cost, costs.compute_second).
    cpu_seconds: float | None = None

    @classmethod
    def trained(cls, name: str, outcome: RefreshOutcome, cpu_seconds: float) -> CandidateResult:
        """A candidate that trained: the outcome's fields (its ``candidate`` is the pool member's name)."""
        values = {"candidate": name, "ok": True, **outcome.to_dict(), "cpu_seconds": cpu_seconds}
        unknown = set(values) - _FIELDS
        if unknown:  # a new RefreshOutcome field would silently vanish from the decision log: declare it here
            raise TypeError(f"CandidateResult has no field for RefreshOutcome's {sorted(unknown)}")
        return cls(**values)

    @classmethod
    def failed(cls, name: str, error: str) -> CandidateResult:
        return cls(candidate=name, ok=False, error=error)

    def to_dict(self) -> dict[str, Any]:
        """The plain JSON that crosses processes and is stored in decisions' evidence (same keys, values, order)."""
        if not self.ok:
            return {"candidate": self.candidate, "ok": False, "error": self.error}
        return {name: getattr(self, name) for name in _TRAINED_KEYS}

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> CandidateResult:
        """A result from its JSON; keys it does not know are ignored, keys a record lacks are None."""
        return cls(**{"candidate": body.get("candidate", ""), "ok": bool(body.get("ok")),
                      **{key: body[key] for key in _FIELDS - {"candidate", "ok"} if key in body}})


def challengers(evidence: Mapping[str, Any]) -> list[CandidateResult]:
    """The results a retrain decision's evidence stores (``evidence["challengers"]``), in their order."""
    return [CandidateResult.from_dict(body) for body in evidence.get("challengers", [])]


_FIELDS = frozenset(f.name for f in fields(CandidateResult))
# A trained candidate's keys in the order the loop has always written them: candidate, ok, the outcome's, cpu_seconds.
_TRAINED_KEYS = tuple(f.name for f in fields(CandidateResult) if f.name != "error")

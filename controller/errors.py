"""Errors the controller raises. Each message says what was wrong, what is accepted and what to do."""

from __future__ import annotations

from dataclasses import dataclass


class DriftpilotError(Exception):
    """Base class of every error driftpilot raises on purpose."""


class ConfigError(DriftpilotError):
    """A policy file could not be loaded. ``problems`` holds one line per problem, each with file:line."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: {len(problems)} problem(s)\n" + "\n".join(problems))


class StoreUnavailable(DriftpilotError):
    """The event store's database cannot be reached; nothing was written."""


@dataclass(frozen=True)
class Problem:
    """One invalid field of one item of a batch."""

    index: int | None
    field: str
    problem: str

    def to_dict(self) -> dict:
        return {"index": self.index, "field": self.field, "problem": self.problem}


class InvalidBatch(DriftpilotError):
    """A batch had invalid items; the whole batch was refused and nothing was stored."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        head = "; ".join(f"item {p.index}: {p.field}: {p.problem}" for p in problems[:5])
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(f"{len(problems)} invalid item(s), nothing stored: {head}{more}")


class LabelConflict(InvalidBatch):
    """A label disagrees with the one already stored for the prediction; send ``overwrite: true`` to replace it."""


class PredictionConflict(InvalidBatch):
    """A prediction id is already stored with different content."""


class UnknownModel(DriftpilotError):
    def __init__(self, model: str, known: list[str]) -> None:
        self.model = model
        self.known = known
        super().__init__(
            f"unknown model {model!r}; this server has policies for: {', '.join(sorted(known)) or '(none)'}"
        )

"""PostgreSQL's planner statistics for a model that arrived, or grew, after the row tables were last analyzed.

The planner estimates a model's rows from the ``model`` column's statistics of the last ``ANALYZE``. A model written
since is estimated at about one row, and for one row the planner joins ``labels`` to ``predictions`` by scanning the
model's predictions once per label row instead of probing the primary key: quadratic in the model's rows (measured:
a 20,000-row window read took 30 s, 0.8 s once analyzed; docs/benchmarks-store.md). Autovacuum analyzes eventually
(after a tenth of a table has changed: much later on a large store), and never on a server that runs without it.

:class:`PlannerStatistics` closes that gap: before a model's joined reads and its seals, at most once a minute per
model and process, it compares the planner's estimate for the model with a count capped just above it, and analyzes
the row tables when the model has far more rows than estimated. ``ANALYZE`` samples a fixed number of rows (tens of
milliseconds here), takes a lock writers do not wait for, and runs in its own transaction. SQLite plans these joins
by index without statistics: nothing to do there.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import sqlalchemy as sa

log = logging.getLogger("driftpilot.store")

# Estimates from here up are trusted: a plan expecting this many rows does not scan the model once per row.
TRUSTED_ESTIMATE = 10_000
# Under-estimated: the model has more than this many times the estimate (plus a margin for small ones).
UNDER_FACTOR, UNDER_MARGIN = 10, 1_000
CHECK_EVERY_S = 60.0


class PlannerStatistics:
    """Keeps PostgreSQL's row-table statistics close enough to each model's size (see the module docstring);
    ``monotonic`` is injectable for tests."""

    def __init__(self, engine: sa.Engine, *, every_s: float = CHECK_EVERY_S,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.active = engine.dialect.name == "postgresql"
        self.every_s = every_s
        self.monotonic = monotonic
        self._next: dict[str, float] = {}
        self._lock = threading.Lock()

    def ensure(self, model: str) -> bool:
        """Analyze the row tables if the planner under-estimates ``model`` by far; True if it did. Looked at no more
        than once per ``every_s`` per model; a failure is logged, and the reads still answer (slower)."""
        if not self.active:
            return False
        now = self.monotonic()
        with self._lock:
            if now < self._next.get(model, float("-inf")):
                return False
            self._next[model] = now + self.every_s
        try:
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                estimate, found = estimate_and_count(conn, model)
                if found <= UNDER_FACTOR * estimate + UNDER_MARGIN:
                    return False
                conn.exec_driver_sql("ANALYZE labels, predictions")
        except Exception as exc:  # noqa: BLE001 - upkeep: it must never fail the read it runs before
            reason = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
            log.warning("could not check or analyze the row tables for model %s (%s); its joined reads may be slow "
                        "until autovacuum analyzes them or you run ANALYZE labels, predictions", model, reason)
            return False
        log.info("analyzed the row tables: the planner estimated %d label rows of %s, it has over %d", estimate, model,
                 UNDER_FACTOR * estimate + UNDER_MARGIN)
        return True


def estimate_and_count(conn: sa.Connection, model: str) -> tuple[int, int]:
    """The planner's estimate of the model's label rows, and their count capped one row above the under-estimate
    threshold (a trusted estimate is not counted: the count is then 0)."""
    plan = conn.execute(sa.text("EXPLAIN (FORMAT JSON) SELECT 1 FROM labels WHERE model = :model"),
                        {"model": model}).scalar_one()
    estimate = int(plan[0]["Plan"]["Plan Rows"])
    if estimate >= TRUSTED_ESTIMATE:
        return estimate, 0
    cap = UNDER_FACTOR * estimate + UNDER_MARGIN + 1
    found = conn.execute(sa.text("SELECT count(*) FROM (SELECT 1 FROM labels WHERE model = :model LIMIT :cap) AS t"),
                         {"model": model, "cap": cap}).scalar_one()
    return estimate, int(found)

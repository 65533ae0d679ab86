"""What moving rows out of the row tables costs the writers, and what a partitioned layout would save (issue 22,
item 4: writes with background sealing at >= 0.9x sealing off).

The seal commit (controller/store/seal_commit.py) holds the writers' lock while it deletes the moved label and
prediction rows and their index entries and inserts their ids. This measures, per block of 5,000 labeled pairs, on
one database per backend (fresh model per run, medians of ``--runs``):

* ``write``: writing the 5,000 pairs through ``EventStore`` (sealing off, batches of 1,000): the writer's cost.
* ``commit``: the real seal commit of those 5,000 pairs (the store's own prepare and commit, through
  ``EventStore.in_thread_sealer``), from its write lock taken to its commit: what writers wait for now.
* ``drop``: dropping two tables that hold copies of the same rows with the same indexes, the whole cost a seal would
  have if each generation of rows had tables of its own (its ids, exactness check and segment insert left out).
* ``prepare``: the seal's prepare of that block, the part that runs beside the writers (no lock; in the helper
  process at ``nice`` +10), and its database read alone.

From them, the ceiling of the on/off write ratio when a run seals ``--sealed-share`` of what it writes (7 of 8
blocks in ``benchmarks/store.py --parts sealing``) and nothing but the commit slows the writer (no CPU contention):
``write / (write + share * commit)``.

Reproduce (under a minute; needs the PostgreSQL server on 127.0.0.1:5432):

    nice -n 5 .venv/bin/python benchmarks/seal_floor.py --runs 5
"""

from __future__ import annotations

import bench_kit

REPO = bench_kit.repo_first()

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa
import store_rows as bench

from controller.clock import ManualClock
from controller.store import EventStore, Sealing
from controller.store.db import begin_snapshot
from controller.store.rows import fetch_block, labeled_rows
from controller.store.seal_prepare import SealJob, prepare
from controller.store.sealed import model_id, payload_source
from controller.store.tables import labels

POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BLOCK = 5_000
WARM = 10_000  # pairs written first, so the block is not the tables' first rows


def one_run(store: EventStore, run: int, seed: int) -> dict[str, float]:
    model = f"floor{run}-{uuid.uuid4().hex[:6]}"
    bench.write_run(store, bench.Rows.make(WARM, seed + 1_000 + run, tag="warm"), model, 1_000)
    block = bench.Rows.make(BLOCK, seed + run, tag="block")
    write = bench.write_run(store, block, model, 1_000)
    write_s = 2 * BLOCK / write["events_per_s"]
    engine = store.engine
    if engine.dialect.name == "postgresql":
        # This server runs with autovacuum off; a default one would have analyzed the tables by now.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE labels, predictions")
    copies = [f"gen_labels_{run}", f"gen_predictions_{run}"]
    # The generation copies of the model's oldest 5,000 labeled pairs, which the seal below moves.
    oldest = f"SELECT seq FROM labels WHERE model = '{model}' ORDER BY seq LIMIT {BLOCK}"
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE TABLE {copies[0]} AS SELECT * FROM labels WHERE seq IN ({oldest})")
        conn.exec_driver_sql(f"CREATE TABLE {copies[1]} AS SELECT * FROM predictions WHERE model = '{model}' AND "
                             f"prediction_id IN (SELECT prediction_id FROM {copies[0]})")
        # A seq index on both backends (SQLite's labels keep seq as the rowid instead): the drop errs high.
        for ddl in (f"CREATE INDEX {copies[0]}_seq ON {copies[0]} (seq)",
                    (f"CREATE UNIQUE INDEX {copies[0]}_cur ON {copies[0]} (model, prediction_id) "
                     "WHERE superseded_at IS NULL"),
                    f"CREATE INDEX {copies[0]}_arr ON {copies[0]} (model, arrived_at)",
                    f"CREATE UNIQUE INDEX {copies[1]}_pk ON {copies[1]} (model, prediction_id)",
                    f"CREATE INDEX {copies[1]}_evt ON {copies[1]} (model, event_time)",
                    f"CREATE INDEX {copies[1]}_rcv ON {copies[1]} (model, received_at)"):
            conn.exec_driver_sql(ddl)
        copied = conn.exec_driver_sql(f"SELECT count(*) FROM {copies[1]}").scalar_one()
    assert copied == BLOCK, copied
    with store.engine.connect() as conn, begin_snapshot(conn):
        began = time.perf_counter()
        prepared = prepare(conn, SealJob(model, BLOCK, keep=0))
        prepare_s = time.perf_counter() - began
        mid = model_id(conn, model)
        began = time.perf_counter()
        fetch_block(conn, labeled_rows(conn, mid, [labels.c.model == model], order="arrival", limit=BLOCK),
                    payload_source(conn, model, mid))
        read_s = time.perf_counter() - began
    assert prepared is not None and prepared.rows == BLOCK
    step = store.in_thread_sealer.seal(SealJob(model, BLOCK, keep=0), store.clock.now())
    assert step is not None and step.result is not None and step.result.rows == BLOCK, step
    began = time.perf_counter()
    with engine.begin() as conn:
        for table in copies:
            conn.exec_driver_sql(f"DROP TABLE {table}")
    return {"write_ms": write_s * 1e3, "commit_ms": step.held_s * 1e3, "drop_ms": (time.perf_counter() - began) * 1e3,
            "prepare_ms": prepare_s * 1e3, "read_ms": read_s * 1e3}


def backend_runs(url: str, runs: int, seed: int) -> list[dict[str, float]]:
    store = EventStore.from_url(url, ManualClock(bench.T0), sealing=Sealing(mode="off"))
    try:
        return [one_run(store, run, seed) for run in range(runs)]
    finally:
        store.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sealed-share", type=float, default=7 / 8)
    parser.add_argument("--postgres", default=POSTGRES_ADMIN_URL, help="admin URL, or 'none' for SQLite only")
    args = parser.parse_args()
    results = {"SQLite": backend_runs(f"sqlite:///{Path(tempfile.mkdtemp()) / 'floor.db'}", args.runs, args.seed)}
    if args.postgres != "none":
        url = bench_kit.create_database(args.postgres, "driftpilot_bench_floor")
        try:
            results["PostgreSQL"] = backend_runs(url, args.runs, args.seed)
        finally:
            bench_kit.drop_databases(args.postgres, [sa.make_url(url).database])
    share = args.sealed_share
    print(f"Per block of {BLOCK:,} labeled pairs, medians of {args.runs} runs (min-max); ceiling ratio = write / "
          f"(write + {share:.3g} x move)\n")
    print("| store | write, ms | seal commit now, ms | ceiling now | drop of generation tables, ms | ceiling with "
          "drop | prepare, ms | its read, ms |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    for name, runs in results.items():
        cells = {key: [r[key] for r in runs] for key in runs[0]}
        write, commit, drop = (statistics.median(cells[k]) for k in ("write_ms", "commit_ms", "drop_ms"))

        def spread(key: str, digits: int = 1, cells: dict[str, list[float]] = cells) -> str:
            values = cells[key]
            return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f}–{max(values):.{digits}f})"

        print(f"| {name} | {spread('write_ms')} | {spread('commit_ms')} | {write / (write + share * commit):.2f} | "
              f"{spread('drop_ms')} | {write / (write + share * drop):.2f} | {spread('prepare_ms', 0)} | "
              f"{spread('read_ms', 0)} |")


if __name__ == "__main__":
    main()

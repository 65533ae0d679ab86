"""The store part of benchmarks/ingest.py for two versions of the code, side by side in one run.

Reproduce (about 3 minutes on 2 cores; needs the PostgreSQL server on 127.0.0.1:5432, or --postgres none):

    .venv/bin/python benchmarks/ingest_compare.py --baseline a18974a~1

The baseline revision is exported with ``git archive`` into a temporary folder. Each round runs ``bench_store`` of
that tree's own ``benchmarks/ingest.py`` once for the baseline and once for the working tree, each in a fresh
subprocess (alternating which goes first), so both see the same machine load; the table gives the median over the
rounds (min-max beside it) of events/s and of the writing process's CPU µs per event, which moves far less than the
wall clock on a shared machine. A full ``gc.collect()`` precedes every measured run: otherwise where a
generation-2 collection happens to fall (one version allocating a little differently is enough to move it into the
measured run) shows up as a difference of 10 µs/event at batch 100. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import uuid
from io import BytesIO
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parents[1]
POSTGRES_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

# Runs inside the subprocess, with the tree to measure first on sys.path.
CHILD = """
import json, sys
tree, backend, url, seed = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
sys.path[:0] = [tree, tree + "/benchmarks"]
import gc, controller, ingest
assert controller.__file__.startswith(tree), controller.__file__
measured = ingest.store_run
def store_run(store, events, size):
    gc.collect()  # a generation-2 collection falling inside one side's run must not decide the comparison
    return measured(store, events, size)
ingest.store_run = store_run
rows = ingest.bench_store(backend, url, 1, seed)
print(json.dumps([{"batch": r.batch, "rows": r.rows, "events": r.events()[0], "cpu": r.cpu_s[0],
                   "base": r.base_events()[0]} for r in rows]))
"""


def export(revision: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", revision], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def measure(tree: Path, backend: str, admin: str | None, workdir: Path, seed: int) -> list[dict]:
    engine = None
    if backend == "SQLite":
        url = f"sqlite:///{workdir / f'{uuid.uuid4().hex[:8]}.db'}"
    else:
        name = f"bench_cmp_{uuid.uuid4().hex[:8]}"
        engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        url = admin.rsplit("/", 1)[0] + f"/{name}"
    try:
        env = {**os.environ, "PYTHONPATH": str(tree)}
        out = subprocess.run([sys.executable, "-c", CHILD, str(tree), backend, url, str(seed)], check=True,
                             capture_output=True, text=True, env=env, cwd=workdir).stdout
        return json.loads(out.strip().splitlines()[-1])
    finally:
        if engine is not None:
            with engine.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            engine.dispose()


def cell(values: list[float], digits: int = 0) -> str:
    return f"{statistics.median(values):,.{digits}f} ({min(values):,.{digits}f}-{max(values):,.{digits}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="git revision to compare the working tree with")
    parser.add_argument("--rounds", type=int, default=3, help="subprocess pairs per store; medians are reported")
    parser.add_argument("--postgres", default=POSTGRES_ADMIN_URL, help="admin URL, or 'none' to skip PostgreSQL")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    backends = ["SQLite"] + ([] if args.postgres == "none" else ["PostgreSQL"])
    with tempfile.TemporaryDirectory() as tmp:
        base_tree = export(args.baseline, Path(tmp) / "baseline")
        results: dict[tuple[str, str], list[list[dict]]] = {}
        for backend in backends:
            for round_ in range(args.rounds):
                order = [("baseline", base_tree), ("working tree", REPO)]
                for label, tree in order if round_ % 2 == 0 else order[::-1]:
                    results.setdefault((backend, label), []).append(
                        measure(tree, backend, args.postgres, Path(tmp), args.seed + round_))
                    print(f"  {backend} {label} round {round_ + 1} done", file=sys.stderr)
    revision = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", args.baseline], check=True,
                              capture_output=True, text=True).stdout.strip()
    print(f"Baseline {args.baseline} ({revision}) vs the working tree; medians of {args.rounds} rounds (min-max).\n")
    print("| store | batch | rows/run | baseline events/s | working tree events/s | ratio | baseline CPU µs/event "
          "| working tree CPU µs/event |")
    print("|---|--:|--:|--:|--:|--:|--:|--:|")
    for backend in backends:
        base_runs, new_runs = results[(backend, "baseline")], results[(backend, "working tree")]
        for i, first in enumerate(base_runs[0]):
            base_ev = [run[i]["events"] for run in base_runs]
            new_ev = [run[i]["events"] for run in new_runs]
            per_event = 2 * first["rows"]
            base_cpu = [run[i]["cpu"] / per_event * 1e6 for run in base_runs]
            new_cpu = [run[i]["cpu"] / per_event * 1e6 for run in new_runs]
            ratio = statistics.median(new_ev) / statistics.median(base_ev)
            print(f"| {backend} | {first['batch']:,} | {first['rows']:,} | {cell(base_ev)} | {cell(new_ev)} | "
                  f"{ratio:.2f} | {cell(base_cpu, 1)} | {cell(new_cpu, 1)} |")


if __name__ == "__main__":
    main()

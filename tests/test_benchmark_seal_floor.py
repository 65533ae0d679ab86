"""benchmarks/seal_floor.py on a small SQLite store: one run seals the block it wrote with the store's own prepare
and commit, times the generation tables' drop, and leaves no copy behind."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa

from tests.conftest import load_benchmark


def test_one_run_times_the_real_commit_and_the_drop_and_cleans_up(tmp_path: Path) -> None:
    bench = load_benchmark("seal_floor")
    url = f"sqlite:///{tmp_path / 'floor.db'}"
    [run] = bench.backend_runs(url, runs=1, seed=3)
    assert set(run) == {"write_ms", "commit_ms", "drop_ms", "prepare_ms", "read_ms"}
    assert all(value > 0 for value in run.values()), run
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            segments = conn.exec_driver_sql("SELECT row_count FROM segments").scalars().all()
    finally:
        engine.dispose()
    assert not {t for t in tables if t.startswith("gen_")}, tables
    assert segments == [bench.BLOCK]  # the commit timed is a real seal of the block

"""``driftpilot predictions import`` and ``labels import``: seeded CSV and Parquet files into a real SQLite store
through the API's write path; a bad row ends with one line naming row and field, exit code 2, and nothing of its
batch stored; a re-run is a no-op; column mapping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from controller.cli.main import main
from controller.clock import SystemClock
from controller.policy_loader import load_policy
from controller.store import EventStore

POLICY = """\
model: imports
task: classification
target: {{name: y, classes: [0, 1]}}
features:
  x1: numeric
  x2: numeric
  color: {{type: categorical, required: false}}
  flag: {{type: boolean, required: false}}
storage: {{url: "sqlite:///{folder}/events.db"}}
mlflow: {{tracking_uri: "sqlite:///{folder}/mlflow.db"}}
"""


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY.format(folder=tmp_path))
    return path


def store_of(policy: Path) -> EventStore:
    return EventStore.from_url(load_policy(policy, environ={}).config.storage.url, SystemClock())


def predictions(n: int, seed: int) -> pd.DataFrame:
    """Seeded predictions with ids that look like numbers (kept as text: '007' is not 7), categories that look like
    numbers, booleans and empty optional values."""
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n).round(6), rng.normal(size=n).round(6)
    return pd.DataFrame({"prediction_id": [f"{i:03d}" for i in range(n)], "x1": x1, "x2": x2,
                         "color": rng.choice(["1", "2", None], size=n), "flag": rng.choice(["true", "0", ""], size=n),
                         "prediction": (x1 + 0.5 * x2 > 0).astype(int)})


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--log-level", "WARNING", *args])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def stored_predictions(policy: Path) -> dict[str, Any]:
    from controller.store.tables import predictions as table

    store = store_of(policy)
    try:
        with store.engine.connect() as conn:
            return {r.prediction_id: r for r in conn.execute(table.select().where(table.c.model == "imports"))}
    finally:
        store.dispose()


def counts(policy: Path) -> tuple[int, int, int]:
    store = store_of(policy)
    try:
        stats = store.label_stats("imports")
        return stats.predictions, stats.labeled, stats.unmatched_labels
    finally:
        store.dispose()


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_predictions_then_labels_import_and_a_rerun_is_a_no_op(policy: Path, tmp_path: Path, suffix: str) -> None:
    frame = predictions(250, seed=1)
    path = tmp_path / f"predictions{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path, index=False)
    code, out, err = run("predictions", "import", "--config", str(policy), "--input", str(path), "--batch-size", "100")
    assert code == 0, err
    assert "250 new predictions, 0 already stored" in out
    assert counts(policy) == (250, 0, 0)

    stored = stored_predictions(policy)
    assert stored["007"].features["x1"] == frame.x1[7]
    assert stored["007"].features.get("color") == frame.color[7]

    # Labels for 200 of them plus 10 the store has not seen (kept, counted unmatched, as the API does).
    labels = pd.DataFrame({"prediction_id": [*frame.prediction_id[:200], *[f"later-{i}" for i in range(10)]],
                           "y": [*frame.prediction[:200], *[1] * 10]})
    labels_path = tmp_path / f"labels{suffix}"
    labels.to_csv(labels_path, index=False) if suffix == ".csv" else labels.to_parquet(labels_path, index=False)
    code, out, err = run("labels", "import", "--config", str(policy), "--input", str(labels_path))
    assert code == 0, err
    assert "210 new labels, 0 already stored (no-ops), 0 overwritten; 10 for predictions not stored yet" in out
    assert counts(policy) == (250, 200, 10)

    # The same files again: nothing changes.
    code, out, _ = run("predictions", "import", "--config", str(policy), "--input", str(path), "--batch-size", "100")
    assert code == 0 and "0 new predictions, 250 already stored (no-ops)" in out
    code, out, _ = run("labels", "import", "--config", str(policy), "--input", str(labels_path))
    assert code == 0 and "0 new labels, 210 already stored (no-ops), 0 overwritten" in out
    assert counts(policy) == (250, 200, 10)


def test_the_stored_values_are_what_a_client_would_send(policy: Path, tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("prediction_id,x1,x2,color,flag,prediction,event_time\n"
                    "007,1.5,-2,2,yes,1,2026-01-31T12:00:00Z\n"
                    "008,0.25,3,,,0,2026-01-31 12:30:00\n")
    code, _, err = run("predictions", "import", "--config", str(policy), "--input", str(path),
                       "--time-column", "event_time")
    assert code == 0, err
    rows = stored_predictions(policy)
    assert set(rows) == {"007", "008"}
    assert rows["007"].features == {"x1": 1.5, "x2": -2, "color": "2", "flag": True}
    assert rows["008"].features == {"x1": 0.25, "x2": 3, "color": None, "flag": None}  # empty: null
    assert rows["007"].prediction == 1
    assert (rows["007"].event_time.hour, rows["008"].event_time.minute) == (12, 30)


def test_a_bad_row_names_row_and_field_and_stores_nothing_of_its_batch(policy: Path, tmp_path: Path) -> None:
    frame = predictions(250, seed=2).astype({"x1": object})
    frame.loc[163, "x1"] = "n/a"
    path = tmp_path / "p.csv"
    frame.to_csv(path, index=False)
    code, out, err = run("predictions", "import", "--config", str(policy), "--input", str(path), "--batch-size", "100")
    assert code == 2
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {path}: row 163 (line 165): features.x1: expected a number, got a string "
                               "'n/a'"), lines[0]
    assert "nothing of rows 100-199 was stored; rows 0-99 were stored before it" in lines[0]
    assert counts(policy) == (100, 0, 0)  # the first batch, acknowledged; nothing of the second or third

    # Fixed and run again: the first batch is a no-op, the rest goes in.
    frame.loc[163, "x1"] = 0.5
    frame.to_csv(path, index=False)
    code, out, err = run("predictions", "import", "--config", str(policy), "--input", str(path), "--batch-size", "100")
    assert code == 0, err
    assert "150 new predictions, 100 already stored (no-ops)" in out
    assert counts(policy) == (250, 0, 0)


def test_labels_bad_class_and_a_changed_label_are_refused_unless_overwrite(policy: Path, tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    path.write_text("prediction_id,y\np1,1\np2,0\np3,7\n")
    code, _, err = run("labels", "import", "--config", str(policy), "--input", str(path))
    assert code == 2
    assert "row 2 (line 4): label: unknown class '7'; target.classes is [0, 1]" in err
    assert counts(policy) == (0, 0, 0)
    path.write_text("prediction_id,y\np1,1\np2,0\n")
    assert run("labels", "import", "--config", str(policy), "--input", str(path))[0] == 0
    path.write_text("prediction_id,y\np1,1\np2,1\n")
    code, _, err = run("labels", "import", "--config", str(policy), "--input", str(path))
    assert code == 2 and "row 1 (line 3): label: prediction 'p2' already has label 0, got 1" in err
    assert "--overwrite" in err
    code, out, _ = run("labels", "import", "--config", str(policy), "--input", str(path), "--overwrite")
    assert code == 0 and "0 new labels, 1 already stored (no-ops), 1 overwritten" in out


def test_column_mapping(policy: Path, tmp_path: Path) -> None:
    frame = predictions(20, seed=3).rename(columns={"prediction_id": "request", "prediction": "served"})
    frame["made_at"] = pd.date_range("2026-02-01", periods=20, freq="min", tz="UTC")
    frame["version"] = 3
    path = tmp_path / "p.parquet"
    frame.to_parquet(path, index=False)
    code, _, err = run("predictions", "import", "--config", str(policy), "--input", str(path))
    assert code == 2 and "no column 'prediction_id' (--id-column)" in err
    code, out, err = run("predictions", "import", "--config", str(policy), "--input", str(path),
                         "--id-column", "request", "--prediction-column", "served", "--time-column", "made_at",
                         "--version-column", "version")
    assert code == 0, err
    assert "20 new predictions" in out
    labels = pd.DataFrame({"request": frame.request, "truth": frame.served, "extra": 1})
    labels_path = tmp_path / "l.csv"
    labels.to_csv(labels_path, index=False)
    code, out, err = run("labels", "import", "--config", str(policy), "--input", str(labels_path),
                         "--id-column", "request", "--label-column", "truth")
    assert code == 0, err
    assert "note: column(s) ['extra'] are not read" in err
    assert counts(policy) == (20, 20, 0)
    rows = stored_predictions(policy)
    assert {r.model_version for r in rows.values()} == {"3"}
    assert [rows[pid].event_time for pid in frame.request] == list(frame.made_at)


def test_a_file_it_cannot_use_is_one_line_and_exit_2(policy: Path, tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("prediction_id,x2,prediction\na,1,1\n")
    code, _, err = run("predictions", "import", "--config", str(policy), "--input", str(path))
    assert code == 2 and "required feature column(s) ['x1'] are missing" in err
    path.write_text("prediction_id,x1,x2,prediction\na,1,1,1\n,2,2,0\n")
    code, _, err = run("predictions", "import", "--config", str(policy), "--input", str(path))
    assert code == 2 and "row 1 (line 3): prediction_id: empty prediction id" in err
    assert counts(policy) == (0, 0, 0)
    broken = tmp_path / "p.parquet"
    broken.write_bytes(b"PAR1 not parquet")
    code, _, err = run("labels", "import", "--config", str(policy), "--input", str(broken))
    assert code == 2 and "cannot read it as Parquet" in err

"""Hostile and unlucky files through the CLI (issue 9): ``bootstrap`` and ``predict`` end with one clear line on stderr
and exit code 2, never a traceback, and store nothing.

Each case is a real file on disk (corrupt, truncated, wrong columns, numbers beyond a float, text the store cannot
keep); the commands run in-process through click's runner over a real SQLite store and a real MLflow store, and once
as a real subprocess to see exactly what a terminal shows.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from controller.cli.main import main
from controller.store import EventStore
from tests.loop.daemon_kit import DRIFTPILOT
from tests.toy import toy_table, write_policy


def csv_text(path: Path, text: str) -> None:
    path.write_text(text)


def truncated(source: Callable[[Path], None], keep: float) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        source(path)
        data = path.read_bytes()
        path.write_bytes(data[:int(len(data) * keep)])
    return write


def table_file(frame: pd.DataFrame) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        if path.suffix == ".csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_parquet(path, index=False)
    return write


GOOD = toy_table(60, seed=3)
# name -> (file name, writer, what the one line must say). Each file is refused by bootstrap and by predict.
HOSTILE: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "corrupt parquet": ("data.parquet", lambda p: p.write_bytes(b"PAR1 this is not parquet at all"),
                        "cannot read it as Parquet"),
    "truncated parquet": ("data.parquet", truncated(table_file(GOOD), 0.6), "cannot read it as Parquet"),
    "truncated zip": ("data.zip", lambda p: p.write_bytes(b"PK\x03\x04\x14\x00\x00\x00"),
                      "cannot read it as a zip holding one ARFF file"),
    "binary csv": ("data.csv", lambda p: p.write_bytes(bytes(range(256)) * 4), "cannot read it as CSV"),
    "empty csv": ("data.csv", lambda p: p.write_bytes(b""), "cannot read it as CSV (No columns to parse from file)"),
    "csv cut inside a row": ("data.csv", lambda p: csv_text(p, "x1,x2,color,y\n0.5,1.0,red,1\n0.25,"),
                             "required feature column 'x2' has 1 empty value(s), the first in row 1"),
    "unknown column": ("data.csv", table_file(GOOD.assign(colour="red")),
                       "column(s) ['colour'] are not in the policy (features: ['x1', 'x2', 'color'], target: 'y')"),
    "missing feature column": ("data.csv", table_file(GOOD.drop(columns=["x2"])),
                               "required feature column(s) ['x2'] are missing"),
    "integer of 400 digits": ("data.csv", lambda p: csv_text(p, "x1,x2,color,y\n1,2,red,1\n1" + "0" * 399
                                                               + ",2,red,0\n"),
                              "column 'x1': row 1 has '10000000000"),
    "1e400": ("data.csv", lambda p: csv_text(p, "x1,x2,color,y\n1,2,red,1\n1,1e400,red,0\n"),
              "column 'x2': row 1 has '1e400', too large for a 64-bit float (at most about 1.8e308)"),
    "NUL in a category": ("data.parquet", table_file(GOOD.assign(color=["re\x00d"] * len(GOOD))),
                          "column 'color': row 0 has a NUL character"),
}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A policy whose model is bootstrapped (so predict has a champion); its store and MLflow live in one folder."""
    folder = tmp_path_factory.mktemp("cli-files")
    policy = write_policy(folder, folder, "files")
    data = folder / "train.csv"
    toy_table(200).to_csv(data, index=False)
    result = run("bootstrap", "--config", str(policy), "--data", str(data))
    assert result.exit_code == 0, result.output
    return policy, folder


def run(*args: str):
    return CliRunner().invoke(main, ["--log-level", "WARNING", *args])


def stored(folder: Path) -> int:
    store = EventStore.from_url(f"sqlite:///{folder}/events.db")
    try:
        return store.count_predictions("files")
    finally:
        store.dispose()


def assert_one_clear_line(result, *expected: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit)  # not an exception that escaped the command
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("case", list(HOSTILE))
def test_bootstrap_refuses_a_hostile_file_with_one_line_and_exit_2(model: tuple[Path, Path], tmp_path: Path,
                                                                    case: str) -> None:
    policy, folder = model
    name, write, expected = HOSTILE[case]
    path = tmp_path / name
    write(path)
    before = stored(folder)
    result = run("bootstrap", "--config", str(policy), "--data", str(path), "--force")
    assert_one_clear_line(result, str(path), expected)
    assert stored(folder) == before


@pytest.mark.parametrize("case", list(HOSTILE))
def test_predict_refuses_a_hostile_file_with_one_line_and_exit_2(model: tuple[Path, Path], tmp_path: Path,
                                                                  case: str) -> None:
    policy, folder = model
    name, write, expected = HOSTILE[case]
    path = tmp_path / name
    write(path)
    out = tmp_path / "scored.csv"
    before = stored(folder)
    result = run("predict", "--config", str(policy), "--input", str(path), "--output", str(out), "--log")
    assert_one_clear_line(result, str(path), expected)
    assert stored(folder) == before
    assert not out.exists()


@pytest.mark.parametrize("case, file, expected", [
    ("missing target column", table_file(GOOD.drop(columns=["y"])), "target column 'y' is missing"),
    ("target outside the classes", table_file(GOOD.assign(y=[2] * len(GOOD))),
     "target values ['2'] are not in target.classes [0, 1]"),
    ("time column that is no time", table_file(GOOD.assign(t=["yesterday"] * len(GOOD))),
     "time column 't': row 0 has 'yesterday', not an event time driftpilot can hold"),
    ("time column pandas cannot hold", table_file(GOOD.assign(t=["1500-01-01T00:00:00Z"] * len(GOOD))),
     "time column 't': row 0 has '1500-01-01T00:00:00Z'"),
])
def test_bootstrap_refuses_bad_targets_and_times_with_exit_2(model: tuple[Path, Path], tmp_path: Path, case: str,
                                                             file: Callable[[Path], None], expected: str) -> None:
    policy, folder = model
    path = tmp_path / "data.csv"
    file(path)
    before = stored(folder)
    result = run("bootstrap", "--config", str(policy), "--data", str(path), "--force", "--time-column", "t")
    assert_one_clear_line(result, expected)
    assert stored(folder) == before


def test_a_known_time_column_is_not_an_unknown_column(model: tuple[Path, Path], tmp_path: Path) -> None:
    policy, _ = model
    path = tmp_path / "timed.csv"
    GOOD.assign(t=pd.date_range("2025-01-01", periods=len(GOOD), freq="h", tz="UTC").astype(str)).to_csv(path,
                                                                                                      index=False)
    result = run("bootstrap", "--config", str(policy), "--data", str(path), "--force", "--time-column", "t")
    assert result.exit_code == 0, result.output


def test_predict_to_a_folder_that_does_not_exist_is_one_line_and_exit_2(model: tuple[Path, Path],
                                                                       tmp_path: Path) -> None:
    policy, _ = model
    path = tmp_path / "score.csv"
    GOOD.drop(columns=["y"]).to_csv(path, index=False)
    out = tmp_path / "no" / "such" / "folder" / "scored.csv"
    result = run("predict", "--config", str(policy), "--input", str(path), "--output", str(out))
    assert_one_clear_line(result, f"{out}: cannot write it", "check that the folder exists")


@pytest.mark.slow
def test_a_terminal_sees_one_line_and_exit_code_2(model: tuple[Path, Path], tmp_path: Path) -> None:
    """The real command in a real process: stderr is exactly the one line, no traceback, no log noise."""
    policy, folder = model
    path = tmp_path / "cut.parquet"
    truncated(table_file(GOOD), 0.5)(path)
    done = subprocess.run([str(DRIFTPILOT), "predict", "--config", str(policy), "--input", str(path), "--output",
                           str(tmp_path / "out.csv")], capture_output=True, text=True, cwd=folder, timeout=120,
                          check=False)
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"error: {path}: cannot read it as Parquet (") and line.endswith(
        "); check that the file is complete (not truncated) and really in that format"), line
    assert done.stdout == ""

"""Streams to replay: synthetic scenarios with known change points, Elec2, and a user's own file.

Scenarios (River's generators, seeded; one row per minute of simulated time, labels ``label_delay`` later):

=======================  ==============  ==========================================================================
name                     task            what changes
=======================  ==============  ==========================================================================
``sea-abrupt``           classification  SEA variant 0 -> 3 at the middle row (a new decision threshold), 10 % noise
``sea-gradual``          classification  SEA 0 -> 3 over a 1,500-row transition around the middle (ConceptDriftStream)
``sea-recurring``        classification  SEA 0 -> 3 -> 0 -> 3 in four equal segments (recurring concepts)
``hyperplane-incremental`` classification  a rotating hyperplane: every row moves the boundary a little (no step)
``agrawal-abrupt``       classification  Agrawal function 0 -> 2 at the middle row (numeric + categorical features)
``friedman-gradual``     regression      Friedman's function, gradual global drift between two positions
``sea-stationary``       classification  nothing: one SEA concept (variant 0, 10 % noise) throughout, no change point
=======================  ==============  ==========================================================================

``elec2`` replays ``../shared/data/ELEC.arff.zip`` (45,312 half-hourly rows) in its order, each label arriving with
the next row (its natural 30-minute delay). A user file (CSV or Parquet) needs the policy's feature columns, the
target, ``event_time`` and either ``label_time`` or a ``--label-delay``; its values are checked like a bootstrap
file's.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from controller.backtest.result import EVENT_TIME, LABEL_TIME, ReplayStream, StreamSpec
from controller.config import PolicyConfig
from controller.errors import DriftpilotError

START = datetime(2026, 1, 1, tzinfo=UTC)
ROW_INTERVAL = timedelta(minutes=1)
ELEC2 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ELEC.arff.zip"


class StreamError(DriftpilotError):
    """A stream cannot be built; the message says why and what is accepted."""


def _sea(variant: int, seed: int) -> Iterator[tuple[dict, Any]]:
    from river import datasets

    return iter(datasets.synth.SEA(variant=variant, noise=0.1, seed=seed))


def _segments(parts: Iterable[tuple[Iterator, int]]) -> list[tuple[dict, Any]]:
    return [row for stream, n in parts for row in itertools.islice(stream, n)]


def _sea_abrupt(rows: int, seed: int, change_at: float = 0.5) -> tuple[list, tuple[int, ...]]:
    half = int(rows * change_at)
    return _segments([(_sea(0, seed), half), (_sea(3, seed + 1), rows - half)]), (half,)


def _sea_gradual(rows: int, seed: int) -> tuple[list, tuple[int, ...]]:
    from river import datasets

    half = rows // 2
    # width must exceed ~position/170 or River overflows (docs: api-notes pitfall 6); 1,500 rows is gradual here.
    stream = datasets.synth.ConceptDriftStream(
        stream=datasets.synth.SEA(variant=0, noise=0.1, seed=seed),
        drift_stream=datasets.synth.SEA(variant=3, noise=0.1, seed=seed + 1),
        position=half, width=1500, seed=seed)
    return list(itertools.islice(stream, rows)), (half,)


def _sea_recurring(rows: int, seed: int) -> tuple[list, tuple[int, ...]]:
    quarter = rows // 4
    parts = [(_sea(0, seed), quarter), (_sea(3, seed + 1), quarter), (_sea(0, seed + 2), quarter),
             (_sea(3, seed + 3), rows - 3 * quarter)]
    return _segments(parts), (quarter, 2 * quarter, 3 * quarter)


def _hyperplane(rows: int, seed: int) -> tuple[list, tuple[int, ...]]:
    from river import datasets

    stream = datasets.synth.Hyperplane(seed=seed, n_features=5, n_drift_features=3, mag_change=0.002,
                                       noise_percentage=0.05)
    return list(itertools.islice(stream, rows)), ()


def _agrawal(rows: int, seed: int, change_at: float = 0.5) -> tuple[list, tuple[int, ...]]:
    from river import datasets

    half = int(rows * change_at)
    parts = [(iter(datasets.synth.Agrawal(classification_function=0, seed=seed, perturbation=0.05)), half),
             (iter(datasets.synth.Agrawal(classification_function=2, seed=seed + 1, perturbation=0.05)),
              rows - half)]
    return _segments(parts), (half,)


def _friedman(rows: int, seed: int) -> tuple[list, tuple[int, ...]]:
    from river import datasets

    first, second = rows // 3, 2 * rows // 3
    stream = datasets.synth.FriedmanDrift(drift_type="gra", position=(first, second), seed=seed)
    return list(itertools.islice(stream, rows)), (first, second)


def _sea_stationary(rows: int, seed: int) -> tuple[list, tuple[int, ...]]:
    # The control scenario: nothing changes, so a policy should not switch models for long (a promotion here is
    # at best noise-chasing).
    return _segments([(_sea(0, seed), rows)]), ()


# name -> (builder, task, feature types or None for "all numeric", description)
SCENARIOS: dict[str, tuple[Any, str, dict[str, str] | None, str]] = {
    "sea-abrupt": (_sea_abrupt, "classification", None, "SEA 0 -> 3 at the middle row"),
    "sea-gradual": (_sea_gradual, "classification", None, "SEA 0 -> 3 over a 1,500-row transition"),
    "sea-recurring": (_sea_recurring, "classification", None, "SEA 0 -> 3 -> 0 -> 3"),
    "hyperplane-incremental": (_hyperplane, "classification", None, "a rotating hyperplane (no step)"),
    "agrawal-abrupt": (_agrawal, "classification",
                       {"salary": "numeric", "commission": "numeric", "age": "numeric", "elevel": "categorical",
                        "car": "categorical", "zipcode": "categorical", "hvalue": "numeric", "hyears": "numeric",
                        "loan": "numeric"}, "Agrawal function 0 -> 2 at the middle row"),
    "friedman-gradual": (_friedman, "regression", None, "Friedman, gradual global drift"),
    "sea-stationary": (_sea_stationary, "classification", None, "SEA 0 throughout (no change)"),
}


def scenario(name: str, *, rows: int = 10_000, seed: int = 0, label_delay: timedelta = timedelta(minutes=10),
             change_at: float | None = None) -> ReplayStream:
    """A synthetic scenario (see the module docstring), one row per minute, labels ``label_delay`` later.
    ``change_at`` moves the change of the single-change scenarios (sea-abrupt, agrawal-abrupt): a share of ``rows``."""
    if name not in SCENARIOS:
        raise StreamError(f"unknown scenario {name!r}; scenarios: {', '.join(SCENARIOS)}, elec2, or a .csv/.parquet "
                          "file")
    builder, task, types, description = SCENARIOS[name]
    if change_at is not None:
        if name not in ("sea-abrupt", "agrawal-abrupt") or not 0.0 < change_at < 1.0:
            raise StreamError(f"change_at applies to sea-abrupt and agrawal-abrupt, as a share in (0, 1); got "
                              f"{change_at!r} for {name!r}")
        pairs, change_points = builder(rows, seed, change_at)
    else:
        pairs, change_points = builder(rows, seed)
    frame = pd.DataFrame([x for x, _ in pairs])
    frame.columns = [f"x{c}" if isinstance(c, int) else str(c) for c in frame.columns]
    features = types or {c: "numeric" for c in frame.columns}
    for column, kind in features.items():
        if kind == "categorical":
            frame[column] = frame[column].astype(str)
    target = [y for _, y in pairs]
    if task == "classification":
        frame["y"] = [int(y) for y in target]
        classes: tuple | None = (0, 1)
    else:
        frame["y"] = [float(y) for y in target]
        classes = None
    times = pd.Series(pd.date_range(START, periods=len(frame), freq=ROW_INTERVAL, tz="UTC"))
    frame[EVENT_TIME] = times
    frame[LABEL_TIME] = times + label_delay
    spec = StreamSpec(name=name, task=task, features=features, target="y", classes=classes,
                      change_points=change_points, description=description)
    return ReplayStream(spec, frame)


def elec2(path: Path = ELEC2, *, rows: int | None = None) -> ReplayStream:
    """Elec2 in its order, one row per 30 minutes; each label arrives with the next row."""
    from controller.actions.datafiles import read_table

    if not path.is_file():
        raise StreamError(f"Elec2 is not at {path}; pass --stream with the path of ELEC.arff.zip")
    frame = read_table(path)
    if rows is not None:
        frame = frame.iloc[:rows]
    frame = frame.reset_index(drop=True)
    features = {"date": "numeric", "day": "categorical", "period": "numeric", "nswprice": "numeric",
                "nswdemand": "numeric", "vicprice": "numeric", "vicdemand": "numeric", "transfer": "numeric"}
    frame["day"] = frame["day"].astype(str)
    times = pd.Series(pd.date_range(START, periods=len(frame), freq=timedelta(minutes=30), tz="UTC"))
    frame[EVENT_TIME] = times
    frame[LABEL_TIME] = times + timedelta(minutes=30)
    spec = StreamSpec(name="elec2", task="classification", features=features, target="class",
                      classes=("UP", "DOWN"), description="Elec2, labels with the next row (30 minutes)")
    return ReplayStream(spec, frame)


def from_file(path: Path, policy: PolicyConfig, *, label_delay: timedelta | None = None) -> ReplayStream:
    """A user's CSV/Parquet file under ``policy``: the policy's feature columns and target (typed and checked as
    ``driftpilot bootstrap`` checks them), ``event_time`` (when each prediction was made) and ``label_time`` (when its
    label arrived) or a fixed ``label_delay``. Rows are replayed in event-time order. A file that cannot be used
    raises :class:`~controller.actions.datafiles.DataFileError` naming the file, the column and the row."""
    from controller.actions.datafiles import (
        DataFileError,
        features_from_table,
        read_table,
        target_from_table,
        times_from_column,
    )

    source = str(path)
    table = read_table(path).reset_index(drop=True)
    needs = (f"a replay file needs the policy's features {list(policy.features)}, the target "
             f"{policy.target.name!r}, {EVENT_TIME!r} (when each prediction was made) and {LABEL_TIME!r} (when its "
             "label arrived, or pass --label-delay)")
    if EVENT_TIME not in table.columns:
        raise DataFileError(f"{source}: no {EVENT_TIME!r} column; {needs}")
    if LABEL_TIME not in table.columns and label_delay is None:
        raise DataFileError(f"{source}: no {LABEL_TIME!r} column; add one (when each label arrived) or pass "
                            "--label-delay (e.g. 30m)")
    frame = features_from_table(table, policy, source, extra_columns=(EVENT_TIME, LABEL_TIME))
    frame[policy.target.name] = target_from_table(table, policy, source).to_numpy()
    frame[EVENT_TIME] = times_from_column(table[EVENT_TIME], f"{source}: column {EVENT_TIME!r}")
    if LABEL_TIME in table.columns:
        frame[LABEL_TIME] = times_from_column(table[LABEL_TIME], f"{source}: column {LABEL_TIME!r}")
    else:
        frame[LABEL_TIME] = frame[EVENT_TIME] + label_delay
    early = (frame[LABEL_TIME] < frame[EVENT_TIME]).to_numpy()
    if early.any():
        row = int(early.argmax())
        raise DataFileError(f"{source}: row {row} has its label_time {frame[LABEL_TIME][row].isoformat()} before its "
                            f"event_time {frame[EVENT_TIME][row].isoformat()}; a label arrives after its prediction")
    frame = frame.sort_values(EVENT_TIME, kind="stable").reset_index(drop=True)
    classes = policy.target.classes
    spec = StreamSpec(name=path.stem, task=policy.task, features=policy.feature_types, target=policy.target.name,
                      classes=tuple(classes) if classes else None, description=f"replay of {path.name}")
    return ReplayStream(spec, frame)

"""``driftpilot replay`` against a real ``driftpilot serve`` subprocess (a bootstrapped toy model with a bearer
token): predictions through /predict, labels when due (by rows, or by the file's label times), the served accuracy,
a refused row, the held-back rows, and the pace kept on an injected clock (nothing sleeps)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pandas as pd
import pytest
from click.testing import CliRunner

from controller.cli.main import main
from controller.cli.replay_command import Pacer, Traffic, replay
from controller.client import DriftpilotClient
from controller.clock import ManualClock, SystemClock
from tests.client.client_kit import Server, serving, token_toy
from tests.conftest import T0
from tests.loop.daemon_kit import Toy
from tests.toy import toy_table

pytestmark = pytest.mark.slow

TOKEN_ENV = "DRIFTPILOT_REPLAY_TEST_TOKEN"
TOKEN = "replay-test-token"


@pytest.fixture(scope="module")
def toy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Toy]:
    toy = token_toy(tmp_path_factory, "replay", TOKEN_ENV)
    yield toy
    toy.store.dispose()


@pytest.fixture(scope="module")
def server(toy: Toy) -> Iterator[Server]:
    with serving(toy, {TOKEN_ENV: TOKEN}) as server:
        yield server


class Recorder(httpx.BaseTransport):
    """The real transport, noting each request's route, the injected clock's time and its items."""

    def __init__(self, clock: ManualClock) -> None:
        self.inner = httpx.HTTPTransport()
        self.clock = clock
        self.sent: list[tuple[str, float, list[dict]]] = []
        self.answers: list[dict] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        route = request.url.path.rsplit("/", 1)[-1]
        if request.method == "POST":
            self.sent.append((route, (self.clock.now() - T0).total_seconds(), json.loads(request.content)["items"]))
        response = self.inner.handle_request(request)
        if route == "predict":
            response.read()
            self.answers.append(response.json())
        return response

    def close(self) -> None:
        self.inner.close()


def champion_accuracy(toy: Toy, table: pd.DataFrame) -> float:
    served = toy.registry.load(toy.loaded.config.registered_model, version="1").model
    return float((served.predict(table[["x1", "x2", "color"]]) == table.y).mean())


def counts(toy: Toy) -> tuple[int, int]:
    stats = toy.store.label_stats(toy.name)
    return stats.by_source.get("served", 0), stats.labeled


def test_rows_are_paced_on_the_injected_clock_and_labels_follow_by_rows(toy: Toy, server: Server) -> None:
    table = toy_table(30, seed=5)
    features = table[["x1", "x2", "color"]].to_dict(orient="records")
    clock = ManualClock(T0)
    slept: list[float] = []

    def sleep(seconds: float) -> None:  # the only thing that moves the clock: no request takes time
        slept.append(seconds)
        clock.advance(seconds=seconds)

    before = counts(toy)
    recorder = Recorder(clock)
    with DriftpilotClient(server.url, token=TOKEN, transport=recorder, retries=0) as client:
        result = replay(client, toy.name, "classification", Traffic.by_rows(features, table.y.tolist(), delay=3),
                        pacer=Pacer(10.0, clock, sleep), batch_size=5)

    # 10 rows/s in requests of 5: one request every half second, sent exactly on time.
    assert slept == pytest.approx([0.5] * 5)
    predicts = [(at, items) for route, at, items in recorder.sent if route == "predict"]
    assert [at for at, _ in predicts] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    # Each label 3 rows after its prediction: after the request carrying rows 0-4, the labels of rows 0 and 1; ...;
    # the last three at the end.
    ids = [p["prediction_id"] for answer in recorder.answers for p in answer["predictions"]]
    labels = [[ids.index(item["prediction_id"]) for item in items]
              for route, _, items in recorder.sent if route == "labels"]
    assert labels == [[0, 1], [2, 3, 4, 5, 6], [7, 8, 9, 10, 11], [12, 13, 14, 15, 16], [17, 18, 19, 20, 21],
                      [22, 23, 24, 25, 26], [27, 28, 29]]
    assert [item["label"] for route, _, items in recorder.sent if route == "labels" for item in items] == \
        table.y.tolist()
    assert result.rows == 30 and result.labels == 30 and result.versions == {"1": 30}
    assert result.metric.value == pytest.approx(champion_accuracy(toy, table))
    assert counts(toy) == (before[0] + 30, before[1] + 30)


def test_the_pacer_does_not_sleep_when_requests_are_slower_than_the_rate() -> None:
    clock = ManualClock(T0)
    slept: list[float] = []
    pacer = Pacer(4.0, clock, slept.append)
    assert pacer.wait(0) == 0.0
    clock.advance(seconds=1.0)      # the first request took a second: row 2 was due at 0.5 s
    assert pacer.wait(2) == 0.0
    assert pacer.wait(6) == pytest.approx(0.5)  # due at 1.5 s, now 1.0 s (sleep recorded, the clock not moved)
    assert slept == pytest.approx([0.5])
    assert Pacer(None, clock, slept.append).wait(1000) == 0.0


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--log-level", "WARNING", *args])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def test_labels_at_their_label_time_in_the_files_event_times(toy: Toy, server: Server, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)  # the token the policy's api.token_env names: replay's default
    table = toy_table(12, seed=6)
    table["x1"] = table.x1.clip(-3, 3) + 10 * pd.RangeIndex(12)  # row i's x1 is about 10 i
    start = pd.Timestamp("2026-03-01T00:00:00Z")
    table["event_time"] = [start + timedelta(minutes=i) for i in range(12)]
    # Each label a minute after its row, so it goes with the next row; row 0's only after the file ends.
    table["label_time"] = [start + timedelta(minutes=30)] + [start + timedelta(minutes=i + 1) for i in range(1, 12)]
    path = tmp_path / "traffic.csv"
    table.to_csv(path, index=False)
    labeled = toy.store.label_stats(toy.name).labeled
    code, out, err = run("replay", "--config", str(toy.path), "--input", str(path), "--url", server.url,
                         "--time-column", "event_time", "--label-time-column", "label_time")
    assert code == 0, err
    assert "each label at its label_time in the file's event_time" in out
    assert f"replayed 12 rows (v1: 12 rows) and sent 12 labels; served accuracy " \
           f"{champion_accuracy(toy, table):.4f} on 12 labels" in out
    assert toy.store.label_stats(toy.name).labeled == labeled + 12
    window = toy.store.labeled_window(toy.name, as_of=SystemClock().now())  # in arrival order
    assert [round(x / 10) for x in window.features.x1.iloc[-12:]] == [*range(1, 12), 0]


def test_a_refused_row_is_one_line_and_exit_2_and_holdback_selects_the_newest_rows(
        toy: Toy, server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    table = toy_table(40, seed=7).astype({"x1": object})
    table.loc[35, "x1"] = "n/a"
    table.loc[3, "x1"] = "also bad, but not replayed"
    path = tmp_path / "traffic.csv"
    table.to_csv(path, index=False)
    before = counts(toy)
    code, out, err = run("replay", "--config", str(toy.path), "--input", str(path), "--url", server.url,
                         "--holdback", "0.25", "--label-delay", "0")
    assert code == 2
    assert "replaying rows 30..39 of" in out
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: {path}: row 35 (line 37): features.x1: expected a number, got a string "
                               "'n/a'; the server stored nothing of that request, and the rows before it were "
                               "served and logged"), lines[0]
    assert counts(toy) == (before[0] + 5, before[1] + 5)  # rows 30-34, each labeled right after its prediction


def test_without_the_token_the_replay_says_how_to_pass_it(toy: Toy, server: Server, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    path = tmp_path / "traffic.parquet"
    toy_table(5, seed=8).to_parquet(path, index=False)
    code, _, err = run("replay", "--config", str(toy.path), "--input", str(path), "--url", server.url)
    assert code == 1
    assert "401" in err or "token" in err
    assert "pass --token" in err
    code, out, err = run("replay", "--config", str(toy.path), "--input", str(path), "--url", server.url,
                         "--token", TOKEN, "--rate", "1000", "--batch-size", "2")
    assert code == 0, err
    assert "replayed 5 rows (v1: 5 rows) and sent 5 labels" in out

"""Near-real-time aggregates on scripted event sequences with event times, through the real Redis Stream and online
store: windows in event time, out-of-order and late events, expiry of a quiet entity as the watermark moves, the
restart protocol in-process (a crash at each point of a step), and a seeded stream against an independent oracle."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest

from controller.features.config import StreamView
from controller.features.online_store import meta_watermark
from controller.features.serving import open_event_stream, open_store
from controller.features.stream import StreamProcessor
from controller.features.windows import RollingAggregate
from controller.policy_loader import load_policy
from tests.features.conftest import REDIS_URL

T = 1_767_225_600.0  # 2026-01-01T00:00:00Z

VIEWS_POLICY = """\
model: activity
task: regression
target: y
features:
  n_5m: numeric
  spent_1h: numeric
  avg_1h: numeric
  low_1h: numeric
  high_1h: numeric
  shops_1h: numeric
feature_views:
  online_store: {{url: "{redis}", prefix: "{prefix}"}}
  events: {{stream: "{prefix}events", batch_size: {batch}, checkpoint_every: {checkpoint}, block_ms: 10}}
  views:
    - name: activity
      kind: stream
      entity: user_id
      max_age: 5m
      aggregates:
        - {{name: n_5m, agg: count, window: 5m}}
        - {{name: spent_1h, agg: sum, of: amount, window: 1h}}
        - {{name: avg_1h, agg: mean, of: amount, window: 1h}}
        - {{name: low_1h, agg: min, of: amount, window: 1h}}
        - {{name: high_1h, agg: max, of: amount, window: 1h}}
        - {{name: shops_1h, agg: distinct, of: shop, window: 1h}}
"""


def views_policy(tmp_path: Path, prefix: str, batch: int = 1000, checkpoint: int = 50_000):
    path = tmp_path / "activity.yaml"
    path.write_text(VIEWS_POLICY.format(redis=REDIS_URL, prefix=prefix, batch=batch, checkpoint=checkpoint))
    return load_policy(path, environ={}).config


def processor_for(policy, batch: int = 1000) -> StreamProcessor:
    return StreamProcessor(policy.feature_views.stream_views, open_event_stream(policy), open_store(policy),
                           batch_size=batch, block_ms=10, checkpoint_every=policy.feature_views.events.checkpoint_every)


def drain(processor: StreamProcessor, timeout_s: float = 120.0) -> None:
    """Fold events until a step finds none; fail (not hang) if the finite stream still yields events after
    ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while processor.step(block_ms=10):
        if time.monotonic() > deadline:
            pytest.fail(f"the stream processor still found new events after {timeout_s} s of draining a finite stream")


def stored(policy, keys: list[str]) -> tuple[dict[str, dict | None], float | None]:
    records, meta = open_store(policy).read([("activity", k) for k in keys], [meta_watermark("activity")])
    watermark = meta[meta_watermark("activity")]
    return ({k: dict(r.values) if r else None for k, r in zip(keys, records, strict=True)},
            float(watermark) if watermark else None)


def test_scripted_sequence_gives_the_windowed_aggregates(tmp_path: Path, prefix: str):
    policy = views_policy(tmp_path, prefix)
    stream = open_event_stream(policy)
    processor = processor_for(policy)
    processor.start()
    stream.append([
        (T + 0, {"user_id": "a", "amount": 10.0, "shop": "s1"}),
        (T + 60, {"user_id": "a", "amount": 30.0, "shop": "s2"}),
        (T + 90, {"user_id": "b", "amount": 5.0, "shop": "s1"}),
        (T + 30, {"user_id": "a", "amount": 20.0, "shop": "s1"}),    # out of order, inside every window
        (T + 240, {"user_id": "a", "amount": 1.0}),                   # no shop: counted, not in distinct
    ])
    drain(processor)
    values, watermark = stored(policy, ["a", "b"])
    assert watermark == T + 240
    assert values["a"] == {"n_5m": 4, "spent_1h": 61.0, "avg_1h": 15.25, "low_1h": 1.0, "high_1h": 30.0,
                           "shops_1h": 2}
    assert values["b"] == {"n_5m": 1, "spent_1h": 5.0, "avg_1h": 5.0, "low_1h": 5.0, "high_1h": 5.0, "shops_1h": 1}

    # b's one event at T+90 leaves the 5-minute window when the watermark passes T+390 (events of others move it):
    # b is rewritten though it sent nothing.
    stream.append([(T + 391, {"user_id": "c", "amount": 2.0, "shop": "s9"})])
    drain(processor)
    values, _ = stored(policy, ["a", "b"])
    assert values["b"] == {"n_5m": 0, "spent_1h": 5.0, "avg_1h": 5.0, "low_1h": 5.0, "high_1h": 5.0, "shops_1h": 1}
    assert values["a"]["n_5m"] == 1  # only T+240 is within (T+91, T+391]

    # An hour later every window of a and b is empty: their records are deleted (a count of 0 needs no record).
    stream.append([(T + 3900, {"user_id": "c", "amount": 4.0, "shop": "s9"}),
                   (T + 100, {"user_id": "a", "amount": 1000.0, "shop": "late"})])   # late: outside every window
    drain(processor)
    values, watermark = stored(policy, ["a", "b", "c"])
    assert (values["a"], values["b"], watermark) == (None, None, T + 3900)
    assert values["c"] == {"n_5m": 1, "spent_1h": 6.0, "avg_1h": 3.0, "low_1h": 2.0, "high_1h": 4.0, "shops_1h": 1}
    assert processor.counters()["late"] == 1


def test_a_bad_entry_from_a_direct_producer_is_skipped_and_counted(tmp_path: Path, prefix: str):
    import redis

    policy = views_policy(tmp_path, prefix)
    processor = processor_for(policy)
    processor.start()
    client = redis.Redis.from_url(REDIS_URL)
    client.xadd(f"{prefix}events", {"event_time": "yesterday", "data": "{}"})
    client.xadd(f"{prefix}events", {"event_time": repr(T), "data": json.dumps({"user_id": "a", "amount": "x"})})
    drain(processor)
    values, _ = stored(policy, ["a"])
    assert processor.counters()["invalid"] == 1
    assert values["a"] == {"n_5m": 1, "spent_1h": 0.0, "shops_1h": 0}  # "x" is not a number: not aggregated


def seeded_events(n: int, seed: int = 7) -> list[tuple[float, dict]]:
    """A seeded stream: 40 users, mostly in time order with some events up to 2 minutes late."""
    rng = np.random.default_rng(seed)
    t = T + np.cumsum(rng.exponential(2.0, n)) - rng.choice([0.0, 0.0, 0.0, 120.0], n) * rng.random(n)
    return [(float(t[i]), {"user_id": f"u{rng.integers(40)}", "amount": float(np.round(rng.gamma(2, 20), 2)),
                           "shop": f"s{rng.integers(15)}"}) for i in range(n)]


def oracle(view: StreamView, events: list[tuple[float, dict]]) -> dict[str, dict]:
    """Aggregates recomputed from scratch from the definition (no incremental state): for each event in stream
    order the watermark is the largest time so far; an event outside a window at its arrival is never counted."""
    watermark = -np.inf
    kept: dict[str, list] = {}
    for t, data in events:
        watermark = max(watermark, t)
        kept.setdefault(data["user_id"], []).append((t, data, watermark))
    out = {}
    for user, rows in kept.items():
        values = {}
        for a in view.aggregates:
            w = a.window.total_seconds()
            inside = [d for t, d, wm in rows if t > wm - w and t > watermark - w]
            if a.agg == "count":
                values[a.name] = len(inside)
                continue
            xs = [d[a.of] for d in inside]
            if a.agg == "sum":
                values[a.name] = float(sum(xs))
            elif a.agg == "distinct":
                values[a.name] = len(set(xs))
            else:
                values[a.name] = None if not xs else float(np.mean(xs)) if a.agg == "mean" else (
                    min(xs) if a.agg == "min" else max(xs))
        if any(t > watermark - view.longest_window.total_seconds() for t, _, _ in rows):
            out[user] = {k: v for k, v in values.items() if v is not None}
    return out


def assert_same(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for user, expected in want.items():
        assert set(got[user]) == set(expected), user
        for name, value in expected.items():
            assert got[user][name] == pytest.approx(value, rel=1e-9, abs=1e-9), (user, name)


@pytest.mark.parametrize("crash", ["before_write", "after_write_before_ack", "after_ack"])
def test_restart_at_any_point_of_a_step_counts_every_event_once(tmp_path: Path, prefix: str, crash: str):
    policy = views_policy(tmp_path, prefix, batch=250, checkpoint=600)
    events = seeded_events(3000)
    open_event_stream(policy).append(events)
    first = processor_for(policy, batch=250)
    first.start()
    for _ in range(5):  # 1,250 events; a checkpoint after 750 (every 600, taken at step ends)
        first.step(block_ms=10)
    # A crash in the middle of the sixth step: the batch is delivered, then the process dies at `crash`.
    batch = first.events.read_new(first.consumer, 250, 10)
    if crash != "before_write":
        for entry_id, fields in batch:
            first._fold_entry(entry_id, fields)
        first._flush()
    if crash == "after_ack":
        first.events.ack([entry_id for entry_id, _ in batch])
    del first  # its memory is gone; Redis keeps what it wrote

    second = processor_for(policy, batch=250)
    recovery = second.start()
    assert recovery.replayed == 1500 - 750  # the events after the checkpoint, up to the last delivered
    drain(second)

    assert second.counters()["folded"] == 3000
    assert second.events.pending_ids() == []
    view = policy.feature_views.stream_views[0]
    users = sorted({d["user_id"] for _, d in events})
    values, watermark = stored(policy, users)
    assert watermark == max(t for t, _ in events)
    assert_same({u: v for u, v in values.items() if v is not None}, oracle(view, events))


def test_rolling_aggregate_min_max_recompute_after_their_extreme_expires():
    low, high = RollingAggregate("min", 10.0), RollingAggregate("max", 10.0)
    for t, x in [(0.0, 1.0), (5.0, 7.0), (6.0, 3.0)]:
        low.add(t, x)
        high.add(t, x)
    low.expire(0.0)
    high.expire(5.0)
    assert (low.value(), high.value()) == (3.0, 3.0)
    low.expire(6.0)
    assert (low.value(), low.count()) == (None, 0)

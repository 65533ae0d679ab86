"""The segment codec (controller/store/segments.py): a block of rows encoded, written to bytes and read back keeps
every JSON type exactly, column by column.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from controller.store import segments as seg


def test_the_segment_codec_keeps_every_json_type_exactly() -> None:
    values = [1, 1.0, -0.0, 2**53, 2**53 + 1, -(2**63), True, False, None, "NaN", "Infinity", "-Infinity", "x",
              "", "é☃", [1, "a"], {"k": [None]}, 1e300, 5e-324]
    n = len(values)
    features = [{"v": v, "w": float(i), **({"only": i} if i % 3 else {})} for i, v in enumerate(values)]
    block = seg.RowBlock(
        seq=np.arange(1, n + 1), prediction_id=[f"p{i}" for i in range(n)], value=values,
        arrived_at=np.arange(n, dtype=np.int64) * 1_000_000,
        superseded_at=np.full(n, seg.SUPERSEDED_NEVER), owner=np.ones(n, dtype=bool),
        event_time=np.zeros(n, dtype=np.int64), received_at=np.zeros(n, dtype=np.int64),
        model_version=[None] * n, source=["logged"] * n, prediction=values[::-1],
        scores=[None if i % 2 else {"a": 0.5, "b": i} for i in range(n)], features=features)
    part = seg.Part.of(seg.from_bytes(seg.to_bytes(seg.encode(block))))
    back = seg.block_rows(part)

    def typed(items: list[Any]) -> list[str]:
        return [f"{type(v).__name__}:{json.dumps(v)}" for v in items]

    assert typed(back.value) == typed(values)
    assert typed(back.prediction) == typed(values[::-1])
    assert [typed(list(d.items())) for d in back.features] == [typed(list(d.items())) for d in features]
    assert back.scores == block.scores
    # Each typed column on its own, also with every value of one kind.
    for column in ([1.5, None, 2.5] * 10, [1, 2, None] * 10, ["a", None] * 20, [True, None] * 20, [None] * 30,
                   [2**70, 1] * 10, [1.5, "NaN", 3] * 10):
        one = seg.RowBlock(**_block_of(column))
        again = seg.block_rows(seg.Part.of(seg.from_bytes(seg.to_bytes(seg.encode(one)))))
        assert typed(again.value) == typed(column)


def _block_of(values: list[Any]) -> dict[str, Any]:
    n = len(values)
    return {"seq": np.arange(n), "prediction_id": [str(i) for i in range(n)], "value": values,
            "arrived_at": np.zeros(n, dtype=np.int64), "superseded_at": np.full(n, seg.SUPERSEDED_NEVER),
            "owner": np.ones(n, dtype=bool), "event_time": np.zeros(n, dtype=np.int64),
            "received_at": np.zeros(n, dtype=np.int64), "model_version": [None] * n, "source": ["logged"] * n,
            "prediction": values, "scores": [None] * n, "features": [{"v": v} for v in values]}

"""Writes the data of the feature-view example (config/example-features.yaml), seeded, so it is the same everywhere.

    .venv/bin/python examples/features/generate.py      # rewrites the three CSV files beside this script

* ``user_profile.csv`` — the batch view's source: per user, the average amount of the last 30 days and a segment.
* ``train.csv`` — labeled history for ``driftpilot bootstrap``: every feature of the policy as it was served
  (request-time ``amount``, the batch features, the stream aggregates) and the label ``is_fraud``.
* ``to_score.csv`` — rows to score offline with ``driftpilot predict`` (every feature in the file, no label).

A payment is more likely fraud when it is large against the user's usual amount, when the user made many payments in
the last ten minutes, and for new users.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
USERS = 200
SEGMENTS = ("regular", "premium", "new")


def profiles(rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame({
        "user_id": [f"u-{i:04d}" for i in range(1, USERS + 1)],
        "avg_amount_30d": np.round(rng.lognormal(3.5, 0.6, USERS), 2),
        "segment": rng.choice(SEGMENTS, USERS, p=[0.6, 0.25, 0.15]),
    })


def payments(rng: np.random.Generator, users: pd.DataFrame, rows: int) -> pd.DataFrame:
    who = users.iloc[rng.integers(0, len(users), rows)].reset_index(drop=True)
    ratio = rng.lognormal(0.0, 0.8, rows)
    amount = np.round(who["avg_amount_30d"].to_numpy() * ratio, 2)
    count = rng.poisson(1.0, rows) + (rng.random(rows) < 0.1) * rng.integers(3, 12, rows)
    amount_sum = np.round(amount * (1 + rng.poisson(0.8, rows)), 2)
    logit = -4.0 + 1.6 * np.log(ratio) + 0.45 * count + 1.2 * (who["segment"].to_numpy() == "new")
    fraud = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
    return pd.DataFrame({"amount": amount, "avg_amount_30d": who["avg_amount_30d"], "segment": who["segment"],
                         "txn_count_10m": count, "amount_sum_1h": amount_sum, "is_fraud": fraud})


def main() -> None:
    rng = np.random.default_rng(7)
    users = profiles(rng)
    users.to_csv(HERE / "user_profile.csv", index=False)
    payments(rng, users, 2000).to_csv(HERE / "train.csv", index=False)
    payments(rng, users, 20).drop(columns=["is_fraud"]).to_csv(HERE / "to_score.csv", index=False)


if __name__ == "__main__":
    main()

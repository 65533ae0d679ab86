"""A regression race end to end: River regressors race a scikit-learn champion and serve when they win."""

from __future__ import annotations

import tempfile
from datetime import timedelta
from pathlib import Path

import pandas as pd
import river

from controller.api.serving import predict_frame
from controller.backtest.replay import replay
from controller.backtest.streams import scenario
from controller.policy_loader import load_policy
from trainers import RiverModel


def test_a_river_regressor_is_served_as_numbers_not_as_classes() -> None:
    model = RiverModel(river.linear_model.LinearRegression(), {"x": "numeric"}, "regression")
    model.learn(pd.DataFrame({"x": [1.0, 2.0]}), pd.Series([2.0, 4.0]))
    served = predict_frame(model, pd.DataFrame({"x": [1.5]}))
    assert served.scores is None and isinstance(served.values[0], float)


def test_the_regression_race_switches_to_an_online_regressor_and_serves_it() -> None:
    loaded = load_policy(Path("config/backtest-auto-regression.yaml"))
    body = loaded.config.model_dump(mode="json", by_alias=True)
    body["rules"] = []  # the race alone: no retrains, so the test takes seconds
    body["race"]["racers"] = [r for r in body["race"]["racers"] if r["name"] in ("linear", "no-change")]
    body["race"]["batch_rows"] = 5
    loaded = loaded._replace(config=type(loaded.config).model_validate(body))
    stream = scenario("friedman-gradual", rows=1600, seed=0, label_delay=timedelta(minutes=5))
    with tempfile.TemporaryDirectory() as folder:
        result = replay(loaded, stream, Path(folder), bootstrap_rows=600, tick_every=5)
    switches = [d for d in result.decisions if d["trigger"] == "race" and d["action"] in ("promote", "rollback")]
    assert switches, "an online regressor should beat the 480-row bootstrap model on this drifting stream"
    assert set(result.served["racer"]) >= {"v1", switches[0]["evidence"]["race"]["challenger"]}
    assert result.served["score"].notna().all()
    assert result.race["linear"].mean() < result.race["no-change"].mean()

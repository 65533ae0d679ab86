"""A model trained outside driftpilot, as your own training code would make it, for the README's "Put your own model
under driftpilot" walk-through (policy: config/example-classification.yaml, Elec2).

    .venv/bin/python examples/own_model/train_elsewhere.py [--data ../shared/data/ELEC.arff.zip]

It trains a scikit-learn pipeline on Elec2's first 18,000 rows, logs it with plain MLflow (no driftpilot) to the
policy's default MLflow store ``sqlite:///.driftpilot/mlflow.db`` as the registered model ``my-elec2-model``, and
writes into ``.driftpilot/own-model/``:

* ``reference.csv`` — rows 18,000..22,655 with their labels: the reference window for ``driftpilot adopt``;
* ``predictions.csv`` / ``labels.csv`` — rows 22,656..23,655 as your application would have logged them (its
  predictions under its own ids; the natural labels, later), for ``driftpilot predictions import`` / ``labels import``.

Rows 22,656 on are what ``driftpilot replay --holdback 0.5`` plays, as with ``make daemon``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import mlflow
import mlflow.sklearn
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder

from controller.actions.datafiles import read_table

NUMERIC = ["date", "period", "nswprice", "nswdemand", "vicprice", "vicdemand", "transfer"]
CATEGORICAL = ["day"]
FEATURES = ["date", "day", "period", "nswprice", "nswdemand", "vicprice", "vicdemand", "transfer"]  # policy order
TRAIN, REFERENCE_END, LOGGED_END = 18_000, 22_656, 23_656


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/ELEC.arff.zip", help="Elec2 (ARFF zip, CSV or Parquet)")
    parser.add_argument("--tracking-uri", default="sqlite:///.driftpilot/mlflow.db")
    parser.add_argument("--name", default="my-elec2-model", help="registered model name")
    parser.add_argument("--out", default=".driftpilot/own-model", type=Path)
    args = parser.parse_args()

    table = read_table(args.data)
    table["day"] = table["day"].astype(str)
    X, y = table[FEATURES], table["class"].astype(str)
    model = make_pipeline(
        ColumnTransformer([("num", SimpleImputer(), NUMERIC),
                           ("cat", OneHotEncoder(handle_unknown="ignore"), CATEGORICAL)]),
        HistGradientBoostingClassifier(max_iter=100, random_state=0),
    ).fit(X.iloc[:TRAIN], y.iloc[:TRAIN])

    mlflow.set_tracking_uri(args.tracking_uri)
    experiment = mlflow.set_experiment("my-own-training")
    with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
        mlflow.log_metric("train_rows", TRAIN)
        # cloudpickle: MLflow's default skops format refuses HistGradientBoosting's internals.
        info = mlflow.sklearn.log_model(model, name="model", registered_model_name=args.name,
                                        input_example=X.iloc[:3], serialization_format="cloudpickle",
                                        pip_requirements=["scikit-learn", "cloudpickle"])

    args.out.mkdir(parents=True, exist_ok=True)
    table.iloc[TRAIN:REFERENCE_END][FEATURES + ["class"]].to_csv(args.out / "reference.csv", index=False)
    logged = X.iloc[REFERENCE_END:LOGGED_END]
    ids = [f"app-{i}" for i in range(REFERENCE_END, LOGGED_END)]
    logged.assign(prediction_id=ids, prediction=model.predict(logged)).to_csv(args.out / "predictions.csv",
                                                                               index=False)
    pd.DataFrame({"prediction_id": ids, "class": y.iloc[REFERENCE_END:LOGGED_END]}).to_csv(
        args.out / "labels.csv", index=False)
    print(f"logged {args.name} version {info.registered_model_version} (run {run.info.run_id}) to "
          f"{args.tracking_uri}; wrote {args.out}/reference.csv, predictions.csv and labels.csv")
    print(f"next: driftpilot adopt --config config/example-classification.yaml --model-uri "
          f"models:/{args.name}/{info.registered_model_version} --reference {args.out}/reference.csv")


if __name__ == "__main__":
    main()

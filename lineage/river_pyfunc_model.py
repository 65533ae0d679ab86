"""MLflow "model from code" that serves a pickled River model as a pyfunc.

driftpilot never imports this module: MLflow copies the file into each River model version and runs it
when the version is loaded, so a version stays loadable with only mlflow, river and cloudpickle installed.
``predict`` returns class probabilities (one column per class) for classifiers, else ``predict_one`` values.
"""

import cloudpickle
import mlflow.models
import mlflow.pyfunc
import pandas as pd


class RiverPyfunc(mlflow.pyfunc.PythonModel):
    """Holds the live River estimator in ``self.model``; ``learn_one`` keeps working on it after loading."""

    def load_context(self, context):
        with open(context.artifacts["river_model"], "rb") as f:
            self.model = cloudpickle.load(f)

    def predict(self, context, model_input: pd.DataFrame, params=None):
        if hasattr(self.model, "predict_proba") and hasattr(self.model, "classes_"):
            # A DataFrame-level wrapper around a River learner: it already speaks pandas.
            return pd.DataFrame(
                self.model.predict_proba(model_input),
                index=model_input.index,
                columns=[str(c) for c in self.model.classes_],
            )
        if hasattr(self.model, "learner") and hasattr(self.model, "predict"):
            return pd.Series(self.model.predict(model_input), index=model_input.index, name="prediction")
        rows = model_input.to_dict(orient="records")
        if hasattr(self.model, "predict_proba_one"):
            probas = pd.DataFrame(
                [self.model.predict_proba_one(row) for row in rows], index=model_input.index
            )
            # A class the model has not seen for some row is absent from that row's dict: probability 0.
            return probas.reindex(columns=sorted(probas.columns, key=str)).fillna(0.0)
        return pd.Series(
            [self.model.predict_one(row) for row in rows],
            index=model_input.index,
            name="prediction",
        )


mlflow.models.set_model(RiverPyfunc())

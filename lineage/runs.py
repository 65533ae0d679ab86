"""Where driftpilot's MLflow runs live: the experiments, their notes, links into the MLflow UI, params as text.

One registered model uses three experiments, so that each runs table has columns that mean one thing:

* ``<experiment>`` — one **training** run per registered version (``v4-finetune``): params, the version's own
  holdout metrics (``holdout.<metric>``), the data window as a dataset input, the logged model.
* ``<experiment>/comparisons`` — one **evaluation** run per champion/challenger comparison
  (``v4 vs champion v3``): ``champion.<m>``, ``challenger.<m>``, ``delta.<m>`` side by side, both versions and the
  holdout (rows, fingerprint) as params; one child run per model holding the same metric keys, so MLflow's
  run-compare view of the two children shows both models scored on the same rows.
* ``<experiment>/decisions`` — **decision** runs: drift checks, controller decisions and one run per alias change
  (promote / rollback), the append-only alias history.

Every experiment is tagged ``mlflow.experimentKind=custom_model_development``, so the UI opens it on model-training
runs rather than on the GenAI traces view. What a comparison run holds: :mod:`lineage.comparisons`; an alias
event: :mod:`lineage.aliases`; a decision run: :mod:`lineage.decision_runs`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Experiment
from mlflow.exceptions import MlflowException

from lineage.errors import LineageError

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
#: The MLflow UI's "Machine learning" experiment type (the other is GenAI apps & agents).
EXPERIMENT_KIND = "custom_model_development"
NOTE_TAG = "mlflow.note.content"  # the description of a run or experiment in the MLflow UI
PARENT_RUN_TAG = "mlflow.parentRunId"

COMPARISONS = "comparisons"
DECISIONS = "decisions"
EXPERIMENT_NOTES = {
    "": "Training runs of driftpilot: one run per registered model version (params, the version's own holdout "
    "metrics as `holdout.*`, the data window as a dataset input, the logged model). To compare a challenger with "
    "the champion on the same rows, open the sibling experiment `{name}/comparisons`.",
    COMPARISONS: "Champion/challenger comparisons of driftpilot: one evaluation run per comparison, both models "
    "scored on the SAME held-out rows (`holdout_fingerprint`, `holdout_rows`). Columns `champion.*`, "
    "`challenger.*`, `delta.*` (challenger minus champion); expand a run to see one child run per model with the "
    "same metric keys, ready for MLflow's compare view.",
    DECISIONS: "Decisions of driftpilot: drift checks (`kind=decision`, per-feature drift scores, verdicts, the HTML "
    "report), controller decisions and one run per alias change (`kind=alias_change`): the append-only history "
    "of promotions and rollbacks.",
}

#: MLflow 3.17's UI picks its sidebar from a GenAI / Model training switch (default GenAI), not from the experiment's
#: kind; a link carrying this query opens the model-training view.
UI_QUERY = "?workflowType=machine_learning"


def ui_link(path: str) -> str:
    """A link inside the MLflow UI (hash route), e.g. ``ui_link("models/fraud/versions/3")``."""
    return f"#/{path}{UI_QUERY}"


def experiment_kind_tags() -> dict[str, str]:
    return {EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}


def ensure_kind(client: MlflowClient, experiment: Experiment, role: str = "") -> None:
    """Tag an experiment (also one created by an older driftpilot) as a model-training experiment, with a note."""
    tags = experiment.tags or {}
    if tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    if NOTE_TAG not in tags:
        main_name = experiment.name.rsplit("/", 1)[0] if role else experiment.name
        client.set_experiment_tag(
            experiment.experiment_id, NOTE_TAG, EXPERIMENT_NOTES[role].format(name=main_name)
        )


def side_experiment(
    client: MlflowClient, main: Experiment, role: str, *, create: bool, tracking_uri: str
) -> str | None:
    """The id of ``<main>/<role>``, created (with the main experiment's artifact root) when ``create``."""
    name = f"{main.name}/{role}"
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            raise LineageError(
                f"experiment {name!r} at {tracking_uri} is deleted; restore it with `mlflow experiments restore "
                f"--experiment-id {experiment.experiment_id}` (driftpilot keeps its {role} runs there)"
            )
        if create:
            ensure_kind(client, experiment, role)
        return str(experiment.experiment_id)
    if not create:
        return None
    # A server decides its own artifact root; a local store shares the main experiment's folder (run ids differ).
    remote = tracking_uri.startswith(("http://", "https://"))
    try:
        experiment_id = client.create_experiment(
            name,
            artifact_location=None if remote else main.artifact_location,
            tags={**experiment_kind_tags(), NOTE_TAG: EXPERIMENT_NOTES[role].format(name=main.name)},
        )
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":  # another process created it in the meantime
            raise
        experiment_id = client.get_experiment_by_name(name).experiment_id
    return str(experiment_id)


def params_text(params: Mapping[str, Any]) -> dict[str, str]:
    """Param values as MLflow stores them: strings (dicts and lists as JSON), clipped to MLflow's 6,000 characters."""
    return {
        str(k): clip(json.dumps(v, default=str) if isinstance(v, (dict, list, tuple)) else str(v), 6000)
        for k, v in params.items()
    }


def clip(text: str, limit: int) -> str:
    """``text`` cut to ``limit`` characters (ending in ``...`` when cut), for MLflow's tag and param limits."""
    return text if len(text) <= limit else text[: limit - 3] + "..."

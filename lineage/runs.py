"""Where driftpilot's MLflow runs live and what the UI shows of them: experiments, comparisons, alias events.

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
runs rather than on the GenAI traces view.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Experiment
from mlflow.exceptions import MlflowException

from lineage.errors import LineageError
from lineage.record import TAG_PREFIX

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

ALIAS_EVENT_KIND = "alias_change"
COMPARISON_KIND = "comparison"
#: Newest comparisons listed in a version's description; older ones stay findable in the comparisons experiment.
MAX_LISTED_COMPARISONS = 10
COMPARISONS_HEADING = "**Comparisons** (both models scored on the same held-out rows):"
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


# ------------------------------------------------------------------------------------------------ alias events


@dataclass(frozen=True)
class AliasEvent:
    """One promote or rollback call, as recorded in the decisions experiment (oldest first from ``alias_history``)."""

    name: str
    at: datetime
    action: str
    version: str
    before: Mapping[str, str]
    after: Mapping[str, str]
    decision_id: str | None
    reason: str | None
    run_id: str

    @property
    def changed(self) -> bool:
        return dict(self.before) != dict(self.after)

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "action": self.action,
            "version": self.version,
            "before": dict(self.before),
            "after": dict(self.after),
            "decision_id": self.decision_id,
            "reason": self.reason,
            "run_id": self.run_id,
        }


def show_aliases(aliases: Mapping[str, str]) -> str:
    """``champion=v3, previous=v2`` (sorted), or ``(none)``; :func:`parse_aliases` reads it back."""
    return ", ".join(f"{a}=v{v}" for a, v in sorted(aliases.items())) or "(none)"


def parse_aliases(text: str) -> dict[str, str]:
    if text.strip() in ("", "(none)"):
        return {}
    pairs = (item.split("=", 1) for item in text.split(", "))
    return {alias: version.removeprefix("v") for alias, version in pairs}


def alias_event_run(
    name: str,
    action: str,
    version: str,
    before: Mapping[str, str],
    after: Mapping[str, str],
    decision_id: str | None,
    reason: str | None,
) -> tuple[str, dict[str, str], dict[str, str]]:
    """Run name, tags and params of the decision run that records one alias change."""
    moved = "no change (already so)" if dict(before) == dict(after) else f"{show_aliases(before)} → {show_aliases(after)}"
    note = f"**{action}** v{version}: {moved}" + (f"\n\nReason: {reason}" if reason else "")
    tags = {
        TAG_PREFIX + "kind": ALIAS_EVENT_KIND,
        TAG_PREFIX + "registered_model": name,
        TAG_PREFIX + "action": action,
        TAG_PREFIX + "version": version,
        TAG_PREFIX + "champion": after.get("champion", ""),
        NOTE_TAG: note,
    }
    if decision_id:
        tags[TAG_PREFIX + "decision_id"] = decision_id
    if reason:
        tags[TAG_PREFIX + "reason"] = _clip(reason, 5000)
    params = {"action": action, "version": version, "before": show_aliases(before), "after": show_aliases(after)}
    return f"{action}-v{version}", tags, params


def alias_event_from_run(run: Any) -> AliasEvent:
    tags, params = run.data.tags, run.data.params
    return AliasEvent(
        name=tags.get(TAG_PREFIX + "registered_model", ""),
        at=datetime.fromtimestamp(run.info.start_time / 1000, UTC),
        action=params.get("action", tags.get(TAG_PREFIX + "action", "")),
        version=params.get("version", tags.get(TAG_PREFIX + "version", "")),
        before=parse_aliases(params.get("before", "")),
        after=parse_aliases(params.get("after", "")),
        decision_id=tags.get(TAG_PREFIX + "decision_id"),
        reason=tags.get(TAG_PREFIX + "reason"),
        run_id=run.info.run_id,
    )


# ------------------------------------------------------------------------------------------------ comparisons


def check_metrics(what: str, metrics: Mapping[str, float]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isinf(float(value)):
            raise LineageError(
                f"{what}[{key!r}] must be a finite number (NaN for an undefined metric), got {value!r}"
            )
        out[str(key)] = float(value)
    return out


def comparison_metrics(champion: Mapping[str, float], challenger: Mapping[str, float]) -> dict[str, float]:
    """``champion.<m>``, ``challenger.<m>`` and ``delta.<m>`` (challenger minus champion) for the parent run."""
    out = {f"champion.{k}": v for k, v in champion.items()}
    out.update({f"challenger.{k}": v for k, v in challenger.items()})
    for key in sorted(set(champion) & set(challenger)):
        if not (math.isnan(champion[key]) or math.isnan(challenger[key])):
            out[f"delta.{key}"] = challenger[key] - champion[key]
    return out


def comparison_note(
    name: str,
    champion_version: str,
    challenger_version: str,
    champion: Mapping[str, float],
    challenger: Mapping[str, float],
    holdout_rows: int,
    holdout_fingerprint: str,
    verdict: str | None,
    test: str | None,
    p_value: float | None,
) -> str:
    model = _quote(name)
    lines = [
        (
            f"Challenger [version {challenger_version}]({ui_link(f'models/{model}/versions/{challenger_version}')}) vs "
            f"champion [version {champion_version}]({ui_link(f'models/{model}/versions/{champion_version}')}) (the "
            "champion at the time), "
            f"both scored on the same {holdout_rows:,} held-out rows (fingerprint `{holdout_fingerprint[:12]}`)."
        ),
        "",
        "| metric | champion v" + champion_version + " | challenger v" + challenger_version + " | delta |",
        "|---|---|---|---|",
    ]
    for key in sorted(set(champion) | set(challenger)):
        a, b = champion.get(key), challenger.get(key)
        delta = b - a if a is not None and b is not None else None
        lines.append(f"| {key} | {_num(a)} | {_num(b)} | {_num(delta, signed=True)} |")
    if verdict or test or p_value is not None:
        lines += ["", "Verdict: " + " · ".join(
            part for part in (
                f"**{verdict}**" if verdict else None,
                f"test {test}" if test else None,
                f"p = {p_value:.4g}" if p_value is not None else None,
            ) if part
        )]
    return "\n".join(lines)


def comparison_entry(
    role: str,
    other_version: str,
    experiment_id: str,
    run_id: str,
    own: Mapping[str, float],
    other: Mapping[str, float],
    holdout_rows: int,
    holdout_fingerprint: str,
    verdict: str | None,
    when: datetime,
) -> str:
    """One line of a version's description: the comparison it took part in, as ``role`` ('champion'/'challenger')."""
    against = f"vs challenger v{other_version}" if role == "champion" else f"vs champion v{other_version} at the time"
    shared = [k for k in own if k in other][:3]
    scores = ", ".join(f"{k} {_num(own[k])} vs {_num(other[k])}" for k in shared) or "no shared metric"
    tail = f" · verdict {verdict}" if verdict else ""
    return (
        f"- {when:%Y-%m-%d %H:%M} [as {role} {against}]({ui_link(f'experiments/{experiment_id}/runs/{run_id}')}): "
        f"{scores} on "
        f"{holdout_rows:,} rows `{holdout_fingerprint[:12]}`{tail}"
    )


def with_comparison(description: str, entry: str) -> str:
    """``description`` with ``entry`` appended to its comparisons section (newest last, at most a few kept)."""
    head, _, section = (description or "").partition(COMPARISONS_HEADING)
    entries = [line for line in section.splitlines() if line.startswith("- ")]
    older = [line for line in section.splitlines() if line.startswith("(") and "older" in line]
    entries.append(entry)
    dropped = max(0, len(entries) - MAX_LISTED_COMPARISONS)
    if dropped or older:
        previous = int(older[0].split()[0].lstrip("(")) if older else 0
        count = previous + dropped
        note = [f"({count} older comparison{'s' if count != 1 else ''}: see the comparisons experiment)"]
    else:
        note = []
    return "\n\n".join(part for part in (head.rstrip(), COMPARISONS_HEADING + "\n\n" + "\n".join(
        note + entries[dropped:])) if part)


def holdout_dataset_name(fingerprint: str) -> str:
    return f"holdout-{fingerprint[:12]}"


def params_text(params: Mapping[str, Any]) -> dict[str, str]:
    """Param values as MLflow stores them: strings (dicts and lists as JSON), clipped to MLflow's 6,000 characters."""
    return {
        str(k): _clip(json.dumps(v, default=str) if isinstance(v, (dict, list, tuple)) else str(v), 6000)
        for k, v in params.items()
    }


def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    if math.isnan(value):
        return "NaN"
    return f"{value:+.4f}" if signed else f"{value:.4f}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")

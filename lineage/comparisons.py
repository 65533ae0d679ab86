"""Champion/challenger comparisons: the :class:`Comparison` value and the evaluation runs that record one.

A comparison scores two versions on the same held-out rows. Its run goes to ``<experiment>/comparisons``, named
``v<challenger> vs champion v<champion>``, and carries ``champion.<m>``, ``challenger.<m>`` and ``delta.<m>``
(challenger minus champion), both versions, the holdout's row count and fingerprint as params, and the verdict;
it has one child run per model with the SAME metric keys (``accuracy``...), linked to that version's logged model
and to the holdout as a dataset. Both versions' descriptions get a line linking the run.

    registry.log_comparison(Comparison(
        name="fraud", comparison_id="dec-7-v4", champion_version="3", challenger_version="4",
        champion_metrics={"accuracy": 0.81}, challenger_metrics={"accuracy": 0.86},
        holdout_rows=1080, holdout_fingerprint=fingerprint, verdict="promote", p_value=0.01, test="mcnemar_exact",
    ))
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, LoggedModelInput, Metric, Param
from mlflow.entities.model_registry import ModelVersion

from lineage.base import (
    COMPARISON_TAG,
    KIND_TAG,
    MODEL_TAG,
    VERSION_TAG,
    RegistryStore,
    escape,
    logged_model_id,
    version_str,
)
from lineage.descriptions import version_link, with_comparison
from lineage.errors import LineageError
from lineage.record import TAG_PREFIX
from lineage.runs import COMPARISONS, NOTE_TAG, PARENT_RUN_TAG, params_text, ui_link

COMPARISON_KIND = "comparison"
#: The two sides of a comparison, in the order their runs and descriptions are written.
ROLES = ("champion", "challenger")


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """One champion/challenger comparison of versions of ``name`` on one holdout: what its evaluation run logs.

    Checked when made (:class:`LineageError`): metrics must be finite numbers (NaN for an undefined metric), the
    versions positive integers and different, ``holdout_rows`` an int >= 0, ``holdout_fingerprint`` non-empty.
    Versions are kept as strings (``"3"``), metrics as floats; the mappings are read-only copies.
    ``comparison_id`` makes logging idempotent: the same id logged again (a retry) returns the first run.
    """

    name: str
    comparison_id: str
    champion_version: str
    challenger_version: str
    champion_metrics: Mapping[str, float]
    challenger_metrics: Mapping[str, float]
    holdout_rows: int
    holdout_fingerprint: str
    verdict: str | None = None
    p_value: float | None = None
    #: The statistical test behind ``verdict`` and ``p_value`` (``mcnemar_exact``, ``e-process``...).
    test: str | None = None
    #: Extra params of the parent run (the decision id, the rule...).
    params: Mapping[str, Any] = field(default_factory=dict)
    #: Extra tags of the parent run.
    tags: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        champion = check_metrics("champion_metrics", self.champion_metrics)
        challenger = check_metrics("challenger_metrics", self.challenger_metrics)
        champion_version, challenger_version = version_str(self.champion_version), version_str(self.challenger_version)
        if champion_version == challenger_version:
            raise LineageError(
                f"comparison {self.comparison_id}: champion and challenger are both version {champion_version}; "
                "compare two different versions"
            )
        if not isinstance(self.holdout_rows, int) or self.holdout_rows < 0 or not self.holdout_fingerprint:
            raise LineageError(
                f"comparison {self.comparison_id}: holdout_rows must be an int >= 0 and holdout_fingerprint "
                f"non-empty, got {self.holdout_rows!r} and {self.holdout_fingerprint!r}"
            )
        normal = {
            "champion_version": champion_version,
            "challenger_version": challenger_version,
            "champion_metrics": MappingProxyType(champion),
            "challenger_metrics": MappingProxyType(challenger),
            "p_value": None if self.p_value is None else float(self.p_value),
            "params": MappingProxyType(dict(self.params or {})),
            "tags": MappingProxyType({k: str(v) for k, v in (self.tags or {}).items()}),
        }
        for key, value in normal.items():
            object.__setattr__(self, key, value)

    def version_of(self, role: str) -> str:
        """The version playing ``role`` (``"champion"`` or ``"challenger"``)."""
        return self.champion_version if role == "champion" else self.challenger_version

    def metrics_of(self, role: str) -> Mapping[str, float]:
        return self.champion_metrics if role == "champion" else self.challenger_metrics

    # -------------------------------------------------------------------------------------- what the runs hold

    @property
    def run_name(self) -> str:
        return f"v{self.challenger_version} vs champion v{self.champion_version}"

    def metrics(self) -> dict[str, float]:
        """The parent run's metrics: ``champion.<m>``, ``challenger.<m>``, ``delta.<m>`` and ``p_value``."""
        out = comparison_metrics(self.champion_metrics, self.challenger_metrics)
        if self.p_value is not None:
            out["p_value"] = self.p_value
        return out

    def shared_params(self) -> dict[str, Any]:
        """The params the parent run and both child runs carry: the holdout, both versions, the id."""
        return {
            "holdout_rows": self.holdout_rows,
            "holdout_fingerprint": self.holdout_fingerprint,
            "champion_version": self.champion_version,
            "challenger_version": self.challenger_version,
            "comparison_id": self.comparison_id,
        }

    def run_params(self) -> dict[str, Any]:
        """The parent run's params: the extra ``params``, the shared ones, the verdict and the test."""
        return {
            **dict(self.params),
            **self.shared_params(),
            **({"verdict": self.verdict} if self.verdict else {}),
            **({"test": self.test} if self.test else {}),
        }

    def base_tags(self) -> dict[str, str]:
        """The tags every run of this comparison (parent and children) carries."""
        return {MODEL_TAG: self.name, COMPARISON_TAG: self.comparison_id}

    def run_tags(self) -> dict[str, str]:
        """The parent run's tags: the extra ``tags``, the kind, both versions, the holdout, the verdict, the note."""
        return {
            **dict(self.tags),
            **self.base_tags(),
            KIND_TAG: COMPARISON_KIND,
            TAG_PREFIX + "champion_version": self.champion_version,
            TAG_PREFIX + "challenger_version": self.challenger_version,
            TAG_PREFIX + "holdout_fingerprint": self.holdout_fingerprint,
            **({TAG_PREFIX + "verdict": self.verdict} if self.verdict else {}),
            NOTE_TAG: self.note(),
        }

    def note(self) -> str:
        """The parent run's description: both versions linked, a metric table with deltas, the verdict."""
        champion_version, challenger_version = self.champion_version, self.challenger_version
        champion, challenger = self.champion_metrics, self.challenger_metrics
        lines = [
            (
                f"Challenger [version {challenger_version}]({version_link(self.name, challenger_version)}) vs "
                f"champion [version {champion_version}]({version_link(self.name, champion_version)}) (the "
                "champion at the time), "
                f"both scored on the same {self.holdout_rows:,} held-out rows "
                f"(fingerprint `{self.holdout_fingerprint[:12]}`)."
            ),
            "",
            "| metric | champion v" + champion_version + " | challenger v" + challenger_version + " | delta |",
            "|---|---|---|---|",
        ]
        for key in sorted(set(champion) | set(challenger)):
            a, b = champion.get(key), challenger.get(key)
            delta = b - a if a is not None and b is not None else None
            lines.append(f"| {key} | {_num(a)} | {_num(b)} | {_num(delta, signed=True)} |")
        if self.verdict or self.test or self.p_value is not None:
            lines += ["", "Verdict: " + " · ".join(
                part for part in (
                    f"**{self.verdict}**" if self.verdict else None,
                    f"test {self.test}" if self.test else None,
                    f"p = {self.p_value:.4g}" if self.p_value is not None else None,
                ) if part
            )]
        return "\n".join(lines)

    def entry(self, role: str, *, experiment_id: str, run_id: str, when: datetime) -> str:
        """The line the version playing ``role`` gets in its description, linking run ``run_id``."""
        own, other = self.metrics_of(role), self.metrics_of("challenger" if role == "champion" else "champion")
        if role == "champion":
            against = f"vs challenger v{self.challenger_version}"
        else:
            against = f"vs champion v{self.champion_version} at the time"
        shared = [k for k in own if k in other][:3]
        scores = ", ".join(f"{k} {_num(own[k])} vs {_num(other[k])}" for k in shared) or "no shared metric"
        tail = f" · verdict {self.verdict}" if self.verdict else ""
        return (
            f"- {when:%Y-%m-%d %H:%M} [as {role} {against}]({ui_link(f'experiments/{experiment_id}/runs/{run_id}')}): "
            f"{scores} on "
            f"{self.holdout_rows:,} rows `{self.holdout_fingerprint[:12]}`{tail}"
        )


class Comparisons:
    """Logs :class:`Comparison` values as evaluation runs in one :class:`RegistryStore`."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store

    def log(self, comparison: Comparison) -> str:
        """See :meth:`lineage.ModelRegistry.log_comparison`; returns the parent run's id."""
        store, c = self.store, comparison
        with store.scope(f"record comparison {c.comparison_id} of {c.name!r}") as client:
            versions = {role: store.model_version(client, c.name, c.version_of(role)) for role in ROLES}
            experiment_id = store.side_experiment(client, COMPARISONS)
            done = store.search_runs(
                client,
                experiment_id,
                f"tags.`{COMPARISON_TAG}` = '{escape(c.comparison_id)}' and tags.`{MODEL_TAG}` = '{escape(c.name)}'"
                f" and tags.`{KIND_TAG}` = '{COMPARISON_KIND}' and attributes.status = 'FINISHED'",
            )
            if done:
                return done[0].info.run_id
            run_tags = c.run_tags()
            now = store.now_ms()
            created: list[str] = []
            try:
                parent = client.create_run(
                    experiment_id, start_time=now, run_name=c.run_name, tags=run_tags
                ).info.run_id
                created.append(parent)
                client.log_batch(
                    parent,
                    metrics=[Metric(k, v, now, 0) for k, v in c.metrics().items()],
                    params=[Param(k, v) for k, v in params_text(c.run_params()).items()],
                )
                dataset = holdout_dataset(c)
                client.log_inputs(parent, datasets=[DatasetInput(dataset)])
                for role in ROLES:
                    self._log_model_run(client, c, role, versions[role], experiment_id, parent, dataset, now, created)
                when = datetime.fromtimestamp(now / 1000, UTC)
                for role in ROLES:
                    mv = versions[role]
                    entry = c.entry(role, experiment_id=experiment_id, run_id=parent, when=when)
                    client.update_model_version(
                        c.name, str(mv.version), description=with_comparison(mv.description or "", entry)
                    )
                client.set_terminated(parent, "FINISHED", end_time=store.now_ms())
            except BaseException as exc:
                store.mark_failed(client, created, exc)
                raise
            return parent

    def _log_model_run(
        self,
        client: MlflowClient,
        c: Comparison,
        role: str,
        mv: ModelVersion,
        experiment_id: str,
        parent: str,
        dataset: Dataset,
        now: int,
        created: list[str],
    ) -> None:
        """The child run of one side: its scores under the shared metric keys, its logged model, the holdout."""
        child = client.create_run(
            experiment_id,
            start_time=now,
            run_name=f"v{mv.version} ({role})",
            tags={
                **c.base_tags(),
                KIND_TAG: "comparison_model",
                PARENT_RUN_TAG: parent,
                VERSION_TAG: str(mv.version),
                TAG_PREFIX + "role": role,
                NOTE_TAG: f"[Version {mv.version}]({version_link(c.name, mv.version)}) as {role}, "
                f"scored on the {c.holdout_rows:,} held-out rows "
                f"`{c.holdout_fingerprint[:12]}` of comparison {c.comparison_id}.",
            },
        ).info.run_id
        created.append(child)
        model_id = logged_model_id(mv)
        client.log_batch(
            child,
            metrics=[
                Metric(k, v, now, 0, model_id=model_id, dataset_name=dataset.name, dataset_digest=dataset.digest)
                for k, v in c.metrics_of(role).items()
            ],
            params=[
                Param(k, v)
                for k, v in params_text({**c.shared_params(), "version": mv.version, "role": role}).items()
            ],
        )
        client.log_inputs(
            child,
            datasets=[DatasetInput(dataset)],
            models=[LoggedModelInput(model_id)] if model_id else None,
        )
        client.set_terminated(child, "FINISHED", end_time=self.store.now_ms())


def holdout_dataset(comparison: Comparison) -> Dataset:
    """The holdout as an MLflow dataset (name, digest, size): the input of the parent and both child runs."""
    return Dataset(
        name=holdout_dataset_name(comparison.holdout_fingerprint),
        digest=comparison.holdout_fingerprint[:36],
        source_type="driftpilot",
        source=json.dumps({"model": comparison.name, "holdout_fingerprint": comparison.holdout_fingerprint}),
        profile=json.dumps({"num_rows": comparison.holdout_rows}),
    )


def holdout_dataset_name(fingerprint: str) -> str:
    return f"holdout-{fingerprint[:12]}"


def check_metrics(what: str, metrics: Mapping[str, float]) -> dict[str, float]:
    """``metrics`` as floats; :class:`LineageError` for a value that is not a finite number or NaN."""
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


def _num(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    if math.isnan(value):
        return "NaN"
    return f"{value:+.4f}" if signed else f"{value:.4f}"

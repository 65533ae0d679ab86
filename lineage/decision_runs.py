"""Decision runs: the controller's decisions and drift checks as runs in ``<experiment>/decisions``.

The controller decides what a decision run holds; this adds ``driftpilot.kind=decision``, the model name and the
decision id, keeps the run open while the decision is made (FINISHED at the end, FAILED with the error as tag
``driftpilot.error`` when it raises), and attaches files such as an Evidently HTML report.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlflow.entities import LoggedModelInput, Metric, Param, RunTag

from lineage.base import DECISION_TAG, KIND_TAG, MODEL_TAG, RegistryStore, logged_model_id, version_str
from lineage.errors import LineageError
from lineage.record import TAG_PREFIX
from lineage.runs import DECISIONS, clip, params_text


class DecisionRun:
    """An open decision run (see :meth:`lineage.ModelRegistry.decision_run`): log metrics, params, tags, files,
    versions."""

    def __init__(self, store: RegistryStore, name: str, decision_id: str, run_id: str) -> None:
        self.store = store
        self.name = name
        self.decision_id = decision_id
        self.run_id = run_id

    def log(
        self,
        *,
        metrics: Mapping[str, float | None] | None = None,
        params: Mapping[str, Any] | None = None,
        tags: Mapping[str, str] | None = None,
        artifacts: Sequence[str | Path] = (),
        versions: Sequence[str] = (),
    ) -> None:
        """Add to the run. ``None`` metrics are skipped (undefined); ``versions`` link those versions' logged models
        as the run's model inputs, so the run page shows which model it judged."""
        check_files(self.decision_id, artifacts)
        store = self.store
        with store.scope(f"record decision {self.decision_id} of {self.name!r}") as client:
            now = store.now_ms()
            client.log_batch(
                self.run_id,
                metrics=[Metric(k, float(v), now, 0) for k, v in (metrics or {}).items() if v is not None],
                params=[Param(k, v) for k, v in params_text(params or {}).items()],
                tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
            )
            for f in artifacts:
                client.log_artifact(self.run_id, str(f))
            model_ids = [logged_model_id(store.model_version(client, self.name, version_str(v))) for v in versions]
            if any(model_ids):
                client.log_inputs(self.run_id, models=[LoggedModelInput(m) for m in model_ids if m])


class DecisionRuns:
    """Opens and records decision runs of driftpilot models in one :class:`RegistryStore`."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store

    def log_decision(
        self,
        name: str,
        *,
        decision_id: str,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        artifacts: Sequence[str | Path] = (),
    ) -> str:
        """See :meth:`lineage.ModelRegistry.log_decision`."""
        check_files(decision_id, artifacts)
        with self.open(name, decision_id=decision_id, tags=tags) as run:
            run.log(metrics=metrics, params=params, artifacts=artifacts)
        return run.run_id

    @contextmanager
    def open(
        self,
        name: str,
        *,
        decision_id: str,
        tags: Mapping[str, str] | None = None,
        run_name: str | None = None,
    ) -> Iterator[DecisionRun]:
        """See :meth:`lineage.ModelRegistry.decision_run`."""
        store = self.store
        with store.scope(f"start decision {decision_id} of {name!r}") as client:
            run_id = client.create_run(
                store.side_experiment(client, DECISIONS),
                run_name=run_name or f"decision-{decision_id}",
                start_time=store.now_ms(),
                tags={
                    **{k: str(v) for k, v in (tags or {}).items()},
                    KIND_TAG: "decision",
                    MODEL_TAG: name,
                    DECISION_TAG: decision_id,
                },
            ).info.run_id
        run = DecisionRun(store, name, decision_id, run_id)
        try:
            yield run
        except BaseException as exc:
            try:
                with store.scope(f"mark decision {decision_id} of {name!r} failed") as client:
                    client.set_tag(run_id, TAG_PREFIX + "error", clip(f"{type(exc).__name__}: {exc}", 5000))
                    client.set_terminated(run_id, "FAILED", end_time=store.now_ms())
            except Exception as cleanup:  # noqa: BLE001 - the store may be what failed; keep the first error
                exc.add_note(f"driftpilot could not mark run {run_id} FAILED either: {cleanup}")
            raise
        with store.scope(f"finish decision {decision_id} of {name!r}") as client:
            client.set_terminated(run_id, "FINISHED", end_time=store.now_ms())

    def log_artifact(self, run_id: str, local_path: str | Path, artifact_path: str | None = None) -> None:
        """See :meth:`lineage.ModelRegistry.log_artifact`."""
        path = Path(local_path)
        if not path.is_file():
            raise LineageError(f"cannot attach {str(path)!r} to run {run_id}: no such file")
        with self.store.scope(f"attach {path.name} to run {run_id}") as client:
            client.log_artifact(run_id, str(path), artifact_path)


def check_files(decision_id: str, artifacts: Sequence[str | Path]) -> None:
    """:class:`LineageError` naming every file of ``artifacts`` that does not exist."""
    missing = [str(a) for a in artifacts if not Path(a).is_file()]
    if missing:
        raise LineageError(f"decision {decision_id}: artifact file(s) not found: {', '.join(missing)}")

"""The one seam to MLflow: settings, the injected client, bounded HTTP behaviour and error translation.

MLflow keeps its tracking/registry URI and its HTTP retry/timeout settings in process globals (module
variables and environment variables), and its model-logging and loading functions read them. So every
MLflow call of driftpilot runs inside :meth:`MlflowGateway.scope`, which takes one process-wide lock, points
those globals at this gateway's store with this gateway's HTTP limits, and restores them on the way out.
Lineage operations take milliseconds, so serialising them costs nothing that matters, and two registries
on different stores in one process (the tests do this) cannot see each other's settings.

Opening a client on a local ``sqlite:///`` store makes MLflow create or upgrade that database's schema, and two
processes doing so at once on a fresh file break each other (``duplicate column name: step``). :func:`setup_lock`
serializes that set-up between processes with a lock file beside the database; :meth:`ModelRegistry.connect
<lineage.registry.ModelRegistry.connect>` holds it while it opens the stores.
"""

from __future__ import annotations

import fcntl
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import mlflow
import requests
import sqlalchemy.exc
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.tracking._model_registry import utils as _registry_utils
from mlflow.tracking._tracking_service import utils as _tracking_utils
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.engine import make_url

from lineage.errors import LineageError, LineageUnavailable

# MLflow reads these at request time; MLflow's defaults (7 retries, 120 s timeout) can block a tick for minutes.
_ENV_KEYS = (
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES",
    "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR",
    "MLFLOW_TRACKING_URI",
    "MLFLOW_REGISTRY_URI",
)
_LOCK = threading.RLock()
_UNREACHABLE_TYPES = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.RetryError,
    sqlalchemy.exc.OperationalError,
    sqlite3.OperationalError,
)
# A proxy in front of the server answering 502/503/504 means "not reachable", not "request refused".
_GATEWAY_STATUS = re.compile(r"error code 50[234]\b")
# How long a process waits for another one to finish setting up the same local MLflow database (MLflow's migrations
# of a fresh file take a few seconds each).
SETUP_LOCK_TIMEOUT_S = 180.0


class HttpLimits(BaseModel):
    """How long one MLflow HTTP request may take before driftpilot reports the server unavailable.

    The worst case for a dead server is about ``timeout_s * (max_retries + 1)`` plus the backoff pauses
    (MLflow/urllib3: none before the first retry, then ``backoff_factor * 2**(n-1)`` seconds plus jitter).
    """

    model_config = ConfigDict(extra="forbid")

    timeout_s: int = Field(
        10, ge=1, description="Timeout of one HTTP request (MLflow takes whole seconds)."
    )
    max_retries: int = Field(
        2, ge=0, le=10, description="Retries on connection errors and 429/5xx answers."
    )
    backoff_factor: int = Field(1, ge=0, le=60, description="Exponential backoff base, seconds.")
    backoff_jitter: float = Field(
        0.5, ge=0, le=10, description="Random extra pause per retry, seconds."
    )


class RegistrySettings(BaseModel):
    """Where lineage lives. Maps one-to-one onto the policy file's ``mlflow:`` section."""

    model_config = ConfigDict(extra="forbid")

    tracking_uri: str = Field(
        description="sqlite:///abs/path/mlflow.db or http://host:port of an mlflow server."
    )
    registry_uri: str | None = Field(
        None, description="Model registry URI; defaults to the tracking URI."
    )
    experiment: str = Field(
        "driftpilot", min_length=1, description="Experiment holding training/decision runs."
    )
    artifact_location: str | None = Field(
        None,
        description="Artifact root for a NEW experiment (an existing experiment keeps its own). Without it, "
        "a sqlite store puts artifacts in ./mlruns under the current directory.",
    )
    http: HttpLimits = HttpLimits()


class MlflowGateway:
    """An :class:`MlflowClient` plus the limits under which driftpilot uses it."""

    def __init__(self, client: MlflowClient, http: HttpLimits | None = None) -> None:
        self.client = client
        self.http = http or HttpLimits()

    @classmethod
    def from_settings(
        cls, settings: RegistrySettings, client_class: type[MlflowClient] = MlflowClient
    ) -> MlflowGateway:
        """A gateway with a new client for ``settings``; ``client_class`` lets tests observe a real client.

        Creating the client opens the tracking store (MLflow sets up a fresh database's schema then); a failure leaves
        as :class:`LineageUnavailable` / :class:`LineageError`. Hold :func:`setup_lock` around this when several
        processes may open a fresh local store at once.
        """
        try:
            client = client_class(tracking_uri=settings.tracking_uri, registry_uri=settings.registry_uri)
        except LineageError:
            raise
        except Exception as exc:
            translated = _translate(exc, settings.tracking_uri, settings.http, "open the MLflow tracking store")
            if translated is exc:
                raise
            raise translated from exc
        return cls(client, settings.http)

    @property
    def tracking_uri(self) -> str:
        return str(self.client.tracking_uri)

    @property
    def registry_uri(self) -> str:
        # MlflowClient resolves the registry URI in its constructor but exposes it only privately.
        return str(getattr(self.client, "_registry_uri", None) or self.tracking_uri)

    @contextmanager
    def scope(self, doing: str) -> Iterator[MlflowClient]:
        """Run MLflow calls for ``doing`` (a phrase like "register a version of 'fraud'") with this store's settings.

        MLflow errors leave as :class:`LineageUnavailable` (store unreachable) or :class:`LineageError`.
        """
        with _LOCK:
            saved_env = {key: os.environ.get(key) for key in _ENV_KEYS}
            saved_tracking = _tracking_utils._tracking_uri
            saved_registry = _registry_utils._registry_uri
            try:
                os.environ.update(
                    {
                        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(self.http.max_retries),
                        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(self.http.timeout_s),
                        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": str(self.http.backoff_factor),
                        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": str(self.http.backoff_jitter),
                        # The tqdm bar would write to stderr of the daemon on every model load.
                        "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
                    }
                )
                if saved_tracking != self.tracking_uri:
                    mlflow.set_tracking_uri(self.tracking_uri)
                mlflow.set_registry_uri(self.registry_uri)
                yield self.client
            except LineageError:
                raise
            except Exception as exc:
                translated = self._translate(exc, doing)
                if translated is exc:
                    raise
                raise translated from exc
            finally:
                if _tracking_utils._tracking_uri != saved_tracking:
                    mlflow.set_tracking_uri(saved_tracking)
                _registry_utils._registry_uri = saved_registry
                for key, value in saved_env.items():
                    if value is None:
                        os.environ.pop(key, None)
                    else:
                        os.environ[key] = value

    def _translate(self, exc: Exception, doing: str) -> Exception:
        return _translate(exc, self.tracking_uri, self.http, doing)


def _translate(exc: Exception, uri: str, http: HttpLimits, doing: str) -> Exception:
    if _unreachable(exc):
        return LineageUnavailable(uri, _unreachable_message(exc, uri, http, doing))
    if isinstance(exc, MlflowException):
        return LineageError(f"MLflow at {uri} refused to {doing}: {exc.message}")
    return exc


def _unreachable_message(exc: BaseException, uri: str, http: HttpLimits, doing: str) -> str:
    if uri.startswith(("http://", "https://")):
        hint = (
            f"check that `mlflow server` is running and reachable from this host (try `curl {uri.rstrip('/')}"
            "/health`), and that mlflow.tracking_uri in the policy file has the right host and port"
        )
    else:
        hint = (
            f"check that the database file of {uri} exists or can be created, that its folder is writable, "
            "and that no other process holds a long write lock on it"
        )
    return (
        f"MLflow at {uri} is unavailable, could not {doing}: {_root_cause(exc)}. To fix: {hint}. "
        f"Each request gave up after {http.timeout_s} s and {http.max_retries} retries "
        "(RegistrySettings.http)."
    )


@contextmanager
def setup_lock(settings: RegistrySettings, timeout_s: float = SETUP_LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``<file>.lock`` beside each local SQLite database of ``settings`` (tracking and
    registry) while MLflow opens them; remote stores need none. Locks are taken in path order, so two processes
    never wait for each other in a circle, and the OS releases them when the holder exits, however it exits.
    The lock files are left in place: removing one would let a waiting process lock a file nobody else sees.
    """
    uris = [settings.tracking_uri, settings.registry_uri or settings.tracking_uri]
    paths = sorted({path for uri in uris if (path := _sqlite_file(uri)) is not None})
    with ExitStack() as stack:
        for path in paths:
            stack.enter_context(_file_lock(path.with_name(path.name + ".lock"), timeout_s, f"sqlite:///{path}"))
        yield


@contextmanager
def _file_lock(lock_path: Path, timeout_s: float, uri: str) -> Iterator[None]:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:  # "a": create if missing, never truncate
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LineageUnavailable(
                        uri,
                        f"could not open the MLflow store {uri}: another process has been setting it up for over "
                        f"{timeout_s:g} s (it holds {lock_path}). Find it with `fuser {lock_path}` and stop it if "
                        "it hangs (the lock is released when it exits), then retry.",
                    ) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _sqlite_file(uri: str) -> Path | None:
    if not uri.startswith("sqlite:"):
        return None
    database = make_url(uri).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser().resolve()


def absolute_artifact_location(location: str | None) -> str | None:
    """A plain relative path would be resolved against whatever the CWD is when MLflow writes; fix it now."""
    if location is None or "://" in location:
        return location
    return str(Path(location).expanduser().resolve())


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _unreachable(exc: BaseException) -> bool:
    return any(
        isinstance(e, _UNREACHABLE_TYPES)
        or (isinstance(e, MlflowException) and _GATEWAY_STATUS.search(e.message or ""))
        for e in _causes(exc)
    )


def _root_cause(exc: BaseException) -> str:
    root = list(_causes(exc))[-1]
    text = f"{type(root).__name__}: {root}"
    return text if len(text) <= 300 else text[:297] + "..."

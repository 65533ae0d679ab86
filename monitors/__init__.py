"""driftpilot monitors: pure computations over windows the controller hands in.

- data drift (Evidently, behind ``monitors.evidently_adapter``) -> :class:`DataDriftSignal`
- concept drift (River detectors on the per-row loss) -> :class:`ConceptDriftSignal`
- live performance on matured labels -> :class:`PerformanceSignal`

Build them with :func:`build_monitors` from the policy's ``monitors:`` section (:class:`MonitorsConfig`);
a disabled monitor is a :class:`DisabledMonitor` that returns a :class:`DisabledSignal`.
Importing this package does not import Evidently (about 3 s); the first data-drift run does.
"""

from monitors.concept_drift import ConceptDriftMonitor, StateMismatch
from monitors.config import (
    ConceptDriftConfig,
    DataDriftConfig,
    LastDuration,
    LastRows,
    MonitorsConfig,
    PerformanceConfig,
)
from monitors.factory import DisabledMonitor, Monitors, build_monitors
from monitors.losses import (
    LossStream,
    absolute_loss,
    log_loss_rows,
    loss_stream,
    squared_loss,
    zero_one_loss,
)
from monitors.performance import PerformanceMonitor
from monitors.protocols import LabeledRows
from monitors.signals import (
    ChangeEvent,
    ConceptDriftSignal,
    DataDriftSignal,
    DelayPercentiles,
    DisabledSignal,
    FeatureDrift,
    PerformanceSignal,
    RowRef,
)

__all__ = [
    "ChangeEvent",
    "ConceptDriftConfig",
    "ConceptDriftMonitor",
    "ConceptDriftSignal",
    "DataDriftConfig",
    "DataDriftSignal",
    "DelayPercentiles",
    "DisabledMonitor",
    "DisabledSignal",
    "FeatureDrift",
    "LabeledRows",
    "LastDuration",
    "LastRows",
    "LossStream",
    "Monitors",
    "MonitorsConfig",
    "PerformanceConfig",
    "PerformanceMonitor",
    "PerformanceSignal",
    "RowRef",
    "StateMismatch",
    "absolute_loss",
    "build_monitors",
    "log_loss_rows",
    "loss_stream",
    "squared_loss",
    "zero_one_loss",
]

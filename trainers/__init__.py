"""driftpilot trainers: turn (window, optional parent) into a fitted model with its lineage report.

Strategies (registered as entry points in the `driftpilot.trainers` group):
`stateless` (fresh fit), `finetune` (continue the parent), `incremental` (River, test-then-train).
"""

from trainers.base import (
    NO_PARENT,
    Model,
    NoParent,
    ParentModel,
    PrequentialPredictions,
    Trainer,
    TrainingContext,
    TrainingReport,
    TrainingResult,
    TrainingWindow,
)
from trainers.compiled import CompiledPipeline, compile_pipeline
from trainers.errors import (
    EstimatorSpecError,
    FeatureSchemaError,
    IncompatibleEstimatorError,
    NotFineTunableError,
    TrainerError,
    TrainingDataError,
    UnknownTrainerError,
)
from trainers.estimator_spec import EstimatorSpec, StepSpec, build
from trainers.finetune import FinetuneConfig, FinetuneTrainer, fine_tune_method
from trainers.incremental import CheckpointPolicy, IncrementalConfig, IncrementalTrainer
from trainers.registry import available_trainers, get_trainer, get_trainer_class
from trainers.river_adapter import RiverModel
from trainers.stateless import StatelessConfig, StatelessTrainer
from trainers.windows import (
    AllRows,
    LastDuration,
    LastRows,
    SinceDrift,
    WindowBounds,
    WindowConfig,
    window_bounds,
)

__all__ = [
    "NO_PARENT",
    "AllRows",
    "CheckpointPolicy",
    "CompiledPipeline",
    "EstimatorSpec",
    "EstimatorSpecError",
    "FeatureSchemaError",
    "FinetuneConfig",
    "FinetuneTrainer",
    "IncompatibleEstimatorError",
    "IncrementalConfig",
    "IncrementalTrainer",
    "LastDuration",
    "LastRows",
    "Model",
    "NoParent",
    "NotFineTunableError",
    "ParentModel",
    "PrequentialPredictions",
    "RiverModel",
    "SinceDrift",
    "StatelessConfig",
    "StatelessTrainer",
    "StepSpec",
    "Trainer",
    "TrainerError",
    "TrainingContext",
    "TrainingDataError",
    "TrainingReport",
    "TrainingResult",
    "TrainingWindow",
    "UnknownTrainerError",
    "WindowBounds",
    "WindowConfig",
    "available_trainers",
    "build",
    "compile_pipeline",
    "fine_tune_method",
    "get_trainer",
    "get_trainer_class",
    "window_bounds",
]

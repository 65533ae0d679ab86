"""Trainer registry: built-ins and extensions both come from the `driftpilot.trainers` entry points.

An extension registers in its own pyproject:
```toml
[project.entry-points."driftpilot.trainers"]
mine = "my_package.trainers:MyTrainer"
```
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import BaseModel

from trainers.base import Trainer
from trainers.errors import TrainerError, UnknownTrainerError

GROUP = "driftpilot.trainers"


def _entry_points() -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, ep)  # an editable install may list a name twice
    return found


def available_trainers() -> tuple[str, ...]:
    """Names of every registered trainer, sorted."""
    return tuple(sorted(_entry_points()))


def get_trainer_class(name: str) -> type:
    eps = _entry_points()
    if name not in eps:
        raise UnknownTrainerError(
            f"no trainer named {name!r}; registered trainers: {sorted(eps)}. Fix the "
            f"strategy in the policy, or register a trainer under the entry-point group {GROUP!r}."
        )
    try:
        cls = eps[name].load()
    except Exception as err:  # a broken extension must say which one it is
        raise TrainerError(
            f"trainer {name!r} is registered as {eps[name].value!r} but failed to load: {err}"
        ) from err
    if not callable(getattr(cls, "train", None)):
        raise TrainerError(
            f"trainer {name!r} ({eps[name].value}) has no train(window, parent, context) method; "
            "a trainer must implement the trainers.base.Trainer protocol."
        )
    return cls


def get_trainer(name: str, config: Mapping[str, Any] | BaseModel | None = None) -> Trainer:
    """An instance of the named trainer; `config` (a mapping from YAML) is validated by its model."""
    cls = get_trainer_class(name)
    if config is None:
        return cls()
    model = getattr(cls, "config_model", None)
    if model is not None and not isinstance(config, BaseModel):
        config = model.model_validate(dict(config))
    return cls(config)

"""The registry lists built-ins and extensions through the same entry-point group."""

from __future__ import annotations

import textwrap

import pytest
from pydantic import ValidationError

from trainers import Trainer, TrainerError, UnknownTrainerError, available_trainers, get_trainer
from trainers.finetune import FinetuneTrainer


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(UnknownTrainerError) as err:
        get_trainer("statless")
    message = str(err.value)
    assert "no trainer named 'statless'" in message
    assert "['finetune', 'incremental', 'stateless']" in message


def test_config_mapping_is_validated_by_the_trainer_model():
    trainer = get_trainer("finetune", {"epochs": 3, "n_more_estimators": 5})
    assert isinstance(trainer, FinetuneTrainer)
    assert (trainer.config.epochs, trainer.config.n_more_estimators) == (3, 5)
    assert isinstance(trainer, Trainer)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        get_trainer("finetune", {"epoch": 3})
    with pytest.raises(ValidationError, match="'all', 'last_rows', 'last_duration', 'since_drift'"):
        get_trainer("stateless", {"window": {"kind": "recent"}})


def install_extension(tmp_path, monkeypatch, target: str, module_source: str) -> None:
    """A real (if tiny) installed distribution registering one trainer."""
    module = target.split(":")[0]  # one module name per test: sys.modules caches imports
    (tmp_path / f"{module}.py").write_text(textwrap.dedent(module_source))
    dist = tmp_path / "ext_trainer-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: ext-trainer\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[driftpilot.trainers]\nechoing = {target}\n")
    monkeypatch.syspath_prepend(str(tmp_path))


def test_an_extension_registers_like_a_built_in(tmp_path, monkeypatch):
    install_extension(tmp_path, monkeypatch, "ext_trainer_mod:Echo", """
        class Echo:
            def __init__(self, config=None):
                self.config = config
            def train(self, window, parent, context):
                return "trained"
    """)
    assert "echoing" in available_trainers()
    assert get_trainer("echoing").train(None, None, None) == "trained"


def test_a_broken_extension_names_itself(tmp_path, monkeypatch):
    install_extension(tmp_path, monkeypatch, "ext_trainer_broken:Missing", "X = 1\n")
    with pytest.raises(TrainerError, match="'ext_trainer_broken:Missing' but failed to load"):
        get_trainer("echoing")


def test_an_extension_without_train_is_refused(tmp_path, monkeypatch):
    install_extension(tmp_path, monkeypatch, "ext_trainer_noverb:NoVerb", "class NoVerb: pass\n")
    with pytest.raises(TrainerError, match="has no train"):
        get_trainer("echoing")

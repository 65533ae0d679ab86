"""The four stages of continual learning as four policies (config/stage*.yaml, docs/stages.md): each file loads and
is the stage it says it is, and all four replay the same stream under their own schema."""

from __future__ import annotations

from pathlib import Path

import pytest

from controller.backtest.streams import scenario
from controller.config import LoadedPolicy
from controller.policy_loader import load_policy
from trainers import fine_tune_method
from trainers.online import online_learner
from trainers.river_adapter import RiverModel

CONFIG = Path(__file__).resolve().parents[1] / "config"
STAGES = {1: CONFIG / "stage1-manual.yaml", 2: CONFIG / "stage2-automated-stateless.yaml",
          3: CONFIG / "stage3-stateful-finetune.yaml", 4: CONFIG / "stage4-continual.yaml"}
AUTOMATIC = {"concept_drift", "data_drift", "performance_drop", "schedule", "new_labels", "cost"}


@pytest.fixture(scope="module")
def stages() -> dict[int, LoadedPolicy]:
    return {stage: load_policy(path, environ={}) for stage, path in STAGES.items()}


def _triggers(loaded: LoadedPolicy) -> list[str]:
    return [rule.when.key for rule in loaded.config.rules]


def _strategies(loaded: LoadedPolicy) -> list[str]:
    return [rule.do.strategy for rule in loaded.config.rules]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_each_file_opens_with_the_documented_comment_block(stage: int) -> None:
    head = []
    for line in STAGES[stage].read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        head.append(line)
    block = "\n".join(head)
    assert f"Stage {stage} of 4" in block
    for part in ("What it is:", "Who it fits:", "What it costs:", "Moving up:"):
        assert part in block, f"{STAGES[stage].name}: the opening comment has no {part!r}"


def test_all_four_replay_one_stream_under_their_own_schema_and_start_from_one_estimator(stages) -> None:
    spec = scenario("sea-abrupt", rows=20, seed=0).spec
    for stage, loaded in stages.items():
        config = loaded.config
        # policy_for_stream keeps a policy whose schema is the stream's: the files are backtested as written
        assert config.task == spec.task and config.feature_types == spec.features, stage
        assert config.target.name == spec.target and tuple(config.target.classes) == spec.classes, stage
        assert config.estimator == stages[1].config.estimator, f"stage {stage} serves another bootstrap model"
    assert len({loaded.config.model for loaded in stages.values()}) == 4


def test_stage1_retrains_only_when_a_person_asks(stages) -> None:
    loaded = stages[1]
    assert _triggers(loaded) and set(_triggers(loaded)) == {"manual"}
    assert set(_strategies(loaded)) == {"stateless"}
    assert loaded.config.race is None and not loaded.config.loop.continuous_learning


def test_stage2_retrains_automatically_and_always_from_scratch(stages) -> None:
    loaded = stages[2]
    assert set(_strategies(loaded)) == {"stateless"}  # auto could fine-tune: stage 3's business
    automatic = set(_triggers(loaded)) & AUTOMATIC
    assert {"schedule", "new_labels"} & automatic, "no schedule or volume trigger"
    assert {"concept_drift", "performance_drop", "data_drift"} & automatic, "no drift trigger"
    assert loaded.config.race is None and not loaded.config.loop.continuous_learning


def _fine_tune_then_rebase_order(loaded: LoadedPolicy) -> None:
    rules = loaded.config.rules
    finetunes = [i for i, rule in enumerate(rules) if rule.do.strategy == "finetune"]
    rebases = [i for i, rule in enumerate(rules) if rule.do.strategy == "stateless" and rule.when.key in AUTOMATIC]
    assert finetunes, "no fine-tune rule"
    assert any(rules[i].when.key in AUTOMATIC for i in finetunes), "fine-tuning only by hand"
    assert rebases, "no automatic stateless re-base rule"
    # The first rule that fires acts: a re-base listed after the routine fine-tunes would never win on a tick where
    # both hold, and the chain would grow without bound.
    assert max(rebases) < min(i for i in finetunes if rules[i].when.key in AUTOMATIC)


def test_stage3_fine_tunes_the_registered_parent_and_re_bases(stages) -> None:
    loaded = stages[3]
    _fine_tune_then_rebase_order(loaded)
    config = loaded.config
    model = config.estimator.build(config.feature_types, config.task, seed=0, classes=config.target.classes)
    assert fine_tune_method(model) == "partial_fit"  # raises NotFineTunableError for e.g. HistGradientBoosting
    assert config.race is None and not config.loop.continuous_learning


def test_stage4_has_a_champion_that_learns_in_service(stages) -> None:
    config = stages[4].config
    online = []
    if config.race is not None:
        for racer in config.race.racers:
            # raises IncompatibleEstimatorError for a racer that cannot learn online
            online_learner(racer.estimator, config.feature_types, config.task, classes=config.target.classes, seed=0)
            online.append(racer.name)
        assert len(config.race.racers) + 1 <= config.race.max_racers
        assert any(racer.estimator.family == "river" for racer in config.race.racers)
    else:
        model = config.estimator.build(config.feature_types, config.task, seed=0, classes=config.target.classes)
        assert config.loop.continuous_learning and isinstance(model, RiverModel)
    assert online or config.loop.continuous_learning
    _fine_tune_then_rebase_order(stages[4])  # stage 3's rules, their challengers racing

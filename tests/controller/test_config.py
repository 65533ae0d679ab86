"""Policy files: typed loading, file:line errors for every kind of mistake, env substitution, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from controller.cli.main import main
from controller.config import PolicyConfig, policy_json_schema
from controller.errors import ConfigError
from controller.policy_loader import load_policy
from tests.conftest import EXAMPLE_CLASSIFICATION, EXAMPLE_REGRESSION

GOOD = """\
model: fraud-clf
task: classification
target:
  name: is_fraud
  classes: [0, 1]
features:
  amount: numeric
  country: {type: categorical, required: false}
  is_new: boolean
storage:
  url: ${DB_URL:-sqlite:///x.db}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    return path


def problems_of(tmp_path: Path, text: str, environ: dict | None = None) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_policy(path, environ or {})
    return [p.replace(str(path), "P") for p in info.value.problems]


def test_good_policy_loads_typed_with_defaults(tmp_path: Path) -> None:
    loaded = load_policy(write(tmp_path, GOOD), environ={})
    config = loaded.config
    assert config.model == "fraud-clf"
    assert config.feature_types == {"amount": "numeric", "country": "categorical", "is_new": "boolean"}
    assert config.features["country"].required is False
    assert config.features["amount"].required is True
    assert config.target.classes == [0, 1]
    assert config.storage.url == "sqlite:///x.db"
    assert config.experiment == "driftpilot/fraud-clf"
    assert config.registered_model == "fraud-clf"
    assert len(loaded.sha256) == 64


def test_env_substitution_uses_the_environment_over_the_default(tmp_path: Path) -> None:
    loaded = load_policy(write(tmp_path, GOOD), environ={"DB_URL": "postgresql+psycopg://u@h/db"})
    assert loaded.config.storage.url == "postgresql+psycopg://u@h/db"


def test_unset_env_var_without_default_names_the_variable_and_line(tmp_path: Path) -> None:
    text = GOOD.replace("${DB_URL:-sqlite:///x.db}", "${DB_URL}")
    assert problems_of(tmp_path, text) == [
        ("P:11: storage.url: environment variable DB_URL is not set; export it, or give a default with "
        "${DB_URL:-value}")
    ]


def test_every_problem_is_reported_with_line_key_value_and_choices(tmp_path: Path) -> None:
    text = GOOD.replace("task: classification", "task: classifcation").replace(
        "amount: numeric", "amount: numric").replace("required: false}", "requird: false}") + "tarket: x\n"
    assert problems_of(tmp_path, text) == [
        "P:2: task: Input should be 'classification' or 'regression' (got 'classifcation')",
        "P:7: features.amount.type: Input should be 'numeric', 'categorical' or 'boolean' (got 'numric')",
        ("P:8: features.country.requird: unknown key 'requird'; valid keys here: type, required, allow_nan. "
        "Did you mean 'required'?"),
        ("P:12: tarket: unknown key 'tarket'; valid keys here: model, task, target, features, storage, mlflow, api, "
        "estimator, bootstrap, retrain, monitors, serving, loop, rules, auto, gate, probation, candidates, pool, costs, race, "
        "feature_views. Did you mean 'target'?"),
    ]


def test_missing_required_key_is_reported_at_the_parent(tmp_path: Path) -> None:
    text = "\n".join(line for line in GOOD.splitlines() if not line.startswith("task:"))
    assert problems_of(tmp_path, text) == ["P:1: task: required key is missing"]


def test_yaml_syntax_error_has_a_line(tmp_path: Path) -> None:
    problems = problems_of(tmp_path, GOOD + "features: [unclosed\n")
    assert len(problems) == 1 and problems[0].startswith("P:13: YAML syntax error")


def test_not_a_mapping(tmp_path: Path) -> None:
    assert problems_of(tmp_path, "- a\n- b\n") == ["P:1: the policy file must be a mapping (key: value), got a list"]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the policy file"):
        load_policy(tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    ("replace", "expected"),
    [
        (("model: fraud-clf", "model: 'bad name!'"), "P:1: model: String should match pattern"),
        (("url: ${DB_URL:-sqlite:///x.db}", "url: mysql://x"), "P:11: storage.url: unsupported store URL 'mysql://x'"),
        (("is_new: boolean", "is_fraud: boolean"), "P:1: (top level): target 'is_fraud' is also listed as a feature"),
        (("is_new: boolean", "is_new: {type: boolean, allow_nan: true}"),
         "P:9: features.is_new: allow_nan only applies to numeric features, not boolean"),
    ],
)
def test_semantic_checks(tmp_path: Path, replace: tuple[str, str], expected: str) -> None:
    problems = problems_of(tmp_path, GOOD.replace(*replace))
    assert len(problems) == 1
    assert problems[0].startswith(expected), problems


def test_example_policies_are_valid() -> None:
    for path in (EXAMPLE_CLASSIFICATION, EXAMPLE_REGRESSION):
        assert load_policy(path, environ={}).config.model


def test_cli_validate_ok_and_errors_exit_2(tmp_path: Path) -> None:
    runner = CliRunner()
    ok = runner.invoke(main, ["config", "validate", str(EXAMPLE_CLASSIFICATION)])
    assert ok.exit_code == 0 and "OK (model electricity-updown" in ok.output
    bad = write(tmp_path, GOOD.replace("task: classification", "task: clasification"))
    result = runner.invoke(main, ["config", "validate", str(EXAMPLE_REGRESSION), str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:2: task: Input should be 'classification' or 'regression'" in result.output


def test_cli_schema_prints_the_json_schema() -> None:
    result = CliRunner().invoke(main, ["config", "schema"])
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert schema == policy_json_schema()
    assert set(schema["required"]) == {"model", "task", "target", "features"}
    assert schema["additionalProperties"] is False


def test_config_is_immutable(tmp_path: Path) -> None:
    config: PolicyConfig = load_policy(write(tmp_path, GOOD), environ={}).config
    with pytest.raises(Exception, match="frozen"):
        config.model = "other"  # type: ignore[misc]


def test_a_bad_estimator_spec_names_the_close_match(tmp_path: Path) -> None:
    text = GOOD + "estimator:\n  class: sklearn.linear_model.SGDClasifier\n"
    problems = problems_of(tmp_path, text)
    assert len(problems) == 1
    assert problems[0].startswith("P:12: estimator: class: sklearn.linear_model has no class 'SGDClasifier'. "
                                  "Did you mean sklearn.linear_model.SGDClassifier")


def test_a_bad_estimator_parameter_lists_the_valid_ones(tmp_path: Path) -> None:
    text = GOOD + "estimator:\n  class: sklearn.linear_model.SGDClassifier\n  params: {los: log_loss}\n"
    (problem,) = problems_of(tmp_path, text)
    assert "los" in problem and "loss" in problem and problem.startswith("P:12: estimator:")


def test_logs_are_one_json_object_per_line() -> None:
    import logging

    from controller.logs import JsonFormatter

    record = logging.LogRecord("driftpilot", logging.INFO, __file__, 1, 'said "%s"', ("hi",), None)
    record.model = "m1"
    entry = json.loads(JsonFormatter().format(record))
    assert (entry["message"], entry["level"], entry["model"]) == ('said "hi"', "INFO", "m1")

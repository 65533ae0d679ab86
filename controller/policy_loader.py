"""Reading a policy file: YAML, ``${VAR}`` substitution and teaching errors, into :class:`~controller.config.PolicyConfig`.

A typo fails at start-up with the file, the line, the key path, the bad value and what is accepted: every pydantic
error is mapped back to ``file:line`` through the YAML node tree, and an unknown key lists the valid keys there (with
the closest one). ``${VAR}`` and ``${VAR:-default}`` in string values are replaced from the environment after parsing,
so secrets and URLs stay out of the file. The schema itself is :mod:`controller.config`.
"""

from __future__ import annotations

import difflib
import hashlib
import math
import os
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import BaseModel, ValidationError

from controller.config import LoadedPolicy, PolicyConfig
from controller.errors import ConfigError

_ENV_PATTERN = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def load_policy(path: str | Path, environ: Mapping[str, str] | None = None) -> LoadedPolicy:
    """Read, substitute and validate one policy file; raise :class:`ConfigError` listing every problem."""
    path = Path(path)
    environ = os.environ if environ is None else environ
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), [f"{path}: cannot read the policy file: {exc.strerror}"]) from None
    text = raw.decode("utf-8", errors="replace")
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(str(path), [f"{path}{line}: YAML syntax error: {exc.problem}"]) from None
    if root is None or not isinstance(root, yaml.MappingNode):
        raise ConfigError(str(path), [f"{path}:1: the policy file must be a mapping (key: value), got {_kind(root)}"])
    data = yaml.SafeLoader(text).get_single_data()
    lines = _line_index(root)

    env_problems: dict[tuple, str] = {}
    data = _substitute_env(data, (), environ, env_problems, path, lines)
    try:
        config = PolicyConfig.model_validate(data)
    except ValidationError as exc:
        # An unset variable also fails its field's own check; report it once, as the variable problem.
        problems = list(env_problems.values()) + [
            _describe(err, path, lines) for err in exc.errors() if tuple(err["loc"]) not in env_problems
        ]
        raise ConfigError(str(path), sorted(problems, key=_line_number)) from None
    if env_problems:
        raise ConfigError(str(path), list(env_problems.values()))
    return LoadedPolicy(config=config, path=path, sha256=hashlib.sha256(raw).hexdigest())


def _line_number(problem: str) -> int:
    match = re.search(r":(\d+): ", problem)
    return int(match.group(1)) if match else 0


def _kind(node: yaml.Node | None) -> str:
    return {None: "an empty file", yaml.ScalarNode: "a scalar", yaml.SequenceNode: "a list"}.get(
        type(node) if node is not None else None, "something else"
    )


def _line_index(root: yaml.Node) -> dict[tuple, int]:
    """Map each key path, e.g. ``("features", "amount", "type")``, to its 1-based line in the file."""
    index: dict[tuple, int] = {}

    def walk(node: yaml.Node, path: tuple) -> None:
        index[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = key_node.value
                walk(value_node, path + (key,))
                # A key's own line beats the line its (block) value starts on.
                index[path + (key,)] = key_node.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, path + (i,))

    walk(root, ())
    return index


def _line_of(lines: dict[tuple, int], loc: tuple) -> int:
    """The line of the deepest known prefix of ``loc`` (a missing key is reported at its parent)."""
    loc = tuple(str(p) if not isinstance(p, int) else p for p in loc)
    for cut in range(len(loc), -1, -1):
        if loc[:cut] in lines:
            return lines[loc[:cut]]
    return 1


def _substitute_env(value: Any, loc: tuple, environ: Mapping[str, str], problems: dict[tuple, str], path: Path,
                    lines: dict[tuple, int]) -> Any:
    if isinstance(value, dict):
        return {k: _substitute_env(v, loc + (k,), environ, problems, path, lines) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_env(v, loc + (i,), environ, problems, path, lines) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return environ[name]
        if default is not None:
            return default
        problems[loc] = (
            f"{path}:{_line_of(lines, loc)}: {_dotted(loc)}: environment variable {name} is not set; "
            f"export it, or give a default with ${{{name}:-value}}"
        )
        return match.group(0)

    return _ENV_PATTERN.sub(replace, value)


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _describe(err: Mapping[str, Any], path: Path, lines: dict[tuple, int]) -> str:
    """One teaching line per pydantic error: file:line: key.path: problem (got value); accepted."""
    loc = tuple(err["loc"])
    where = f"{path}:{_line_of(lines, loc)}: {_dotted(loc)}"
    kind = err["type"]
    if kind == "extra_forbidden":
        key = loc[-1] if loc else "?"
        valid = _valid_keys(loc[:-1])
        close = difflib.get_close_matches(str(key), valid, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        return f"{where}: unknown key {key!r}; valid keys here: {', '.join(valid)}.{hint}"
    if kind == "missing":
        return f"{where}: required key is missing"
    message = err["msg"].removeprefix("Value error, ")
    got = err.get("input")
    if isinstance(got, float) and math.isnan(got):
        got_text = "NaN"
    else:
        got_text = repr(got)
    if isinstance(got, (dict, list)):
        return f"{where}: {message}"
    return f"{where}: {message} (got {got_text})"


def _valid_keys(loc: tuple) -> list[str]:
    """Field names accepted at ``loc`` (walking the PolicyConfig annotations); empty if unknown."""
    annotation: Any = PolicyConfig
    for part in loc:
        annotation = _unwrap(annotation)
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(str(part))
            if field is None:
                return []
            annotation = field.annotation
        elif typing.get_origin(annotation) in (dict, Mapping):
            annotation = typing.get_args(annotation)[1]
        elif typing.get_origin(annotation) is list:
            annotation = typing.get_args(annotation)[0]
        else:
            return []
    annotation = _unwrap(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return list(annotation.model_fields)
    return []


def _unwrap(annotation: Any) -> Any:
    """Strip Optional/Annotated so the walk reaches the model class."""
    while True:
        origin = typing.get_origin(annotation)
        if origin is Annotated:
            annotation = typing.get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [a for a in typing.get_args(annotation) if a is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation

"""Typed JSON loading: nested frozen dataclasses built from plain data.

Every section is a frozen dataclass with a docstring under each field. Unknown keys are errors
naming their dotted path; type errors are collected, not raised one at a time, so that a user sees
every problem of a config at once.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, Literal


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is not None:  # list[int], not list
        return str(tp).replace("typing.", "")
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, path: str, errors: list[str]) -> Any:
    """Check `value` against the annotation `tp`; return the converted value (or None on error)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected an object, got {json.dumps(value)}")
            return None
        return build(tp, value, errors, prefix=f"{path}.")
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        if len(inner) == 1:
            return _convert(value, inner[0], path, errors)
        for option in inner:  # the first option the value fits (e.g. `int | list[int]`)
            tried: list[str] = []
            converted = _convert(value, option, path, tried)
            if not tried:
                return converted
        names = " or ".join(_type_name(o) for o in inner)
        errors.append(f"{path}: expected {names}, got {json.dumps(value, ensure_ascii=False)}")
        return None
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            errors.append(f"{path}: {json.dumps(value)} is not one of {', '.join(map(json.dumps, allowed))}")
        return value
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {json.dumps(value)}")
            return None
        return [_convert(v, item_tp, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if tp in (int, float, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        errors.append(f"{path}: expected {_type_name(tp)}, got {json.dumps(value, ensure_ascii=False)}")
        return None
    return value


def build(cls: type, data: dict[str, Any], errors: list[str], prefix: str = "") -> Any:
    """An instance of the dataclass `cls` from `data`, or None with the problems appended to `errors`."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            errors.append(f"{prefix}{key}: unknown key (valid keys here: {', '.join(sorted(names))})")
    kwargs = {}
    for name in names & data.keys():
        kwargs[name] = _convert(data[name], hints[name], f"{prefix}{name}", errors)
    if errors:
        return None
    return cls(**kwargs)


def positive(problems: list[str], checks: list[tuple[str, float]]) -> None:
    """Append a problem for each (dotted path, value) that is not > 0."""
    problems += [f"{path}: must be > 0, got {value}" for path, value in checks if value <= 0]


def non_negative(problems: list[str], checks: list[tuple[str, float]]) -> None:
    """Append a problem for each (dotted path, value) that is < 0."""
    problems += [f"{path}: must be >= 0, got {value}" for path, value in checks if value < 0]


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare string such as s3://bucket/x


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> list[str]:
    """Apply `a.b.c=value` overrides in place (value parsed as JSON, else a string); return problems."""
    problems = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            problems.append(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.steps=1000")
            continue
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                problems.append(f"--set {key}: {part} is not a section")
                break
        else:
            node[leaf] = _parse_value(raw)
    return problems


def contract_fields(cls: type, data: Any, where: str, error: type[Exception], schema_version: int) -> dict[str, Any]:
    """The fields of the dataclass `cls` (a stage contract) found in the JSON object `data`: an
    `error` naming `where` when a required field is missing or the schema version differs (a
    missing version reads as the current one: files written before versions were recorded)."""
    required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
    missing = [k for k in required if k not in data] if isinstance(data, dict) else required
    if missing:
        raise error(f"{where} is incomplete or damaged (missing {', '.join(missing)})")
    if data.get("schema_version", schema_version) != schema_version:
        raise error(f"{where} has schema_version {data['schema_version']}, this version reads {schema_version}")
    known = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in known}


def contract_json(contract: Any) -> dict[str, Any]:
    """A stage contract (a dataclass with a `schema_version` field) as JSON data, the version first."""
    data = dataclasses.asdict(contract)
    return {"schema_version": data.pop("schema_version"), **data}

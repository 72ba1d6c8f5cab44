"""Strict configuration models: unknown keys and wrong types are errors, not surprises."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from omnivae.errors import ConfigError

T = TypeVar("T", bound="StrictModel")

# sizes and scales checked where a config is read, so a bad value names its key instead of failing in torch
PositiveInt = Annotated[int, Field(ge=1)]
NonNegativeFloat = Annotated[float, Field(ge=0, allow_inf_nan=False)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class StrictModel(BaseModel):
    """Base of every config: forbids unknown keys, validates on assignment."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(format_validation_error(exc, where, cls)) from None

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def format_validation_error(exc: ValidationError, where: str, model: type[BaseModel] | None = None) -> str:
    """One line per problem: the dotted key, what was wrong, what was given; an unknown key
    gets the nearest known one at that place ("did you mean ...")."""
    from omnivae.errors import did_you_mean

    lines = [f"invalid {where}:"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            known = known_keys(model, err["loc"][:-1]) if model is not None else []
            msg = "unknown key" + (did_you_mean(str(err["loc"][-1]), known) or
                                   " (check the spelling; see the documented options)")
        given = err.get("input")
        shown = "" if isinstance(given, dict) else f" (got {given!r})"
        lines.append(f"  {key}: {msg}{shown}")
    return "\n".join(lines)


def known_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names of the config section at `loc` inside `model` (through nested configs and
    dicts of configs); [] where that cannot be told."""
    node: Any = model
    for part in loc:
        node = _section(node, part)
        if node is None:
            return []
    return list(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []


def _section(node: Any, part: Any) -> Any:
    import typing

    if isinstance(node, type) and issubclass(node, BaseModel):
        field = node.model_fields.get(str(part))
        return _unwrap(field.annotation) if field is not None else None
    origin = typing.get_origin(node)
    if origin in (dict, typing.get_origin(typing.Mapping[str, int])):
        return _unwrap(typing.get_args(node)[1])
    if origin in (list, tuple):
        return _unwrap(typing.get_args(node)[0])
    return None


def _unwrap(annotation: Any) -> Any:
    """Optional[X] / Annotated[X, ...] -> X (the one config class among a union's members)."""
    import types
    import typing

    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        return _unwrap(models[0] if len(models) == 1 else members[0]) if members else None
    return annotation


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON file into a dict (safe loaders only: no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"config file {path} is not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level, got {type(data).__name__}")
    return data

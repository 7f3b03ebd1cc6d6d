"""Config is data: YAML mappings turned into frozen dataclasses, unknown keys rejected."""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ctxenc.errors import UserError

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str) -> T:
    """Build dataclass `cls` from `data`; an unknown key names the closest valid one."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{where} must be a mapping of option: value, got {data!r}.")
    data = dict(data)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if not fields:
            raise UserError(f"{where} takes no options, got {key!r}.")
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(fields)}."
            raise UserError(f"unknown key {key!r} in {where}; {hint}")
        if isinstance(data[key], list):  # YAML lists -> tuples, so configs stay hashable and frozen
            data[key] = tuple(data[key])
    try:
        return cls(**data)
    except TypeError as err:
        raise UserError(f"{where}: {err}.") from None


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file that must hold a mapping."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file {path} does not exist.")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise UserError(f"{path} is not valid YAML: {str(err).splitlines()[0]}.") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of option: value at the top level.")
    return data

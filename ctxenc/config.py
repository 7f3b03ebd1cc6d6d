"""Config is data: YAML mappings turned into frozen dataclasses, unknown keys and wrong types rejected.

Each value is checked against its field's annotation (int, float, bool, str, None, unions,
tuple[X, ...], dict, Literal) before the dataclass is built, so a list where a number belongs is
one sentence naming the key, not a TypeError from deep inside `__post_init__`.
"""

from __future__ import annotations

import dataclasses
import difflib
import reprlib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

from ctxenc.errors import UserError

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str) -> T:
    """Build dataclass `cls` from `data`; an unknown key names the closest valid one."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(f"{where} must be a mapping of option: value, got {brief(data)}.")
    data = dict(data)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in data:
        if not fields:
            raise UserError(f"{where} takes no options, got {brief(key)}.")
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"valid keys: {', '.join(fields)}."
            raise UserError(f"unknown key {brief(key)} in {where}; {hint}")
        given = data[key]
        if isinstance(given, list):  # YAML lists -> tuples, so configs stay hashable and frozen
            data[key] = tuple(given)
        if _accepts_number(hints[key]) and isinstance(given, str):
            data[key] = _number(given)
        if not _fits(data[key], hints[key]):
            raise UserError(f"{where}: {key} must be {_describe(hints[key])}, got {brief(given)}.")
    try:
        return cls(**data)
    except TypeError as err:
        raise UserError(f"{where}: {err}.") from None


_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother, _repr.maxlist, _repr.maxtuple, _repr.maxdict = 2, 40, 40, 4, 4, 4


def brief(value: Any) -> str:
    """repr() cut short: a message quoting a user's value stays one readable line."""
    return _repr.repr(value)


def _number(text: str) -> Any:
    """'1e-3' -> 0.001: PyYAML reads a float without a dot as a string; anything else is kept as given."""
    try:
        return float(text)
    except ValueError:
        return text


def _accepts_number(hint: Any) -> bool:
    return hint is float or (_is_union(hint) and float in typing.get_args(hint) and str not in typing.get_args(hint))


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (Union, types.UnionType)


def _fits(value: Any, hint: Any) -> bool:
    """Whether `value` (as YAML gives it) has the annotated type; annotations it does not know pass."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if _is_union(hint):
        return any(_fits(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is dict or origin is dict:
        return isinstance(value, dict)
    if hint is tuple or origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return not args or (len(args) == len(value) and all(_fits(v, a) for v, a in zip(value, args)))
    return True


def _describe(hint: Any, plural: bool = False) -> str:
    """int -> 'a whole number' (plural: 'whole numbers'), tuple[int, ...] -> 'a list of whole numbers'."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if _is_union(hint):
        return " or ".join(_describe(a, plural) for a in args)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if (hint is tuple or origin is tuple) and len(args) == 2 and args[1] is Ellipsis:
        return ("lists of " if plural else "a list of ") + _describe(args[0], plural=True)
    if hint is tuple or origin is tuple:
        return "lists" if plural else f"a list of {len(args)}" if args else "a list"
    names = {int: ("a whole number", "whole numbers"), float: ("a number", "numbers"), bool: ("true or false", "true or false"),
             str: ("a string", "strings"), type(None): ("null", "null"), dict: ("a mapping", "mappings")}
    singular, many = names.get(hint, names.get(origin, ("of another type", "of another type")))
    return many if plural else singular


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
        raise UserError(f"{path} must hold a mapping of option: value at the top level, got {brief(data)}.")
    return data

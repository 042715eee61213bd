"""Typed dataclass configs: every field's annotation is its schema, checked on construction.

A config built from YAML, a Hydra override or JSON gets its values checked against the
dataclass annotations before anything runs, and a wrong value fails with one line naming the
field, the value and the expected type (``moe.top_k: expected an integer, got 'abc' (str)``).
Supported annotations: int, float, bool, str, Literal[...], X | None, tuple[X, ...] of fixed
length, list[X], dict and nested Typed dataclasses.

A field marked ``field(metadata=LOGISTICS)`` does not change a run's result (where it is
written, how often it logs, whether it is compiled); ``identity()`` leaves it out, so the run
id hashes only what defines the result.
"""

from __future__ import annotations

import types
import typing
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, ClassVar, Literal, get_args, get_origin

LOGISTICS = {"identity": False}


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


def check(ok: bool, field_name: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{field_name}: {message}")


def _describe(tp) -> str:
    origin = get_origin(tp)
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is bool:
        return "true or false"
    if tp is str:
        return "a string"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) if a is not type(None) else "null" for a in get_args(tp))
    if origin in (tuple, list):
        return f"a list of {_describe(get_args(tp)[0])}"
    if is_dataclass(tp):
        return f"a mapping of {getattr(tp, '__name__', tp)} fields"
    return getattr(tp, "__name__", str(tp))


def _value_text(v) -> str:
    return f"{v!r} ({type(v).__name__})"


def coerce(value: Any, tp, name: str) -> Any:
    """``value`` checked against annotation ``tp``; returns it normalised (int -> float for a
    float field, list -> tuple for a tuple field, dict -> dataclass for a nested config)."""
    origin = get_origin(tp)
    bad = ConfigError(f"{name}: expected {_describe(tp)}, got {_value_text(value)}")
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for option in get_args(tp):
            if option is type(None):
                if value is None:
                    return None
                continue
            try:
                return coerce(value, option, name)
            except ConfigError:
                continue
        raise bad
    if origin is Literal:
        # bool is an int: compare types too, so Literal[1] does not accept True.
        for choice in get_args(tp):
            if value == choice and type(value) is type(choice):
                return value
        raise bad
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise bad
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "3e12" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise bad
        args = get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{name}: expected {len(args)} values, got {_value_text(value)}")
            return tuple(coerce(v, a, f"{name}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        out = [coerce(v, item, f"{name}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if isinstance(tp, type) and is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            return from_dict(tp, value, name)
        raise bad
    raise TypeError(f"{name}: annotation {tp!r} is not supported by models.typed")


class Typed:
    """Base of every config dataclass: checks and normalises its fields' types on construction.

    Subclasses set ``section`` (the config key their fields live under, for messages) and call
    ``super().__post_init__()`` before their own range checks."""

    section: ClassVar[str] = ""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for f in fields(self):  # type: ignore[arg-type]
            name = f"{self.section}.{f.name}" if self.section else f.name
            setattr(self, f.name, coerce(getattr(self, f.name), hints[f.name], name))


def from_dict(cls, values: dict | None, section: str | None = None):
    """Build ``cls`` from a plain mapping, refusing keys it does not have."""
    section = section if section is not None else cls.section
    values = dict(values or {})
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{section}: unknown field(s) {unknown}; known: {sorted(known)}")
    missing = [
        f.name
        for f in fields(cls)
        if f.name not in values and f.default is MISSING and f.default_factory is MISSING
    ]
    if missing:
        raise ConfigError(f"{section}: missing required field(s) {missing}")
    try:
        return cls(**values)
    except TypeError as e:  # a wrong shape that the dataclass itself rejects
        raise ConfigError(f"{section}: {e}") from None


def _default(f) -> Any:
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def identity(obj, always: frozenset[str] | None = None, prefix: str = "") -> Any:
    """The config as plain data without its logistics fields (see LOGISTICS).

    ``always``: the dotted paths of the fields that enter the identity at any value (every
    field that existed when the first runs were recorded). Any other field enters only when it
    differs from its default, so adding an option never changes an existing run's id; a
    section left with nothing in it is left out too. None: every field enters."""
    if is_dataclass(obj):
        out = {}
        for f in fields(obj):
            if not f.metadata.get("identity", True):
                continue
            path, value = f"{prefix}{f.name}", getattr(obj, f.name)
            kept = always is None or path in always or any(a.startswith(path + ".") for a in always)
            if is_dataclass(value):
                sub = identity(value, always, path + ".")
                if kept or sub:
                    out[f.name] = sub
            elif kept or not _same(value, _default(f)):
                out[f.name] = identity(value)
        return out
    if isinstance(obj, (list, tuple)):
        return [identity(v) for v in obj]
    if isinstance(obj, dict):
        return {k: identity(v) for k, v in obj.items()}
    return obj


def _same(value, default) -> bool:
    if isinstance(value, (list, tuple)) and isinstance(default, (list, tuple)):
        return len(value) == len(default) and all(_same(a, b) for a, b in zip(value, default))
    if isinstance(value, bool) or isinstance(default, bool):  # True == 1, but not the same
        return value is default
    return value == default


def choices(literal) -> tuple:
    """The values of a Literal annotation, for messages and CLIs."""
    return get_args(literal)

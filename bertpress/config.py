"""Typed configs: frozen dataclasses that serialise to tagged, versioned JSON.

Every stage config is a frozen dataclass registered here with `@register_config`. On disk a
config is `{"_type": "FinetuneConfig", "_version": 1, "_data": {...}}`; nested configs are
tagged the same way, enums are written as their values and paths as strings. `from_tagged`
rebuilds the dataclass (running its `__post_init__` validation) and rejects unknown types,
newer versions and unknown keys — a recipe written by a newer bertpress fails loudly.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import hashlib
import json
import math
import os
import typing
from pathlib import Path
from typing import Any, Callable, TypeVar

from bertpress.errors import ConfigError, echo

T = TypeVar("T")

_REGISTRY: dict[str, tuple[type, int]] = {}


def register_config(version: int = 1) -> Callable[[type[T]], type[T]]:
    """Class decorator: make a dataclass serialisable as a tagged config."""

    def wrap(cls: type[T]) -> type[T]:
        if not dataclasses.is_dataclass(cls):
            raise TypeError(f"{cls.__name__} must be a dataclass")
        _REGISTRY[cls.__name__] = (cls, version)
        cls._config_version = version  # type: ignore[attr-defined]
        _finite_first(cls)
        return cls

    return wrap


def _finite_first(cls: type) -> None:
    """Make every registered config reject NaN/inf in any float field before its own checks run.

    One place for the whole class of bug: a NaN compares False with every bound, so range checks
    alone let `--lr nan` through (and train a model whose every weight is NaN)."""
    original = cls.__dict__.get("__post_init__")
    if original is not None:
        def __post_init__(self, _original=original) -> None:
            check_finite_fields(self)
            _original(self)

        cls.__post_init__ = __post_init__  # type: ignore[attr-defined]
    else:  # the generated __init__ does not call a __post_init__ added later: wrap __init__
        init = cls.__init__

        def __init__(self, *args, _init=init, **kwargs) -> None:
            _init(self, *args, **kwargs)
            check_finite_fields(self)

        cls.__init__ = __init__  # type: ignore[method-assign]


def _non_finite(value: Any, depth: int = 0) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, (list, tuple)) and depth < 4:
        return any(_non_finite(v, depth + 1) for v in value)
    if isinstance(value, dict) and depth < 4:
        return any(_non_finite(v, depth + 1) for v in value.values())
    return False


def check_finite_fields(cfg: Any) -> None:
    """Raise ConfigError if any field of a config holds NaN or +/-inf (also inside lists)."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if _non_finite(value):
            raise ConfigError(f"{f.name}={echo(value)} is not a finite number; NaN and infinity are not "
                              "allowed, give a real number")


# Config fields that name input files or directories (`*_data` too): outputs must never overlap them.
PATH_FIELDS = ("model", "teacher", "data", "checkpoint")


def input_paths(cfg: Any) -> tuple[Path, ...]:
    """Every local path a config reads (model, teacher, data, calibration/eval data), recursively."""
    found: list[Path] = []

    def walk(obj: Any) -> None:
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                walk(value)
            elif (f.name in PATH_FIELDS or f.name.endswith("_data")) and isinstance(value, (str, os.PathLike)):
                path = Path(value).expanduser()
                if str(value).strip() and path.exists():
                    found.append(path)

    walk(cfg)
    return tuple(dict.fromkeys(found))


def check_size(data: Any, where: str, limit: int = 100_000) -> None:
    """Refuse a parsed document that expands to more than `limit` values (YAML alias bombs).

    YAML aliases share one object, so a 400-byte file can stand for a billion-element tree;
    we count what it expands to, stopping as soon as the limit is passed."""
    count = 0
    stack = [data]
    while stack:
        item = stack.pop()
        count += 1
        if count > limit:
            raise ConfigError(f"{where}: expands to more than {limit} values (YAML aliases/anchors "
                              "repeated?); write the recipe out plainly")
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


def registered_configs() -> dict[str, type]:
    return {name: cls for name, (cls, _) in _REGISTRY.items()}


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_tagged(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_encode(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode(v) for k, v in value.items()}
    return value


def to_tagged(cfg: Any) -> dict[str, Any]:
    name = type(cfg).__name__
    if name not in _REGISTRY:
        raise TypeError(f"{name} is not a registered config")
    data = {f.name: _encode(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    return {"_type": name, "_version": _REGISTRY[name][1], "_data": data}


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and "_type" in value and "_data" in value:
        return from_tagged(value)
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def from_tagged(obj: dict[str, Any]) -> Any:
    if not isinstance(obj, dict) or not {"_type", "_version", "_data"} <= set(obj):
        raise ConfigError("a tagged config needs the keys _type, _version and _data")
    name, version, data = obj["_type"], obj["_version"], obj["_data"]
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY)) or "none registered"
        raise ConfigError(f"unknown config type {name!r}; known types: {known}")
    cls, current = _REGISTRY[name]
    if not isinstance(version, int) or version > current:
        raise ConfigError(
            f"{name} version {version!r} is newer than this bertpress understands ({current}); "
            "upgrade bertpress"
        )
    return build_config(cls, {k: _decode(v) for k, v in data.items()}, where=name)


def build_config(cls: type[T], data: dict[str, Any], where: str | None = None) -> T:
    """Build `cls` from a plain dict, rejecting unknown keys with the list of allowed ones."""
    where = where or cls.__name__
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    check_size(data, where)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(unknown)}; allowed keys: {', '.join(sorted(names))}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        hint = _dataclass_hint(hints.get(key))
        if isinstance(value, dict) and hint is not None:
            value = build_config(hint, value, where=f"{where}.{key}")
        kwargs[key] = value
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        # wrong types reach a dataclass's own checks as these; they are still the user's input
        raise ConfigError(f"{where}: {exc}") from None


def _dataclass_hint(hint: Any) -> type | None:
    """The dataclass type behind a field hint (`X`, `Optional[X]`, `X | None`), if any."""
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if len(args) == 1 and isinstance(args[0], type) and dataclasses.is_dataclass(args[0]):
        return args[0]
    return None


def config_hash(cfg: Any) -> str:
    """A stable short hash of a config, used to decide whether a stage must be redone."""
    blob = json.dumps(to_tagged(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# ---- validation helpers for __post_init__ -------------------------------------------------


def as_enum(enum_cls: type[enum.Enum], value: Any, field: str) -> Any:
    """Convert a string (or enum) to `enum_cls`, or raise ConfigError listing allowed values."""
    if isinstance(value, enum_cls):
        return value
    try:
        return enum_cls(value)
    except ValueError:
        allowed = ", ".join(str(m.value) for m in enum_cls)
        raise ConfigError(f"{field}={echo(value)} is not valid; choose one of: {allowed}") from None


def check_range(
    value: Any,
    field: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
    integer: bool = False,
) -> None:
    """Raise ConfigError unless `value` is a number within the given bounds."""
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
        integer and not isinstance(value, int)
    ):
        raise ConfigError(f"{field}={echo(value)} must be {kind}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{field}={value} is not a finite number; NaN and infinity are not allowed, "
                          "give a real number")
    bad = (
        (low is not None and (value < low if low_inclusive else value <= low))
        or (high is not None and (value > high if high_inclusive else value >= high))
    )
    if bad:
        lo = "" if low is None else ("[" if low_inclusive else "(") + f"{low}"
        hi = "" if high is None else f"{high}" + ("]" if high_inclusive else ")")
        raise ConfigError(f"{field}={echo(value)} is out of range; it must be in {lo or '(-inf'}, {hi or 'inf)'}")


def set_frozen(obj: Any, name: str, value: Any) -> None:
    """Assign to a frozen dataclass field from __post_init__ (after conversion)."""
    object.__setattr__(obj, name, value)


def check_columns(text_column: Any, text_pair_column: Any, label_column: Any = None) -> None:
    """Data column names in a config: None (detected) or non-empty strings, the two texts and
    the label all different."""
    for name, value in (("text_column", text_column), ("text_pair_column", text_pair_column),
                        ("label_column", label_column)):
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise ConfigError(f"{name}={value!r} must be a column name or null (detected)")
    named = [v for v in (text_column, text_pair_column, label_column) if v is not None]
    if len(set(named)) != len(named):
        raise ConfigError(f"text_column={text_column!r}, text_pair_column={text_pair_column!r} and "
                          f"label_column={label_column!r} must name different columns; pass --text-column, "
                          "--text-pair-column and --label-column with three different names")


# ---- command-line flags generated from config fields ---------------------------------------
#
# A setting is written once: the config field carries its default and, in its metadata, how it
# appears on the command line (help, spelling, choices, group). `add_config_flags` adds the
# argparse arguments, `flag_values` reads them back as the nested dict `build_config` takes.


@dataclasses.dataclass(frozen=True)
class Flag:
    """How one config field appears on the command line (see `flag`)."""

    help: str = ""  # may be left out by a field that shares another field's flag (same `name`)
    name: str | None = None  # full spelling ("--quantize"); default: --PREFIX-FIELD-NAME
    choices: tuple | None = None  # default: an enum field's values
    metavar: str | None = None
    type: Callable[[str], Any] | None = None  # default: int / float / str from the field's type
    group: str | None = None  # argument group title; default: the nested config's group
    # unset: argparse default SUPPRESS, so the flag is absent from the namespace unless given
    # (the caller can refuse it out of context); the help then states the field's default itself
    # (`shown` where the value alone would not read well, e.g. None).
    unset: bool = False
    shown: str | None = None
    cli_default: Any = None  # the argparse default where it differs from the field's (with has_cli_default)
    has_cli_default: bool = False


@dataclasses.dataclass(frozen=True)
class Nested:
    """A nested config whose fields carry flags: the group they go in and their name prefix."""

    group: str | None = None
    prefix: str = ""


def flag(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
         help: str = "", **spec: Any) -> Any:  # noqa: A002 - argparse's own word
    """A config field that is also a command-line flag; `spec` takes the fields of `Flag`
    (cli_default=X: the argparse default is X, not the field's)."""
    if "cli_default" in spec:
        spec["has_cli_default"] = True
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"flag": Flag(help=help, **spec)})


def nested(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING,
           group: str | None = None, prefix: str = "") -> Any:
    """A nested config field whose own fields' flags are added with `group` and `prefix`."""
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"flags": Nested(group=group, prefix=prefix)})


def comma_list(text: str) -> list[str]:
    """A comma-separated flag value as its non-empty, stripped items."""
    return [p.strip() for p in text.split(",") if p.strip()]


@dataclasses.dataclass(frozen=True)
class FlagSpec:
    """One flag of a config class: its spelling, dest, the field paths it sets, argparse kwargs."""

    option: str
    dest: str
    paths: tuple[tuple[str, ...], ...]
    group: str | None
    kwargs: dict


def _shown(value: Any, inner: bool = False) -> str:
    """A default as a user types it: enum values, a list comma-separated, the tuples inside it
    with ':' (pruning ratios: 0:0,0.25:0.25)."""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return (":" if inner else ",").join(_shown(v, inner=True) for v in value)
    return str(value)


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def config_flags(cls: type, prefix: str = "", group: str | None = None) -> list[FlagSpec]:
    """The flags of `cls` and its nested configs, in field order; a spelling named by two fields
    (e.g. one --calibration-data for quantize and prune) is one flag setting both."""
    specs: dict[str, FlagSpec] = {}
    _collect(cls, prefix, group, (), specs)
    return list(specs.values())


def _collect(cls: type, prefix: str, group: str | None, path: tuple[str, ...], specs: dict[str, FlagSpec]) -> None:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if "flags" in f.metadata:
            sub: Nested = f.metadata["flags"]
            _collect(_dataclass_hint(hints[f.name]), prefix + sub.prefix, sub.group or group, path + (f.name,), specs)
            continue
        meta: Flag | None = f.metadata.get("flag")
        if meta is None:
            continue
        option = meta.name or "--" + (prefix + f.name).replace("_", "-")
        if option in specs:
            old = specs[option]
            specs[option] = dataclasses.replace(old, paths=old.paths + (path + (f.name,),))
            continue
        specs[option] = FlagSpec(option, option.lstrip("-").replace("-", "_"), (path + (f.name,),),
                                 meta.group or group, _argparse_kwargs(f, hints[f.name], meta))


def _argparse_kwargs(f: dataclasses.Field, hint: Any, meta: Flag) -> dict:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    base = args[0] if len(args) == 1 else hint
    default = _field_default(f)
    help_text = meta.help
    kwargs: dict[str, Any] = {}
    if base is bool and not meta.type:
        kwargs["action"] = "store_false" if default else "store_true"
    else:
        if meta.type is not None:
            kwargs["type"] = meta.type
        elif base in (int, float):
            kwargs["type"] = base
        choices = meta.choices
        if choices is None and isinstance(base, type) and issubclass(base, enum.Enum):
            choices = tuple(m.value for m in base)
        if choices is not None:
            kwargs["choices"] = tuple(choices)
        if meta.metavar is not None:
            kwargs["metavar"] = meta.metavar
    if meta.unset:
        kwargs["default"] = argparse.SUPPRESS
        help_text += f" (default: {meta.shown if meta.shown is not None else _shown(default)})"
    else:
        value = meta.cli_default if meta.has_cli_default else default
        # an enum as its value; a list as the comma-separated string its config parses (what a user types)
        kwargs["default"] = _shown(value) if isinstance(value, (enum.Enum, list, tuple)) else value
    kwargs["help"] = help_text
    return kwargs


def add_config_flags(parser: Any, cls: type, *, prefix: str = "", group: str | None = None,
                     groups: dict[str, Any] | None = None) -> list[FlagSpec]:
    """Add the flags of config class `cls` to an argparse parser (or group); each titled group is
    created once, in order of first use (pass `groups` to share them with other flags)."""
    groups = {} if groups is None else groups
    specs = config_flags(cls, prefix, group)
    for spec in specs:
        target = parser
        if spec.group is not None:
            if spec.group not in groups:
                groups[spec.group] = parser.add_argument_group(spec.group)
            target = groups[spec.group]
        target.add_argument(spec.option, **spec.kwargs)
    return specs


def flag_values(args: Any, cls: type, *, prefix: str = "", group: str | None = None) -> dict[str, Any]:
    """The flags of `cls` in an argparse namespace as the nested dict `build_config(cls, ...)`
    takes; a flag absent from the namespace (an unset one not given) is left out."""
    values: dict[str, Any] = {}
    for spec in config_flags(cls, prefix, group):
        if not hasattr(args, spec.dest):
            continue
        for path in spec.paths:
            node = values
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = getattr(args, spec.dest)
    return values


def config_from_namespace(args: Any, cls: type[T], *, extra: dict[str, Any] | None = None, **kw: Any) -> T:
    """Build `cls` from its flags in an argparse namespace (plus `extra` fields set elsewhere)."""
    return build_config(cls, {**flag_values(args, cls, **kw), **(extra or {})})

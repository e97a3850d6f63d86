"""Typed dataclass configs from plain mappings and YAML files, with dotted ``key=value`` overrides.

The one loader behind every configuration of the project (model, training, ablation). Values are
checked against the field types: ``int``, ``float``, ``str``, ``bool``, ``Literal[...]``,
``tuple[T, ...]`` and fixed-length ``tuple[A, B]``, ``Optional[T]`` / ``T | None``, ``dict[str, T]``,
``Any`` and nested dataclasses. Unknown keys are rejected naming the dotted key, the closest
allowed name and all allowed names. Missing keys take the dataclass defaults, so a config stored
before a field existed still loads. Overrides are parsed by the type of the field they set, never
evaluated.

Example:
    >>> from monoocc_ros.grid import VoxelGrid
    >>> from_mapping(VoxelGrid, {"size": [128, 128, 16], "voxel_size_m": 0.4})
    VoxelGrid(size=(128, 128, 16), voxel_size_m=0.4, origin_m=(0.0, -25.6, -2.0))
    >>> from_mapping(VoxelGrid, {"voxel_size": 0.4})
    Traceback (most recent call last):
    ...
    monoocc_ros.config_io.ConfigError: unknown key voxel_size (did you mean 'voxel_size_m'?; allowed: origin_m, size, voxel_size_m)
    >>> from_mapping(VoxelGrid, {"size": [128, 128]}, "grid")
    Traceback (most recent call last):
    ...
    monoocc_ros.config_io.ConfigError: grid.size: expected 3 values, got 2
    >>> from monoocc_ros.models.config import ModelConfig
    >>> apply_overrides(ModelConfig(), ["grid.voxel_size_m=0.4", "head.num_classes=5"]).head
    HeadConfig(num_classes=5, chunk_x=16)
    >>> coerce("3", int | None, "steps"), coerce(None, int | None, "steps")
    (3, None)
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from monoocc_ros.errors import UserError

__all__ = [
    "ConfigError",
    "field_types",
    "coerce",
    "from_mapping",
    "to_mapping",
    "apply_overrides",
    "read_yaml_mapping",
    "load_config",
]

T = TypeVar("T")


class ConfigError(UserError, ValueError):
    """A configuration file, mapping or override is invalid; the message names the file and key."""


def field_types(cls) -> dict[str, Any]:
    """Field name -> resolved type annotation of dataclass ``cls`` (string annotations evaluated)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _closest(name: str, allowed) -> str:
    close = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.6)
    return f"did you mean {close[0]!r}?; " if close else ""


def _exact(value: Any, tp: Any, where: str) -> Any:
    """``value`` if it already has scalar type ``tp`` (an int serves as a float), else TypeError."""
    ok = isinstance(value, tp) and not (isinstance(value, bool) and tp is not bool)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise TypeError(f"{where}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def coerce(value: Any, tp: Any, where: str, exact: bool = False) -> Any:
    """Convert a YAML / override value to the field type ``tp`` or raise :class:`ConfigError` naming ``where``.

    With ``exact`` (values the program wrote itself, e.g. a config stored in a checkpoint) scalars
    must already have their type (an int serves as a float, a list as a tuple); a mismatch is a
    ``TypeError`` instead of a conversion.
    """
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_mapping(tp, value, where, exact=exact)
    if origin is typing.Union or origin is types.UnionType:
        options = typing.get_args(tp)
        if value is None:
            if type(None) in options:
                return None
            raise ConfigError(f"{where}: must not be null")
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return coerce(value, option, where, exact)
            except (ConfigError, TypeError) as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} fits none of {options}")
    if origin is Literal:
        if value not in typing.get_args(tp):
            hint = " (YAML reads unquoted off/no/yes as booleans: write 'off')" if isinstance(value, bool) else ""
            raise ConfigError(f"{where}: {value!r} is not one of {list(typing.get_args(tp))}{hint}")
        return value
    if origin is tuple:
        if isinstance(value, str) and not exact:
            value = [v for v in value.split(",") if v.strip()] if value.strip() else []
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            item_types = [args[0]] * len(value)
        else:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            item_types = list(args)
        return tuple(coerce(v, t, f"{where}[{i}]", exact) for i, (v, t) in enumerate(zip(value, item_types)))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        key_tp, value_tp = typing.get_args(tp) or (Any, Any)
        return {coerce(k, key_tp, where, exact): coerce(v, value_tp, f"{where}.{k}", exact) for k, v in value.items()}
    if exact and tp in (bool, int, float, str):
        return _exact(value, tp, where)
    if tp is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp in (int, float, str):
        if isinstance(value, bool) and tp is not str:
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        if tp is str and not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}: expected str, got {type(value).__name__}")
        try:
            converted = tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}") from None
        if tp is int and isinstance(value, float) and value != converted:
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return converted
    raise ConfigError(f"{where}: unsupported field type {tp}")


def from_mapping(cls: type[T], values: dict, where: str = "", *, exact: bool = False) -> T:
    """Build dataclass ``cls`` from nested plain values; missing keys take defaults.

    Args:
        exact: the values were written by the program (``dataclasses.asdict``), so a scalar of the
            wrong type is corruption, not text to convert (see :func:`coerce`).

    Raises:
        ConfigError: unknown key (with the closest allowed name) or a value of the wrong type.
        TypeError: with ``exact``, a scalar of the wrong type.
        ValueError: whatever the dataclass's ``__post_init__`` rejects.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(values).__name__}")
    types_by_name = field_types(cls)
    unknown = sorted(set(values) - set(types_by_name))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown key {prefix}{unknown[0]!s} ({_closest(str(unknown[0]), types_by_name)}"
            f"allowed: {', '.join(sorted(types_by_name))})"
        )
    kwargs = {
        name: coerce(value, types_by_name[name], f"{where}.{name}" if where else name, exact)
        for name, value in values.items()
    }
    return cls(**kwargs)


def to_mapping(cfg) -> dict[str, Any]:
    """Nested plain dict of a dataclass config (inverse of :func:`from_mapping`)."""
    return dataclasses.asdict(cfg)


def _is_text(tp: Any) -> bool:
    """Fields whose override text is taken as is (``off`` stays a word, not a YAML boolean)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return all(_is_text(t) for t in typing.get_args(tp) if t is not type(None))
    return tp is str or typing.get_origin(tp) is Literal


def apply_overrides(cfg: T, overrides: list[str] | tuple[str, ...], *, source: str = "overrides") -> T:
    """A copy of dataclass ``cfg`` with ``dotted.key=value`` overrides, each parsed by its field's type.

    Raises:
        ConfigError: malformed item, unknown key (closest name suggested) or a wrongly typed value.
    """
    values = dataclasses.asdict(cfg)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r}: expected key=value")
        path = key.strip().split(".")
        node, cls = values, type(cfg)
        for part in path[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"override {item!r}: unknown key {key} ({_closest(part, node)}allowed: {', '.join(sorted(node))})")
            node, cls = node[part], field_types(cls)[part]
        if path[-1] not in node or isinstance(node[path[-1]], dict):
            raise ConfigError(
                f"override {item!r}: unknown key {key} ({_closest(path[-1], node)}allowed: {', '.join(sorted(node))})"
            )
        tp = field_types(cls)[path[-1]]
        if _is_text(tp) and raw.strip().lower() not in ("null", "none", "~"):
            node[path[-1]] = raw  # words such as "off" stay strings instead of YAML booleans
        else:
            try:
                parsed = yaml.safe_load(raw) if raw.strip() else ""
            except yaml.YAMLError:
                parsed = raw
            node[path[-1]] = raw if isinstance(parsed, dict) else parsed
    try:
        return from_mapping(type(cfg), values)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def read_yaml_mapping(path: Path) -> dict:
    """The top-level mapping of a YAML config file (an empty file is an empty mapping).

    Raises:
        ConfigError: missing file, invalid YAML, or a top level that is not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return values


def load_config(cls: type[T], path: Path, overrides: list[str] | tuple[str, ...] = ()) -> T:
    """Dataclass ``cls`` from a YAML file, then ``overrides``; errors name the file and the key."""
    try:
        cfg = from_mapping(cls, read_yaml_mapping(path))
    except ConfigError as exc:
        raise ConfigError(exc.args[0] if str(path) in str(exc) else f"{path}: {exc}") from None
    return apply_overrides(cfg, overrides)

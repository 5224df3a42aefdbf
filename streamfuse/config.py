"""Strict building of typed config dataclasses from parsed YAML.

Every component declares one frozen dataclass; `build(cls, data, where)` fills it from a
mapping, rejecting unknown keys, wrong types and (through the dataclass's own
`__post_init__`, which raises ValueError) impossible values. Errors carry the dotted key
path so the rig loader can print one line: file, key, what was expected, how to fix it.

Supported field types: bool, int, float, str, Path, Literal[...], X | None,
tuple[X, ...] of fixed length, list[X], and nested config dataclasses.
"""
from __future__ import annotations

import dataclasses
import difflib
import stat
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

#: Limits of a config file (rig, calibration): far above any real one, far below what hangs.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_DEPTH = 32
#: Nodes after expanding aliases: a handful of anchors is fine, an alias bomb is not.
MAX_YAML_NODES = 100_000


class ConfigError(ValueError):
    """A value in a config mapping is wrong; `key` is its dotted path."""

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}" if key else message)
        self.key = key
        self.message = message


class YamlError(ValueError):
    """A config file that is not YAML, or is YAML beyond the limits above; one line."""


def not_regular(path: Path) -> str:
    """Why `path` cannot be read as an ordinary file ('' when it can): missing, a folder, a FIFO
    or device (which would block or never end), or a kernel file under /proc or /sys."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return "not found"
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISDIR(mode):
        return "a folder, not a file"
    if not stat.S_ISREG(mode):
        return "a FIFO, socket or device, not a regular file"
    if path.resolve().parts[1:2] in (("proc",), ("sys",)):
        return "a kernel file (/proc, /sys), not a regular file"
    return ""


def read_yaml(path: Path) -> Any:
    """Parse a config file with YAML's safe loader, within MAX_YAML_BYTES, MAX_YAML_DEPTH and
    MAX_YAML_NODES (aliases expanded); YamlError saying which limit or where the syntax broke."""
    problem = not_regular(path)
    if problem:
        raise YamlError(problem)
    if path.stat().st_size > MAX_YAML_BYTES:
        raise YamlError(f"larger than {MAX_YAML_BYTES >> 10} KiB; a config file is a few lines")
    try:
        loader = yaml.SafeLoader(path.read_text())
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _check_size(node)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except RecursionError:
        raise YamlError(f"nested more than {MAX_YAML_DEPTH} levels deep") from None
    except OSError as exc:  # e.g. /proc/self/mem: a regular file that cannot be read
        raise YamlError(f"cannot be read ({exc.strerror or exc})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise YamlError(f"not valid YAML{where}; fix the syntax (indentation, colons, quotes)") from None


def _check_size(root: yaml.Node) -> None:
    """YamlError if `root` nests deeper than MAX_YAML_DEPTH or expands to over MAX_YAML_NODES
    nodes (a shared node counts each time it is used, as it will be once constructed)."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, depth: int) -> int:
        if depth > MAX_YAML_DEPTH:
            raise YamlError(f"nested more than {MAX_YAML_DEPTH} levels deep")
        if id(node) in sizes:
            return sizes[id(node)]
        children = node.value if isinstance(node, yaml.SequenceNode) else \
            [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else []
        total = 1 + sum(size(child, depth + 1) for child in children)
        if total > MAX_YAML_NODES:
            raise YamlError(f"expands to over {MAX_YAML_NODES} values (aliases of aliases?)")
        sizes[id(node)] = total
        return total

    size(root, 0)


def build(cls: type, data: Any, where: str = "") -> Any:
    """Return `cls(**data)` after checking every key and value against `cls`'s fields."""
    if not isinstance(data, dict):
        raise ConfigError(where, f"expected a mapping of {_field_list(cls)}, got {_describe(data)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in fields:
            raise ConfigError(path, f"unknown key{suggest(str(key), fields)}; allowed here: {_field_list(cls)}")
        kwargs[key] = _convert(hints[key], value, path)
    missing = [name for name, f in fields.items() if name not in kwargs and _is_required(f)]
    if missing:
        raise ConfigError(f"{where}.{missing[0]}" if where else missing[0], "missing required key")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as exc:
        # __post_init__ messages start with the field name they are about, when they can.
        field = str(exc).split(":", 1)[0]
        if field in fields:
            raise ConfigError(f"{where}.{field}" if where else field, str(exc).split(":", 1)[1].strip()) from None
        raise ConfigError(where, str(exc)) from None


def _is_required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def file_path(value: Any, where: str) -> Path:
    """A path the operating system can take (text, no NUL byte, names of at most 255 bytes),
    or ConfigError at `where`. Whether the file exists is the caller's business."""
    if not isinstance(value, str) or not value:
        raise ConfigError(where, f"expected a file path, got {_describe(value)}")
    if "\0" in value:
        raise ConfigError(where, "a file path cannot hold a NUL byte")
    if len(value.encode("utf-8", "surrogateescape")) > 4095 or any(
            len(part.encode("utf-8", "surrogateescape")) > 255 for part in value.split("/")):
        raise ConfigError(where, "file name too long (at most 255 bytes a name, 4095 in all)")
    return Path(value)


def _convert(hint: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if isinstance(value, dict) and any(dataclasses.is_dataclass(a) for a in inner):
            # A mapping can only be meant for the config class: its own error, key path and all.
            return _convert(next(a for a in inner if dataclasses.is_dataclass(a)), value, path)
        errors = []
        for option in inner:  # the first type that takes the value wins, e.g. int | str
            try:
                return _convert(option, value, path)
            except ConfigError as exc:
                errors.append(exc.message)
        raise ConfigError(path, " or ".join(errors))
    if origin is Literal:
        if value not in args:
            raise ConfigError(path, f"expected one of {', '.join(map(repr, args))}, got {_describe(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(path, f"expected a list of {len(args)} values, got {_describe(value)}")
        return tuple(_convert(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(path, f"expected a list, got {_describe(value)}")
        return [_convert(args[0], v, f"{path}[{i}]") for i, v in enumerate(value)]
    if dataclasses.is_dataclass(hint):
        return build(hint, value, path)
    return _convert_scalar(hint, value, path)


def _convert_scalar(hint: Any, value: Any, path: str) -> Any:
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(path, f"expected true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(path, f"expected a whole number, got {_describe(value)}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(path, f"expected a number, got {_describe(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(path, f"expected text, got {_describe(value)}")
        return value
    if hint is Path:
        return file_path(value, path)
    if hint is Any:
        return value
    raise TypeError(f"unsupported config field type {hint!r} at {path}")


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return f"a list of {len(value)}"
    return f"{value!r} ({type(value).__name__})"


def _field_list(cls: type) -> str:
    return ", ".join(f.name for f in dataclasses.fields(cls) if f.init)


def suggest(key: str, known: typing.Iterable[str]) -> str:
    """' (did you mean 'x'?)' for a near miss among `known`, else ''."""
    close = difflib.get_close_matches(key, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def check_range(name: str, value: float, low: float, high: float) -> None:
    """Raise ValueError('name: ...') unless low <= value <= high; for __post_init__."""
    if not low <= value <= high:
        raise ValueError(f"{name}: expected a value from {low} to {high}, got {value}")

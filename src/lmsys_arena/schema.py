"""How a config option is declared and checked: one dataclass field per option, with its default and a
one-line help (trl style). :func:`build` turns a YAML mapping into the dataclass, refusing unknown keys
(naming the closest valid ones) and wrong types; :func:`reference` writes the Markdown reference.

    @dataclass
    class TrainOptions:
        lr: float = option(2e-4, "LoRA learning rate")
        swap: Literal["none", "random", "both"] = option("random", "A/B swap augmentation")

An option's type is its annotation: bool, int, float (YAML's ``4e-4`` string accepted), str, a
``Literal[...]`` of choices, ``X | None``, ``list[X]``, ``dict[str, X]`` or a nested options dataclass.
Checks that need several fields go in ``__post_init__`` and raise :class:`OptionError`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, field, fields, is_dataclass
from typing import Any, Literal, Union, get_args, get_origin


class ConfigError(ValueError):
    """A bad config: the message names the key, where it came from, and what is valid."""


class OptionError(ValueError):
    """Raised by an options class's ``__post_init__``: ``key`` is the field (dotted below it)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def option(default: Any = MISSING, help: str = "", *, factory: Callable | None = None) -> Any:
    """A config option: its default (a ``factory`` for mutable ones) and a one-line help."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    if isinstance(default, (list, dict, set)):
        value = default
        return field(default_factory=lambda: type(value)(value), metadata={"help": help})
    if is_dataclass(default) and not isinstance(default, type):
        value = default
        return field(default_factory=lambda: dataclasses.replace(value), metadata={"help": help})
    return field(default=default, metadata={"help": help})


def help_of(f: dataclasses.Field) -> str:
    return f.metadata.get("help", "")


def hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def close_matches(key: str, names) -> list[str]:
    return difflib.get_close_matches(key, list(names), n=3, cutoff=0.6)


Where = Callable[[str], str]  # dotted key -> where its value came from ("configs/x.yaml", "--set", ...)


def _where(where: Where | None, key: str) -> str:
    return where(key) if where else "config"


def unknown_key_error(key: str, names, where: Where | None) -> ConfigError:
    last = key.rsplit(".", 1)[-1]
    parent = key.rsplit(".", 1)[0] + "." if "." in key else ""
    close = [parent + c for c in close_matches(last, names)]
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return ConfigError(f"{_where(where, key)}: unknown key {key!r}{hint} (valid here: {', '.join(sorted(names))})")


def build(cls, data, *, prefix: str = "", where: Where | None = None):
    """An instance of options class ``cls`` from a mapping (missing keys take their defaults)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{_where(where, prefix or '.')}: {prefix or 'the config'} must be a mapping of options, got {_show(data)}"
        )
    types_ = hints(cls)
    names = {f.name for f in fields(cls) if f.init}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in names:
            raise unknown_key_error(dotted, names, where)
        kwargs[key] = check(value, types_[key], dotted, where)
    try:
        return cls(**kwargs)
    except OptionError as e:
        key = f"{prefix}{e.key}"
        raise ConfigError(f"{_where(where, key)}: {key}: {e}") from None


def check(value, tp, key: str, where: Where | None = None):
    """``value`` checked (and coerced: YAML number strings, ints for floats) against annotation ``tp``."""
    ok, out = _match(value, tp, key, where)
    if not ok:
        raise ConfigError(f"{_where(where, key)}: {key} must be {describe(tp)}, got {_show(value)}")
    return out


def _match(value, tp, key, where):
    """(matched, value); nested options dataclasses raise their own errors."""
    if tp is Any:
        return True, value
    if is_dataclass(tp):
        if isinstance(value, tp):
            return True, value
        if isinstance(value, dict) or value is None:
            return True, build(tp, value, prefix=key + ".", where=where)
        return False, value
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None:
            return type(None) in args, value
        for arm in sorted((a for a in args if a is not type(None)), key=_strictness):
            ok, out = _match(value, arm, key, where)
            if ok:
                return True, out
        return False, value
    if origin is Literal:
        return any(value == c and type(value) is type(c) for c in get_args(tp)), value
    if origin is list:
        if not isinstance(value, list):
            return False, value
        (item,) = get_args(tp) or (Any,)
        return True, [check(v, item, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            return False, value
        _k, item = get_args(tp) or (str, Any)
        return True, {str(k): check(v, item, f"{key}.{k}", where) for k, v in value.items()}
    if tp is type(None):
        return value is None, value
    if tp is bool:
        return isinstance(value, bool), value
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return True, float(value)
        if isinstance(value, str):  # YAML 1.1 reads 4e-4 (no dot) as a string
            try:
                return True, float(value)
            except ValueError:
                return False, value
        return False, value
    if tp is str:
        return isinstance(value, str), value
    raise TypeError(f"{key}: unsupported option type {tp!r}")


def _strictness(tp) -> int:
    """Try exact types before coercing ones (bool before int before float before str)."""
    order = {bool: 0, int: 1, float: 2}
    if get_origin(tp) is Literal:
        return -1
    return order.get(tp, 3 if tp is not str else 4)


def describe(tp) -> str:
    """``tp`` in words, for errors and the reference."""
    if tp is Any:
        return "any value"
    if is_dataclass(tp):
        return "a mapping of options"
    origin = get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in get_args(tp))
    if origin is Literal:
        return "one of " + ", ".join(repr(c) for c in get_args(tp))
    if origin is list:
        (item,) = get_args(tp) or (Any,)
        return f"a list of {_plural(describe(item))}"
    if origin is dict or tp is dict:
        _k, item = get_args(tp) or (str, Any)
        return f"a mapping of names to {_plural(describe(item))}"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", type(None): "null"}.get(
        tp, repr(tp)
    )


def _plural(s: str) -> str:
    for one, many in (
        ("an integer", "integers"),
        ("a number", "numbers"),
        ("a string", "strings"),
        ("a mapping of options", "option mappings"),
    ):
        s = s.replace(one, many)
    return s


def _show(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def resolve_path(cls, dotted: str, *, where: Where | None = None) -> Any:
    """The annotation of the option at ``dotted`` (``a.b.c``) in options class ``cls``; a key below a free
    mapping (``params.max_depth``) is valid. Unknown keys raise :class:`ConfigError` with close matches."""
    tp, done = cls, []
    for part in dotted.split("."):
        here = ".".join(done + [part])
        tp = _strip_optional(tp)
        if is_dataclass(tp):
            names = {f.name for f in fields(tp) if f.init}
            if part not in names:
                raise unknown_key_error(here, names, where)
            tp = hints(tp)[part]
        elif get_origin(tp) is dict or tp is dict:
            tp = (get_args(tp) or (str, Any))[1]
        else:
            raise ConfigError(
                f"{_where(where, here)}: {'.'.join(done)} is an option, not a section: {here!r} does not exist"
            )
        done.append(part)
    return tp


def _strip_optional(tp):
    if get_origin(tp) in (Union, types.UnionType):
        arms = [a for a in get_args(tp) if a is not type(None)]
        dcs = [a for a in arms if is_dataclass(a)]
        if dcs:
            return dcs[0]
    return tp


def default_of(f: dataclasses.Field):
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return MISSING


def rows(cls, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(dotted key, type, default, help) for every option of ``cls``, nested sections flattened."""
    out = []
    types_ = hints(cls)
    for f in fields(cls):
        if not f.init:
            continue
        tp, key = types_[f.name], prefix + f.name
        inner = _strip_optional(tp)
        if is_dataclass(inner):
            out.append((key, "section", "", help_of(f)))
            out += rows(inner, key + ".")
            continue
        default = default_of(f)
        out.append((key, describe(tp), _yaml(default), help_of(f)))
    return out


def _yaml(value) -> str:
    import yaml

    if is_dataclass(value):
        value = dataclasses.asdict(value)
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("...").strip()


def reference(sections: list[tuple[str, str, type]]) -> str:
    """A Markdown reference of ``(title, intro, options class)`` sections."""
    lines = []
    for title, intro, cls in sections:
        lines += [f"## {title}", "", intro, "", "| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        for key, tp, default, text in rows(cls):
            cell = f"`{default}`" if default != "" else ""
            lines.append(f"| `{key}` | {tp.replace('|', '/')} | {cell.replace('|', '/')} | {text.replace('|', '/')} |")
        lines.append("")
    return "\n".join(lines)

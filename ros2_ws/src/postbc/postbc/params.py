"""ROS parameters declared from a dataclass: the one description of each node's settings.

Each node module defines `Params` (a dataclass, a docstring line per field, validation in `__post_init__`). The node
calls `declare(self, Params)`; the bringup profiles and the in-process runner read the same dataclass for defaults,
and `config/*.yaml` files are checked against it. Tuples become ROS array parameters.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import typing
from typing import Any, TypeVar

from postbc_core.errors import ConfigError
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException

P = TypeVar("P")


def field_docs(cls) -> dict[str, str]:
    """Field name -> the docstring line under it in the dataclass source (empty when there is none)."""
    try:
        tree = ast.parse(inspect.getsource(cls).lstrip())
    except (OSError, TypeError, SyntaxError):
        return {}
    docs: dict[str, str] = {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    for a, b in zip(body, body[1:]):
        if (isinstance(a, ast.AnnAssign) and isinstance(a.target, ast.Name) and isinstance(b, ast.Expr)
                and isinstance(b.value, ast.Constant) and isinstance(b.value.value, str)):
            docs[a.target.id] = " ".join(b.value.value.split())
    return docs


def defaults(cls) -> dict[str, Any]:
    """Field name -> default value of a Params dataclass (as ROS would hold it: tuples -> lists)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            v = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            v = f.default_factory()  # type: ignore[misc]
        else:
            raise ConfigError(f"{cls.__name__}.{f.name} needs a default (ROS parameters always have one)")
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def expected(t) -> str:
    """How an error names the type of a field annotated `t`."""
    if t is bool:
        return "true or false (bool)"
    if t is int:
        return "an integer"
    if t is float:
        return "a number (float)"
    if t is str:
        return "a string (quote a value YAML would read as a number or bool)"
    if t is tuple or typing.get_origin(t) is tuple:
        args = typing.get_args(t)
        fixed = bool(args) and args[-1] is not Ellipsis
        elem = args[0] if args else str
        word = {bool: "bools", int: "integers", float: "numbers", str: "strings"}.get(elem, "values")
        return f"a list of {len(args)} {word}" if fixed else f"a list of {word}"
    return getattr(t, "__name__", str(t))


def _scalar(t, v) -> Any:
    """`v` as the scalar field type `t` (an int is a float where a float is wanted, as ROS 2 launch casts it);
    TypeError when it is not one."""
    if t is float and isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if t is int and isinstance(v, int) and not isinstance(v, bool):
        return v
    if t in (bool, str) and isinstance(v, t):
        return v
    if t not in (bool, int, float, str):
        return v  # a type these checks do not know: the dataclass's own checks judge it
    raise TypeError


def typed(t, v) -> Any:
    """`v` as a value of a field annotated `t`, the form ROS holds it in (floats for float fields, lists for tuple
    fields); TypeError when it has the wrong type (a string for a number, a number for a string, a list of them)."""
    if t is str and v is None:  # `--set checkpoint=` / `key:` with nothing after it: the empty string
        return ""
    if t is tuple or typing.get_origin(t) is tuple:
        if not isinstance(v, (list, tuple)):
            raise TypeError
        args = typing.get_args(t)
        if args and args[-1] is not Ellipsis:
            if len(v) != len(args):
                raise TypeError
            return [_scalar(a, x) for a, x in zip(args, v)]
        return [_scalar(args[0] if args else str, x) for x in v]
    return _scalar(t, v)


def check_values(cls, values: dict[str, Any]) -> dict[str, Any]:
    """`values` (name -> value, from --set, a params file or launch) checked against the fields of dataclass `cls`:
    ConfigError naming an unknown name (and the closest known one) or a value of the wrong type (the value and the
    expected type). Returns the values as the fields' types hold them in ROS (ints -> floats, tuples -> lists)."""
    import difflib

    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        close = {u: difflib.get_close_matches(u, names, n=1) for u in unknown}
        hint = "; ".join(f"{u!r}: did you mean {c[0]!r}?" for u, c in close.items() if c)
        raise ConfigError(f"unknown parameter(s) {unknown}{' (' + hint + ')' if hint else ''}; known: {sorted(names)}")
    out = {}
    for k, v in values.items():
        try:
            out[k] = typed(hints.get(k), v)
        except TypeError:
            raise ConfigError(f"{k}={v!r}: expected {expected(hints.get(k))}") from None
    return out


def coerce(cls, values: dict[str, Any]) -> Any:
    """Build `cls(**values)` from ROS / YAML values: names and types checked first (check_values), lists -> tuples,
    ints -> floats, so the dataclass's own checks see the field types."""
    hints = typing.get_type_hints(cls)
    kw = {}
    for k, v in check_values(cls, values).items():
        t = hints.get(k)
        kw[k] = tuple(v) if (t is tuple or typing.get_origin(t) is tuple) else v
    return cls(**kw)


def parse_value(text: str) -> Any:
    """`--set key=value` text -> a Python value: YAML-ish literals (1, 0.5, true, [a, b]) else the string."""
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def declare(node, cls: type[P]) -> P:
    """Declare every field of `cls` as a parameter of `node` (defaults from the dataclass, overrides from the
    launch file / params file / runner) and return the validated dataclass instance."""
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    values = {}
    for name, default in defaults(cls).items():
        # Array parameters are dynamically typed: ROS gives `[]` no element type (an empty override arrives as
        # BYTE_ARRAY or unset), and the dataclass checks the values anyway.
        seq = typing.get_origin(hints.get(name)) is tuple
        desc = ParameterDescriptor(description=docs.get(name, ""), dynamic_typing=seq)
        try:
            v = node.declare_parameter(name, default, desc).value
        except InvalidParameterTypeException as e:  # `ros2 run ... -p max_joint_speed:=1` (an integer) or `:=abc`
            given = getattr(node, "_parameter_overrides", {}).get(name)
            value = repr(given.value) if given is not None else str(e)
            raise ConfigError(f"node {node.get_name()!r}: {name}={value}: expected {expected(hints.get(name))} "
                              "(ROS 2 types a value as written: 1 is an integer, 1.0 a double)") from None
        values[name] = ([] if v is None else list(v)) if seq else v
    try:
        return coerce(cls, values)
    except ConfigError as e:
        raise ConfigError(f"node {node.get_name()!r}: {e}") from None

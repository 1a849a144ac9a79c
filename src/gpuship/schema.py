"""Shape checks for parsed TOML (``pyproject.toml``, ``gpuship.toml``): every field is checked for its type
before it is used, and a wrong one is a :class:`~gpuship.errors.ConfigError` that names the field and the type
it must have, e.g. ``[project] dependencies must be a list of strings, not a string``.

TOML gives strings, integers, floats, booleans, dates, lists and tables; Python's ``list("numpy")`` or
``str({...})`` would turn a wrong shape into a wrong value without a word (``dependencies = "numpy"`` once
installed packages named ``n``, ``u``, ``m``, ``p``, ``y``). These functions never coerce across shapes.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping

from .errors import ConfigError


def type_name(value: object) -> str:
    """What ``value`` is, in TOML words: ``a string``, ``an integer``, ``a table``, ..."""
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, (datetime.date, datetime.time)):
        return "a date/time"
    return type(value).__name__


def wrong(where: str, expected: str, value: object, example: str | None = None) -> ConfigError:
    """The one-line error for a field of the wrong shape."""
    return ConfigError(f"{where} must be {expected}, not {type_name(value)}", f"e.g. {example}" if example else None)


def string(value: object, where: str, example: str | None = None) -> str:
    if not isinstance(value, str):
        raise wrong(where, "a string", value, example)
    return value


def boolean(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise wrong(where, "true or false", value)
    return value


def table(value: object, where: str, example: str | None = None) -> dict[str, object]:
    if not isinstance(value, Mapping):
        raise wrong(where, "a table", value, example)
    return dict(value)


def string_list(value: object, where: str, example: str | None = None, *, one_string: bool = False) -> tuple[str, ...]:
    """A list of strings; with ``one_string``, a single string is taken as a list of one."""
    if one_string and isinstance(value, str):
        return (value,)
    expected = "a list of strings" + (" (or one string)" if one_string else "")
    if not isinstance(value, (list, tuple)):
        raise wrong(where, expected, value, example)
    for item in value:
        if not isinstance(item, str):
            raise ConfigError(
                f"{where} must be {expected}, but one item is {type_name(item)}", f"e.g. {example}" if example else None
            )
    return tuple(value)


def string_table(value: object, where: str, example: str | None = None, *, numbers: bool = False) -> dict[str, str]:
    """A table of strings (``numbers``: integers and floats too, written as TOML writes them)."""
    t = table(value, where, example)
    out: dict[str, str] = {}
    for k, v in t.items():
        if isinstance(v, str) or (numbers and isinstance(v, (int, float)) and not isinstance(v, bool)):
            out[str(k)] = str(v)
        else:
            expected = "a string" + (" or a number" if numbers else "")
            raise ConfigError(
                f"{where}.{k} must be {expected}, not {type_name(v)}", f"e.g. {example}" if example else None
            )
    return out


def table_at(data: Mapping[str, object], *keys: str, where: str = "") -> dict[str, object]:
    """The table at ``data[k1][k2]...`` ({} where a key is missing); a non-table on the way is an error."""
    cur: Mapping[str, object] = data
    path: list[str] = []
    for k in keys:
        path.append(k)
        found = cur.get(k)
        if found is None:
            return {}
        if not isinstance(found, Mapping):
            raise wrong(f"{where}[{'.'.join(path)}]", "a table", found)
        cur = found
    return dict(cur)

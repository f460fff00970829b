"""Reads zfront's TOML configuration file for the C core.

The core calls ``read(path)`` once, before the command line is applied again
(flags override the file). Every value becomes text for ``zf_config_set``:
tables flatten to dotted keys (``[http] listen = ...`` is ``http.listen``),
booleans become ``true``/``false``, numbers ``str()``, and an array gives one
``(key, value)`` pair per element, in order (a list key takes them all).

An array of tables (``[[clock]]``) gives one ``("clock.entries", text)`` pair
per table, where text is the table's ``name=value`` fields joined by tabs
(the owning subsystem parses them; clock.c does for ``[[clock]]``).
"""

import tomllib

__all__ = ["read", "flatten"]


def _scalar(path, key, value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value
    raise ValueError(
        f"config {path}: {key}: unsupported value {value!r} "
        "(use a string, a number, a boolean or an array of them)"
    )


def _table_entry(path, key, table):
    fields = []
    for name, value in table.items():
        text = _scalar(path, f"{key}.{name}", value)
        if "\t" in text or "\n" in text or "=" in name:
            raise ValueError(f"config {path}: [[{key}]] {name}: tabs and newlines are not allowed")
        fields.append(f"{name}={text}")
    return "\t".join(fields)


def flatten(path, table, prefix=""):
    """Returns [(dotted_key, text), ...] for a parsed TOML table."""
    items = []
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            items.extend(flatten(path, value, key + "."))
        elif isinstance(value, list) and value and all(isinstance(e, dict) for e in value):
            for element in value:
                items.append((key + ".entries", _table_entry(path, key, element)))
        elif isinstance(value, list):
            # An empty array sets nothing: the key keeps its default.
            for element in value:
                if isinstance(element, (dict, list)):
                    raise ValueError(
                        f"config {path}: {key}: arrays may only hold strings, "
                        "numbers or booleans"
                    )
                items.append((key, _scalar(path, key, element)))
        else:
            items.append((key, _scalar(path, key, value)))
    return items


def read(path):
    """Parses the file; raises ValueError with a message naming the file."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ValueError(f"config {path}: no such file") from None
    except OSError as e:
        raise ValueError(f"config {path}: cannot read it: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"config {path}: TOML syntax error: {e}") from None
    return flatten(path, data)

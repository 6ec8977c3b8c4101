"""A fast structural check of a document against its JSON Schema file in kcheck/schemas.

It reads the subset of JSON Schema those files use (type, properties, required,
additionalProperties, propertyNames, items, enum, const, minimum, pattern), so the schema stays the one
description of each document. jsonschema itself is a test dependency only; the tests check
that both give the same answer.
"""

from __future__ import annotations

import functools
import json
import re
from importlib import resources
from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


@functools.cache
def schema(name: str) -> dict[str, Any]:
    """kcheck/schemas/NAME.json, e.g. "build-record-1"."""
    return json.loads(resources.files("kcheck.schemas").joinpath(f"{name}.json").read_text())


def first_problem(document: Any, name: str) -> str | None:
    """What is wrong with the document, by its schema NAME; None when it conforms."""
    return _problem(document, schema(name), "$")


def _is(value: Any, type_name: str) -> bool:
    """JSON types: a bool is no number, and 2.0 is an integer (as JSON Schema says)."""
    if isinstance(value, bool) and type_name in ("integer", "number"):
        return False
    if type_name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES[type_name])


def _equal(a: Any, b: Any) -> bool:
    """JSON equality: unlike Python's, true is not 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    return a == b


def _problem(value: Any, rule: dict[str, Any], where: str) -> str | None:
    types = rule.get("type")
    if types is not None:
        wanted = [types] if isinstance(types, str) else types
        if not any(_is(value, t) for t in wanted):
            return f"{where} is {type(value).__name__}, not {' or '.join(wanted)}"
    if "const" in rule and not _equal(value, rule["const"]):
        return f"{where} is {value!r}, not {rule['const']!r}"
    if "enum" in rule and not any(_equal(value, option) for option in rule["enum"]):
        return f"{where} is {value!r}, not one of {', '.join(map(repr, rule['enum']))}"
    if "minimum" in rule and _is(value, "number") and value < rule["minimum"]:
        return f"{where} is {value}, below {rule['minimum']}"
    if "pattern" in rule and isinstance(value, str) and not re.search(rule["pattern"], value):
        return f"{where} {value!r} does not match {rule['pattern']}"
    if isinstance(value, dict):
        return _object_problem(value, rule, where)
    if isinstance(value, list) and isinstance(rule.get("items"), dict):
        for index, item in enumerate(value):
            if found := _problem(item, rule["items"], f"{where}[{index}]"):
                return found
    return None


def _object_problem(value: dict[str, Any], rule: dict[str, Any], where: str) -> str | None:
    if missing := [key for key in rule.get("required", []) if key not in value]:
        return f"{where} lacks {', '.join(missing)}"
    if isinstance(rule.get("propertyNames"), dict):
        for key in value:
            if found := _problem(key, rule["propertyNames"], f"{where} key {key!r}"):
                return found
    properties = rule.get("properties", {})
    extra = rule.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            found = _problem(item, properties[key], f"{where}.{key}")
        elif extra is False:
            found = f"{where} has an unknown field {key!r}"
        elif isinstance(extra, dict):
            found = _problem(item, extra, f"{where}.{key}")
        else:
            found = None
        if found:
            return found
    return None

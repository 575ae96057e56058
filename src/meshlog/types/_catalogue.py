"""Catalogue files: a named list of event types with a JSON Schema each, as JSON or YAML.

::

    {
      "name": "my-agents",
      "description": "What this catalogue is for.",
      "$defs": {"money": {"type": "object", "properties": {"amount": {"type": "number"}}}},
      "types": [
        {
          "type": "invoice.sent",
          "category": "billing",
          "description": "An invoice went out.",
          "version": 1,
          "important": false,
          "schema": {
            "type": "object",
            "properties": {"invoice_id": {"type": "string"}, "total": {"$ref": "#/$defs/money"}},
            "required": ["invoice_id"]
          }
        }
      ]
    }

``version`` defaults to 1 and ``important`` to false; a type may appear once per version. ``$defs`` (optional)
holds schemas shared by the catalogue's types: each type's schema gets them as its own ``$defs``, so
``{"$ref": "#/$defs/money"}`` works in every one. A catalogue is read whole and checked before any of its types
is registered: a bad file raises :class:`~meshlog.errors.ConfigurationError` saying where and why.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

from meshlog.errors import ConfigurationError
from meshlog.types._schema import check_json_schema, json_path

__all__ = ["CATALOGUES", "TYPE_PATTERN", "Catalogue", "CatalogueEntry", "read_catalogue"]

CATALOGUES: Final = ("agent-mesh", "session", "documentable")
"""The built-in catalogues, loadable by name."""

TYPE_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,199}$"
"""What an event type name may be (the same rule the log applies to every event's ``type``)."""

_SUFFIXES: Final = (".json", ".yaml", ".yml")

_CATALOGUE_SCHEMA: Final[Mapping[str, Any]] = {
    "type": "object",
    "required": ["name", "types"],
    "additionalProperties": False,
    "properties": {
        "$schema": {"type": "string"},
        "name": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "$defs": {"type": "object", "additionalProperties": {"type": ["object", "boolean"]}},
        "types": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["type", "category", "description", "schema"],
                "additionalProperties": False,
                "properties": {
                    "type": {"type": "string", "pattern": TYPE_PATTERN},
                    "category": {"type": "string", "minLength": 1},
                    "description": {"type": "string"},
                    "version": {"type": "integer", "minimum": 1},
                    "important": {"type": "boolean"},
                    "schema": {
                        "type": "object",
                        "required": ["type"],
                        "properties": {"type": {"const": "object"}},
                    },
                },
            },
        },
    },
}


@dataclass(frozen=True, slots=True)
class CatalogueEntry:
    type: str
    category: str
    description: str
    version: int
    important: bool
    schema: Mapping[str, Any]
    """Already checked against the JSON Schema meta-schema."""


@dataclass(frozen=True, slots=True)
class Catalogue:
    name: str
    description: str
    entries: tuple[CatalogueEntry, ...]
    source: str
    """The built-in name or the file it was read from."""


def read_catalogue(name_or_path: str | os.PathLike[str]) -> Catalogue:
    """A built-in catalogue by name (``agent-mesh``, ``session``, ``documentable``) or a ``.json``, ``.yaml`` or
    ``.yml`` file, read and checked. Raises ConfigurationError."""
    if isinstance(name_or_path, str) and name_or_path in CATALOGUES:
        return _builtin(name_or_path)
    path = Path(name_or_path)
    suffix = path.suffix.lower()
    if suffix not in _SUFFIXES:
        raise ConfigurationError(
            f"unknown catalogue {str(name_or_path)!r}: use a built-in one ({', '.join(CATALOGUES)}) "
            "or the path of a .json, .yaml or .yml file"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigurationError(f"catalogue file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read catalogue file {str(path)!r}: {exc}") from exc
    content = _parse_json(text, str(path)) if suffix == ".json" else _parse_yaml(text, str(path))
    return _build(content, str(path))


@functools.cache
def _builtin(name: str) -> Catalogue:
    text = resources.files("meshlog.types").joinpath("catalogues", f"{name}.json").read_text(encoding="utf-8")
    return _build(_parse_json(text, name), name)


def _parse_json(text: str, source: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"catalogue {source}: not valid JSON: {exc}") from exc


def _parse_yaml(text: str, source: str) -> object:
    try:
        import yaml
    except ImportError as exc:
        raise ConfigurationError(
            f"reading the YAML catalogue {source} needs PyYAML: pip install 'meshlog[yaml]' ({exc})"
        ) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"catalogue {source}: not valid YAML: {exc}") from exc


def _build(content: object, source: str) -> Catalogue:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    error = best_match(Draft202012Validator(_CATALOGUE_SCHEMA).iter_errors(content))
    if error is not None:
        where = _where(content, list(error.absolute_path))
        raise ConfigurationError(f"catalogue {source}: {where}: {error.message}")
    assert isinstance(content, dict)
    defs: dict[str, Any] = content.get("$defs") or {}
    entries: list[CatalogueEntry] = []
    seen: set[tuple[str, int]] = set()
    for index, item in enumerate(content["types"]):
        name, version = item["type"], int(item.get("version", 1))
        if (name, version) in seen:
            raise ConfigurationError(f"catalogue {source}: types[{index}]: {name} version {version} appears twice")
        seen.add((name, version))
        schema = dict(item["schema"])
        if defs:
            schema["$defs"] = {**defs, **(schema.get("$defs") or {})}
        problem = check_json_schema(schema)
        if problem is not None:
            raise ConfigurationError(f"catalogue {source}: types[{index}] ({name}).{problem}")
        entries.append(
            CatalogueEntry(
                type=name,
                category=item["category"],
                description=item["description"],
                version=version,
                important=bool(item.get("important", False)),
                schema=schema,
            )
        )
    return Catalogue(content["name"], content.get("description", ""), tuple(entries), source)


def _where(content: object, path: list[object]) -> str:
    """``types[3] (llm.call).version``: the place in the file, naming the type when there is one."""
    if len(path) >= 2 and path[0] == "types" and isinstance(content, dict):
        index = path[1]
        items = content.get("types")
        if isinstance(index, int) and isinstance(items, list) and isinstance(items[index], dict):
            name = items[index].get("type")
            if isinstance(name, str):
                rest = json_path(path[2:], "")
                return f"types[{index}] ({name}){rest}"
    return json_path(path, "").lstrip(".") or "the file"

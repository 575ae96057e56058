"""Schemas without I/O: which fields a schema declares, and one compiled check per schema.

A schema is a pydantic v2 model class or a JSON Schema dict (draft 2020-12). Each is compiled once, when it is
registered, into a :data:`Check`: a function that returns when the data is valid and raises
:class:`~meshlog.errors.ValidationError` (naming the field and the rule) when it is not. Neither jsonschema nor
pydantic is imported before a schema of its kind is compiled, so importing :mod:`meshlog.types` costs little.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeAlias

from meshlog.errors import ConfigurationError, ValidationError

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError as JsonSchemaError
    from pydantic import BaseModel

__all__ = ["Check", "Schema", "compile_schema", "declared_fields", "is_model", "json_path", "normalize_schema"]

Schema: TypeAlias = "type[BaseModel] | Mapping[str, Any]"
"""A pydantic v2 model class, or a JSON Schema (draft 2020-12) as a dict."""

Check: TypeAlias = Callable[[object, str], None]
"""``check(data, label)``: returns if ``data`` is valid, else raises ValidationError; ``label`` (the type and
version, say ``llm.call v1``) starts the error message."""

_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_model(schema: object) -> bool:
    """Whether ``schema`` is a pydantic v2 model class (checked without importing pydantic)."""
    return (
        isinstance(schema, type)
        and callable(getattr(schema, "model_validate", None))
        and isinstance(getattr(schema, "model_fields", None), dict)
    )


def normalize_schema(schema: object) -> Schema:
    """The schema as the registry keeps it: a model class as is, a JSON Schema as a private deep copy (so the
    caller's later changes to their dict cannot desynchronize it from its compiled validator)."""
    if is_model(schema):
        return schema  # type: ignore[return-value]
    if isinstance(schema, Mapping):
        kind = schema.get("type")
        if kind is not None and kind != "object":
            raise ConfigurationError(f"a type's schema describes its data, a JSON object: 'type' is {kind!r}")
        return copy.deepcopy(dict(schema))
    raise ConfigurationError(
        f"schema must be a pydantic v2 model class or a JSON Schema dict, got {type(schema).__name__}"
    )


def declared_fields(schema: Schema) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(required, optional)``: the top-level fields the schema declares, in declaration order.

    A JSON Schema's fields are its ``properties``, required when named in ``required`` (a required name without
    a property comes last); a model's are its fields under the key data must use (the alias, if any).
    """
    if is_model(schema):
        required: list[str] = []
        optional: list[str] = []
        for name, info in schema.model_fields.items():  # type: ignore[union-attr]
            alias = info.validation_alias if isinstance(info.validation_alias, str) else info.alias
            (required if info.is_required() else optional).append(alias or name)
        return tuple(required), tuple(optional)
    assert isinstance(schema, Mapping)
    properties = schema.get("properties") or {}
    listed = schema.get("required") or ()
    names = [str(name) for name in properties]
    wanted = {str(name) for name in listed}
    required = [name for name in names if name in wanted]
    required += [str(name) for name in listed if str(name) not in properties]
    return tuple(dict.fromkeys(required)), tuple(name for name in names if name not in wanted)


def compile_schema(schema: Schema, *, checked: bool = False) -> Check:
    """Compile once. A JSON Schema is checked against the draft 2020-12 meta-schema first (unless ``checked``
    says that was done) and a bad one raises ConfigurationError."""
    if is_model(schema):
        return _compile_model(schema)  # type: ignore[arg-type]
    assert isinstance(schema, Mapping)
    return _compile_json_schema(schema, checked=checked)


def check_json_schema(schema: Mapping[str, Any]) -> str | None:
    """Why ``schema`` is not a valid draft 2020-12 JSON Schema (``at.path: reason``), or None if it is."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    error = best_match(Draft202012Validator(Draft202012Validator.META_SCHEMA).iter_errors(schema))
    if error is None:
        return None
    where = json_path(error.absolute_path, "schema")
    return f"{where}: {error.message}"


def json_path(path: Sequence[object], root: str) -> str:
    """``data.usage.tokens``, ``data.tool_calls[0]``, ``data["odd key"]``: a field name as ValidationError gives it."""
    out = root
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and _IDENTIFIER.fullmatch(part):
            out += f".{part}"
        else:
            out += f"[{str(part)!r}]"
    return out


def _compile_json_schema(schema: Mapping[str, Any], *, checked: bool) -> Check:
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    if not checked:
        problem = check_json_schema(schema)
        if problem is not None:
            raise ConfigurationError(f"invalid JSON Schema: {problem}")
    validator = Draft202012Validator(schema)
    is_valid = validator.is_valid

    def check(data: object, label: str) -> None:
        if is_valid(data):
            return
        error = best_match(validator.iter_errors(data))
        assert error is not None
        field, message = _describe_json_error(error)
        raise ValidationError(f"{label}: {message}", field=field, rule=str(error.validator))

    return check


def _describe_json_error(error: JsonSchemaError) -> tuple[str, str]:
    """The field an error is about (for ``required``, the missing property; for ``additionalProperties``, the
    unexpected one) and a message naming it."""
    path = list(error.absolute_path)
    instance = error.instance
    if error.validator in ("required", "dependentRequired") and isinstance(instance, Mapping):
        wanted = error.validator_value
        if error.validator == "dependentRequired" and isinstance(wanted, Mapping):
            wanted = [name for names in wanted.values() for name in names]
        missing = [name for name in wanted if name not in instance] if isinstance(wanted, list) else []
        if missing:
            field = json_path([*path, missing[0]], "data")
            return field, f"{field} is required"
    if error.validator == "additionalProperties" and isinstance(instance, Mapping):
        schema = error.schema if isinstance(error.schema, Mapping) else {}
        declared = schema.get("properties") or {}
        extra = [key for key in instance if key not in declared]
        if extra and "patternProperties" not in schema:
            field = json_path([*path, extra[0]], "data")
            return field, f"{field} is not allowed here"
    field = json_path(path, "data")
    return field, f"{field}: {error.message}"


def _compile_model(model: type[BaseModel]) -> Check:
    import pydantic

    validate = model.model_validate

    def check(data: object, label: str) -> None:
        try:
            validate(data)  # validation only: the event keeps the data it was given
        except pydantic.ValidationError as exc:
            first = exc.errors(include_url=False)[0]
            rule = "required" if first["type"] == "missing" else str(first["type"])
            field = json_path(first["loc"], "data")
            message = f"{field} is required" if rule == "required" else f"{field}: {first['msg']}"
            raise ValidationError(f"{label}: {message}", field=field, rule=rule) from exc

    return check

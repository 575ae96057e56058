"""The registry: event types with their schemas by version, the emit-time check and the read-time upcast."""

from __future__ import annotations

import copy
import dataclasses
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias

from meshlog.errors import ConfigurationError, ValidationError
from meshlog.events import NewEvent, RecordedEvent
from meshlog.types._catalogue import CATALOGUES, TYPE_PATTERN, read_catalogue
from meshlog.types._schema import Check, Schema, compile_schema, declared_fields, is_model, normalize_schema

__all__ = ["MODES", "EventType", "Mode", "TypeRegistry", "Upcaster", "default_registry"]

Mode: TypeAlias = Literal["strict", "known", "off"]
"""How :meth:`TypeRegistry.check` treats events: ``strict`` rejects unknown types, ``known`` (the default)
validates known types and lets others through, ``off`` validates nothing."""

MODES: Final[tuple[Mode, ...]] = ("strict", "known", "off")

Upcaster: TypeAlias = Callable[[dict[str, Any]], Mapping[str, Any]]
"""Maps the data of version n of a type to version n + 1."""

_TYPE_RE: Final = re.compile(TYPE_PATTERN)


@dataclass(frozen=True, slots=True)
class EventType:
    """One version of an event type. ``required_fields`` and ``optional_fields`` are derived from ``schema``
    (its top-level properties); ``important`` events get ``"important": true`` in their metadata at emit time.

    ``schema`` is what the registry validates with: treat it as read-only (``json_schema()`` gives a copy).
    """

    name: str
    category: str
    description: str
    version: int
    schema: Schema = field(hash=False)
    required_fields: tuple[str, ...]
    optional_fields: tuple[str, ...]
    important: bool = False

    def to_dict(self) -> dict[str, Any]:
        """What a listing of event types shows: JSON-ready, without the schema."""
        return {
            "type": self.name,
            "description": self.description,
            "category": self.category,
            "required_fields": list(self.required_fields),
            "optional_fields": list(self.optional_fields),
            "version": self.version,
            "important": self.important,
        }

    def json_schema(self) -> dict[str, Any]:
        """The schema of ``data`` as a JSON Schema dict (a copy; for a pydantic model, its
        ``model_json_schema()``)."""
        if is_model(self.schema):
            result: dict[str, Any] = self.schema.model_json_schema()  # type: ignore[union-attr]
            return result
        return copy.deepcopy(dict(self.schema))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class _Entry:
    type: EventType
    check: Check
    label: str


class TypeRegistry:
    """Event types, their schemas by version, and upcasters between versions.

    Build it up front (register, load catalogues, add upcasters), then share it: :meth:`check`, :meth:`upcast`
    and the lookups only read. Registering a type again at a version it has replaces that version; registering
    a higher version makes it the current one and keeps the older schemas, so events written at an older
    version still validate against their own.
    """

    def __init__(self) -> None:
        self._versions: dict[str, dict[int, _Entry]] = {}
        self._current: dict[str, _Entry] = {}
        self._upcasters: dict[str, dict[int, Upcaster]] = {}
        self._catalogues: list[str] = []

    # -- building --------------------------------------------------------------------------------------------
    def register(
        self,
        name: str,
        *,
        schema: Schema,
        category: str,
        description: str,
        version: int = 1,
        important: bool = False,
    ) -> EventType:
        """Register ``version`` of the type ``name``; ``schema`` (a pydantic v2 model class or a JSON Schema
        dict) describes its ``data``. Raises ConfigurationError for a bad name, version or schema."""
        _check_name(name)
        _check_version(version, f"version of {name}")
        schema = normalize_schema(schema)
        return self._add(name, schema, compile_schema(schema), category, description, version, important)

    def load_catalogue(self, name_or_path: str | os.PathLike[str]) -> list[EventType]:
        """Register every type of a catalogue: a built-in one by name (``agent-mesh``, ``session``,
        ``documentable``) or a ``.json``, ``.yaml`` or ``.yml`` file (YAML needs PyYAML: ``meshlog[yaml]``).
        The file is checked whole first: on a ConfigurationError nothing is registered. Returns the types."""
        catalogue = read_catalogue(name_or_path)
        added = [
            self._add(
                entry.type,
                entry.schema,
                _compiled(catalogue.source, entry.type, entry.version, entry.schema),
                entry.category,
                entry.description,
                entry.version,
                entry.important,
            )
            for entry in catalogue.entries
        ]
        if catalogue.name not in self._catalogues:
            self._catalogues.append(catalogue.name)
        return added

    def add_upcaster(self, type: str, from_version: int, fn: Upcaster) -> None:
        """Let :meth:`upcast` turn the data of version ``from_version`` of ``type`` into version
        ``from_version + 1``. ``fn`` gets a copy of the data it may change, and returns the new data."""
        if type not in self._versions:
            raise ConfigurationError(f"cannot add an upcaster to {type!r}: no such type is registered")
        _check_version(from_version, "from_version")
        if not callable(fn):
            raise ConfigurationError(f"the upcaster of {type} from version {from_version} must be callable")
        chain = self._upcasters.setdefault(type, {})
        if from_version in chain:
            raise ConfigurationError(f"{type} already has an upcaster from version {from_version}")
        chain[from_version] = fn

    def _add(
        self,
        name: str,
        schema: Schema,
        check: Check,
        category: str,
        description: str,
        version: int,
        important: bool,
    ) -> EventType:
        if not isinstance(category, str) or not category:
            raise ConfigurationError(f"the category of {name} must be a non-empty string")
        if not isinstance(description, str):
            raise ConfigurationError(f"the description of {name} must be a string")
        required, optional = declared_fields(schema)
        event_type = EventType(
            name=name,
            category=category,
            description=description,
            version=version,
            schema=schema,
            required_fields=required,
            optional_fields=optional,
            important=bool(important),
        )
        entry = _Entry(event_type, check, f"{name} v{version}")
        versions = self._versions.setdefault(name, {})
        versions[version] = entry
        current = self._current.get(name)
        if current is None or version >= current.type.version:
            self._current[name] = entry
        return event_type

    # -- reading ---------------------------------------------------------------------------------------------
    def get(self, name: str, version: int | None = None) -> EventType | None:
        """The type's current version (or the given ``version``), or None if not registered."""
        if version is None:
            entry = self._current.get(name)
        else:
            entry = self._versions.get(name, {}).get(version)
        return None if entry is None else entry.type

    def types(self, category: str | None = None) -> list[EventType]:
        """The current version of every type (of one category), sorted by category, then name."""
        found = (e.type for e in self._current.values() if category is None or e.type.category == category)
        return sorted(found, key=lambda t: (t.category, t.name))

    def versions(self, name: str) -> tuple[int, ...]:
        """The versions of ``name`` that have a schema, ascending (empty if the type is unknown)."""
        return tuple(sorted(self._versions.get(name, ())))

    @property
    def catalogues(self) -> tuple[str, ...]:
        """The names of the catalogues loaded, in order."""
        return tuple(self._catalogues)

    def __contains__(self, name: object) -> bool:
        return name in self._current

    def __len__(self) -> int:
        return len(self._current)

    def __iter__(self) -> Iterator[EventType]:
        return iter(self.types())

    def __repr__(self) -> str:
        return f"<TypeRegistry: {len(self)} types, catalogues {list(self._catalogues)}>"

    # -- using -----------------------------------------------------------------------------------------------
    def check(self, event: NewEvent, mode: Mode = "known", *, index: int | None = None) -> NewEvent:
        """The emit-time check: returns the event to append, or raises ValidationError naming the field and rule.

        ``strict``: an unknown type is rejected (rule ``unknown_type``); ``known``: unknown types pass
        unchanged; both validate ``data`` of a known type against the schema of the event's version, and reject
        a version above the current one or without a schema (rule ``unknown_version``). ``off`` validates
        nothing. In every mode an event of a type marked important gets ``"important": true`` in its metadata,
        unless the metadata already sets ``"important"``. ``index`` (the event's place in a batch) prefixes
        field names: ``events[3].data.model``.
        """
        entry = self._current.get(event.type)
        if entry is None:
            if mode == "known" or mode == "off":
                return event
            if mode == "strict":
                raise ValidationError(
                    f"unknown event type {event.type!r} (the registry is strict: register it or load its catalogue)",
                    field=_at(index, "type"),
                    rule="unknown_type",
                )
            raise _bad_mode(mode)
        if mode != "off":
            if mode != "strict" and mode != "known":
                raise _bad_mode(mode)
            if event.version != entry.type.version:
                entry = self._entry_for_version(entry, event, index)
            try:
                entry.check(event.data, entry.label)
            except ValidationError as exc:
                if index is None:
                    raise
                raise ValidationError(
                    f"events[{index}]: {exc.message}", field=_at(index, exc.field or "data"), rule=exc.rule
                ) from exc
        if entry.type.important:
            metadata = event.metadata
            if metadata is None or "important" not in metadata:
                return dataclasses.replace(event, metadata={**(metadata or {}), "important": True})
        return event

    def _entry_for_version(self, current: _Entry, event: NewEvent, index: int | None) -> _Entry:
        version = event.version
        entry = self._versions[event.type].get(version) if type(version) is int else None
        if entry is None:
            known = ", ".join(str(v) for v in self.versions(event.type))
            if type(version) is not int:
                why = "is not a version"
            elif version > current.type.version:
                why = "is newer than the current version"
            else:
                why = "has no schema"
            raise ValidationError(
                f"{event.type} version {version!r} {why} (known versions: {known})",
                field=_at(index, "version"),
                rule="unknown_version",
            )
        return entry

    @property
    def has_upcasters(self) -> bool:
        """Whether any upcaster is registered (readers skip upcasting entirely when none is)."""
        return bool(self._upcasters)

    def upcast(self, event: RecordedEvent) -> RecordedEvent:
        """The event with its data brought up to the type's current version through the upcasters, one version
        at a time (stopping where the chain has a gap). The same object when no upcaster applies."""
        chain = self._upcasters.get(event.type)
        if not chain:
            return event
        current = self._current[event.type].type.version
        version = event.version
        if version >= current or version not in chain:
            return event
        data: dict[str, Any] = copy.deepcopy(event.data)
        while version < current and (fn := chain.get(version)) is not None:
            result = fn(data)
            if not isinstance(result, Mapping):
                raise TypeError(
                    f"the upcaster of {event.type} from version {version} returned {type(result).__name__}, not a dict"
                )
            data = dict(result)
            version += 1
        return event._replace(data=data, version=version)


_OUTCOME_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {"outcome": {"description": "what came of the event: a free-form JSON value"}},
    "required": ["outcome"],
}


def register_own_types(registry: TypeRegistry) -> None:
    """Register the types meshlog itself emits (``outcome.recorded``), unless the registry has them already."""
    if registry.get("outcome.recorded") is None:
        registry.register(
            "outcome.recorded",
            schema=_OUTCOME_SCHEMA,
            category="meshlog",
            description="What came of an earlier event (its parent), recorded later by record_outcome().",
        )


def registry_of(catalogues: Sequence[str | os.PathLike[str]]) -> TypeRegistry:
    """A new registry with the given built-in catalogues or catalogue files loaded."""
    if isinstance(catalogues, (str, bytes)):
        catalogues = [catalogues]
    registry = TypeRegistry()
    for name in catalogues:
        registry.load_catalogue(name)
    return registry


def default_registry() -> TypeRegistry:
    """A new registry with every built-in catalogue loaded (``agent-mesh``, ``session``, ``documentable``)."""
    registry = TypeRegistry()
    for name in CATALOGUES:
        registry.load_catalogue(name)
    return registry


# Built-in catalogues are read once per process; their compiled validators are immutable and shared by every
# registry that loads them, so default_registry() stays cheap.
_BUILTIN_CHECKS: dict[tuple[str, str, int], Check] = {}


def _compiled(source: str, name: str, version: int, schema: Schema) -> Check:
    if source not in CATALOGUES:
        return compile_schema(schema, checked=True)
    key = (source, name, version)
    check = _BUILTIN_CHECKS.get(key)
    if check is None:
        check = _BUILTIN_CHECKS[key] = compile_schema(schema, checked=True)
    return check


def _check_name(name: object) -> None:
    if not isinstance(name, str) or not _TYPE_RE.fullmatch(name):
        raise ConfigurationError(
            f"an event type name must match {TYPE_PATTERN} (letters, digits and . _ : / -), got {name!r}"
        )


def _check_version(version: object, what: str) -> None:
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise ConfigurationError(f"{what} must be an integer >= 1, got {version!r}")


def _at(index: int | None, name: str) -> str:
    return name if index is None else f"events[{index}].{name}"


def _bad_mode(mode: object) -> ConfigurationError:
    return ConfigurationError(f"validation mode must be one of {', '.join(MODES)}; got {mode!r}")

"""Event types: a registry of schemas by type and version, the emit-time check, built-in catalogues, upcasting.

::

    from meshlog.types import TypeRegistry, default_registry

    registry = default_registry()                     # agent-mesh, session and documentable catalogues
    registry.get("llm.call").required_fields          # ('model',)
    event = registry.check(meshlog.NewEvent(type="llm.call", data={"model": "gpt-4o"}), "strict")
    registry.register("invoice.sent", schema={...}, category="billing", description="An invoice went out.")

Schemas are pydantic v2 model classes or JSON Schema dicts, each compiled once. Modes: ``strict`` rejects
unknown types, ``known`` (the default) validates known types only, ``off`` validates nothing. Errors are
:class:`~meshlog.errors.ValidationError` with ``field`` (``data.model``) and ``rule`` (``required``, ``type``,
``minimum``, ``unknown_type``, ``unknown_version`` ...). See ``docs/types.md``.

:class:`UserIntent`, :class:`DecisionContext` and :func:`documentable` need pydantic (``meshlog[pydantic]``) and
are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meshlog.types._catalogue import CATALOGUES
from meshlog.types._registry import (
    MODES,
    EventType,
    Mode,
    TypeRegistry,
    Upcaster,
    default_registry,
    register_own_types,
    registry_of,
)
from meshlog.types._schema import Schema

if TYPE_CHECKING:
    from meshlog.types._documentable import DecisionContext, UserIntent, documentable

__all__ = [
    "CATALOGUES",
    "MODES",
    "DecisionContext",
    "EventType",
    "Mode",
    "Schema",
    "TypeRegistry",
    "Upcaster",
    "UserIntent",
    "default_registry",
    "documentable",
    "register_own_types",
    "registry_of",
]

_NEEDS_PYDANTIC = frozenset({"DecisionContext", "UserIntent", "documentable"})


def __getattr__(name: str) -> Any:
    if name in _NEEDS_PYDANTIC:
        try:
            from meshlog.types import _documentable
        except ImportError as exc:
            from meshlog.errors import ConfigurationError

            raise ConfigurationError(
                f"meshlog.types.{name} needs pydantic: pip install 'meshlog[pydantic]' ({exc})"
            ) from exc
        return getattr(_documentable, name)
    raise AttributeError(f"module 'meshlog.types' has no attribute {name!r}")

"""meshlog.types: the registry, the emit-time check, the built-in catalogues, versions and upcasting."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydantic
import pytest
from pydantic import BaseModel, Field

import meshlog
from meshlog import NewEvent, RecordedEvent
from meshlog.errors import ConfigurationError, ValidationError
from meshlog.types import (
    CATALOGUES,
    MODES,
    DecisionContext,
    EventType,
    TypeRegistry,
    UserIntent,
    default_registry,
    documentable,
)

ROOT = Path(__file__).resolve().parent.parent

INVOICE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "invoice_id": {"type": "string"},
        "total": {"type": "number", "minimum": 0},
        "lines": {"type": "array", "items": {"type": "object", "properties": {"sku": {"type": "string"}}}},
        "usage": {"type": "object", "properties": {"tokens": {"type": "integer"}}},
    },
    "required": ["invoice_id"],
}


class Refund(BaseModel):
    invoice_id: str
    amount: int = Field(gt=0)
    reason: str | None = None
    tags: list[str] = Field(default_factory=list)
    ref: str = Field(alias="refId")


@pytest.fixture
def registry() -> TypeRegistry:
    reg = TypeRegistry()
    reg.register("invoice.sent", schema=INVOICE, category="billing", description="An invoice went out.")
    reg.register("refund.issued", schema=Refund, category="billing", description="Money went back.")
    return reg


@pytest.fixture(scope="module")
def builtin() -> TypeRegistry:
    return default_registry()


def reject(reg: TypeRegistry, event: NewEvent, mode: Any = "known", **kw: Any) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        reg.check(event, mode, **kw)
    return info.value


def recorded(type_: str, version: int, data: dict[str, Any]) -> RecordedEvent:
    event_id = meshlog.uuid7()
    return RecordedEvent(
        id=event_id,
        position=1,
        stream="s",
        stream_position=1,
        type=type_,
        version=version,
        data=data,
        metadata={},
        trace_id=None,
        task_id=None,
        agent_id=None,
        parent_id=None,
        root_id=event_id,
        depth=0,
        related=(),
        idempotency_key=None,
        tenant="default",
        occurred_at=None,
        recorded_at=datetime.now(UTC),
    )


# -- EventType and the fields derived from a schema ----------------------------------------------------------
def test_fields_derived_from_a_json_schema(registry: TypeRegistry) -> None:
    invoice = registry.get("invoice.sent")
    assert invoice is not None
    assert invoice.required_fields == ("invoice_id",)
    assert invoice.optional_fields == ("total", "lines", "usage")
    assert (invoice.version, invoice.category, invoice.important) == (1, "billing", False)


def test_required_names_without_a_property_count_and_no_properties_means_no_fields() -> None:
    reg = TypeRegistry()
    odd = reg.register(
        "odd",
        schema={"type": "object", "properties": {"b": {}, "a": {}}, "required": ["a", "z"]},
        category="c",
        description="",
    )
    assert (odd.required_fields, odd.optional_fields) == (("a", "z"), ("b",))
    bare = reg.register("bare", schema={"type": "object"}, category="c", description="")
    assert (bare.required_fields, bare.optional_fields) == ((), ())


def test_fields_derived_from_a_pydantic_model_use_the_alias(registry: TypeRegistry) -> None:
    refund = registry.get("refund.issued")
    assert refund is not None
    assert refund.required_fields == ("invoice_id", "amount", "refId")
    assert refund.optional_fields == ("reason", "tags")
    assert refund.schema is Refund


def test_to_dict_gives_exactly_the_listing_fields(registry: TypeRegistry) -> None:
    refund = registry.get("refund.issued")
    assert refund is not None
    assert refund.to_dict() == {
        "type": "refund.issued",
        "description": "Money went back.",
        "category": "billing",
        "required_fields": ["invoice_id", "amount", "refId"],
        "optional_fields": ["reason", "tags"],
        "version": 1,
        "important": False,
    }
    assert list(refund.to_dict()) == [
        "type",
        "description",
        "category",
        "required_fields",
        "optional_fields",
        "version",
        "important",
    ]
    json.dumps(refund.to_dict())


def test_event_type_is_frozen_and_hashable(registry: TypeRegistry) -> None:
    invoice = registry.get("invoice.sent")
    assert isinstance(invoice, EventType)
    with pytest.raises(dataclasses.FrozenInstanceError):
        invoice.version = 2  # type: ignore[misc]
    assert len({invoice, registry.get("invoice.sent")}) == 1


def test_json_schema_of_either_kind(registry: TypeRegistry) -> None:
    invoice, refund = registry.get("invoice.sent"), registry.get("refund.issued")
    assert invoice is not None and refund is not None
    assert invoice.json_schema() == INVOICE and invoice.json_schema() is not invoice.schema
    assert refund.json_schema()["required"] == ["invoice_id", "amount", "refId"]


def test_the_registry_keeps_its_own_copy_of_a_json_schema() -> None:
    schema: dict[str, Any] = {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
    reg = TypeRegistry()
    reg.register("t", schema=schema, category="c", description="")
    schema["required"] = []
    assert reg.get("t").required_fields == ("a",)  # type: ignore[union-attr]
    assert reject(reg, NewEvent(type="t", data={})).field == "data.a"


def test_lookups(registry: TypeRegistry) -> None:
    registry.register("a.thing", schema={"type": "object"}, category="zeta", description="")
    registry.register("b.thing", schema={"type": "object"}, category="alpha", description="")
    assert [t.name for t in registry.types()] == ["b.thing", "invoice.sent", "refund.issued", "a.thing"]
    assert [t.name for t in registry.types(category="billing")] == ["invoice.sent", "refund.issued"]
    assert registry.types(category="none") == []
    assert "invoice.sent" in registry and "nope" not in registry and len(registry) == 4
    assert registry.get("nope") is None and registry.get("invoice.sent", version=2) is None
    assert registry.versions("invoice.sent") == (1,) and registry.versions("nope") == ()
    assert [t.name for t in registry] == [t.name for t in registry.types()]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": "has space"}, "must match"),
        ({"name": ""}, "must match"),
        ({"version": 0}, "version of t must be an integer >= 1"),
        ({"version": True}, "version of t must be an integer >= 1"),
        ({"schema": 42}, "pydantic v2 model class or a JSON Schema dict"),
        ({"schema": {"type": "array"}}, "'type' is 'array'"),
        ({"schema": {"type": "object", "properties": {"a": {"type": "strin"}}}}, "invalid JSON Schema"),
        ({"schema": {"type": "object", "required": "a"}}, "invalid JSON Schema: schema.required"),
        ({"category": ""}, "category of t must be a non-empty string"),
    ],
)
def test_register_rejects_bad_input(kwargs: dict[str, Any], message: str) -> None:
    args: dict[str, Any] = {"name": "t", "schema": {"type": "object"}, "category": "c", "description": "d"} | kwargs
    name = args.pop("name")
    reg = TypeRegistry()
    with pytest.raises(ConfigurationError, match=re.escape(message)):
        reg.register(name, **args)
    assert len(reg) == 0


# -- the check -----------------------------------------------------------------------------------------------
def test_valid_events_come_back_unchanged_in_every_mode(registry: TypeRegistry) -> None:
    event = NewEvent(type="invoice.sent", data={"invoice_id": "inv-7", "total": 12.5, "extra": True})
    for mode in MODES:
        assert registry.check(event, mode) is event
    assert registry.check(event) is event  # "known" is the default


def test_json_schema_errors_name_the_field_and_the_keyword(registry: TypeRegistry) -> None:
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({}, "data.invoice_id", "required"),
        ({"invoice_id": 7}, "data.invoice_id", "type"),
        ({"invoice_id": "i", "total": -1}, "data.total", "minimum"),
        ({"invoice_id": "i", "lines": [{"sku": "a"}, {"sku": 3}]}, "data.lines[1].sku", "type"),
        ({"invoice_id": "i", "usage": {"tokens": "many"}}, "data.usage.tokens", "type"),
        ({"total": -1}, "data.invoice_id", "required"),  # the missing field first
    ]
    for data, field, rule in cases:
        exc = reject(registry, NewEvent(type="invoice.sent", data=data), "strict")
        assert (exc.field, exc.rule) == (field, rule), data
        assert exc.message.startswith("invoice.sent v1: ") and field in exc.message


def test_data_that_is_not_an_object_is_a_type_error(registry: TypeRegistry) -> None:
    exc = reject(registry, NewEvent(type="invoice.sent", data=["not", "an", "object"]))  # type: ignore[arg-type]
    assert (exc.field, exc.rule) == ("data", "type")


def test_odd_keys_are_quoted_in_the_field() -> None:
    reg = TypeRegistry()
    reg.register(
        "t",
        schema={"type": "object", "properties": {"a b": {"type": "object", "required": ["x-y"]}}},
        category="c",
        description="",
    )
    exc = reject(reg, NewEvent(type="t", data={"a b": {}}))
    assert (exc.field, exc.rule) == ("data['a b']['x-y']", "required")


def test_pydantic_errors_name_the_field_and_the_error_type(registry: TypeRegistry) -> None:
    good = {"invoice_id": "i", "amount": 5, "refId": "r-1"}
    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"amount": 5, "refId": "r"}, "data.invoice_id", "required"),
        ({**good, "amount": 0}, "data.amount", "greater_than"),
        ({**good, "invoice_id": 3}, "data.invoice_id", "string_type"),
        ({**good, "tags": ["a", 2]}, "data.tags[1]", "string_type"),
        ({"invoice_id": "i", "amount": 5}, "data.refId", "required"),
    ]
    for data, field, rule in cases:
        exc = reject(registry, NewEvent(type="refund.issued", data=data))
        assert (exc.field, exc.rule) == (field, rule), data
    assert registry.check(NewEvent(type="refund.issued", data=good)).data is good


def test_pydantic_validation_does_not_change_the_data(registry: TypeRegistry) -> None:
    data = {"invoice_id": "i", "amount": "5", "refId": "r"}  # pydantic would coerce "5" to 5
    event = NewEvent(type="refund.issued", data=data)
    assert registry.check(event, "strict") is event
    assert event.data == {"invoice_id": "i", "amount": "5", "refId": "r"}


def test_modes_for_unknown_types(registry: TypeRegistry) -> None:
    unknown = NewEvent(type="invoice.viewed", data={"anything": object()})
    assert registry.check(unknown, "known") is unknown
    assert registry.check(unknown, "off") is unknown
    exc = reject(registry, unknown, "strict")
    assert (exc.field, exc.rule) == ("type", "unknown_type") and "invoice.viewed" in exc.message


def test_off_validates_nothing(registry: TypeRegistry) -> None:
    bad = NewEvent(type="invoice.sent", data={"invoice_id": 7}, version=9)
    assert registry.check(bad, "off") is bad
    assert reject(registry, bad, "known").rule == "unknown_version"


def test_an_unknown_mode_is_a_configuration_error(registry: TypeRegistry) -> None:
    for event_type in ("invoice.sent", "invoice.viewed"):
        with pytest.raises(ConfigurationError, match="validation mode must be one of strict, known, off"):
            registry.check(NewEvent(type=event_type, data={"invoice_id": "i"}), "lenient")  # type: ignore[arg-type]


def test_index_prefixes_field_names(registry: TypeRegistry) -> None:
    exc = reject(registry, NewEvent(type="invoice.sent", data={}), index=3)
    assert (exc.field, exc.rule) == ("events[3].data.invoice_id", "required")
    assert exc.message.startswith("events[3]: invoice.sent v1")
    exc = reject(registry, NewEvent(type="x", data={}), "strict", index=0)
    assert (exc.field, exc.rule) == ("events[0].type", "unknown_type")
    exc = reject(registry, NewEvent(type="invoice.sent", data={}, version=5), index=2)
    assert (exc.field, exc.rule) == ("events[2].version", "unknown_version")


def test_each_json_schema_is_compiled_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import jsonschema

    real = jsonschema.Draft202012Validator
    compiled: list[object] = []

    def counting(schema: Any, *args: Any, **kwargs: Any) -> Any:
        if schema is not real.META_SCHEMA:
            compiled.append(schema)
        return real(schema, *args, **kwargs)

    counting.META_SCHEMA = real.META_SCHEMA  # type: ignore[attr-defined]
    monkeypatch.setattr(jsonschema, "Draft202012Validator", counting)
    reg = TypeRegistry()
    reg.register("invoice.sent", schema=INVOICE, category="billing", description="")
    assert len(compiled) == 1
    for i in range(200):
        reg.check(NewEvent(type="invoice.sent", data={"invoice_id": f"i-{i}"}), "strict")
        reject(reg, NewEvent(type="invoice.sent", data={"total": i}), "strict")
    assert len(compiled) == 1


def test_importing_meshlog_types_loads_neither_jsonschema_nor_pydantic() -> None:
    code = (
        "import sys, meshlog.types as t\n"
        "assert 'jsonschema' not in sys.modules and 'pydantic' not in sys.modules\n"
        "r = t.TypeRegistry()\n"
        "e = t.__dict__['TypeRegistry']\n"
        "import meshlog\n"
        "ev = meshlog.NewEvent(type='x', data={})\n"
        "assert r.check(ev) is ev and 'jsonschema' not in sys.modules\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_without_pydantic_the_typed_helpers_name_the_extra() -> None:
    code = (
        "import sys\n"
        "sys.modules['pydantic'] = None\n"
        "import meshlog.types as t\n"
        "from meshlog.errors import ConfigurationError\n"
        "r = t.default_registry()\n"  # catalogues need no pydantic
        "assert len(r) == 52\n"
        "try:\n"
        "    t.UserIntent\n"
        "except ConfigurationError as exc:\n"
        "    assert \"pip install 'meshlog[pydantic]'\" in str(exc), exc\n"
        "    print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_unknown_attributes_are_attribute_errors() -> None:
    import meshlog.types

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        meshlog.types.Nope  # noqa: B018


def test_public_surface() -> None:
    import meshlog.types

    assert sorted(meshlog.types.__all__) == sorted(
        [
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
    )
    for name in meshlog.types.__all__:
        assert getattr(meshlog.types, name) is not None


# -- important types -----------------------------------------------------------------------------------------
@pytest.fixture
def important() -> TypeRegistry:
    reg = TypeRegistry()
    reg.register(
        "invoice.disputed",
        schema={"type": "object", "properties": {"invoice_id": {"type": "string"}}, "required": ["invoice_id"]},
        category="billing",
        description="",
        important=True,
    )
    return reg


def test_important_types_mark_their_events(important: TypeRegistry) -> None:
    event = NewEvent(type="invoice.disputed", data={"invoice_id": "i"}, metadata={"source": "ui"})
    for mode in MODES:
        marked = important.check(event, mode)
        assert marked is not event and marked.metadata == {"source": "ui", "important": True}
        assert dataclasses.replace(marked, metadata=event.metadata) == event
    assert event.metadata == {"source": "ui"}  # the caller's event is untouched
    assert important.check(NewEvent(type="invoice.disputed", data={"invoice_id": "i"})).metadata == {"important": True}
    assert important.get("invoice.disputed").to_dict()["important"] is True  # type: ignore[union-attr]


def test_the_callers_important_wins(important: TypeRegistry) -> None:
    for value in (False, True, None):
        event = NewEvent(type="invoice.disputed", data={"invoice_id": "i"}, metadata={"important": value})
        assert important.check(event) is event


def test_an_invalid_important_event_is_still_rejected(important: TypeRegistry) -> None:
    assert reject(important, NewEvent(type="invoice.disputed", data={})).rule == "required"


# -- versions and upcasting ----------------------------------------------------------------------------------
def _versioned() -> TypeRegistry:
    reg = TypeRegistry()
    reg.register(
        "invoice.sent",
        schema={"type": "object", "properties": {"total": {"type": "number"}}, "required": ["total"]},
        category="billing",
        description="v1",
    )
    reg.register(
        "invoice.sent",
        version=2,
        schema={"type": "object", "properties": {"cents": {"type": "integer"}}, "required": ["cents"]},
        category="billing",
        description="v2",
    )
    reg.register(
        "invoice.sent",
        version=3,
        schema={
            "type": "object",
            "properties": {"cents": {"type": "integer"}, "currency": {"type": "string"}},
            "required": ["cents", "currency"],
        },
        category="billing",
        description="v3",
        important=True,
    )
    return reg


def test_a_newer_version_keeps_the_older_schemas() -> None:
    reg = _versioned()
    current = reg.get("invoice.sent")
    assert current is not None and (current.version, current.description) == (3, "v3")
    assert reg.versions("invoice.sent") == (1, 2, 3)
    assert reg.get("invoice.sent", version=1).required_fields == ("total",)  # type: ignore[union-attr]
    assert [t.version for t in reg.types()] == [3]
    v1 = NewEvent(type="invoice.sent", data={"total": 1.5})
    assert reg.check(v1, "strict").data == v1.data
    assert reject(reg, NewEvent(type="invoice.sent", data={"cents": 150})).field == "data.total"  # v1 by default
    assert reject(reg, NewEvent(type="invoice.sent", data={"total": 1.5}, version=2)).field == "data.cents"
    assert reg.check(NewEvent(type="invoice.sent", data={"cents": 150, "currency": "EUR"}, version=3)).data


def test_an_older_version_registered_later_does_not_become_current() -> None:
    reg = TypeRegistry()
    reg.register("t", schema={"type": "object"}, category="c", description="v2", version=2)
    reg.register("t", schema={"type": "object"}, category="c", description="v1", version=1)
    assert reg.get("t").description == "v2" and reg.versions("t") == (1, 2)  # type: ignore[union-attr]


def test_registering_the_same_version_again_replaces_it() -> None:
    reg = TypeRegistry()
    reg.register("t", schema={"type": "object", "required": ["a"]}, category="c", description="first")
    reg.register("t", schema={"type": "object", "required": ["b"]}, category="c", description="second")
    assert reg.get("t").required_fields == ("b",) and len(reg) == 1  # type: ignore[union-attr]
    assert reject(reg, NewEvent(type="t", data={"a": 1})).field == "data.b"


@pytest.mark.parametrize("mode", ["strict", "known"])
def test_unknown_versions_are_rejected(mode: Any) -> None:
    reg = TypeRegistry()
    reg.register("t", schema={"type": "object"}, category="c", description="")
    reg.register("t", schema={"type": "object"}, category="c", description="", version=3)
    newer = reject(reg, NewEvent(type="t", data={}, version=4), mode)
    assert (newer.field, newer.rule) == ("version", "unknown_version")
    assert "newer than the current version" in newer.message and "known versions: 1, 3" in newer.message
    gap = reject(reg, NewEvent(type="t", data={}, version=2), mode)
    assert (gap.field, gap.rule) == ("version", "unknown_version") and "has no schema" in gap.message
    silly = reject(reg, NewEvent(type="t", data={}, version="2"), mode)  # type: ignore[arg-type]
    assert silly.rule == "unknown_version"


def test_upcasting_walks_the_chain_to_the_current_version() -> None:
    reg = _versioned()
    seen: list[int] = []

    def one_to_two(data: dict[str, Any]) -> dict[str, Any]:
        seen.append(1)
        return {"cents": round(data.pop("total") * 100)}

    def two_to_three(data: dict[str, Any]) -> dict[str, Any]:
        seen.append(2)
        data["currency"] = "EUR"
        return data

    reg.add_upcaster("invoice.sent", 2, two_to_three)  # order of adding does not matter
    reg.add_upcaster("invoice.sent", 1, one_to_two)
    original = recorded("invoice.sent", 1, {"total": 1.25, "nested": {"keep": [1]}})
    upcast = reg.upcast(original)
    assert (upcast.version, upcast.data) == (3, {"cents": 125, "currency": "EUR"})
    assert seen == [1, 2]
    assert upcast._replace(data=original.data, version=1) == original  # only data and version change
    assert original.data == {"total": 1.25, "nested": {"keep": [1]}} and original.version == 1

    from_two = reg.upcast(recorded("invoice.sent", 2, {"cents": 5}))
    assert (from_two.version, from_two.data) == (3, {"cents": 5, "currency": "EUR"})
    assert seen == [1, 2, 2]


def test_upcast_returns_the_same_object_when_nothing_applies() -> None:
    reg = _versioned()
    reg.add_upcaster("invoice.sent", 1, lambda d: {"cents": 1})
    current = recorded("invoice.sent", 3, {"cents": 1, "currency": "EUR"})
    assert reg.upcast(current) is current
    no_upcaster_from_two = recorded("invoice.sent", 2, {"cents": 1})
    assert reg.upcast(no_upcaster_from_two) is no_upcaster_from_two
    future = recorded("invoice.sent", 7, {})
    assert reg.upcast(future) is future
    unknown = recorded("other", 1, {})
    assert reg.upcast(unknown) is unknown
    plain = _versioned()
    old = recorded("invoice.sent", 1, {"total": 1})
    assert plain.upcast(old) is old


def test_upcasting_stops_at_a_gap_in_the_chain() -> None:
    reg = _versioned()
    reg.add_upcaster("invoice.sent", 1, lambda d: {"cents": round(d["total"] * 100)})
    partly = reg.upcast(recorded("invoice.sent", 1, {"total": 2}))
    assert (partly.version, partly.data) == (2, {"cents": 200})


def test_upcasters_must_return_a_dict() -> None:
    reg = _versioned()
    reg.add_upcaster("invoice.sent", 1, lambda d: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(TypeError, match=re.escape("upcaster of invoice.sent from version 1 returned NoneType")):
        reg.upcast(recorded("invoice.sent", 1, {"total": 2}))


def test_add_upcaster_checks_its_arguments() -> None:
    reg = _versioned()
    with pytest.raises(ConfigurationError, match="no such type"):
        reg.add_upcaster("nope", 1, dict)
    with pytest.raises(ConfigurationError, match="from_version must be an integer >= 1"):
        reg.add_upcaster("invoice.sent", 0, dict)
    with pytest.raises(ConfigurationError, match="must be callable"):
        reg.add_upcaster("invoice.sent", 1, "not a function")  # type: ignore[arg-type]
    reg.add_upcaster("invoice.sent", 1, dict)
    with pytest.raises(ConfigurationError, match="already has an upcaster from version 1"):
        reg.add_upcaster("invoice.sent", 1, dict)


# -- built-in catalogues -------------------------------------------------------------------------------------
AGENT_MESH = (
    "task.dispatched",
    "task.progress",
    "task.result",
    "task.result.failure",
    "task.timeout",
    "task.retry",
    "llm.call",
    "llm.response",
    "llm.error",
    "tool.call",
    "tool.result",
    "span.start",
    "span.end",
)
SESSION_CATEGORIES = {
    "instance": (
        "instance_registered",
        "instance_heartbeat",
        "instance_stale",
        "instance_recovered",
        "instance_closed",
    ),
    "epic": ("epic_started", "epic_completed", "epic_failed", "epic_start"),
    "testing": ("test_started", "test_passed", "test_failed", "validation_passed", "validation_failed"),
    "git": ("commit_created", "pr_created", "pr_merged", "commit"),
    "deployment": (
        "deployment_started",
        "deployment_completed",
        "deployment_failed",
        "deploy",
        "deploy_start",
        "deploy_complete",
    ),
    "work_state": ("context_window_updated", "checkpoint_created", "checkpoint_loaded"),
    "planning": ("epic_planned", "feature_requested", "task_spawned", "spawn"),
    "conversation": ("user_message", "assistant_start"),
    "error": ("error",),
}
DOCUMENTABLE = ("widget.created", "provider.connected", "automation.triggered", "workflow.completed", "error.occurred")

EVENT_ID = "0196a1b2-3c4d-7e5f-8a9b-0c1d2e3f4a5b"
INTENT = {
    "problem_solved": "Track late payments",
    "pain_point": "Manually checking Stripe takes 30min/day",
    "goal": "See failed payments automatically",
    "expected_outcome": "Dashboard shows failures <1min",
}
CONTEXT = {"related_events": [EVENT_ID], "decision_context": "Stripe was connected first"}

# Example payloads of every built-in type: those the source documents give, and realistic ones for the rest.
EXAMPLES: dict[str, list[dict[str, Any]]] = {
    "task.dispatched": [
        {"capability": "code", "prompt": "Add rate limiting"},
        {"title": "Deploy", "assignee": "deployer", "capability": "deployment", "depends_on": ["t"], "attempt": 1},
    ],
    "task.progress": [
        {"status": "running", "details": None},
        {"status": "running", "percent": 60, "message": "token-bucket middleware written"},
    ],
    "task.result": [
        {"status": "succeeded", "success": True, "duration_ms": 5300, "capability": "code", "result": {"files": 2}},
        {"status": "succeeded", "attempt": 2, "summary": "14 tests pass", "capability": None, "result": None},
    ],
    "task.result.failure": [
        {"error": "llm.error: timeout", "success": False, "duration_ms": 30000, "error_type": None},
        {"error": "tool failed", "error_type": "tool_error", "status": "failed", "attempt": 1, "retryable": True},
    ],
    "task.timeout": [{"timeout_ms": 30000, "attempt": 1, "assignee": "test-runner", "capability": "testing"}],
    "task.retry": [{"attempt": 2, "max_attempts": 3, "reason": "llm timeout", "backoff_ms": 2000}],
    "llm.call": [
        {"model": "test-model", "system_prompt_length": 100, "prompt_length": 50, "tool_count": 0},
        {"model": "gpt-4o", "prompt_tokens": 812},
        {"model": "gpt-4o", "system": "You are terse.", "prompt": "Hi", "max_tokens": 4096, "temperature": 0.2},
    ],
    "llm.response": [
        {"duration_ms": 1500, "response_length": 100, "tool_call_count": 0, "finish_reason": "stop"},
        {
            "model": "gpt-4o",
            "input_tokens": 1840,
            "output_tokens": 620,
            "total_tokens": 2460,
            "duration_ms": 7300,
            "finish_reason": "tool_calls",
            "tool_calls": ["read_file", "write_file"],
        },
    ],
    "llm.error": [
        {"model": "gpt-4o", "error": "timeout", "message": "no response within 30 s", "duration_ms": 30000},
        {"error": "rate_limited", "status_code": 429, "retryable": True},
    ],
    "tool.call": [{"tool": "read_file", "args": {"path": "api/app.py"}, "call_id": "call_1"}],
    "tool.result": [
        {"tool": "read_file", "ok": True, "duration_ms": 14, "result": {"bytes": 4210}},
        {"tool": "run_tests", "ok": False, "error": "exit status 1"},
    ],
    "span.start": [{"name": "plan"}, {"name": "invoke_agent weather", "span_kind": "internal"}],
    "span.end": [
        {"name": "plan", "ok": True, "duration_ms": 1200},
        {"name": "parse", "ok": False, "duration_ms": 3, "error": "bad input", "error_type": "ValueError"},
    ],
    "instance_registered": [{"instance_id": "odin3-ps", "project": "consilio", "hostname": "odin3"}],
    "instance_heartbeat": [{"instance_id": "odin3-ps", "status": "active", "context_percent": 42}],
    "instance_stale": [{"instance_id": "odin3-ps", "last_heartbeat_at": "2026-02-03T15:20:00Z"}],
    "instance_recovered": [{"instance_id": "odin3-ps", "silent_seconds": 412.5}],
    "instance_closed": [{"instance_id": "odin3-ps"}],
    "epic_started": [
        {
            "epic_id": "epic-003",
            "feature_name": "authentication-oauth",
            "estimated_hours": 60,
            "spawned_by": "plan-feature-interactive",
            "acceptance_criteria_count": 12,
        },
    ],
    "epic_completed": [
        {
            "epic_id": "epic-003",
            "duration_hours": 58.5,
            "files_changed": 23,
            "tests_passed": 45,
            "pr_url": "https://github.com/project/pull/123",
            "validation_confidence": 0.96,
            "issues_encountered": ["cors_headers", "token_refresh"],
        },
        {"epic_id": "epic-003", "status": "passed"},
        {"epic_id": "epic-003", "duration_hours": 58.5, "files_changed": 23},
    ],
    "epic_failed": [{"epic_id": "epic-004", "reason": "tests never passed", "duration_hours": 12}],
    "test_started": [{"epic_id": "epic-003", "test_type": "e2e", "test_count": 8}],
    "test_passed": [
        {
            "epic_id": "epic-003",
            "test_type": test_type,
            "passed_count": 45,
            "failed_count": 0,
            "coverage_percent": 87,
            "duration_seconds": 342,
        }
        for test_type in ("unit", "integration", "e2e")
    ]
    + [{"epic_id": "epic-003", "test_count": 8, "coverage": 87}],
    "test_failed": [{"epic_id": "epic-003", "test_type": "unit", "passed_count": 5, "failed_count": 3}],
    "validation_passed": [{"epic_id": "epic-003", "confidence": 0.96, "criteria_met": 12, "criteria_total": 12}],
    "validation_failed": [{"epic_id": "epic-003", "confidence": 0.4, "reasons": ["no token refresh"]}],
    "commit_created": [{"hash": "a1b2c3d", "message": "feat: auth", "files_changed": 7, "branch": "main"}],
    "pr_created": [{"pr_url": "https://github.com/project/pull/123", "pr_number": 123, "title": "OAuth"}],
    "pr_merged": [{"pr_url": "https://github.com/project/pull/123", "merge_commit": "e4f5a6b"}],
    "deployment_started": [{"service": "api", "port": 5100, "environment": "staging", "version": "1.42.0"}],
    "deployment_completed": [
        {
            "service": "supervisor-mcp",
            "port": 8081,
            "health_status": "healthy",
            "response_time_ms": 12,
            "git_commit": "a1b2c3d",
            "docker_image": "supervisor:latest",
        },
        {"service": "api", "environment": "staging", "version": "1.42.0", "healthy": True, "duration_ms": 63400},
    ],
    "deployment_failed": [{"service": "api", "port": 5100, "error": "health check failed"}],
    "context_window_updated": [{"context_percent": 71.5, "tokens_used": 143000, "tokens_limit": 200000}],
    "checkpoint_created": [{"checkpoint_id": "cp-12", "reason": "context 85% full", "epic_id": "epic-003"}],
    "checkpoint_loaded": [{"checkpoint_id": "cp-12", "source_instance_id": "odin3-ps"}],
    "epic_planned": [{"epic_id": "epic-005", "feature_name": "billing", "estimated_hours": 40}],
    "feature_requested": [{"description": "Let users export invoices as CSV", "requested_by": "dana"}],
    "task_spawned": [{"description": "Write the OAuth callback", "subagent": "haiku", "epic_id": "epic-003"}],
    "spawn": [{"description": "Implement epic-003", "subagent": "haiku"}],
    "epic_start": [{"epic_id": "epic-003", "feature": "auth"}],
    "commit": [
        {"message": "feat: auth", "files_changed": 7, "hash": "a1b2c3d"},
        {"message": "feat: ...", "files_changed": 7},
    ],
    "deploy": [{"service": "api", "port": 5100, "status": "success"}],
    "deploy_start": [{"service": "api", "port": 5100}],
    "deploy_complete": [{"service": "api", "duration_ms": 4500}],
    "error": [{"error_type": "test_failure", "message": "..."}],
    "user_message": [{"content": "implement auth"}],
    "assistant_start": [{"epic": "epic-003", "context_percent": 42}],
    "widget.created": [
        {"widget_type": "stripe_failed_payments"},
        {"widget_type": "stripe_failed_payments", "user_intent": INTENT, "context": CONTEXT},
    ],
    "provider.connected": [{"provider": "stripe", "account": "acct_1", "scopes": ["read"], "user_intent": INTENT}],
    "automation.triggered": [{"automation_id": "auto-9", "trigger": "payment.failed", "context": CONTEXT}],
    "workflow.completed": [{"workflow_id": "wf-3", "steps": 3, "status": "done", "duration_ms": 5400}],
    "error.occurred": [
        {"message": "Stripe token expired", "error_type": "auth", "recoverable": True},
        {"message": "x", "context": {**CONTEXT, "alternatives_considered": ["retry", "ignore"]}},
        {"message": "x", "context": {**CONTEXT, "related_events": [], "alternatives_considered": None}},
    ],
}


def test_the_built_in_catalogues_hold_the_expected_types(builtin: TypeRegistry) -> None:
    assert CATALOGUES == ("agent-mesh", "session", "documentable")
    assert builtin.catalogues == CATALOGUES
    for name, expected in [
        ("agent-mesh", set(AGENT_MESH)),
        ("session", {t for ts in SESSION_CATEGORIES.values() for t in ts}),
        ("documentable", set(DOCUMENTABLE)),
    ]:
        alone = TypeRegistry()
        loaded = alone.load_catalogue(name)
        assert {t.name for t in loaded} == expected == {t.name for t in alone.types()}
        assert alone.catalogues == (name,)
    for category, names in SESSION_CATEGORIES.items():
        assert {t.name for t in builtin.types(category=category) if t.name in set(names)} == set(names)
    assert len(builtin) == len(AGENT_MESH) + 34 + len(DOCUMENTABLE)
    assert {t.name for t in builtin.types() if t.important} == set(DOCUMENTABLE)
    assert set(EXAMPLES) == {t.name for t in builtin.types()}


def test_default_registry_is_new_every_time() -> None:
    first, second = default_registry(), default_registry()
    assert first is not second
    first.register("llm.call", schema={"type": "object"}, category="llm", description="replaced", version=2)
    assert second.get("llm.call").version == 1  # type: ignore[union-attr]


def test_built_in_schemas_are_open_objects_with_required_fields(builtin: TypeRegistry) -> None:
    for event_type in builtin.types():
        schema = event_type.schema
        assert isinstance(schema, Mapping) and schema["type"] == "object", event_type.name
        assert schema.get("additionalProperties", True) is not False, event_type.name
        assert event_type.required_fields, event_type.name
        assert event_type.version == 1 and event_type.description, event_type.name
    assert builtin.get("llm.call").required_fields == ("model",)  # type: ignore[union-attr]


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_built_in_type_accepts_its_examples(builtin: TypeRegistry, name: str) -> None:
    for data in EXAMPLES[name]:
        event = NewEvent(type=name, data=data)
        checked = builtin.check(event, "strict")
        assert checked.data is data


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_built_in_type_rejects_a_missing_required_field(builtin: TypeRegistry, name: str) -> None:
    event_type = builtin.get(name)
    assert event_type is not None
    data = EXAMPLES[name][0]
    for field in event_type.required_fields:
        assert field in data, f"the first example of {name} should have {field}"
        incomplete = {k: v for k, v in data.items() if k != field}
        for mode in ("strict", "known"):
            exc = reject(builtin, NewEvent(type=name, data=incomplete), mode)
            assert (exc.field, exc.rule) == (f"data.{field}", "required")


@pytest.mark.parametrize(
    ("name", "data", "field", "rule"),
    [
        ("llm.call", {"model": 4}, "data.model", "type"),
        ("llm.call", {"model": "m", "tool_count": -1}, "data.tool_count", "minimum"),
        ("llm.response", {"finish_reason": "stop", "total_tokens": "lots"}, "data.total_tokens", "type"),
        ("test_passed", {"epic_id": "e", "test_type": "smoke"}, "data.test_type", "enum"),
        ("test_passed", {"epic_id": "e", "coverage_percent": 101}, "data.coverage_percent", "maximum"),
        ("epic_completed", {"epic_id": "e", "validation_confidence": 1.5}, "data.validation_confidence", "maximum"),
        ("deploy", {"service": "api", "port": 70000}, "data.port", "maximum"),
        ("task.retry", {"attempt": True}, "data.attempt", "type"),
        (
            "widget.created",
            {"widget_type": "w", "user_intent": {"goal": "g"}},
            "data.user_intent.problem_solved",
            "required",
        ),
        (
            "widget.created",
            {"widget_type": "w", "user_intent": {**INTENT, "mood": "x"}},
            "data.user_intent.mood",
            "additionalProperties",
        ),
        (
            "automation.triggered",
            {"automation_id": "a", "context": {**CONTEXT, "related_events": ["evt_123"]}},
            "data.context.related_events[0]",
            "pattern",
        ),
    ],
)
def test_built_in_types_check_values(
    builtin: TypeRegistry, name: str, data: dict[str, Any], field: str, rule: str
) -> None:
    exc = reject(builtin, NewEvent(type=name, data=data), "strict")
    assert (exc.field, exc.rule) == (field, rule)


def test_documentable_types_are_marked_important(builtin: TypeRegistry) -> None:
    for name in DOCUMENTABLE:
        assert builtin.check(NewEvent(type=name, data=EXAMPLES[name][0])).metadata == {"important": True}
    call = NewEvent(type="llm.call", data={"model": "m"})
    assert builtin.check(call) is call


def test_the_docs_list_every_built_in_type(builtin: TypeRegistry) -> None:
    text = (ROOT / "docs" / "types.md").read_text(encoding="utf-8")
    section = text.split("\n## Built-in catalogues\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `([^`]+)` \| (\w+) \| (.*?) \| (.*?) \|$", section, re.MULTILINE)

    def names(cell: str) -> tuple[str, ...]:
        return tuple(re.findall(r"`([^`]+)`", cell))

    documented = {name: (category, names(required), names(optional)) for name, category, required, optional in rows}
    assert len(rows) == len(documented)
    assert documented == {t.name: (t.category, t.required_fields, t.optional_fields) for t in builtin.types()}


# -- catalogue files -----------------------------------------------------------------------------------------
CATALOGUE: dict[str, Any] = {
    "name": "billing",
    "description": "Invoices.",
    "$defs": {"money": {"type": "object", "properties": {"amount": {"type": "number"}}, "required": ["amount"]}},
    "types": [
        {
            "type": "invoice.sent",
            "category": "billing",
            "description": "An invoice went out.",
            "schema": {
                "type": "object",
                "properties": {"invoice_id": {"type": "string"}, "total": {"$ref": "#/$defs/money"}},
                "required": ["invoice_id"],
            },
        },
        {
            "type": "invoice.sent",
            "category": "billing",
            "description": "An invoice went out, with a currency.",
            "version": 2,
            "important": True,
            "schema": {
                "type": "object",
                "properties": {"invoice_id": {"type": "string"}, "currency": {"type": "string"}},
                "required": ["invoice_id", "currency"],
            },
        },
    ],
}


def _check_billing(reg: TypeRegistry) -> None:
    current = reg.get("invoice.sent")
    assert current is not None
    assert (current.version, current.important, current.required_fields) == (2, True, ("invoice_id", "currency"))
    assert reg.versions("invoice.sent") == (1, 2) and reg.catalogues == ("billing",)
    exc = reject(reg, NewEvent(type="invoice.sent", data={"invoice_id": "i", "total": {}}))
    assert (exc.field, exc.rule) == ("data.total.amount", "required")
    v2 = reg.check(NewEvent(type="invoice.sent", data={"invoice_id": "i", "currency": "EUR"}, version=2))
    assert v2.metadata == {"important": True}


def test_load_a_json_catalogue(tmp_path: Path) -> None:
    path = tmp_path / "billing.json"
    path.write_text(json.dumps(CATALOGUE), encoding="utf-8")
    reg = TypeRegistry()
    loaded = reg.load_catalogue(path)
    assert [(t.name, t.version) for t in loaded] == [("invoice.sent", 1), ("invoice.sent", 2)]
    _check_billing(reg)
    reg.load_catalogue(str(path))  # loading again changes nothing
    _check_billing(reg)


def test_load_a_yaml_catalogue(tmp_path: Path) -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed: pip install 'meshlog[yaml]'")
    for suffix in (".yaml", ".yml"):
        path = tmp_path / f"billing{suffix}"
        path.write_text(yaml.safe_dump(CATALOGUE, sort_keys=False), encoding="utf-8")
        reg = TypeRegistry()
        reg.load_catalogue(path)
        _check_billing(reg)


def test_a_yaml_catalogue_without_pyyaml_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "billing.yaml"
    path.write_text("name: billing\ntypes: []\n", encoding="utf-8")
    monkeypatch.setitem(sys.modules, "yaml", None)
    with pytest.raises(ConfigurationError, match=re.escape("needs PyYAML: pip install 'meshlog[yaml]'")):
        TypeRegistry().load_catalogue(path)


def _entry(**changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": "t.x",
        "category": "c",
        "description": "d",
        "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
    }
    entry.update(changes)
    return {k: v for k, v in entry.items() if v is not None}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "the file: [] is not of type 'object'"),
        ('{"types": []}', "'name' is a required property"),
        ('{"name": "n", "types": {}}', "types: {} is not of type 'array'"),
        ('{"name": "n", "types": [], "extra": 1}', "Additional properties are not allowed ('extra' was unexpected)"),
        (json.dumps({"name": "n", "types": [_entry(schema=None)]}), "types[0] (t.x): 'schema' is a required property"),
        (json.dumps({"name": "n", "types": [_entry(version=0)]}), "types[0] (t.x).version: 0 is less than the minimum"),
        (json.dumps({"name": "n", "types": [_entry(version="1")]}), "types[0] (t.x).version: '1' is not of type"),
        (json.dumps({"name": "n", "types": [_entry(important="yes")]}), "types[0] (t.x).important"),
        (json.dumps({"name": "n", "types": [_entry(requried=["a"])]}), "('requried' was unexpected)"),
        (
            json.dumps({"name": "n", "types": [_entry(type="bad name")]}),
            "types[0] (bad name).type: 'bad name' does not",
        ),
        (json.dumps({"name": "n", "types": [_entry(schema={"type": "array"})]}), "types[0] (t.x).schema.type"),
        (json.dumps({"name": "n", "types": [_entry(schema={"properties": {}})]}), "'type' is a required property"),
        (
            json.dumps(
                {"name": "n", "types": [_entry(schema={"type": "object", "properties": {"a": {"type": "strin"}}})]}
            ),
            "types[0] (t.x).schema.properties.a.type",
        ),
        (json.dumps({"name": "n", "types": [_entry(), _entry()]}), "types[1]: t.x version 1 appears twice"),
    ],
)
def test_bad_catalogue_files_are_configuration_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    reg = TypeRegistry()
    with pytest.raises(ConfigurationError) as info:
        reg.load_catalogue(path)
    assert str(info.value).startswith(f"catalogue {path}: ") and message in str(info.value)
    assert len(reg) == 0


def test_a_bad_type_late_in_a_catalogue_registers_nothing(tmp_path: Path) -> None:
    path = tmp_path / "half.json"
    path.write_text(json.dumps({"name": "n", "types": [_entry(type="ok"), _entry(version=-1)]}), encoding="utf-8")
    reg = TypeRegistry()
    with pytest.raises(ConfigurationError, match=re.escape("types[1] (t.x).version")):
        reg.load_catalogue(path)
    assert "ok" not in reg and reg.catalogues == ()


def test_bad_yaml_is_a_configuration_error(tmp_path: Path) -> None:
    pytest.importorskip("yaml", reason="PyYAML is not installed: pip install 'meshlog[yaml]'")
    path = tmp_path / "bad.yml"
    path.write_text("name: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="not valid YAML"):
        TypeRegistry().load_catalogue(path)


def test_missing_files_and_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        TypeRegistry().load_catalogue(tmp_path / "missing.json")
    with pytest.raises(ConfigurationError, match="unknown catalogue 'agents': use a built-in one"):
        TypeRegistry().load_catalogue("agents")
    with pytest.raises(ConfigurationError, match=r"a \.json, \.yaml or \.yml file"):
        TypeRegistry().load_catalogue(tmp_path / "types.toml")


# -- documentable events -------------------------------------------------------------------------------------
def test_documentable_puts_intent_and_context_in_data(builtin: TypeRegistry) -> None:
    earlier = meshlog.uuid7()
    event = documentable(
        "widget.created",
        {"widget_type": "stripe_failed_payments"},
        user_intent=UserIntent(**INTENT),
        context=DecisionContext(related_events=[EVENT_ID], decision_context="why", alternatives_considered=["no"]),
        related=[earlier, EVENT_ID],
        agent_id="widget-wizard",
        metadata={"source": "wizard"},
    )
    assert isinstance(event, NewEvent)
    assert event.data == {
        "widget_type": "stripe_failed_payments",
        "user_intent": INTENT,
        "context": {"related_events": [EVENT_ID], "decision_context": "why", "alternatives_considered": ["no"]},
    }
    assert event.related == (earlier, EVENT_ID)
    assert (event.agent_id, event.metadata) == ("widget-wizard", {"source": "wizard"})
    checked = builtin.check(event, "strict")
    assert checked.metadata == {"source": "wizard", "important": True}


def test_documentable_accepts_dicts_and_validates_them() -> None:
    event = documentable("provider.connected", {"provider": "stripe"}, user_intent=INTENT, context=CONTEXT)
    assert event.data["user_intent"] == INTENT and event.data["context"] == CONTEXT
    assert event.related == (EVENT_ID,)
    plain = documentable("provider.connected", {"provider": "stripe"})
    assert plain.data == {"provider": "stripe"} and plain.related == ()

    cases: list[tuple[dict[str, Any], str, str]] = [
        ({"user_intent": {"goal": "g"}}, "data.user_intent.problem_solved", "required"),
        ({"user_intent": {**INTENT, "goal": ""}}, "data.user_intent.goal", "string_too_short"),
        ({"user_intent": {**INTENT, "mood": "x"}}, "data.user_intent.mood", "extra_forbidden"),
        ({"context": {"decision_context": "d"}}, "data.context.related_events", "required"),
        (
            {"context": {**CONTEXT, "related_events": ["evt_123"]}},
            "data.context.related_events[0]",
            "string_pattern_mismatch",
        ),
    ]
    for kwargs, field, rule in cases:
        with pytest.raises(ValidationError) as info:
            documentable("widget.created", {"widget_type": "w"}, **kwargs)
        assert (info.value.field, info.value.rule) == (field, rule), kwargs


def test_documentable_refuses_a_second_intent_or_context() -> None:
    for key, value in (("user_intent", INTENT), ("context", CONTEXT)):
        with pytest.raises(ValidationError) as info:
            documentable("widget.created", {"widget_type": "w", key: {}}, **{key: value})
        assert (info.value.field, info.value.rule) == (f"data.{key}", "duplicate")


def test_the_helpers_are_frozen_and_forbid_unknown_fields() -> None:
    intent = UserIntent(**INTENT)
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        intent.goal = "other"
    assert DecisionContext(related_events=[], decision_context="d").alternatives_considered is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("user_intent", INTENT),
        ("user_intent", {**INTENT, "goal": ""}),
        ("user_intent", {"goal": "g"}),
        ("user_intent", {**INTENT, "extra": 1}),
        ("user_intent", {**INTENT, "goal": 3}),
        ("context", CONTEXT),
        ("context", {**CONTEXT, "alternatives_considered": ["a"]}),
        ("context", {**CONTEXT, "alternatives_considered": None}),
        ("context", {**CONTEXT, "related_events": []}),
        ("context", {**CONTEXT, "related_events": ["evt_123"]}),
        ("context", {**CONTEXT, "related_events": EVENT_ID}),
        ("context", {"related_events": [EVENT_ID]}),
        ("context", {**CONTEXT, "decision_context": ""}),
        ("context", {**CONTEXT, "alternatives_considered": [1]}),
    ],
)
def test_the_catalogue_and_the_models_agree(builtin: TypeRegistry, key: str, value: dict[str, Any]) -> None:
    model = UserIntent if key == "user_intent" else DecisionContext
    try:
        model.model_validate(value)
        model_ok = True
    except pydantic.ValidationError:
        model_ok = False
    try:
        builtin.check(NewEvent(type="widget.created", data={"widget_type": "w", key: value}), "strict")
        catalogue_ok = True
    except ValidationError:
        catalogue_ok = False
    assert model_ok == catalogue_ok

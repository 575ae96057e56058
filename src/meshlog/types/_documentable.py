"""Typed helpers for documentable events: why the user acted (:class:`UserIntent`) and what the decision rested
on (:class:`DecisionContext`). Needs pydantic (``pip install 'meshlog[pydantic]'``).

They travel in the event's data, as ``data["user_intent"]`` and ``data["context"]``, so they are stored, queried
(``text=`` searches them) and validated like the rest of the payload; the ``documentable`` catalogue's types
declare both. :func:`documentable` also copies ``context.related_events`` into the event's ``related`` ids, so
the store's related-event graph links the events too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from meshlog.errors import ValidationError
from meshlog.events import NewEvent
from meshlog.types._schema import json_path

__all__ = ["CONTEXT_KEY", "USER_INTENT_KEY", "DecisionContext", "UserIntent", "documentable"]

USER_INTENT_KEY: Final = "user_intent"
CONTEXT_KEY: Final = "context"

_UUID: Final = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

_M = TypeVar("_M", bound=BaseModel)

_Text = Annotated[str, Field(min_length=1)]
_EventId = Annotated[str, Field(pattern=_UUID)]


class UserIntent(BaseModel):
    """Why the user did it: the problem, the pain, the goal and what they expect to see."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    problem_solved: _Text
    """The problem this solves, in the user's words ("Track late payments")."""
    pain_point: _Text
    """What hurts today ("Manually checking Stripe takes 30 min a day")."""
    goal: _Text
    """What the user wants ("See failed payments automatically")."""
    expected_outcome: _Text
    """How they will know it worked ("Dashboard shows failures within a minute")."""


class DecisionContext(BaseModel):
    """What a decision rested on: the events that led to it, the reasoning, and what else was considered."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    related_events: list[_EventId]
    """Ids of the events this one follows from (may be empty)."""
    decision_context: _Text
    """Why this was done, in a sentence or two."""
    alternatives_considered: list[str] | None = None
    """The options not taken, if any were weighed."""


def documentable(
    type: str,
    data: Mapping[str, Any],
    *,
    user_intent: UserIntent | Mapping[str, Any] | None = None,
    context: DecisionContext | Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> NewEvent:
    """A :class:`~meshlog.NewEvent` carrying its user intent and decision context.

    ``user_intent`` goes to ``data["user_intent"]`` and ``context`` to ``data["context"]`` (as JSON objects;
    dicts are validated by the models first). ``context.related_events`` are added to ``related`` (after any
    given in ``kwargs``). Every other keyword is a NewEvent field (``stream``, ``trace_id``, ``metadata`` ...).
    Raises ValidationError for an invalid intent or context, or when ``data`` already has either key.
    """
    payload = dict(data)
    related = list(kwargs.pop("related", ()))
    if user_intent is not None:
        intent = _model(UserIntent, user_intent, USER_INTENT_KEY)
        payload[_unused(payload, USER_INTENT_KEY)] = intent.model_dump(mode="json", exclude_none=True)
    if context is not None:
        decision = _model(DecisionContext, context, CONTEXT_KEY)
        payload[_unused(payload, CONTEXT_KEY)] = decision.model_dump(mode="json", exclude_none=True)
        related.extend(decision.related_events)
    return NewEvent(type=type, data=payload, related=tuple(dict.fromkeys(related)), **kwargs)


def _model(model: type[_M], value: _M | Mapping[str, Any], key: str) -> _M:
    if isinstance(value, model):
        return value
    import pydantic

    try:
        return model.model_validate(value)
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        rule = "required" if first["type"] == "missing" else str(first["type"])
        field = json_path((key, *first["loc"]), "data")
        raise ValidationError(f"{model.__name__}: {field}: {first['msg']}", field=field, rule=rule) from exc


def _unused(payload: Mapping[str, Any], key: str) -> str:
    if key in payload:
        raise ValidationError(
            f"data already has {key!r}: pass it either in data or as {key}=, not both",
            field=f"data.{key}",
            rule="duplicate",
        )
    return key

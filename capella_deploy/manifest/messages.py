"""A pydantic validation error, in the manifest's words: what is wrong at that place and what to write instead."""

from __future__ import annotations

import difflib
import types
from collections.abc import Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import (
    BaseModel,
)
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from capella_deploy.manifest.fields import PATTERN_HINTS, show
from capella_deploy.manifest.spec import Manifest


def describe(error: ErrorDetails) -> str:
    """A message that says what is wrong and what to write instead."""
    kind, loc, value = error["type"], error["loc"], error.get("input")
    ctx: dict[str, Any] = dict(error.get("ctx") or {})
    if kind == "missing":
        info = _field_at(loc)
        hint = f": {info.description}" if info is not None and info.description else ""
        return f"required field '{loc[-1]}' is missing{hint}"
    if kind == "extra_forbidden":
        model = _model_at(loc[:-1])
        return _unknown_field(str(loc[-1]), list(model.model_fields) if model is not None else [])
    if kind == "literal_error":
        return f"{show(value)} is not allowed; use one of {ctx['expected']}"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        return f"{show(value)} is not valid: {PATTERN_HINTS.get(pattern, f'must match {pattern}')}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping (key: value entries), got {show(value)}"
    if kind in ("tuple_type", "list_type"):
        return f"expected a list, got {show(value)}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s)"
    if kind == "string_too_short":
        return "must not be empty"
    if kind == "string_too_long":
        return f"is longer than {ctx.get('max_length')} characters"
    if kind == "string_type":
        quote = "; put it in quotes" if isinstance(value, (int, float, bool)) or value is None else ""
        return f"expected text, got {show(value)}{quote}"
    message = error["msg"].replace("Input should be", "must be")
    return f"{message} (got {show(value)})"


def _unknown_field(name: str, allowed: list[str]) -> str:
    by_lower = {field.lower(): field for field in allowed}
    guess = by_lower.get(name.lower())
    if guess is None:
        close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
        guess = by_lower[close[0]] if close else None
    if guess is not None:
        return f"unknown field '{name}'; did you mean '{guess}'?"
    return f"unknown field '{name}'; allowed fields: {', '.join(allowed)}"


def _model_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class validating the value at ``loc``, following field annotations from Manifest."""
    current: Any = Manifest
    for part in loc:
        current = _unwrap(current)
        if isinstance(part, int):
            args = get_args(current)
            if get_origin(current) is not tuple or not args:
                return None
            current = args[0]
        elif isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = current.model_fields[part].annotation
        else:
            return None
    current = _unwrap(current)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _field_at(loc: Sequence[str | int]) -> FieldInfo | None:
    model = _model_at(loc[:-1])
    if model is None or not isinstance(loc[-1], str):
        return None
    return model.model_fields.get(loc[-1])


def _unwrap(annotation: Any) -> Any:
    """Strip Annotated and ``X | None`` down to X."""
    while True:
        origin = get_origin(annotation)
        if origin is Annotated:
            annotation = get_args(annotation)[0]
        elif origin in (Union, types.UnionType):
            members = [arg for arg in get_args(annotation) if arg is not type(None)]
            if len(members) != 1:
                return annotation
            annotation = members[0]
        else:
            return annotation

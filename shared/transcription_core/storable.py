"""What the job store can hold, checked at the edge, and JSON of any depth read back.

PostgreSQL ``text`` cannot hold NUL, UTF-8 cannot encode a lone surrogate, and ``jsonb``
refuses NaN and the infinities, while Python's ``json`` accepts all of them and any
nesting. A request carrying one is refused as 422 naming its field, before any write
(``StorableText`` for strings, :func:`json_problem` for a client's JSON object), so
nothing is stored that cannot be read back.

Rows stored before the API limited the depth of ``metadata`` can hold about 1,000 levels,
past what pydantic serializes (255): :func:`dumps` encodes such a value without recursion.
"""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, TypeAlias

from pydantic import AfterValidator

#: A JSON value as a ``jsonb`` column holds it (``metadata``, a transcript, a chunk).
Json: TypeAlias = bool | int | float | str | list["Json"] | dict[str, "Json"] | None
#: A JSON object.
JsonObject: TypeAlias = dict[str, Json]


def text_problem(value: str) -> str | None:
    """Why the store cannot hold ``value``, or None if it can."""
    if "\x00" in value:
        return "must not contain a NUL character"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must not contain a lone surrogate (not valid Unicode)"
    return None


def _storable(value: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


#: A string the store can hold: as a pydantic field, path, query or header parameter.
StorableText = Annotated[str, AfterValidator(_storable)]


def json_problem(value: Any, max_depth: int) -> str | None:
    """Why the store cannot hold the JSON ``value`` (nested over ``max_depth`` levels, an
    unstorable string, a number that is not finite), or None if it can. Iterative: any
    depth costs no stack. ``max_depth`` counts containers: ``{}`` is 1, ``{"a": []}`` 2."""
    pending: list[tuple[Any, int]] = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth > max_depth:
                return f"nested too deep: more than {max_depth} levels of objects and arrays"
            if isinstance(item, dict):
                for key in item:
                    problem = text_problem(key)
                    if problem is not None:
                        return f"a key {problem}"
                pending.extend((v, depth + 1) for v in item.values())
            else:
                pending.extend((v, depth + 1) for v in item)
        elif isinstance(item, str):
            problem = text_problem(item)
            if problem is not None:
                return f"a string {problem}"
        elif isinstance(item, float) and not math.isfinite(item):
            return "numbers must be finite (no NaN, Infinity or overflowing exponents)"
    return None


class _Text(str):
    """Literal JSON text on :func:`dumps`'s stack, as opposed to a value to encode."""


def dumps(value: Any) -> str:
    """``json.dumps(value, separators=(",", ":"))`` for any nesting depth."""
    try:
        return json.dumps(value, separators=(",", ":"))
    except RecursionError:
        pass
    out: list[str] = []
    pending: list[Any] = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, _Text):
            out.append(item)
        elif isinstance(item, dict):
            pending.append(_Text("}"))
            for n, (key, member) in reversed(list(enumerate(item.items()))):
                pending.append(member)
                pending.append(_Text(("," if n else "") + json.dumps(str(key)) + ":"))
            out.append("{")
        elif isinstance(item, list):
            pending.append(_Text("]"))
            for n, member in reversed(list(enumerate(item))):
                pending.append(member)
                if n:
                    pending.append(_Text(","))
            out.append("[")
        else:
            out.append(json.dumps(item))
    return "".join(out)

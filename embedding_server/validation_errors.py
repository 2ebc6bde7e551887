"""One wording for pydantic validation errors: the request body's, a frames manifest's and the
configuration's."""

from __future__ import annotations

from typing import Any, Callable, Sequence

ErrorItem = dict[str, Any]
MAX_REPORTED_ERRORS = 3  # in a client's error detail


def location(item: ErrorItem, default: str, skip: tuple[str, ...] = ()) -> str:
    """``a.b.0`` from an error's ``loc`` (parts in ``skip`` left out), or ``default``."""
    return ".".join(str(part) for part in item.get("loc", ()) if part not in skip) or default


def describe_errors(errors: Sequence[ErrorItem], where: Callable[[ErrorItem], str],
                    limit: int | None = None) -> str:
    """``"<where>: <message>; ..."`` for the first ``limit`` errors (all when ``None``)."""
    return "; ".join(f"{where(item)}: {item.get('msg', 'invalid value')}" for item in errors[:limit])

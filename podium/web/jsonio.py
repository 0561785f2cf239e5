"""JSON in and out for the API: reading a request's query and body (bounded, with every field
known), and answering with JSON, Podium's errors included (``answers``)."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from podium import limits
from podium.errors import (
    BackendUnavailable,
    Conflict,
    InvalidInput,
    MemoryUnavailable,
    NotFound,
    PodiumError,
    StoreUnavailable,
)
from podium.models import Priority
from podium.web import payloads
from podium.web.params import IntParam

_log = logging.getLogger("podium.web")

#: The largest request body taken: a prompt at its limit, and room for the JSON around it.
MAX_BODY_BYTES = limits.MAX_TEXT_BYTES + 1024 * 1024
Endpoint = Callable[[Request], Awaitable[Response]]


class HTTPError(Exception):
    """An error answered with its status and message (beyond ``PodiumError``'s)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def status_of(e: PodiumError) -> int:
    if isinstance(e, NotFound):
        return 404
    if isinstance(e, (InvalidInput, BackendUnavailable)):
        return 422
    if isinstance(e, Conflict):
        return 409
    if isinstance(e, (StoreUnavailable, MemoryUnavailable)):
        return 503
    return 400


def json_response(data: Any, status: int = 200) -> Response:
    body = payloads.dumps(data)
    return Response(body, status, media_type="application/json",
                    headers={"cache-control": "no-store"})


def error_response(status: int, message: str) -> Response:
    return json_response({"error": message}, status)


def answers(endpoint: Endpoint) -> Endpoint:
    """``endpoint`` with Podium's errors answered as JSON (any other is logged, and a 500)."""
    @functools.wraps(endpoint)
    async def wrapped(request: Request) -> Response:
        try:
            return await endpoint(request)
        except HTTPError as e:
            return error_response(e.status, str(e))
        except PodiumError as e:
            return error_response(status_of(e), str(e))
        except Exception as e:
            _log.exception("podium web: %s %s failed", request.method, request.url.path)
            return error_response(500, f"internal error: {type(e).__name__}: {e}")
    return wrapped


# -- reading input ------------------------------------------------------------------------

def query_text(request: Request, name: str) -> str | None:
    """A query parameter; None when absent or empty (a form's empty field)."""
    value = request.query_params.get(name)
    return value if value else None


def query_int(request: Request, name: str, param: IntParam) -> int | None:
    """The integer query parameter ``name`` within ``param``'s bounds; its default when it
    is not given."""
    value = query_text(request, name)
    if value is None:
        return param.default
    try:
        number = int(value)
    except ValueError:
        raise InvalidInput(f"bad {name} {value!r}: must be an integer") from None
    return limits.integer(number, name, param.low, param.high)


async def json_body(request: Request, fields: set[str]) -> dict[str, Any]:
    """The request's JSON object (an empty body: {}), with no field but ``fields``."""
    size = int(request.headers.get("content-length") or 0)
    if size > MAX_BODY_BYTES:
        raise HTTPError(413, f"request body larger than {MAX_BODY_BYTES} bytes")
    chunks, got = [], 0
    async for chunk in request.stream():
        got += len(chunk)
        if got > MAX_BODY_BYTES:
            raise HTTPError(413, f"request body larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    raw = b"".join(chunks)
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise InvalidInput(f"the body is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"the body must be a JSON object, got {type(data).__name__}")
    unknown = sorted(set(data) - fields)
    if unknown:
        raise InvalidInput(f"unknown field{'s' if len(unknown) > 1 else ''} "
                           f"{', '.join(map(repr, unknown))}: expected {', '.join(sorted(fields))}")
    return data


def blank_none(value: Any) -> Any:
    """A form's empty or blank text as None (not given); anything else as it is."""
    return None if isinstance(value, str) and not value.strip() else value


def or_default(value: Any, default: Any) -> Any:
    """``value``, or ``default`` when it is None or blank text: anything else (``{}``, ``0``)
    stays, for the service to refuse, rather than being taken as "not given"."""
    value = blank_none(value)
    return default if value is None else value


def number_or_none(value: Any, what: str) -> Any:
    """A number, or a form's text of one; None when empty (left to the service to bound)."""
    value = blank_none(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            raise InvalidInput(f"bad {what} {value!r}: must be a number") from None
    return value


def priority_of(value: Any) -> Any:
    """A priority by name, or by its value (0 high, 1 normal, 2 low; 1.0 is 1, as in JSON);
    empty: normal."""
    value = json_int(blank_none(value))
    if isinstance(value, int) and not isinstance(value, bool) and value in (0, 1, 2):
        return Priority(value)
    return value


def task_ids(value: Any, what: str = "depends_on") -> list[Any]:
    """A list of task ids, or one text of ids separated by commas or spaces (a form's)."""
    value = blank_none(value)
    if value is None:
        return []
    if isinstance(value, str):
        return value.replace(",", " ").split()
    if not isinstance(value, list):
        raise InvalidInput(f"{what} must be a list of task ids, got {type(value).__name__}")
    return value


def json_int(value: Any) -> Any:
    """A JSON number with no fraction as the integer it is (JSON has one number type: 3.0 is
    3, as JSON Schema's "integer" says too); anything else as it is, for the service to
    check."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def boolean(value: Any, what: str, default: bool = False) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidInput(f"{what} must be true or false, got {type(value).__name__}")
    return value

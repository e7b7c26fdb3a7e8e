"""Kubernetes API errors mapped into libcalico's one error tree, at one place (the backend's edge).

The official client raises ``ApiException`` with the HTTP status and a Status
object as its body, and aiohttp errors when the server cannot be reached. The
mapping follows libcalico-go's ``k8s/resources/errors.go``: 404 NotFound, 409
AlreadyExists or Conflict by the Status's reason, 410 Gone a compacted watch,
400/422 a validation error with the server's message, anything else the
datastore being unavailable. The original exception is kept as ``__cause__``
by every caller (``raise map_error(exc, ...) from exc``).
"""

from __future__ import annotations

import json
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException

from libcalico.errors import (AlreadyExists, CalicoError, Conflict, DatastoreUnavailable, ErroredField, NotFound,
                              ValidationError, WatchCompacted)


def status(exc: ApiException) -> dict[str, Any]:
    """The Status object the server sent with an error ({} when it sent none)."""
    try:
        body = json.loads(exc.body) if exc.body else {}
    except (ValueError, TypeError):
        body = {}
    return body if isinstance(body, dict) else {}


def map_error(exc: BaseException, key: object, what: str) -> CalicoError:
    """``exc`` (from a request about ``key``, doing ``what``) as a libcalico error."""
    if isinstance(exc, CalicoError):
        return exc
    if isinstance(exc, ApiException):
        st = status(exc)
        reason, message = st.get("reason", exc.reason), st.get("message", str(exc.reason))
        if exc.status == 404:
            return NotFound(key)
        if exc.status == 409 and reason == "AlreadyExists":
            return AlreadyExists(key)
        if exc.status == 409:
            return Conflict(key)
        if exc.status == 410:
            return WatchCompacted(str(key))
        if exc.status in (400, 422):
            return ValidationError([ErroredField(str(key), message)], context=f"{what} rejected by the API server")
        return DatastoreUnavailable(f"{what}: the Kubernetes API answered {exc.status} {reason}: {message}")
    return DatastoreUnavailable(f"{what}: cannot reach the Kubernetes API: {exc}")

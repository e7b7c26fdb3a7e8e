"""One error tree for every datastore and every caller.

Each backend maps its transport's failures (gRPC status codes for etcd, HTTP
status codes for Kubernetes) into these classes at one place, its edge, so
that callers above the backend never see an ``aetcd`` or ``kubernetes``
exception. The messages follow libcalico-go's ``lib/errors`` word for word
(``resource does not exist: IPPool(x) with error: <nil>``), because
``calicoctl`` users grep for them.

The tree::

    CalicoError
    ├── ValidationError          bad input; names each field and the reason
    ├── NotFound                 get/update/delete of a missing key
    ├── AlreadyExists            create of an existing key
    ├── Conflict                 compare-and-swap lost (stale revision)
    ├── DatastoreUnavailable     cannot reach or talk to the datastore
    ├── WatchCompacted           watch asked for history that was compacted
    ├── CorruptEntry             a stored value that does not parse into its kind
    └── OperationNotSupported    e.g. deleting ClusterInformation

A :class:`CorruptEntry` is never fatal to a daemon: as in libcalico-go (a
"parse failure" update with a nil value), a list skips it and reports it on
the side, a watch passes it as an event without a value, and the one watch
loop (:mod:`libcalico.watching`) logs it and treats the key as deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class CalicoError(Exception):
    """Base of every error libcalico raises on purpose."""


@dataclass(frozen=True)
class ErroredField:
    """One field that failed validation, shaped like libcalico-go's ErroredField."""

    name: str
    reason: str
    value: Any = None

    def __str__(self) -> str:
        text = self.name if self.value is None else f"{self.name} = '{_show(self.value)}'"
        return f"{text} ({self.reason})" if self.reason else text


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(_show(v) for v in value) + "]"
    return str(value)


class ValidationError(CalicoError, ValueError):
    """Input that Calico would reject. Always names the field(s) and the reason."""

    def __init__(self, fields: list[ErroredField], *, context: str = "") -> None:
        self.fields = list(fields)
        self.context = context
        super().__init__(self._message())

    def _message(self) -> str:
        prefix = f"{self.context}: " if self.context else ""
        if not self.fields:
            return prefix + "unknown validation error"
        if len(self.fields) == 1:
            return f"{prefix}error with field {self.fields[0]}"
        lines = "".join(f"-  {f}\n" for f in self.fields)
        return f"{prefix}error with the following fields:\n{lines}"


class NotFound(CalicoError, LookupError):
    def __init__(self, identifier: object, detail: str | None = None) -> None:
        self.identifier = identifier
        super().__init__(f"resource does not exist: {identifier} with error: {detail or '<nil>'}")


class AlreadyExists(CalicoError):
    def __init__(self, identifier: object, detail: str | None = None) -> None:
        self.identifier = identifier
        super().__init__(f"resource already exists: {identifier} with error: {detail or '<nil>'}")


class Conflict(CalicoError):
    """A compare-and-swap write lost: the stored revision is not the one given."""

    def __init__(self, identifier: object) -> None:
        self.identifier = identifier
        super().__init__(f"update conflict: {identifier}")


class DatastoreUnavailable(CalicoError, ConnectionError):
    """The datastore could not be reached or answered with a server error."""


class WatchCompacted(CalicoError):
    """The watch asked for history older than the datastore keeps; re-list."""

    def __init__(self, revision: str) -> None:
        self.revision = revision
        super().__init__(f"watch revision {revision} has been compacted; a re-list is required")


class CorruptEntry(CalicoError):
    """A stored value that does not parse into its kind (written around Calico's validation).

    ``key`` is the entry's key (a :class:`~libcalico.model.ResourceKey`; typed
    loosely because the error tree sits below the model); ``reasons`` say what
    failed, field by field, without any library's help URL.
    """

    def __init__(self, key: object, reasons: list[str]) -> None:
        self.key = key
        self.reasons = list(reasons)
        super().__init__(f"stored datastore entry for {key} does not parse: {'; '.join(self.reasons)}")


class OperationNotSupported(CalicoError):
    def __init__(self, operation: str, identifier: object, reason: str = "") -> None:
        text = f"operation {operation} is not supported on {identifier}"
        super().__init__(f"{text}: {reason}" if reason else text)

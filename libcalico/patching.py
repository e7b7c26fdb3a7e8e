"""JSON merge patch (RFC 7386) and JSON patch (RFC 6902), for calicoctl patch and the tests' API server.

JSON patch is the ``jsonpatch`` library's, applied one operation at a time so
an error can name the operation that failed. Merge patch is the RFC's ten
lines. Both return new documents and never change their input.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer


class PatchError(ValueError):
    """A patch that does not apply. ``index`` is the failing operation (JSON patch), ``path`` its path."""

    def __init__(self, message: str, index: int | None = None, path: str = "") -> None:
        super().__init__(message)
        self.index = index
        self.path = path


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge key by key, null removes a key, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902. :class:`PatchError` names the first operation that does not apply."""
    if not isinstance(ops, list):
        raise PatchError("a JSON patch must be a list of operations")
    out = copy.deepcopy(doc)
    for i, op in enumerate(ops):
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError("each operation needs 'op' and 'path'", i)
        try:
            out = jsonpatch.JsonPatch([op]).apply(out)
        except jsonpatch.JsonPatchTestFailed:
            raise PatchError(f"test failed at {op['path']}", i, op["path"]) from None
        except jsonpatch.InvalidJsonPatch as exc:
            raise PatchError(f"unsupported operation: {exc}", i, op["path"]) from None
        except (jsonpatch.JsonPatchConflict, jsonpointer.JsonPointerException, KeyError, IndexError,
                TypeError, ValueError):
            raise PatchError(f"path does not exist: {op['path']}", i, op["path"]) from None
    return out

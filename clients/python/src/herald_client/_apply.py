"""How each of herald's event formats changes a live copy (docs/sse.md, "Formats")."""

from __future__ import annotations

import json
from bisect import bisect_left, insort
from typing import Any

import jsonpatch


def apply_json_patch(doc: Any, ops: list[dict[str, Any]]) -> Any:
    """RFC 6902: applies ``ops`` to ``doc`` in place where it can and returns the new document."""
    return jsonpatch.apply_patch(doc, ops, in_place=True)


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: the merge of ``patch`` into ``target`` (changed in place when it is an object)."""
    if not isinstance(patch, dict):
        return patch
    into = target if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            into.pop(key, None)
        else:
            into[key] = apply_merge_patch(into.get(key), value)
    return into


_MISSING = object()


def lookup(doc: Any, pointer: str) -> Any:
    """The value ``pointer`` (RFC 6901) names in ``doc``, or ``None``."""
    if pointer == "":
        return doc
    at = doc
    for raw in pointer[1:].split("/"):
        key = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(at, list):
            at = at[int(key)] if key.isdigit() and int(key) < len(at) else _MISSING
        elif isinstance(at, dict):
            at = at.get(key, _MISSING)
        else:
            at = _MISSING
        if at is _MISSING:
            return None
    return at


def id_string(value: Any) -> str | None:
    """An id as herald spells it in ``resourceId``: strings as they are, other values as JSON."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


class Items:
    """A collection's items kept in the upstream's order, found by id: updates stay in place, new
    items go to the end, deletions close the gap. Positions are kept as they were when the index
    was built, with the removed ones since then (``holes``) counted off, so a deletion costs a
    binary search rather than renumbering every item after it."""

    def __init__(self, items_pointer: str = "", id_pointer: str = "/id") -> None:
        self._items = items_pointer
        self._id = id_pointer
        self._index: dict[str, int] | None = None
        self._holes: list[int] = []

    def reset(self) -> None:
        """The state was replaced: its positions are unknown."""
        self._index = None
        self._holes = []

    def key(self, item: Any) -> str | None:
        """The key an item is indexed by: its id as herald spells ``resourceId``."""
        return id_string(lookup(item, self._id))

    def apply(self, state: Any, kind: str, id: str, item: Any) -> Any:
        """Applies one item event (``created``, ``updated``, ``deleted``) to ``state`` in place."""
        items = lookup(state, self._items)
        if not isinstance(items, list):
            raise ValueError(f"the state has no array at {self._items!r}")
        index = self._positions(items)
        indexed = index.get(id)
        at = None if indexed is None else indexed - bisect_left(self._holes, indexed)
        if kind == "deleted":
            if indexed is not None and at is not None:
                del items[at]
                del index[id]
                insort(self._holes, indexed)
                # Rebuilt now and then, so that a lookup stays a short search.
                if len(self._holes) > 256:
                    self.reset()
        elif at is None:
            index[id] = len(items) + len(self._holes)
            items.append(item)
        else:
            items[at] = item
        return state

    def _positions(self, items: list[Any]) -> dict[str, int]:
        if self._index is None:
            self._index = {}
            self._holes = []
            for i, item in enumerate(items):
                key = self.key(item)
                if key is not None:
                    self._index[key] = i
        return self._index

"""The parser and the formats' rules, without a gateway."""

import pytest

from herald_client import Frame, SseParser, apply_merge_patch
from herald_client._apply import Items


def test_frames_are_parsed_whatever_the_chunks_and_line_endings() -> None:
    text = "retry: 250\r\n\r\n: heartbeat\nevent: snapshot\rid: a-1\r\ndata: [1,\ndata: 2]\n\nevent: patch\nid: a-2\ndata:[]\n\n"
    for size in range(1, len(text) + 1):
        parser = SseParser()
        frames = []
        for i in range(0, len(text), size):
            frames += parser.push(text[i : i + size])
        assert frames == [Frame("snapshot", "[1,\n2]", "a-1"), Frame("patch", "[]", "a-2")], f"chunks of {size}"
        assert parser.retry == 250
        assert parser.last_event_id == "a-2"


def test_an_id_with_nul_is_ignored_and_an_event_without_data_is_not_dispatched() -> None:
    parser = SseParser("start")
    assert parser.push("id: x\0y\nevent: nothing\n\ndata: 1\n\n") == [Frame("message", "1", "start")]


def test_a_merge_patch_replaces_removes_with_null_and_merges_objects() -> None:
    assert apply_merge_patch({"a": 1, "b": {"c": 2, "d": 3}, "e": [1]}, {"a": None, "b": {"c": 4}, "e": [2], "f": "x"}) == {
        "b": {"c": 4, "d": 3},
        "e": [2],
        "f": "x",
    }
    assert apply_merge_patch([1, 2], {"a": 1}) == {"a": 1}
    assert apply_merge_patch({"a": 1}, "whole") == "whole"


def test_collection_items_keep_their_order() -> None:
    items = Items("/data", "/id")
    state = {"data": [{"id": 1}, {"id": "b"}, {"id": 3}]}
    items.apply(state, "updated", "b", {"id": "b", "done": True})
    items.apply(state, "deleted", "1", None)
    items.apply(state, "created", "4", {"id": 4})
    items.apply(state, "updated", "3", {"id": 3, "x": 1})
    items.apply(state, "deleted", "missing", None)
    assert state == {"data": [{"id": "b", "done": True}, {"id": 3, "x": 1}, {"id": 4}]}
    with pytest.raises(ValueError, match="no array"):
        Items("/data").apply({"data": {}}, "created", "1", {})

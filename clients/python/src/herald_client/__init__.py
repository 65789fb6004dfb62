"""herald's client: keeps a live copy of a resource herald pushes (docs/sse.md)."""

from ._apply import apply_json_patch, apply_merge_patch
from ._sse import Frame, SseParser
from ._watch import Event, Watch, WatchEnd, WatchRefused, watch

__all__ = [
    "Event",
    "Frame",
    "SseParser",
    "Watch",
    "WatchEnd",
    "WatchRefused",
    "apply_json_patch",
    "apply_merge_patch",
    "watch",
]

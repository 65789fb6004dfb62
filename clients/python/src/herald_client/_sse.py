"""An event-stream parser (the WHATWG HTML "server-sent events" interpretation), fed text chunks
as they arrive."""

from __future__ import annotations

import re
from dataclasses import dataclass

_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class Frame:
    """One dispatched event."""

    event: str
    """The ``event:`` field, ``message`` when absent."""
    data: str
    """The ``data:`` lines joined with newlines."""
    id: str | None
    """The stream's last event id after this frame."""


class SseParser:
    """Fed text chunks as they arrive; each chunk is scanned once, however long its lines."""

    def __init__(self, last_event_id: str | None = None) -> None:
        self.last_event_id = last_event_id
        self.retry: int | None = None
        """The reconnection time the server asked for (``retry:``), in milliseconds."""
        self._pending: list[str] = []
        self._event = ""
        self._data: list[str] = []
        self._saw_carriage_return = False

    def push(self, chunk: str) -> list[Frame]:
        """Parses ``chunk`` and returns the frames it completed."""
        frames: list[Frame] = []
        start = 0
        # A "\r\n" split between two chunks: the "\n" ends no second line.
        if self._saw_carriage_return and chunk.startswith("\n"):
            start = 1
        self._saw_carriage_return = False
        for end in _BREAK.finditer(chunk, start):
            self._pending.append(chunk[start : end.start()])
            line = "".join(self._pending)
            self._pending = []
            self._line(line, frames)
            start = end.end()
        if chunk.endswith("\r"):
            self._saw_carriage_return = True
        if start < len(chunk):
            self._pending.append(chunk[start:])
        return frames

    def _line(self, line: str, frames: list[Frame]) -> None:
        if line == "":
            if self._data:
                frames.append(Frame(self._event or "message", "\n".join(self._data), self.last_event_id))
            self._event = ""
            self._data = []
            return
        if line.startswith(":"):
            return
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        elif field == "id":
            if "\0" not in value:
                self.last_event_id = value
        elif field == "retry":
            if value.isascii() and value.isdigit():
                self.retry = int(value)

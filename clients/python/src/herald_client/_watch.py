"""The live copy: one watch of one resource, over a stream or long polling."""

from __future__ import annotations

import asyncio
import codecs
import json
import logging
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urljoin, urlsplit

import httpx

from ._apply import Items, apply_json_patch, apply_merge_patch, id_string
from ._sse import Frame, SseParser


@dataclass(frozen=True)
class Event:
    """One event as the stream sent it, its data parsed."""

    type: str
    """The ``event:`` name: ``snapshot``, ``patch``, ``task.updated``, ``upstream-status``, …"""
    id: str | None
    """The stream's last event id after this event (none for long polling)."""
    data: Any


@dataclass(frozen=True)
class WatchEnd:
    """Why a watch ended: ``closed`` (``aclose()``), ``refused`` (herald or the API refused the
    request for good; ``status`` and ``body`` are its answer, e.g. 401) or ``not-a-stream`` (the URL
    answered neither an event stream nor a cached representation)."""

    reason: Literal["closed", "refused", "not-a-stream"]
    status: int | None = None
    body: str | None = None


class WatchRefused(Exception):
    """Raised by ``async for`` and ``run()`` when the watch ended refused."""

    def __init__(self, end: WatchEnd) -> None:
        super().__init__(f"{end.reason} ({end.status})" if end.status else end.reason)
        self.end = end


class _Retry(Exception):
    """A passing failure: try again, not before ``after`` seconds if given."""

    def __init__(self, message: str, after: float | None = None) -> None:
        super().__init__(message)
        self.after = after


class _CannotApply(Exception):
    """An event the copy cannot take: the copy is not the state herald diffed against."""


class _Refused(Exception):
    def __init__(self, end: WatchEnd) -> None:
        super().__init__(end.reason)
        self.end = end


_ITEM_EVENT = re.compile(r"\.(created|updated|deleted)$")

# How a connection ended: `again` to reconnect at once, `events` after the server's `retry:`,
# `nothing` after a growing back-off.
_Outcome = Literal["again", "events", "nothing"]

_log = logging.getLogger("herald_client")
# The shortest reconnection delay, whatever a server's `retry:` or the options say.
_MIN_DELAY = 0.1
# How often `auto` tries a stream again while it long-polls.
_PROBE_EVERY = 300.0


class Watch:
    """Keeps a live copy of the resource at ``url`` (a route's resource, or its ``/event-stream``).

    The copy starts from the stream's ``snapshot`` and applies every event in order, whatever the
    route's format; a later ``snapshot`` replaces it. A dropped connection is resumed with
    ``Last-Event-ID`` after a back-off. A refused credential (the API's 401 or 403, on connecting
    or as herald's ``error`` event) ends the watch: ``async for`` and ``run()`` raise
    ``WatchRefused``. Where streams are held back by a proxy, ``auto`` falls back to long polling
    (``Prefer: wait``) on routes with ``cache: true``, and tries a stream again every five minutes.

    Use it as an async iterator of states (the newest state each time; states that changed while
    the consumer was busy are skipped, not queued), with callbacks and ``run()``, or both::

        async for state in watch("http://127.0.0.1:8080/tasks"):
            print(state)

    The state is changed in place: treat it as read-only. Callbacks are plain functions; what
    they raise is logged (logger ``herald_client``) and the watch goes on.
    """

    def __init__(
        self,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        client: httpx.AsyncClient | None = None,
        on_state: Callable[[Any, Event], None] | None = None,
        on_event: Callable[[Event], None] | None = None,
        on_status: Callable[[dict[str, Any]], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
        collection_items: str = "",
        collection_id: str = "/id",
        transport: Literal["auto", "stream", "long-poll"] = "auto",
        last_event_id: str | None = None,
        state: Any = None,
        backoff: tuple[float, float] | None = None,
        idle_timeout: float = 45.0,
        open_timeout: float = 10.0,
        wait: int = 60,
    ) -> None:
        if urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"watch: {url!r} is not an http:// or https:// URL")
        if (last_event_id is None) != (state is None):
            raise ValueError("watch: last_event_id and state resume together: give both or neither")
        self.stream_url = url
        self.resource_url = re.sub(r"/event-stream(?=$|\?)", "", url, count=1)
        self.headers = dict(headers or {})
        self.state: Any = state
        """The live copy; ``None`` until the first snapshot."""
        self.has_state = state is not None
        self.last_event_id = last_event_id
        """The id to resume from."""
        self.transport: Literal["stream", "long-poll"] = "long-poll" if transport == "long-poll" else "stream"
        self.end: WatchEnd | None = None
        """Why the watch ended, once it has."""
        self._auto = transport == "auto"
        self._client = client
        self._own_client = client is None
        self._on_state = on_state
        self._on_event = on_event
        self._on_status = on_status
        self._on_error = on_error
        self._items = Items(collection_items, collection_id)
        self._backoff = backoff
        self._idle_timeout = idle_timeout
        self._open_timeout = open_timeout
        self._wait = min(wait, 120)
        self._retry: float | None = None
        self._silent_streams = 0
        self._ever_streamed = False
        self._probe_at = 0.0
        self._etag: str | None = None
        self._task: asyncio.Task[None] | None = None
        self._version = 0
        self._changed = asyncio.Event()

    # The public surface.

    def start(self) -> Watch:
        """Starts the watch in the background (``async with`` and ``async for`` do this)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def run(self) -> WatchEnd:
        """Runs the watch until it ends; raises ``WatchRefused`` if it ended refused. Cancelling
        it closes the watch."""
        self.start()
        assert self._task is not None
        try:
            await asyncio.shield(self._task)
        except asyncio.CancelledError:
            await self.aclose()
            raise
        return self._ended()

    async def aclose(self) -> None:
        """Ends the watch and its connection."""
        self._finish(WatchEnd("closed"))
        if self._task is not None and self._task is not asyncio.current_task():
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def __aenter__(self) -> Watch:
        return self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def __aiter__(self) -> AsyncIterator[Any]:
        # An iterator that started the watch ends it when the loop is left (`break`, an error).
        owner = self._task is None
        self.start()
        seen = 0
        try:
            while True:
                if self._version != seen and self.has_state:
                    seen = self._version
                    yield self.state
                    continue
                if self.end is not None:
                    self._ended()
                    return
                self._changed.clear()
                await self._changed.wait()
        finally:
            if owner:
                await self.aclose()

    # The loop.

    def _ended(self) -> WatchEnd:
        assert self.end is not None
        if self.end.reason != "closed":
            raise WatchRefused(self.end)
        return self.end

    def _finish(self, end: WatchEnd) -> None:
        if self.end is None:
            self.end = end
            self._changed.set()

    def _call(self, callback: Callable[..., None] | None, *args: Any) -> None:
        """Calls one of the user's callbacks: what it raises is logged, and the watch goes on."""
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            _log.exception("a herald_client callback raised")

    async def _run(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(follow_redirects=True)
        try:
            await self._loop()
        finally:
            if self._own_client:
                await self._client.aclose()

    async def _loop(self) -> None:
        failures = 0
        while self.end is None:
            if self._auto:
                self._choose()
            wait: float | None = None
            try:
                outcome = await (self._stream() if self.transport == "stream" else self._long_poll())
                if outcome == "again":
                    failures = 0
                    continue
                # A stream that gave events starts the back-off again (at the server's `retry:`).
                failures = 1 if outcome == "events" else failures + 1
            except _Refused as e:
                self._finish(e.end)
                return
            except (_Retry, _CannotApply, httpx.HTTPError, OSError, asyncio.TimeoutError, ValueError) as e:
                failures += 1
                if isinstance(e, _Retry):
                    wait = e.after
                if isinstance(e, _CannotApply):
                    self.last_event_id = None
                self._call(self._on_error, e)
            await asyncio.sleep(wait if wait is not None else self._delay(failures))

    def _choose(self) -> None:
        """``auto``: long polling after two silent streams while none ever worked; a stream again
        now and then."""
        if self.transport == "stream" and not self._ever_streamed and self._silent_streams >= 2:
            self.transport = "long-poll"
            self._probe_at = time.monotonic() + _PROBE_EVERY
        elif self.transport == "long-poll" and time.monotonic() >= self._probe_at:
            # One silent stream is enough to go back.
            self.transport = "stream"
            self._silent_streams = 1
            self._probe_at = time.monotonic() + _PROBE_EVERY

    def _delay(self, failures: int) -> float:
        """Full jitter over an exponential back-off from the server's ``retry:`` (or ``backoff[0]``)."""
        low, high = self._backoff or (self._retry if self._retry is not None else 1.0, 30.0)
        low = max(low, _MIN_DELAY)
        ceiling: float = min(max(high, low), low * 2.0 ** min(failures - 1, 16))
        return ceiling / 2 + random.random() * ceiling / 2

    async def _stream(self) -> _Outcome:
        assert self._client is not None
        headers = {**self.headers, "accept": "text/event-stream"}
        if self.last_event_id:
            headers["last-event-id"] = self.last_event_id
        # httpx's read timeout is the idle timeout: heartbeats keep a stream alive.
        timeout = httpx.Timeout(self._open_timeout, read=self._idle_timeout)
        accepted = opened = False
        events = 0
        try:
            # Until the answer's first byte: `open_timeout`.
            async with asyncio.timeout(self._open_timeout) as until_open:
                async with self._client.stream("GET", self.stream_url, headers=headers, timeout=timeout) as res:
                    await _refusal(res)
                    if not res.headers.get("content-type", "").lower().startswith("text/event-stream"):
                        raise _Refused(WatchEnd("not-a-stream", res.status_code, await _text(res)))
                    accepted = True
                    parser = SseParser(self.last_event_id)
                    # Always UTF-8 (whatever a charset says), a byte order mark dropped.
                    decoder = codecs.getincrementaldecoder("utf-8-sig")("replace")
                    async for chunk in res.aiter_bytes():
                        if not opened:
                            opened = True
                            until_open.reschedule(None)
                            self._ever_streamed = True
                            self._silent_streams = 0
                        for frame in parser.push(decoder.decode(chunk)):
                            if self.end is not None:
                                return "again"
                            if parser.retry is not None:
                                self._retry = parser.retry / 1000
                            events += 1
                            outcome = await self._handle(frame)
                            if outcome is not None:
                                return outcome
        except (httpx.HTTPError, OSError, asyncio.TimeoutError) as e:
            # Held back: answered and silent, or not answered within `open_timeout` at all.
            held = accepted or (isinstance(e, asyncio.TimeoutError) and not isinstance(e, httpx.HTTPError))
            if not opened and held and not self._ever_streamed:
                self._silent_streams += 1
            if events == 0:
                raise
            # A dropped stream that gave events: resumed from the last id after `retry:`.
            self._call(self._on_error, e)
            return "events"
        if not opened and accepted and not self._ever_streamed:
            self._silent_streams += 1
        return "events" if events > 0 else "nothing"

    async def _handle(self, frame: Frame) -> _Outcome | None:
        """Applies one frame; an outcome when the stream should end (herald's ``error`` event),
        else ``None``."""
        try:
            data = json.loads(frame.data)
        except ValueError:
            data = frame.data
        event = Event(frame.event, frame.id, data)
        fields = data if isinstance(data, dict) else {}
        if frame.event == "upstream-status":
            self.last_event_id = frame.id
            self._call(self._on_event, event)
            self._call(self._on_status, fields)
            return None
        if frame.event == "error":
            self._call(self._on_event, event)
            status = fields.get("status")
            if isinstance(status, int) and not isinstance(status, bool):
                raise _Refused(WatchEnd("refused", status, frame.data))
            # herald is shutting down or was reconfigured: again after the server's `retry:`.
            return "events"
        changed = True
        try:
            if frame.event in ("snapshot", "change"):
                self._replace(data)
            elif frame.event == "patch":
                self.state = apply_json_patch(self.state, data)
            elif frame.event == "merge-patch":
                self.state = apply_merge_patch(self.state, data)
            else:
                changed = await self._apply_item(frame.event, fields)
        except (_Refused, _CannotApply, httpx.HTTPError, OSError, asyncio.TimeoutError, _Retry):
            raise
        except Exception as e:
            raise _CannotApply(f"cannot apply {frame.event} {frame.id}: {e}") from e
        if self.end is not None:
            return "again"
        self.last_event_id = frame.id
        self._call(self._on_event, event)
        if changed and self.has_state:
            self._version += 1
            self._changed.set()
            self._call(self._on_state, self.state, event)
        return None

    def _replace(self, data: Any) -> None:
        self.state, self.has_state = data, True
        self._items.reset()

    async def _apply_item(self, type: str, event: dict[str, Any]) -> bool:
        """A collection's ``<type>.created/.updated/.deleted``; False for other events."""
        kind = _ITEM_EVENT.search(type)
        id = id_string(event.get("resourceId"))
        if kind is None or id is None:
            return False
        if not self.has_state:
            raise _CannotApply(f"{type} before a snapshot")
        item = event.get("resourceDetails", _LEAN)
        if item is _LEAN and kind[1] != "deleted":
            # A lean event (`payload: lean`) names its item: read it, with the same credentials.
            item = await self._read_item(event)
            if item is _LEAN:
                return False
        # Keyed as the held items are.
        key = (self._items.key(item) if item is not _LEAN else None) or id
        self.state = self._items.apply(self.state, kind[1], key, None if item is _LEAN else item)
        return True

    async def _read_item(self, event: dict[str, Any]) -> Any:
        """A lean event's item, from its ``self`` link: only on the watched origin, which the
        headers are for."""
        assert self._client is not None
        link = next((link.get("href") for link in event.get("_links", []) if link.get("rel") == "self"), None)
        if not isinstance(link, str):
            raise _CannotApply(f"a lean {event.get('eventType')} without a self link")
        url = urljoin(self.resource_url, link)
        if _origin(url) != _origin(self.resource_url):
            raise _CannotApply(f"a lean {event.get('eventType')} links to another origin ({_origin(url)})")
        res = await self._client.get(url, headers={**self.headers, "accept": "application/json"})
        # Gone since: its `deleted` event follows.
        if res.status_code == 404:
            return _LEAN
        await _refusal(res)
        return res.json()

    async def _long_poll(self) -> _Outcome:
        """One long poll: ``again`` when herald answered (a change, or "not modified" after
        holding it)."""
        assert self._client is not None
        headers = {**self.headers, "accept": "application/json"}
        asked_to_wait = self._etag is not None
        if self._etag is not None:
            headers["if-none-match"] = self._etag
            headers["prefer"] = f"wait={self._wait}"
        res = await self._client.get(
            self.resource_url, headers=headers, timeout=httpx.Timeout(10.0, read=self._wait + 30.0)
        )
        held = "preference-applied" in res.headers
        if res.status_code != 304:
            await _refusal(res)
            etag = res.headers.get("etag")
            if etag is None:
                raise _Refused(WatchEnd("not-a-stream", res.status_code, res.text))
            self._etag = etag
            try:
                data = res.json()
            except ValueError:
                data = res.text
            if self.end is not None:
                return "again"
            self._replace(data)
            event = Event("snapshot", None, data)
            self._call(self._on_event, event)
            self._version += 1
            self._changed.set()
            self._call(self._on_state, self.state, event)
        # An answer herald did not hold (a route without `cache: true` passes the request
        # through): poll at the back-off's pace instead of in a tight loop.
        return "again" if held or not asked_to_wait else "nothing"


_LEAN = object()


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc.rpartition("@")[2].lower()


async def _refusal(res: httpx.Response) -> None:
    """Raises for an answer that is not a success: ``_Refused`` for a final one, ``_Retry``
    otherwise."""
    if res.is_success:
        return
    body = await _text(res)
    after: float | None = None
    try:
        after = min(float(res.headers.get("retry-after", "")), 300.0)
    except ValueError:
        pass
    if res.status_code in (408, 425, 429) or res.status_code >= 500:
        raise _Retry(f"answered {res.status_code}", after if after and after > 0 else None)
    raise _Refused(WatchEnd("refused", res.status_code, body))


async def _text(res: httpx.Response) -> str:
    try:
        await res.aread()
        return res.text
    except httpx.HTTPError:
        return ""


watch = Watch
"""Watches ``url`` (a route's resource, or its ``/event-stream``) and keeps a live copy of it."""

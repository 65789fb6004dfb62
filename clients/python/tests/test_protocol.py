"""The client against scripted servers: what it does with answers herald gives rarely (or a
hostile or broken server gives), where the real gateway cannot be made to give them. The same
cases as clients/js/test/protocol.test.mjs."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from herald_client import Watch, WatchRefused, watch
from herald_client._apply import Items

from harness import run

Handler = Callable[[asyncio.StreamWriter, int], Awaitable[None]]


class Server:
    """Answers each request with ``handler(writer, n)`` (``n`` counts from 1); records heads."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[dict[str, str]] = []
        self.writers: list[asyncio.StreamWriter] = []
        self.url = ""

    async def __aenter__(self) -> Server:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        for w in self.writers:
            w.transport.abort()
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        lines = head.split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        self.requests.append(headers | {":target": lines[0].split(" ")[1]})
        try:
            await self.handler(writer, len(self.requests))
        except ConnectionError:
            pass


def stream_head(content_type: str = "text/event-stream") -> bytes:
    return f"HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\n\r\n".encode()


async def until(what: str, check: Callable[[], bool], timeout: float = 20) -> None:
    """Waits until ``check()`` holds (a slow machine only makes it take longer)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"never: {what}")
        await asyncio.sleep(0.02)


def test_collection_items_stay_in_order_through_random_changes() -> None:
    for _ in range(20):
        items = Items("/items", "/id")
        model = [{"id": i, "v": 0} for i in range(300)]
        state: dict[str, Any] = {"items": [dict(item) for item in model]}
        next_id = 300
        for step in range(2000):
            roll = random.random()
            if roll < 0.3 and model:
                at = random.randrange(len(model))
                items.apply(state, "deleted", str(model.pop(at)["id"]), None)
            elif roll < 0.5:
                item = {"id": next_id, "v": step}
                next_id += 1
                items.apply(state, "created", str(item["id"]), item)
                model.append(dict(item))
            elif model:
                at = random.randrange(len(model))
                item = {"id": model[at]["id"], "v": step}
                items.apply(state, "updated", str(item["id"]), item)
                model[at] = dict(item)
        assert state["items"] == model


def test_a_resumed_stream_that_stays_quiet_is_kept_open() -> None:
    async def handler(w: asyncio.StreamWriter, n: int) -> None:
        w.write(stream_head() + b"retry: 100\n\n")
        while True:
            await asyncio.sleep(0.1)
            w.write(b": heartbeat\n\n")
            await w.drain()

    async def test() -> None:
        async with Server(handler) as server:
            async with watch(server.url, last_event_id="x-5", state=[1], open_timeout=0.3, idle_timeout=1) as w:
                await asyncio.sleep(1.5)
                assert len(server.requests) == 1
                assert server.requests[0]["last-event-id"] == "x-5"
                assert w.transport == "stream" and w.state == [1]

    run(test)


def test_an_error_event_with_a_reason_reconnects_after_retry_not_at_once() -> None:
    async def handler(w: asyncio.StreamWriter, n: int) -> None:
        w.write(stream_head() + b'retry: 200\n\nevent: error\ndata: {"reason":"shutdown"}\n\n')
        await w.drain()
        w.close()

    async def test() -> None:
        async with Server(handler) as server:
            errors: list[Any] = []
            async with watch(server.url, on_event=lambda e: errors.append(e.data) if e.type == "error" else None):
                await asyncio.sleep(1)
            assert 1 <= len(server.requests) < 15, len(server.requests)
            assert errors[0] == {"reason": "shutdown"}

    run(test)


def test_a_refusal_in_the_stream_ends_the_watch() -> None:
    async def handler(w: asyncio.StreamWriter, n: int) -> None:
        w.write(stream_head() + b'event: snapshot\nid: 1\ndata: 1\n\nevent: error\ndata: {"status":401}\n\n')
        await w.drain()
        await asyncio.sleep(3600)

    async def test() -> None:
        async with Server(handler) as server:
            w = watch(server.url)
            with pytest.raises(WatchRefused) as refused:
                await w.run()
            assert refused.value.end.status == 401
            assert len(server.requests) == 1

    run(test)


def test_a_callback_that_raises_is_logged_and_the_watch_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(w: asyncio.StreamWriter, n: int) -> None:
        w.write(stream_head() + b"event: snapshot\nid: 1\ndata: 1\n\nevent: change\nid: 2\ndata: 2\n\n")
        await w.drain()
        await asyncio.sleep(3600)

    def bug(state: Any, event: Any) -> None:
        raise RuntimeError("app bug")

    async def test() -> None:
        async with Server(handler) as server:
            async with watch(server.url, on_state=bug) as w:
                await until("both events", lambda: w.last_event_id == "2")
                assert w.state == 2 and len(server.requests) == 1

    run(test)
    assert sum("callback raised" in r.message for r in caplog.records) == 2


def test_an_event_that_does_not_apply_is_reported_and_the_copy_starts_again_after_a_back_off() -> None:
    async def handler(w: asyncio.StreamWriter, n: int) -> None:
        w.write(stream_head() + f'event: snapshot\nid: {n}-1\ndata: {{"a":{n}}}\n\n'.encode())
        if n == 1:
            w.write(b'event: patch\nid: 1-2\ndata: [{"op":"remove","path":"/b"}]\n\n')
        await w.drain()
        await asyncio.sleep(3600)

    async def test() -> None:
        async with Server(handler) as server:
            errors: list[Exception] = []
            async with watch(server.url, on_error=errors.append, backoff=(0.1, 0.2)) as w:
                await until("the second snapshot", lambda: isinstance(w.state, dict) and w.state.get("a") == 2)
                assert len(errors) == 1 and "cannot apply patch 1-2" in str(errors[0])
                assert "last-event-id" not in server.requests[1]

    run(test)


def test_a_lean_event_is_read_from_its_self_link_with_the_watchs_headers() -> None:
    async def handler(w: asyncio.StreamWriter, n: int) -> None:
        if n > 1:
            w.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 16\r\n\r\n" + b'{"id":"1","v":2}')
            await w.drain()
            return
        w.write(stream_head() + b'event: snapshot\nid: 1\ndata: [{"id":"1","v":1}]\n\n')
        lean = b'{"eventType":"t.updated","resourceId":"1","_links":[{"href":"/t/1","rel":"self"}]}'
        w.write(b"event: t.updated\nid: 2\ndata: " + lean + b"\n\n")
        await w.drain()
        await asyncio.sleep(3600)

    async def test() -> None:
        async with Server(handler) as server:
            async with watch(f"{server.url}/t", headers={"authorization": "Bearer mine"}) as w:
                await until("the item read", lambda: w.last_event_id == "2")
                assert w.state == [{"id": "1", "v": 2}]
                read = next(r for r in server.requests if r[":target"] == "/t/1")
                assert read["authorization"] == "Bearer mine"

    run(test)


def test_a_lean_event_linking_to_another_origin_is_not_followed() -> None:
    async def thief_handler(w: asyncio.StreamWriter, n: int) -> None:
        w.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")

    async def test() -> None:
        async with Server(thief_handler) as thief:
            link = f"{thief.url}/steal"

            async def handler(w: asyncio.StreamWriter, n: int) -> None:
                w.write(stream_head() + f'event: snapshot\nid: {n}-1\ndata: [{{"id":"1"}}]\n\n'.encode())
                if n == 1:
                    lean = f'{{"eventType":"t.updated","resourceId":"1","_links":[{{"href":"{link}","rel":"self"}}]}}'
                    w.write(f"event: t.updated\nid: 1-2\ndata: {lean}\n\n".encode())
                await w.drain()
                await asyncio.sleep(3600)

            async with Server(handler) as server:
                errors: list[Exception] = []
                async with watch(server.url, headers={"authorization": "Bearer secret"}, on_error=errors.append, backoff=(0.1, 0.2)):
                    await until("a second stream", lambda: len(server.requests) >= 2)
                assert thief.requests == []
                assert "another origin" in str(errors[0])

    run(test)


def test_leaving_async_for_closes_the_watch_it_started() -> None:
    async def handler(w: asyncio.StreamWriter, n: int) -> None:
        w.write(stream_head("text/event-stream; charset=latin-1") + "\ufeffevent: snapshot\nid: 1\ndata: \"é\"\n\n".encode())
        await w.drain()
        await asyncio.sleep(3600)

    async def test() -> None:
        async with Server(handler) as server:
            w = watch(server.url)
            async for state in w:
                # UTF-8 whatever the charset says, the byte order mark dropped.
                assert state == "é"
                break
            # The loop's iterator is finalized (closed) by the event loop right after.
            await until("closed", lambda: w._task is not None and w._task.done())
            assert w.end is not None and w.end.reason == "closed"

    run(test)


def test_cancelling_run_closes_the_watch() -> None:
    async def handler(w: asyncio.StreamWriter, n: int) -> None:
        w.write(stream_head() + b"event: snapshot\nid: 1\ndata: 1\n\n")
        await w.drain()
        await asyncio.sleep(3600)

    async def test() -> None:
        async with Server(handler) as server:
            w = Watch(server.url)
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(w.run(), 0.5)
            assert w.end is not None and w.end.reason == "closed"

    run(test)


def test_resume_needs_both_the_id_and_the_state_and_a_url_needs_a_scheme() -> None:
    with pytest.raises(ValueError, match="both or neither"):
        watch("http://127.0.0.1:1/", last_event_id="x")
    with pytest.raises(ValueError, match="not an http"):
        watch("127.0.0.1:8080/tasks")

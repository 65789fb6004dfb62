"""The client against the real gateway: herald demo, its demo API, and a proxy that cuts
connections. Build herald first (``cargo build -p herald``) or set HERALD_BIN."""

import asyncio

import httpx
import pytest

from herald_client import Watch, WatchRefused, watch

from harness import FORMATS, Cutter, converges, herald, random_change, run


def test_each_format_equals_the_upstream_after_1000_changes_and_10_cut_connections() -> None:
    async def test() -> None:
        async with herald() as gw:
            proxy = await Cutter(gw.url.removeprefix("http://")).start()
            seen = {f["name"]: {"snapshots": 0, "events": 0} for f in FORMATS}

            def counter(name: str):
                def on_event(event) -> None:
                    seen[name]["events"] += 1
                    if event.type == "snapshot":
                        seen[name]["snapshots"] += 1
                return on_event

            watches = [
                watch(f"{proxy.url}{f['path']}/event-stream", headers=f["headers"], on_event=counter(f["name"])).start()
                for f in FORMATS
            ]
            try:
                for f, w in zip(FORMATS, watches):
                    await converges(gw.api, f, lambda w=w: w.state)
                cuts = 0
                for n in range(1000):
                    await random_change(gw.api, n)
                    if n % 100 == 50:
                        assert proxy.cut() > 0, "the proxy carried the streams"
                        cuts += 1
                    if n % 7 == 0:
                        await asyncio.sleep(0.02)
                assert cuts == 10
                for f, w in zip(FORMATS, watches):
                    await converges(gw.api, f, lambda w=w: w.state)
                    assert seen[f["name"]]["events"] > 20, f"{f['name']}: {seen[f['name']]}"
                    assert w.last_event_id
                # Resumed by id: a cut costs no snapshot (the merge-patch route sends one when a
                # task gains a null member, which no merge patch can say).
                for f in FORMATS:
                    if f["name"] != "merge-patch":
                        assert seen[f["name"]]["snapshots"] == 1, f"{f['name']}: {seen[f['name']]}"
            finally:
                for w in watches:
                    await w.aclose()
                await proxy.close()

    run(test)


def test_a_refused_credential_ends_the_watch_with_the_apis_401() -> None:
    async def test() -> None:
        async with herald() as gw:
            requests = 0

            async def count(request: httpx.Request) -> None:
                nonlocal requests
                requests += 1

            client = httpx.AsyncClient(event_hooks={"request": [count]})
            w = Watch(f"{gw.url}/me/tasks", headers={"authorization": "Bearer mallory"}, client=client)
            states = []
            with pytest.raises(WatchRefused) as refused:
                async for state in w:
                    states.append(state)
            assert refused.value.end.status == 401
            assert "unauthorized" in (refused.value.end.body or "")
            await asyncio.sleep(1)
            assert requests == 1
            assert states == [] and w.state is None
            with pytest.raises(WatchRefused):
                await w.run()
            await client.aclose()

    run(test)


def test_async_for_gives_the_newest_state_and_long_polling_keeps_the_copy() -> None:
    async def test() -> None:
        async with herald() as gw:
            f = FORMATS[0]
            async with watch(f"{gw.url}{f['path']}", transport="long-poll", wait=5) as w:
                await converges(gw.api, f, lambda: w.state)
                for n in range(30):
                    await random_change(gw.api, n * 3)
                await converges(gw.api, f, lambda: w.state)
                assert w.transport == "long-poll"
                expected = await gw.api.get("/tasks")
                async for state in w:
                    if state == expected:
                        break

    run(test)


def test_where_streams_are_blocked_auto_falls_back_to_long_polling() -> None:
    async def test() -> None:
        async with herald() as gw:
            held = 0

            async def handler(request: httpx.Request) -> httpx.Response:
                # A proxy that never answers a stream request (as one that buffers them).
                nonlocal held
                if "text/event-stream" in request.headers.get("accept", ""):
                    held += 1
                    await asyncio.sleep(3600)
                async with httpx.AsyncClient() as upstream:
                    answer = await upstream.get(gw.url + request.url.raw_path.decode(), headers=request.headers)
                    return httpx.Response(answer.status_code, headers=answer.headers, content=answer.content)

            client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
            f = FORMATS[0]
            async with watch(f"{gw.url}{f['path']}", client=client, open_timeout=0.5, backoff=(0.05, 0.2), wait=5) as w:
                await converges(gw.api, f, lambda: w.state)
                await random_change(gw.api, 0)
                await converges(gw.api, f, lambda: w.state)
                assert w.transport == "long-poll"
                assert held >= 2
            await client.aclose()

    run(test)

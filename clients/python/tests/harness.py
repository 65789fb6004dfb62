"""The real gateway for the client's tests: ``herald demo`` (the binary ``cargo build -p herald``
makes, or HERALD_BIN) with clients/testdata/gateway.yaml, the demo API beside it, a TCP proxy in
front of herald that can cut every connection, and a script of random writes to the API. The
same as clients/js/test/harness.mjs."""

from __future__ import annotations

import asyncio
import json
import os
import random
import socket
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable

import httpx

ROOT = Path(__file__).resolve().parents[3]
CONFIG = ROOT / "clients/testdata/gateway.yaml"
BIN = os.environ.get("HERALD_BIN", str(ROOT / "target/debug/herald"))
ALICE = {"authorization": "Bearer alice"}
TITLES = ["Water the plants", "Book the train", "Fix the login bug", "Answer Dana", "Plan the sprint"]

# The formats under test: the route, what to compare with, and the headers to send.
FORMATS = [
    {"name": "collection", "path": "/tasks", "upstream": "/tasks", "headers": {}},
    {"name": "merge-patch", "path": "/tasks/1", "upstream": "/tasks/1", "headers": {}},
    {"name": "json-patch", "path": "/board", "upstream": "/board", "headers": {}},
    {"name": "snapshot", "path": "/me/tasks", "upstream": "/me/tasks", "headers": ALICE},
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Api:
    """The demo API, written to directly (herald sees the writes by polling)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = httpx.AsyncClient(base_url=url, timeout=10)

    async def get(self, path: str, headers: dict[str, str] | None = None) -> Any:
        res = await self.http.get(path, headers=headers)
        res.raise_for_status()
        return res.json()

    async def send(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> None:
        res = await self.http.request(method, path, json=body, headers=headers)
        if not res.is_success and res.status_code != 404:
            raise AssertionError(f"{method} {path}: {res.status_code}")


class Herald:
    def __init__(self, url: str, api: Api, process: asyncio.subprocess.Process, logs: list[str]) -> None:
        self.url, self.api, self.process, self.logs = url, api, process, logs


@asynccontextmanager
async def herald() -> AsyncIterator[Herald]:
    """Runs ``herald demo`` until the block ends."""
    upstream = f"http://127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"} | {"HERALD_UPSTREAM": upstream}
    process = await asyncio.create_subprocess_exec(
        BIN, "demo", "-c", str(CONFIG), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )
    logs: list[str] = []
    addrs: dict[str, str] = {}
    assert process.stderr is not None

    async def ready() -> None:
        assert process.stderr is not None
        while line := (await process.stderr.readline()).decode():
            logs.append(line)
            try:
                fields = json.loads(line).get("fields", {})
            except ValueError:
                continue
            if "listener" in fields:
                addrs[fields["listener"]] = fields["addr"]
            if fields.get("ready") is True:
                return
        raise AssertionError("herald exited:\n" + "".join(logs))

    async def drain() -> None:
        assert process.stderr is not None
        while line := (await process.stderr.readline()).decode():
            logs.append(line)

    api = Api(upstream)
    drainer = None
    try:
        await asyncio.wait_for(ready(), 60)
        drainer = asyncio.create_task(drain())
        yield Herald(f"http://{addrs['public']}", api, process, logs)
    finally:
        if drainer is not None:
            drainer.cancel()
        if process.returncode is None:
            process.kill()
        await process.wait()
        await api.http.aclose()


class Cutter:
    """A TCP proxy to herald that can cut every connection it carries."""

    def __init__(self, target: str) -> None:
        self.host, port = target.rsplit(":", 1)
        self.port = int(port)
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> Cutter:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.close()
            return
        self.writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                dst.close()
                self.writers.discard(dst)

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def cut(self) -> int:
        n = len(self.writers)
        for w in list(self.writers):
            w.transport.abort()
        return n

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()


async def random_change(api: Api, n: int) -> None:
    """One random write: to the shared tasks (add, complete or reopen, retitle, delete; task "1"
    is kept, the list stays short) and, every third, to alice's own list."""
    if n % 3 == 2:
        mine = await api.get("/me/tasks", ALICE)
        roll = random.random()
        if roll < 0.4 or len(mine) < 2:
            return await api.send("POST", "/me/tasks", {"title": f"{random.choice(TITLES)} {n}"}, ALICE)
        if roll < 0.7:
            return await api.send("DELETE", f"/me/tasks/{random.choice(mine[1:])['id']}", None, ALICE)
        return await api.send("PATCH", f"/me/tasks/{random.choice(mine)['id']}", {"title": f"edit {n}"}, ALICE)
    tasks = await api.get("/tasks")
    roll = random.random()
    if roll < 0.25 and len(tasks) < 12:
        return await api.send("POST", "/tasks", {"title": f"{random.choice(TITLES)} {n}", "done": False})
    if roll < 0.45 and len(tasks) > 3:
        others = [t for t in tasks if t["id"] != "1"]
        return await api.send("DELETE", f"/tasks/{random.choice(others)['id']}")
    task = next(t for t in tasks if t["id"] == "1") if random.random() < 0.3 else random.choice(tasks)
    if random.random() < 0.5:
        return await api.send("PATCH", f"/tasks/{task['id']}", {"done": not task["done"]})
    await api.send("PATCH", f"/tasks/{task['id']}", {"title": f"{random.choice(TITLES)} ({n})", "note": None if n % 2 else f"n{n}"})


async def converges(api: Api, format: dict[str, Any], copy: Callable[[], Any], timeout: float = 30) -> None:
    """Waits until ``copy()`` equals the API's resource (read before and after, so that a write
    between does not count as a match); fails with both after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        before = await api.get(format["upstream"], format["headers"])
        held = copy()
        after = await api.get(format["upstream"], format["headers"])
        if held == before == after:
            return
        last = {"upstream": after, "copy": held}
        await asyncio.sleep(0.1)
    raise AssertionError(f"{format['name']}: the copy never matched the upstream: {last}")


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())

"""The Python half of clients/bench/patches.mjs: keeps a live copy of the stream at ``url`` until
``events`` patches after the snapshot are applied; prints the seconds that took (from the
request) and the copy."""

import asyncio
import json
import sys
import time

from herald_client import watch


async def main(url: str, events: int) -> None:
    seen = 0
    done = asyncio.Event()

    def on_event(event) -> None:
        nonlocal seen
        seen += 1
        if seen == events + 1:
            done.set()

    start = time.perf_counter()
    async with watch(url, on_event=on_event) as w:
        await asyncio.wait_for(done.wait(), 600)
        seconds = time.perf_counter() - start
        json.dump({"seconds": seconds, "state": w.state}, sys.stdout)


asyncio.run(main(sys.argv[1], int(sys.argv[2])))

// The client against the real gateway: herald demo, its demo API, and a proxy that cuts
// connections. Build herald first (`cargo build -p herald`) or set HERALD_BIN.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, test } from 'node:test';

import { watch } from '../dist/index.js';
import { converges, cutter, FORMATS, randomChange, sleep, startHerald } from './harness.mjs';

let herald;
before(async () => {
  herald = await startHerald();
});
after(async () => {
  await herald?.stop();
});

test('each format: the copy equals the upstream after 1,000 random changes and 10 cut connections', async () => {
  const proxy = await cutter(new URL(herald.url).host);
  const watches = FORMATS.map(format => {
    const seen = { snapshots: 0, events: 0 };
    const w = watch(`${proxy.url}${format.path}/event-stream`, {
      headers: format.headers,
      onEvent: event => {
        seen.events++;
        if (event.type === 'snapshot') seen.snapshots++;
      },
    });
    return { format, w, seen };
  });
  try {
    for (const { format, w } of watches) await converges(herald.api, format, () => w.state);
    let cuts = 0;
    for (let n = 0; n < 1000; n++) {
      await randomChange(herald.api, n);
      if (n % 100 === 50) {
        assert.ok(proxy.cut() > 0, 'the proxy carried the streams');
        cuts++;
      }
      // Let a poll see some changes one by one, others together.
      if (n % 7 === 0) await sleep(20);
    }
    assert.equal(cuts, 10);
    for (const { format, w, seen } of watches) {
      await converges(herald.api, format, () => w.state);
      assert.ok(seen.events > 20, `${format.name}: only ${seen.events} events`);
      assert.ok(w.lastEventId, `${format.name}: an id to resume from`);
    }
    // Resumed by id: a cut costs no snapshot (the merge-patch route sends one when a task gains
    // a null member, which no merge patch can say; the others never need one).
    for (const { format, seen } of watches.filter(({ format }) => format.name !== 'merge-patch')) {
      assert.equal(seen.snapshots, 1, `${format.name}: snapshots after resuming`);
    }
  } finally {
    for (const { w } of watches) w.close();
    await proxy.close();
  }
});

test('a refused credential ends the watch with the API\'s 401 and does not reconnect', async () => {
  let requests = 0;
  const counting = (url, init) => {
    requests++;
    return fetch(url, init);
  };
  const states = [];
  const w = watch(`${herald.url}/me/tasks`, {
    headers: { authorization: 'Bearer mallory' },
    fetch: counting,
    onState: state => states.push(state),
  });
  const end = await w.ended;
  assert.equal(end.reason, 'refused');
  assert.equal(end.status, 401);
  assert.match(end.body, /unauthorized/);
  await sleep(1000);
  assert.equal(requests, 1);
  assert.deepEqual(states, []);
  assert.equal(w.state, undefined);
});

test('long polling keeps the copy too', async () => {
  const format = FORMATS[0];
  const w = watch(`${herald.url}${format.path}`, { transport: 'long-poll', wait: 5 });
  try {
    await converges(herald.api, format, () => w.state);
    for (let n = 0; n < 30; n++) await randomChange(herald.api, n * 3);
    await converges(herald.api, format, () => w.state);
    assert.equal(w.transport, 'long-poll');
  } finally {
    w.close();
  }
});

test('where streams are blocked, auto falls back to long polling', async () => {
  // A proxy that never answers a stream request (as one that buffers them) and passes the rest.
  const target = herald.url;
  const held = new Set();
  const proxy = http.createServer(async (req, res) => {
    if ((req.headers.accept ?? '').includes('text/event-stream')) {
      held.add(res);
      return;
    }
    try {
      const headers = { ...req.headers };
      delete headers.host;
      const answer = await fetch(target + req.url, { headers });
      const body = Buffer.from(await answer.arrayBuffer());
      const out = {};
      for (const name of ['content-type', 'etag', 'preference-applied']) {
        const value = answer.headers.get(name);
        if (value !== null) out[name] = value;
      }
      res.writeHead(answer.status, out).end(body);
    } catch {
      res.destroy();
    }
  });
  await new Promise(resolve => proxy.listen(0, '127.0.0.1', resolve));
  const format = FORMATS[0];
  const w = watch(`http://127.0.0.1:${proxy.address().port}${format.path}`, {
    openTimeout: 500,
    backoff: { min: 50, max: 200 },
    wait: 5,
  });
  try {
    await converges(herald.api, format, () => w.state);
    await randomChange(herald.api, 0);
    await converges(herald.api, format, () => w.state);
    assert.equal(w.transport, 'long-poll');
    assert.ok(held.size >= 2, 'two streams were tried first');
  } finally {
    w.close();
    for (const res of held) res.destroy();
    proxy.closeAllConnections();
    await new Promise(resolve => proxy.close(resolve));
  }
});

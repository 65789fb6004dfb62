// The client against scripted servers: what it does with answers herald gives rarely (or a
// hostile or broken server gives), where the real gateway cannot be made to give them.
import assert from 'node:assert/strict';
import http from 'node:http';
import { test } from 'node:test';

import { applyMergePatch, watch } from '../dist/index.js';
import { Items } from '../dist/apply.js';
import { freePort, sleep } from './harness.mjs';

/** A server whose every request `handler(req, res, n)` answers (`n` counts from 1). */
async function serve(handler, port = 0) {
  let n = 0;
  const requests = [];
  const server = http.createServer((req, res) => {
    requests.push({ url: req.url, headers: req.headers });
    handler(req, res, ++n);
  });
  await new Promise(resolve => server.listen(port, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    close: () => {
      server.closeAllConnections();
      return new Promise(resolve => server.close(resolve));
    },
  };
}

const stream = (res, text) => {
  res.writeHead(200, { 'content-type': 'text/event-stream' });
  if (text) res.write(text);
};

/** Waits until `check()` holds (a slow machine only makes it take longer). */
async function until(what, check, timeout = 20_000) {
  const deadline = Date.now() + timeout;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`never: ${what}`);
    await sleep(20);
  }
}

test('a merge patch member named __proto__ is a member, never the prototype', () => {
  const state = applyMergePatch({ meta: {} }, JSON.parse('{"meta":{"__proto__":{"polluted":"yes"}},"__proto__":{"x":1}}'));
  assert.equal({}.polluted, undefined);
  assert.equal(Object.getPrototypeOf(state), Object.prototype);
  assert.deepEqual(Object.keys(state), ['meta', '__proto__']);
  assert.deepEqual(JSON.parse(JSON.stringify(state)), JSON.parse('{"meta":{"__proto__":{"polluted":"yes"}},"__proto__":{"x":1}}'));
});

test('collection items stay in order through random creations, updates and deletions', () => {
  for (let round = 0; round < 20; round++) {
    const items = new Items('/items', '/id');
    const model = Array.from({ length: 300 }, (_, i) => ({ id: i, v: 0 }));
    const state = { items: model.map(item => ({ ...item })) };
    let next = 300;
    for (let step = 0; step < 2000; step++) {
      const roll = Math.random();
      if (roll < 0.3 && model.length > 0) {
        const at = Math.floor(Math.random() * model.length);
        items.apply(state, 'deleted', String(model[at].id), undefined);
        model.splice(at, 1);
      } else if (roll < 0.5) {
        const item = { id: next++, v: step };
        items.apply(state, 'created', String(item.id), item);
        model.push({ ...item });
      } else if (model.length > 0) {
        const at = Math.floor(Math.random() * model.length);
        const item = { id: model[at].id, v: step };
        items.apply(state, 'updated', String(item.id), item);
        model[at] = { ...item };
      }
    }
    assert.deepEqual(state.items, model);
  }
});

test('ids beyond 2^53 are matched as the held items are keyed', async () => {
  const big = '12345678901234567890';
  const server = await serve((req, res) => {
    stream(res, `event: snapshot\nid: 1\ndata: [{"id":${big},"v":1},{"id":2.0,"v":1}]\n\n`);
    res.write(`event: t.updated\nid: 2\ndata: {"resourceId":"${big}","resourceDetails":{"id":${big},"v":2}}\n\n`);
    res.write(`event: t.updated\nid: 3\ndata: {"resourceId":"2.0","resourceDetails":{"id":2.0,"v":2}}\n\n`);
  });
  const w = watch(server.url);
  try {
    await until('both updated', () => w.lastEventId === '3');
    assert.deepEqual(w.state.map(t => t.v), [2, 2]);
  } finally {
    w.close();
    await server.close();
  }
});

test('a resumed stream that stays quiet is kept open (heartbeats are enough)', async () => {
  const server = await serve((req, res) => {
    stream(res, 'retry: 100\n\n');
    const beat = setInterval(() => res.write(': heartbeat\n\n'), 100);
    res.on('close', () => clearInterval(beat));
  });
  const w = watch(server.url, { lastEventId: 'x-5', state: [1], openTimeout: 300, idleTimeout: 1000 });
  try {
    await sleep(1500);
    assert.equal(server.requests.length, 1, 'one stream, never reopened');
    assert.equal(server.requests[0].headers['last-event-id'], 'x-5');
    assert.equal(w.transport, 'stream');
    assert.deepEqual(w.state, [1]);
  } finally {
    w.close();
    await server.close();
  }
});

test('herald\'s error event with a reason: reconnected after retry, not at once', async () => {
  const server = await serve((req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.end('retry: 200\n\nevent: error\ndata: {"reason":"shutdown"}\n\n');
  });
  const errors = [];
  const w = watch(server.url, { onEvent: e => e.type === 'error' && errors.push(e.data) });
  try {
    await sleep(1000);
    assert.ok(server.requests.length >= 1 && server.requests.length < 15, `${server.requests.length} requests in 1 s`);
    assert.deepEqual(errors[0], { reason: 'shutdown' });
  } finally {
    w.close();
    await server.close();
  }
});

test('retry: 0 is taken as the shortest delay, not none', async () => {
  const server = await serve((req, res) => {
    res.writeHead(200, { 'content-type': 'text/event-stream' });
    res.end('retry: 0\n\nevent: snapshot\nid: 1\ndata: 1\n\n');
  });
  const w = watch(server.url, { onError: () => {} });
  try {
    await sleep(1000);
    assert.ok(server.requests.length < 25, `${server.requests.length} requests in 1 s`);
  } finally {
    w.close();
    await server.close();
  }
});

test('auto keeps streaming when the server is down at first (refused connections are no proxy)', async () => {
  const port = await freePort();
  const w = watch(`http://127.0.0.1:${port}/tasks`, { backoff: { min: 100, max: 200 }, onError: () => {} });
  try {
    await sleep(1000);
    const server = await serve((req, res) => stream(res, 'event: snapshot\nid: 1\ndata: [1]\n\n'), port);
    try {
      await until('a snapshot', () => w.state !== undefined);
      assert.equal(w.transport, 'stream');
    } finally {
      await server.close();
    }
  } finally {
    w.close();
  }
});

test('a lean event linking to another origin is not followed with the credentials: the copy starts again', async () => {
  const thief = await serve((req, res) => res.end('{}'));
  const server = await serve((req, res, n) => {
    stream(res, `event: snapshot\nid: ${n}-1\ndata: [{"id":"1"}]\n\n`);
    if (n === 1) {
      res.write(`event: t.updated\nid: 1-2\ndata: {"eventType":"t.updated","resourceId":"1","_links":[{"href":"${thief.url}/steal","rel":"self"}]}\n\n`);
    }
  });
  const errors = [];
  const w = watch(server.url, { headers: { authorization: 'Bearer secret' }, onError: e => errors.push(e.message), backoff: { min: 100 } });
  try {
    await until('a second stream', () => server.requests.length >= 2);
    assert.equal(thief.requests.length, 0);
    assert.match(errors[0], /another origin/);
    assert.equal(server.requests[1].headers['last-event-id'], undefined, 'from a snapshot');
  } finally {
    w.close();
    await server.close();
    await thief.close();
  }
});

test('a lean event: its item is read from its self link with the watch\'s headers', async () => {
  const server = await serve((req, res) => {
    if (req.url === '/t/1') return res.writeHead(200, { 'content-type': 'application/json' }).end('{"id":"1","v":2}');
    stream(res, 'event: snapshot\nid: 1\ndata: [{"id":"1","v":1}]\n\n');
    res.write('event: t.updated\nid: 2\ndata: {"eventType":"t.updated","resourceId":"1","_links":[{"href":"/t/1","rel":"self"}]}\n\n');
  });
  const w = watch(`${server.url}/t`, { headers: { authorization: 'Bearer mine' } });
  try {
    await until('the item read', () => w.lastEventId === '2');
    assert.deepEqual(w.state, [{ id: '1', v: 2 }]);
    const read = server.requests.find(r => r.url === '/t/1');
    assert.equal(read.headers.authorization, 'Bearer mine');
  } finally {
    w.close();
    await server.close();
  }
});

test('a patch that does not apply: reported, and the copy starts again from a snapshot', async () => {
  const server = await serve((req, res, n) => {
    stream(res, `event: snapshot\nid: ${n}-1\ndata: {"a":${n}}\n\n`);
    if (n === 1) res.write('event: patch\nid: 1-2\ndata: [{"op":"remove","path":"/b"}]\n\n');
  });
  const errors = [];
  const w = watch(server.url, { onError: e => errors.push(e.message), backoff: { min: 100 } });
  try {
    await until('the second snapshot', () => w.state?.a === 2);
    assert.equal(errors.length, 1);
    assert.match(errors[0], /cannot apply patch 1-2/);
    assert.equal(server.requests[1].headers['last-event-id'], undefined);
  } finally {
    w.close();
    await server.close();
  }
});

test('a callback that throws is reported and the watch goes on', async () => {
  const server = await serve((req, res) => {
    stream(res, 'event: snapshot\nid: 1\ndata: 1\n\nevent: change\nid: 2\ndata: 2\n\n');
  });
  const reported = [];
  const original = console.error;
  console.error = (...args) => reported.push(args);
  const w = watch(server.url, {
    onState: () => {
      throw new Error('app bug');
    },
  });
  try {
    await until('both events', () => w.lastEventId === '2');
    assert.equal(w.state, 2);
    assert.equal(server.requests.length, 1);
    assert.equal(reported.length, 2);
  } finally {
    console.error = original;
    w.close();
    await server.close();
  }
});

test('close() ends a watch waiting to reconnect at once', async () => {
  const server = await serve((req, res) => res.writeHead(503, { 'retry-after': '60' }).end());
  const w = watch(server.url, { onError: () => {} });
  await until('a first request', () => server.requests.length === 1);
  await sleep(100);
  const timers = () => process.getActiveResourcesInfo().filter(r => r === 'Timeout').length;
  const waiting = timers();
  w.close();
  assert.deepEqual(await w.ended, { reason: 'closed' });
  await sleep(10);
  assert.ok(timers() < waiting, 'the back-off timer is gone');
  await server.close();
});

test('lastEventId and state resume together', () => {
  assert.throws(() => watch('http://127.0.0.1:1/', { lastEventId: 'x' }), /give both or neither/);
});

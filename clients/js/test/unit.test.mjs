// The parser and the formats' rules, without a gateway.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { applyMergePatch, SseParser } from '../dist/index.js';
import { Items } from '../dist/apply.js';

test('frames are parsed whatever the chunks and line endings', () => {
  const text = 'retry: 250\r\n\r\n: heartbeat\nevent: snapshot\rid: a-1\r\ndata: [1,\ndata: 2]\n\nevent: patch\nid: a-2\ndata:[]\n\n';
  for (let size = 1; size <= text.length; size++) {
    const parser = new SseParser();
    const frames = [];
    for (let i = 0; i < text.length; i += size) frames.push(...parser.push(text.slice(i, i + size)));
    assert.deepEqual(frames, [
      { event: 'snapshot', data: '[1,\n2]', id: 'a-1' },
      { event: 'patch', data: '[]', id: 'a-2' },
    ], `chunks of ${size}`);
    assert.equal(parser.retry, 250);
    assert.equal(parser.lastEventId, 'a-2');
  }
});

test('an id with NUL is ignored, an event without data is not dispatched, a frame without a name is a message', () => {
  const parser = new SseParser('start');
  assert.deepEqual(parser.push('id: x\0y\nevent: nothing\n\ndata: 1\n\n'), [{ event: 'message', data: '1', id: 'start' }]);
});

test('a merge patch replaces, removes with null and merges objects', () => {
  assert.deepEqual(applyMergePatch({ a: 1, b: { c: 2, d: 3 }, e: [1] }, { a: null, b: { c: 4 }, e: [2], f: 'x' }), {
    b: { c: 4, d: 3 },
    e: [2],
    f: 'x',
  });
  assert.deepEqual(applyMergePatch([1, 2], { a: 1 }), { a: 1 });
  assert.equal(applyMergePatch({ a: 1 }, 'whole'), 'whole');
});

test('collection items keep their order: updated in place, created at the end, deleted closing the gap', () => {
  const items = new Items('/data', '/id');
  let state = { data: [{ id: 1 }, { id: 'b' }, { id: 3 }] };
  state = items.apply(state, 'updated', 'b', { id: 'b', done: true });
  state = items.apply(state, 'deleted', '1', undefined);
  state = items.apply(state, 'created', '4', { id: 4 });
  state = items.apply(state, 'updated', '3', { id: 3, x: 1 });
  state = items.apply(state, 'deleted', 'missing', undefined);
  assert.deepEqual(state, { data: [{ id: 'b', done: true }, { id: 3, x: 1 }, { id: 4 }] });
  assert.throws(() => items.apply({ data: {} }, 'created', '1', {}), /no array/);
});

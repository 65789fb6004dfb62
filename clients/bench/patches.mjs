// How fast each client keeps a live copy: a snapshot of a ~1 MiB document and then 10,000
// `patch` events (RFC 6902, as herald's json-patch format sends them: a field replaced, an item
// added or removed), served as one event stream from loopback. The JS client reads it in this
// process, the Python client in a child process, from the same bytes; each copy must end equal
// to the document the patches make. Timed from the request to the last event applied (the
// snapshot's parse included). docs/benchmarks.md has the figures.
//
//   node clients/bench/patches.mjs [--events 10000] [--bytes 1048576]
//
// Needs clients/js built (npm run build) and clients/python's virtualenv (clients/test.sh makes
// both).

import { spawn } from 'node:child_process';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { applyJsonPatch, watch } from '../js/dist/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({ options: { events: { type: 'string', default: '10000' }, bytes: { type: 'string', default: '1048576' } } });
const EVENTS = Number(values.events);
const BYTES = Number(values.bytes);

// A deterministic random sequence, so that each run serves the same stream.
let seed = 42;
const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);

function item(i) {
  return { id: `t${i}`, title: `Task ${i} ${'x'.repeat(Math.floor(random() * 60))}`, done: random() < 0.5, owner: `user${i % 97}`, tags: ['a', 'b'] };
}

const doc = { title: 'Board', items: [] };
let next = 0;
while (JSON.stringify(doc).length < BYTES) doc.items.push(item(next++));
const snapshot = JSON.stringify(doc);
let expected = JSON.parse(snapshot);
const frames = [`retry: 1000\n\nevent: snapshot\nid: b-0\ndata: ${snapshot}\n\n`];
for (let n = 1; n <= EVENTS; n++) {
  const at = Math.floor(random() * expected.items.length);
  const roll = random();
  let ops;
  if (roll < 0.8) ops = [{ op: 'replace', path: `/items/${at}/title`, value: `Task edited ${n}` }];
  else if (roll < 0.9) ops = [{ op: 'add', path: `/items/${at}`, value: item(next++) }];
  else ops = [{ op: 'remove', path: `/items/${at}` }];
  expected = applyJsonPatch(expected, ops);
  frames.push(`event: patch\nid: b-${n}\ndata: ${JSON.stringify(ops)}\n\n`);
}
const stream = Buffer.from(frames.join(''));
const final = JSON.stringify(expected);

const server = http.createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  // In 64 KiB writes, as a socket would carry it; the stream then stays open, as herald's does.
  for (let i = 0; i < stream.length; i += 65536) res.write(stream.subarray(i, i + 65536));
});
await new Promise(resolve => server.listen(0, '127.0.0.1', resolve));
const url = `http://127.0.0.1:${server.address().port}/board/event-stream`;

function js() {
  return new Promise((resolve, reject) => {
    let events = 0;
    const start = performance.now();
    const w = watch(url, {
      onEvent: () => {
        if (++events === EVENTS + 1) {
          const seconds = (performance.now() - start) / 1000;
          w.close();
          if (JSON.stringify(w.state) !== final) reject(new Error('the JS copy differs from the expected document'));
          resolve({ seconds, rate: EVENTS / seconds });
        }
      },
    });
  });
}

function python() {
  const bin = path.join(here, '../python/.venv/bin/python');
  return new Promise((resolve, reject) => {
    const child = spawn(bin, [path.join(here, 'patches.py'), url, String(EVENTS)], { stdio: ['pipe', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', chunk => (out += chunk));
    child.on('error', reject);
    child.on('exit', code => {
      if (code !== 0) return reject(new Error(`patches.py exited ${code}`));
      const result = JSON.parse(out);
      // Compared as values: Python writes its own JSON.
      if (JSON.stringify(result.state) !== final) return reject(new Error('the Python copy differs from the expected document'));
      resolve({ seconds: result.seconds, rate: EVENTS / result.seconds });
    });
  });
}

const runs = { js: [], python: [] };
for (let i = 0; i < 3; i++) {
  runs.js.push(await js());
  runs.python.push(await python());
}
server.closeAllConnections();
server.close();
const best = list => list.reduce((a, b) => (a.rate > b.rate ? a : b));
const summary = {
  scenario: 'client-patches',
  document_bytes: snapshot.length,
  items: doc.items.length,
  events: EVENTS,
  stream_bytes: stream.length,
  js_events_per_second: Math.round(best(runs.js).rate),
  python_events_per_second: Math.round(best(runs.python).rate),
  js_runs: runs.js.map(r => Math.round(r.rate)),
  python_runs: runs.python.map(r => Math.round(r.rate)),
};
console.log(`client-patches: ${summary.events} patch events on a ${summary.document_bytes}-byte document (${summary.items} items), best of 3`);
console.log(`  JS (node ${process.version}):  ${summary.js_events_per_second} events/s   runs ${summary.js_runs.join(', ')}`);
console.log(`  Python:            ${summary.python_events_per_second} events/s   runs ${summary.python_runs.join(', ')}`);
console.log(JSON.stringify(summary));

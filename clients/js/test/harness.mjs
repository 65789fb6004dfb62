// The real gateway for the client's tests: `herald demo` (the binary `cargo build -p herald`
// makes, or HERALD_BIN) with clients/testdata/gateway.yaml, the demo API beside it, a TCP proxy
// in front of herald that can cut every connection, and a script of random writes to the API.

import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '../../..');
export const CONFIG = path.join(root, 'clients/testdata/gateway.yaml');
const BIN = process.env.HERALD_BIN ?? path.join(root, 'target/debug/herald');

/** A port free on 127.0.0.1 now. */
export async function freePort() {
  const server = net.createServer();
  await new Promise(resolve => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  await new Promise(resolve => server.close(resolve));
  return port;
}

/** Starts `herald demo`; resolves when it logs that it is ready. */
export async function startHerald() {
  const upstream = `http://127.0.0.1:${await freePort()}`;
  const env = { ...process.env, HERALD_UPSTREAM: upstream };
  delete env.RUST_LOG;
  const child = spawn(BIN, ['demo', '-c', CONFIG], {
    env,
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  const logs = [];
  const lines = readline.createInterface({ input: child.stderr });
  const ready = new Promise((resolve, reject) => {
    const addrs = {};
    const timer = setTimeout(() => reject(new Error(`herald did not start:\n${logs.join('\n')}`)), 60_000);
    child.on('exit', code => reject(new Error(`herald exited ${code}:\n${logs.join('\n')}`)));
    lines.on('line', line => {
      logs.push(line);
      let fields;
      try {
        fields = JSON.parse(line).fields ?? {};
      } catch {
        return;
      }
      if (fields.listener) addrs[fields.listener] = fields.addr;
      if (fields.ready === true) {
        clearTimeout(timer);
        resolve(addrs);
      }
    });
  });
  const addrs = await ready;
  return {
    url: `http://${addrs.public}`,
    api: new Api(upstream),
    logs,
    stop: () => new Promise(resolve => {
      if (child.exitCode !== null) return resolve();
      child.once('exit', resolve);
      child.kill('SIGKILL');
    }),
  };
}

/** The demo API, written to directly (herald sees the writes by polling). */
export class Api {
  constructor(url) {
    this.url = url;
  }

  async get(path, headers = {}) {
    const res = await fetch(this.url + path, { headers });
    if (!res.ok) throw new Error(`GET ${path}: ${res.status}`);
    return res.json();
  }

  async send(method, path, body, headers = {}) {
    const res = await fetch(this.url + path, {
      method,
      headers: { 'content-type': 'application/json', ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!res.ok && res.status !== 404) throw new Error(`${method} ${path}: ${res.status}`);
  }
}

const ALICE = { authorization: 'Bearer alice' };
const TITLES = ['Water the plants', 'Book the train', 'Fix the login bug', 'Answer Dana', 'Plan the sprint'];

/**
 * One random write: to the shared tasks (add, complete or reopen, retitle, delete; task "1" is
 * kept, the list stays short) and, every third, to alice's own list.
 */
export async function randomChange(api, n) {
  const pick = list => list[Math.floor(Math.random() * list.length)];
  if (n % 3 === 2) {
    const mine = await api.get('/me/tasks', ALICE);
    const roll = Math.random();
    if (roll < 0.4 || mine.length < 2) return api.send('POST', '/me/tasks', { title: `${pick(TITLES)} ${n}` }, ALICE);
    if (roll < 0.7 && mine.length > 1) return api.send('DELETE', `/me/tasks/${pick(mine.slice(1)).id}`, undefined, ALICE);
    return api.send('PATCH', `/me/tasks/${pick(mine).id}`, { title: `edit ${n}` }, ALICE);
  }
  const tasks = await api.get('/tasks');
  const roll = Math.random();
  if (roll < 0.25 && tasks.length < 12) return api.send('POST', '/tasks', { title: `${pick(TITLES)} ${n}`, done: false });
  if (roll < 0.45 && tasks.length > 3) {
    const others = tasks.filter(t => t.id !== '1');
    return api.send('DELETE', `/tasks/${pick(others).id}`);
  }
  const task = Math.random() < 0.3 ? tasks.find(t => t.id === '1') : pick(tasks);
  if (Math.random() < 0.5) return api.send('PATCH', `/tasks/${task.id}`, { done: !task.done });
  return api.send('PATCH', `/tasks/${task.id}`, { title: `${pick(TITLES)} (${n})`, note: n % 2 ? null : `n${n}` });
}

/** The formats under test: the route, what to compare with, and the watch's options. */
export const FORMATS = [
  { name: 'collection', path: '/tasks', upstream: '/tasks', headers: {} },
  { name: 'merge-patch', path: '/tasks/1', upstream: '/tasks/1', headers: {} },
  { name: 'json-patch', path: '/board', upstream: '/board', headers: {} },
  { name: 'snapshot', path: '/me/tasks', upstream: '/me/tasks', headers: ALICE },
];

/** A TCP proxy to `target` (host:port) that can cut every connection it carries. */
export async function cutter(target) {
  const [host, port] = target.split(':');
  const sockets = new Set();
  const server = net.createServer(client => {
    const upstream = net.connect(Number(port), host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {});
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise(resolve => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    cut() {
      const n = sockets.size;
      for (const s of sockets) s.destroy();
      return n;
    },
    close: () => {
      for (const s of sockets) s.destroy();
      return new Promise(resolve => server.close(resolve));
    },
  };
}

/** JSON with object keys sorted, so that equal values compare equal. */
export function canonical(value) {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    return `{${Object.keys(value).sort().map(k => `${JSON.stringify(k)}:${canonical(value[k])}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

export const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

/**
 * Waits until `copy()` equals the API's `path` (read before and after, so that a write between
 * does not count as a match); fails with both after `timeout`.
 */
export async function converges(api, format, copy, timeout = 30_000) {
  const deadline = Date.now() + timeout;
  let last;
  while (Date.now() < deadline) {
    const before = canonical(await api.get(format.upstream, format.headers));
    const held = canonical(await copy());
    const after = canonical(await api.get(format.upstream, format.headers));
    if (held === before && before === after) return;
    last = { upstream: after, copy: held };
    await sleep(100);
  }
  throw new Error(`${format.name}: the copy never matched the upstream: ${JSON.stringify(last)}`);
}

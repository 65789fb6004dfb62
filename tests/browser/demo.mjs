// Drives Debian's Chromium against herald for tests/browser.rs, which starts the API and herald
// (over TLS, so the browser speaks HTTP/2) and restarts herald when this script prints KILL.
//
//   1. The demo page keeps its task list equal to the API's.
//   2. KILL: herald is killed (-9) and started again; the page's EventSource reconnects and the
//      list is equal to the API's again (a snapshot, since the old ids are from a dead process).
//   3. Eight more EventSources open at once and all get their snapshot: over HTTP/1.1 a browser
//      allows six connections per origin, so this needs HTTP/2's multiplexing.
// Prints OK and exits 0 when all hold; anything else is a failure with the reason on stderr.

import readline from 'node:readline';
import { chromium } from 'playwright-core';

const { HERALD_URL, API_URL, CHROMIUM, SCREENSHOT } = process.env;
const input = readline.createInterface({ input: process.stdin });
const lines = input[Symbol.asyncIterator]();
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

/** The API's tasks, as `title|done`, sorted (titles may repeat). */
async function apiTasks() {
  const tasks = await (await fetch(`${API_URL}/tasks`)).json();
  return tasks.map(t => `${t.title}|${t.done}`).sort();
}

/** What the page shows, the same way. */
async function pageTasks(page) {
  const shown = await page.$$eval('#tasks li', items => items.map(li => `${li.textContent}|${li.className === 'done'}`));
  return shown.sort();
}

/** Waits until the page shows what the API holds (the API changes meanwhile: compared between two reads of it). */
async function converges(page, when) {
  const deadline = Date.now() + 20_000;
  let last;
  while (Date.now() < deadline) {
    const before = await apiTasks();
    const shown = await pageTasks(page);
    const after = await apiTasks();
    last = { api: after, page: shown };
    if (shown.length > 0 && JSON.stringify(shown) === JSON.stringify(before) && JSON.stringify(before) === JSON.stringify(after)) {
      return;
    }
    await sleep(100);
  }
  throw new Error(`${when}: the page never matched the API: ${JSON.stringify(last)}`);
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
try {
  const context = await browser.newContext({ ignoreHTTPSErrors: true });
  const page = await context.newPage();
  await page.goto(`${HERALD_URL}/`);
  await converges(page, 'before the restart');
  const protocol = await page.evaluate(() => performance.getEntriesByType('navigation')[0].nextHopProtocol);
  if (protocol !== 'h2') throw new Error(`the page came over ${protocol}, not HTTP/2`);

  console.error('converged before the restart');
  console.log('KILL');
  const answer = await lines.next();
  if (answer.value !== 'RESTARTED') throw new Error(`expected RESTARTED, got ${answer.value}`);
  // The EventSource reconnects (Last-Event-ID from the old process is unknown) and gets a snapshot.
  await page.waitForFunction(() => (document.getElementById('log').textContent.match(/snapshot id=/g) || []).length >= 2,
    null, { timeout: 15_000 });
  console.error('reconnected');
  await converges(page, 'after the restart');
  console.error('converged after the restart');

  const opened = await page.evaluate(() => Promise.all(Array.from({ length: 8 }, (_, i) => new Promise((resolve, reject) => {
    const es = new EventSource(i % 2 ? '/board/event-stream' : '/tasks/event-stream');
    const timer = setTimeout(() => reject(new Error(`stream ${i} got no snapshot`)), 10_000);
    es.addEventListener('snapshot', () => { clearTimeout(timer); resolve(i); });
  }))));
  if (opened.length !== 8) throw new Error(`only ${opened.length} of 8 streams opened`);
  if (SCREENSHOT) await page.screenshot({ path: SCREENSHOT });
  console.log('OK');
} finally {
  input.close();
  await browser.close();
}

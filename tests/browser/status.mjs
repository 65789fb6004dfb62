// Drives Debian's Chromium against herald's status page for tests/browser.rs, which starts the
// API and herald (with server.admin_token) and opens SSE subscribers when this script asks.
//
//   1. Without the token the page is refused (401); with it (HTTP Basic, the token as the
//      password, as a person types it into the browser's prompt) it shows the watches.
//   2. MORE: the test opens two more subscribers of /tasks; the page's count goes from 1 to 3
//      without a reload (the page lives on the gateway's own SSE feed).
//   3. No credential or scope hash of the test (SECRETS, comma-separated) is on the page.
//   4. The page fits a phone (no sideways scrolling of the page itself) and a desktop;
//      a screenshot of each is written.
// Prints OK and exits 0 when all hold; anything else is a failure with the reason on stderr.

import readline from 'node:readline';
import { chromium } from 'playwright-core';

const { ADMIN_URL, TOKEN, SECRETS, CHROMIUM, SCREENSHOT_DESKTOP, SCREENSHOT_PHONE } = process.env;
const input = readline.createInterface({ input: process.stdin });
const lines = input[Symbol.asyncIterator]();

/** The subscribers the page shows for the watch of `path`, or null while it shows none. */
const subscribersOf = (page, path) => page.evaluate(path => {
  const row = [...document.querySelectorAll('#watches tr')].find(tr => tr.dataset.path === path);
  return row ? Number(row.children[2].textContent) : null;
}, path);

async function waitFor(what, check, ms = 15_000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await check()) return;
    await new Promise(resolve => setTimeout(resolve, 100));
  }
  throw new Error(`${what}: not within ${ms} ms`);
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
});
try {
  const refused = await fetch(`${ADMIN_URL}/`);
  if (refused.status !== 401 || !refused.headers.get('www-authenticate').startsWith('Basic')) {
    throw new Error(`without the token the page answered ${refused.status} ${refused.headers.get('www-authenticate')}`);
  }

  const desktop = await browser.newContext({
    viewport: { width: 1280, height: 860 },
    httpCredentials: { username: 'admin', password: TOKEN },
  });
  const page = await desktop.newPage();
  const opened = await page.goto(`${ADMIN_URL}/`);
  if (opened.status() !== 200) throw new Error(`with the token the page answered ${opened.status()}`);
  await waitFor('the tasks watch with 1 subscriber', async () => (await subscribersOf(page, '/tasks')) === 1);
  await waitFor('the per-subscriber watch', async () => (await subscribersOf(page, '/me/tasks')) === 1);
  console.error('the page shows the watches');

  console.log('MORE');
  const answer = await lines.next();
  if (answer.value !== 'SUBSCRIBED') throw new Error(`expected SUBSCRIBED, got ${answer.value}`);
  const navigations = await page.evaluate(() => performance.getEntriesByType('navigation').length);
  await waitFor('the tasks watch with 3 subscribers', async () => (await subscribersOf(page, '/tasks')) === 3);
  if (await page.evaluate(() => performance.getEntriesByType('navigation').length) !== navigations) {
    throw new Error('the page reloaded');
  }
  // Rates need two states: wait until the overview shows them.
  await waitFor('poll rates', async () => (await page.textContent('#n-polls')) !== '–');
  console.error('the subscriber count followed, live');

  const html = await page.content();
  for (const secret of SECRETS.split(',')) {
    if (html.includes(secret)) throw new Error(`the page shows ${secret}`);
  }
  await page.screenshot({ path: SCREENSHOT_DESKTOP, fullPage: true });

  const phone = await browser.newContext({
    viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true,
    httpCredentials: { username: 'admin', password: TOKEN },
  });
  const small = await phone.newPage();
  await small.goto(`${ADMIN_URL}/`);
  await waitFor('the phone page shows the watches', async () => (await subscribersOf(small, '/tasks')) === 3);
  const overflow = await small.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  if (overflow > 0) throw new Error(`on a phone the page scrolls sideways by ${overflow} px`);
  await small.screenshot({ path: SCREENSHOT_PHONE, fullPage: true });
  console.log('OK');
} finally {
  input.close();
  await browser.close();
}

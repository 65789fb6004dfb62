// The client in Chromium (Debian's, driven by playwright-core): the browser bundle keeps a live
// copy of every format through 1,000 random changes and 10 cut connections. Skipped, saying
// why, where Chromium is not installed (.ci/run installs it).
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { converges, cutter, FORMATS, randomChange, sleep, startHerald } from './harness.mjs';

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const here = path.dirname(fileURLToPath(import.meta.url));
const bundle = readFileSync(path.join(here, '../dist/herald-client.browser.js'), 'utf8');
const skip = existsSync(CHROMIUM) ? false : `${CHROMIUM} is not installed (Debian package chromium)`;

// The page: one watch per format, their copies on `window.copies`.
const page = formats => `<!doctype html><meta charset="utf-8"><title>client test</title>
<script type="module">
import { watch } from '/__test/herald-client.js';
window.copies = {};
window.watches = ${JSON.stringify(formats)}.map(f => watch(f.path + '/event-stream', {
  headers: f.headers,
  onState: state => { window.copies[f.name] = state; },
}));
</script>`;

let herald;
let browser;
before(async () => {
  if (skip) return;
  const { chromium } = await import('playwright-core');
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-sync'],
  });
  herald = await startHerald();
});
after(async () => {
  await browser?.close();
  await herald?.stop();
});

test('in Chromium: each format equals the upstream after 1,000 random changes and 10 cut connections', { skip }, async () => {
  const proxy = await cutter(new URL(herald.url).host);
  const tab = await browser.newPage();
  try {
    // The page and the bundle come from the proxy's origin, as if herald served them.
    await tab.route('**/__test/**', route => {
      const file = new URL(route.request().url()).pathname;
      if (file.endsWith('.js')) return route.fulfill({ contentType: 'text/javascript', body: bundle });
      return route.fulfill({ contentType: 'text/html', body: page(FORMATS) });
    });
    await tab.goto(`${proxy.url}/__test/page.html`);
    const copy = format => () => tab.evaluate(name => window.copies[name] ?? null, format.name);
    for (const format of FORMATS) await converges(herald.api, format, copy(format));
    for (let n = 0; n < 1000; n++) {
      await randomChange(herald.api, n);
      if (n % 100 === 50) assert.ok(proxy.cut() > 0, 'the proxy carried the streams');
      if (n % 7 === 0) await sleep(20);
    }
    for (const format of FORMATS) await converges(herald.api, format, copy(format));
    const ended = await tab.evaluate(() => window.watches.filter(w => w.state === undefined).length);
    assert.equal(ended, 0);
  } finally {
    await tab.close();
    await proxy.close();
  }
});

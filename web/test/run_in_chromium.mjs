// Runs jobs in headless Chromium (playwright-core, Debian's /usr/bin/chromium)
// and writes their results as JSON. Used by tests/web_test.py and
// benchmarks/browser_speed.py.
//
//   node web/test/run_in_chromium.mjs PLAN.json RESULTS.json
//
// PLAN.json: {"base": "http://127.0.0.1:PORT", "chromium": "/usr/bin/chromium",
//   "args": [extra Chromium flags], "jobs": [{"id", "kind", ...}]}. A job of
// kind "demo" drives examples/browser/index.html like a person (demo.mjs);
// every other kind runs window.runJob(job) of web/test/harness.html.
// Results: {id: {result} | {error}}, plus "console" (the pages' messages).
import {readFileSync, writeFileSync} from 'node:fs';
import {chromium} from 'playwright-core';
import {runDemo} from './demo.mjs';

const [planPath, outPath] = process.argv.slice(2);
const plan = JSON.parse(readFileSync(planPath, 'utf8'));
const args = plan.args || [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
// playwright gives each launch a new, empty --user-data-dir of its own.
const browser = await chromium.launch({executablePath: plan.chromium || '/usr/bin/chromium', headless: true, args});
const results = {console: []};
try {
  for (const job of plan.jobs) {
    const context = await browser.newContext({acceptDownloads: true});
    const page = await context.newPage();
    page.on('console', (message) => results.console.push(`${job.id}: ${message.type()}: ${message.text()}`));
    page.on('pageerror', (error) => results.console.push(`${job.id}: pageerror: ${error.message}`));
    page.setDefaultTimeout((job.timeout_s || 60) * 1000);
    const started = Date.now();
    try {
      let result;
      if (job.kind === 'demo') {
        result = await runDemo(page, plan.base, job);
      } else {
        await page.goto(`${plan.base}/web/test/harness.html`);
        await page.waitForFunction(() => window.runJob !== undefined);
        result = await page.evaluate((j) => window.runJob(j), job);
      }
      results[job.id] = {result, seconds: (Date.now() - started) / 1000};
    } catch (error) {
      results[job.id] = {error: String(error && error.message ? error.message : error), seconds: (Date.now() - started) / 1000};
    }
    await context.close();
  }
} finally {
  await browser.close();
}
writeFileSync(outPath, JSON.stringify(results));

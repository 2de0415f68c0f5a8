// Runs jobs in headless Chromium (playwright-core, Debian's /usr/bin/chromium)
// and writes their results as JSON. Used by tests/web_test.py and
// benchmarks/browser_speed.py.
//
//   node web/test/run_in_chromium.mjs PLAN.json RESULTS.json
//
// PLAN.json: {"root": folder served at /, "mounts": {"/prefix/": folder},
//   "chromium": "/usr/bin/chromium", "args": [Chromium flags],
//   "jobs": [{"id", "kind", ...}]}: the files are served on 127.0.0.1 by this
//   script (or give "base": the URL of a server of your own). A job of
// kind "demo" drives examples/browser/index.html like a person (demo.mjs);
// every other kind runs window.runJob(job) of web/test/harness.html.
// Results: {id: {result, requests} | {error}}, plus "console" (the pages'
// messages); `requests` lists the URLs a job's page asked for outside `base`
// (none: everything is served locally).
//
//   node web/test/run_in_chromium.mjs PLAN.json --stdin
//
// keeps one harness page open instead: each line on stdin is a job, answered
// by one line of JSON on stdout ({result} or {error}), until stdin closes.
import {createReadStream, readFileSync, statSync, writeFileSync} from 'node:fs';
import {createServer} from 'node:http';
import {extname, join, resolve, sep} from 'node:path';
import {createInterface} from 'node:readline';
import {chromium} from 'playwright-core';
import {runDemo} from './demo.mjs';

const TYPES = {
  '.html': 'text/html', '.js': 'text/javascript', '.mjs': 'text/javascript', '.css': 'text/css',
  '.json': 'application/json', '.wasm': 'application/wasm', '.png': 'image/png',
};

/** A static file server on 127.0.0.1 (a free port); resolves to its URL. */
function serve(root, mounts = {}) {
  const server = createServer((request, response) => {
    const path = decodeURIComponent(new URL(request.url, 'http://localhost').pathname);
    let folder = root;
    let rest = path;
    for (const [prefix, directory] of Object.entries(mounts)) {
      if (path.startsWith(prefix)) {
        folder = directory;
        rest = path.slice(prefix.length);
        break;
      }
    }
    let file = resolve(join(folder, rest));
    try {
      if (statSync(file).isDirectory()) file = join(file, 'index.html');
      if (!file.startsWith(resolve(folder) + sep) || !statSync(file).isFile()) throw new Error('outside');
    } catch {
      response.writeHead(404, {'Content-Type': 'text/plain'});
      response.end('not found');
      return;
    }
    response.writeHead(200, {'Content-Type': TYPES[extname(file)] || 'application/octet-stream'});
    createReadStream(file).pipe(response);
  });
  return new Promise((done) => server.listen(0, '127.0.0.1', () => done({server, base: `http://127.0.0.1:${server.address().port}`})));
}

const [planPath, outPath] = process.argv.slice(2);
const plan = JSON.parse(readFileSync(planPath, 'utf8'));
const served = plan.base ? null : await serve(plan.root, plan.mounts);
plan.base = plan.base || served.base;
const args = plan.args || [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
// playwright gives each launch a new, empty --user-data-dir of its own.
const browser = await chromium.launch({executablePath: plan.chromium || '/usr/bin/chromium', headless: true, args});
const results = {console: []};
if (outPath === '--stdin') {
  try {
    await answerStdin();
  } finally {
    await browser.close();
    if (served) served.server.close();
  }
  process.exit(0);
}

async function answerStdin() {
  const page = await (await browser.newContext()).newPage();
  page.setDefaultTimeout(600 * 1000);
  await page.goto(`${plan.base}/web/test/harness.html`);
  await page.waitForFunction(() => window.runJob !== undefined);
  const lines = createInterface({input: process.stdin});
  for await (const line of lines) {
    if (!line.trim()) continue;
    let answer;
    try {
      answer = {result: await page.evaluate((j) => window.runJob(j), JSON.parse(line))};
    } catch (error) {
      answer = {error: String(error && error.message ? error.message : error)};
    }
    process.stdout.write(`${JSON.stringify(answer)}\n`);
  }
}

try {
  for (const job of plan.jobs) {
    const context = await browser.newContext({acceptDownloads: true});
    const page = await context.newPage();
    page.on('console', (message) => results.console.push(`${job.id}: ${message.type()}: ${message.text()}`));
    page.on('pageerror', (error) => results.console.push(`${job.id}: pageerror: ${error.message}`));
    page.setDefaultTimeout((job.timeout_s || 60) * 1000);
    const elsewhere = [];
    page.on('request', (request) => {
      const url = request.url();
      if (!url.startsWith(plan.base) && !url.startsWith('blob:') && !url.startsWith('data:')) elsewhere.push(url);
    });
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
      results[job.id] = {result, requests: elsewhere, seconds: (Date.now() - started) / 1000};
    } catch (error) {
      results[job.id] = {error: String(error && error.message ? error.message : error), seconds: (Date.now() - started) / 1000};
    }
    await context.close();
  }
} finally {
  await browser.close();
  if (served) served.server.close();
}
writeFileSync(outPath, JSON.stringify(results));

// Drives examples/browser/index.html like a person (run_in_chromium.mjs's
// "demo" job): the main job's fine-tune first, then draw a digit with the
// mouse, add it, fine-tune, predict, save and load the weights.
//
// job: {assets: URL folder of spela.tflite and digits.json, label, epochs,
//       accelerator}.

async function waitReady(page) {
  await page.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.state));
  const status = await page.textContent('#status');
  if (await page.evaluate(() => document.body.dataset.state) === 'error') throw new Error(`the page says: ${status}`);
  return status;
}

async function draw(page, strokes) {
  const box = await page.locator('#pad').boundingBox();
  for (const stroke of strokes) {
    const at = ([u, v]) => [box.x + u * box.width, box.y + v * box.height];
    await page.mouse.move(...at(stroke[0]));
    await page.mouse.down();
    for (const p of stroke.slice(1)) await page.mouse.move(...at(p), {steps: 8});
    await page.mouse.up();
  }
}

export async function runDemo(page, base, job) {
  const query = new URLSearchParams({assets: job.assets, accelerator: job.accelerator || 'wasm'});
  await page.goto(`${base}/examples/browser/index.html?${query}`);
  const trace = {loaded: await waitReady(page)};
  trace.accelerator = await page.textContent('#accelerator');
  trace.before = await page.evaluate(() => window.demo.before);

  // 1. The main job's fine-tune: its 600 device examples, its epochs.
  await page.click('#finetune');
  trace.shippedFineTune = await waitReady(page);
  trace.afterShipped = await page.evaluate(() => window.demo.after);
  trace.python = await page.evaluate(() => window.demo.assets.accuracy);
  trace.stepsAfterShipped = await page.evaluate(() => window.demo.losses.length);

  // 2. Draw -> add -> fine-tune -> predict.
  const strokes = job.strokes || [[[0.5, 0.15], [0.5, 0.85]]];  // a "1"
  await draw(page, strokes);
  trace.inkBeforeAdd = await page.evaluate(() => {
    const pad = document.getElementById('pad');
    const data = pad.getContext('2d').getImageData(0, 0, pad.width, pad.height).data;
    let sum = 0;
    for (let i = 0; i < data.length; i += 4) sum += data[i] / 255;
    return sum;
  });
  await page.selectOption('#label', String(job.label ?? 1));
  await page.click('#add');
  trace.added = await waitReady(page);
  trace.examplesCount = await page.textContent('#examples-count');
  trace.addedExample = await page.evaluate(() => ({x: Array.from(window.demo.examples.x[0]), y: window.demo.examples.y[0]}));
  await draw(page, strokes);
  await page.uncheck('#use-shipped');
  await page.fill('#epochs', String(job.epochs ?? 3));
  await page.click('#finetune');
  trace.drawingFineTune = await waitReady(page);
  trace.lastFit = await page.evaluate(() => window.demo.lastFit);
  await page.click('#predict');
  trace.predicted = await waitReady(page);
  trace.prediction = await page.textContent('#prediction');

  // 3. Save in the browser, load back.
  await page.click('#save');
  trace.saved = await waitReady(page);
  await page.click('#load');
  trace.loadedWeights = await waitReady(page);
  trace.rows = await page.evaluate(() => window.demo.rows);
  trace.losses = await page.evaluate(() => window.demo.losses);
  trace.table = await page.textContent('#accuracy');
  if (job.screenshot) await page.screenshot({path: job.screenshot, fullPage: true});
  return trace;
}

// Jobs that tests/web_test.py and benchmarks/browser_speed.py run in the
// browser through web/test/run_in_chromium.mjs: window.runJob(job) -> JSON.
import * as web from '../keras_spela_web.js';

const plain = (weights) => Object.fromEntries(Object.entries(weights).map(([k, v]) => [k, Array.from(v)]));

async function fetchJson(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

async function caught(work) {
  try {
    await work();
    return null;
  } catch (error) {
    return {name: error.name, message: error.message, isDeviceTrainingError: error instanceof web.DeviceTrainingError};
  }
}

function base64(bytes) {
  let text = '';
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

const jobs = {
  // Trains on the job's batches (no shuffling) and returns every weight.
  async parity({model, data, accelerator = 'wasm'}) {
    const batches = await fetchJson(data);
    const trainer = await web.DeviceTrainer.load(model, {accelerator});
    const initial = await trainer.getWeights();
    const history = await trainer.fit(batches.x, batches.y, {epochs: batches.epochs, shuffle: false});
    const weights = await trainer.getWeights();
    const scores = await trainer.predict(batches.predict_x, 'all');
    const npz = await trainer.weightsToNpz();
    return {
      accelerator: trainer.accelerator, batchSize: trainer.batchSize, exits: trainer.exits,
      initial: plain(initial), weights: plain(weights), history,
      scores: Object.fromEntries(Object.entries(scores).map(([k, rows]) => [k, rows.map((r) => Array.from(r))])),
      npz: base64(npz),
    };
  },

  // A batch the model rejects (finite, but it overflows in the layer), alone
  // and as step 2 of fit; bad weights; the weights after each.
  async reject({model, data}) {
    const batches = await fetchJson(data);
    const trainer = await web.DeviceTrainer.load(model);
    const n = trainer.batchSize * trainer.exampleSize;
    const good = batches.x.slice(0, n);
    const labels = batches.y.slice(0, trainer.batchSize);
    await trainer.trainBatch(good, labels);  // optimizer state moves first
    const before = plain(await trainer.getWeights());
    const huge = new Float32Array(n).fill(3e38);
    const alone = await caught(() => trainer.trainBatch(huge, labels));
    const afterAlone = plain(await trainer.getWeights());
    const inFit = await caught(() => trainer.fit(Float32Array.from([...good, ...huge]), [...labels, ...labels], {shuffle: false}));
    const afterFit = await trainer.getWeights();
    const nanInput = await caught(() => trainer.trainBatch(Float32Array.from(good).fill(NaN, 3, 4), labels));
    const badLabel = await caught(() => trainer.trainBatch(good, labels.map((v, i) => (i === 2 ? trainer.numClasses : v))));
    const weights = await trainer.getWeights();
    const kernel = Object.keys(weights).find((k) => k.endsWith('_kernel'));
    const nanWeights = {...weights, [kernel]: Float32Array.from(weights[kernel]).fill(NaN, 0, 1)};
    const badWeights = await caught(() => trainer.setWeights(nanWeights));
    const missingWeights = await caught(() => trainer.setWeights({[kernel]: weights[kernel]}));
    const afterWeights = plain(await trainer.getWeights());
    const oneRow = good.slice(0, trainer.exampleSize);
    const unknownExit = await caught(() => trainer.predict(oneRow, 'exit_9'));
    const exitOutOfRange = await caught(() => trainer.predict(oneRow, 5));
    const all = await trainer.predict(oneRow, 'all');
    const byIndex = await trainer.predict(oneRow, -2);
    const exitsAgree = Array.from(all.exit_0[0]).join() === Array.from(byIndex[0]).join() &&
        Array.from(all.exit_1[0]).join() === Array.from((await trainer.predict(oneRow))[0]).join();
    // The first good step of fit was learned before its rejected second step.
    return {
      before, afterAlone, afterFitChanged: Object.keys(afterFit).some((k) => afterFit[k].some((v, i) => v !== afterAlone[k][i])),
      afterWeights, alone, inFit, nanInput, badLabel, badWeights, missingWeights,
      unknownExit, exitOutOfRange, exitsAgree,
    };
  },

  // Each bad file's error.
  async files({cases}) {
    const results = {};
    for (const [name, url] of Object.entries(cases)) {
      results[name] = await caught(() => web.DeviceTrainer.load(url));
    }
    return results;
  },

  // IndexedDB and .npz round trips: save, train more, restore.
  async storage({model, data, npz}) {
    const batches = await fetchJson(data);
    const trainer = await web.DeviceTrainer.load(model);
    const n = trainer.batchSize * trainer.exampleSize;
    await trainer.trainBatch(batches.x.slice(0, n), batches.y.slice(0, trainer.batchSize));
    const saved = plain(await trainer.getWeights());
    await trainer.saveWeights('test');
    await trainer.trainBatch(batches.x.slice(n, 2 * n), batches.y.slice(trainer.batchSize, 2 * trainer.batchSize));
    const moved = plain(await trainer.getWeights());
    const fresh = await web.DeviceTrainer.load(model);
    await fresh.loadWeights('test');
    const restored = plain(await fresh.getWeights());
    const missing = await caught(() => fresh.loadWeights('never saved'));
    let fromPython = null;
    if (npz) {
      const bytes = new Uint8Array(await (await fetch(npz)).arrayBuffer());
      await fresh.loadWeightsFromNpz(bytes, npz);
      fromPython = plain(await fresh.getWeights());
    }
    const notNpz = await caught(() => fresh.loadWeightsFromNpz(new Uint8Array([1, 2, 3]), 'junk.npz'));
    return {saved, moved, restored, missing, fromPython, notNpz};
  },

  // Per-step milliseconds of `rounds` blocks of `steps` train steps on one
  // batch. The trainer stays loaded between calls on the page (the
  // benchmark's alternating rounds); `warmupSeconds` first trains for that
  // long and returns the per-step time of each block of 50 steps meanwhile
  // (V8 moves the WebAssembly's hot functions to its optimizing tier then).
  async bench({model, data, rounds = 1, steps, warmupSeconds = 0, accelerator = 'wasm'}) {
    const key = `${model} ${accelerator}`;
    if (!window.benchState || window.benchState.key !== key) {
      const batches = await fetchJson(data);
      const trainer = await web.DeviceTrainer.load(model, {accelerator});
      const n = trainer.batchSize * trainer.exampleSize;
      window.benchState = {key, trainer, x: Float32Array.from(batches.x.slice(0, n)),
        y: Int32Array.from(batches.y.slice(0, trainer.batchSize))};
    }
    const {trainer, x, y} = window.benchState;
    const block = async (count) => {
      const start = performance.now();
      for (let i = 0; i < count; i++) await trainer.trainBatch(x, y);
      return (performance.now() - start) / count;
    };
    const warmup = [];
    const warmupStart = performance.now();
    while (performance.now() - warmupStart < 1000 * warmupSeconds) warmup.push(await block(50));
    const blocks = [];
    for (let r = 0; r < rounds; r++) blocks.push(await block(steps));
    return {blocks, warmup, accelerator: trainer.accelerator};
  },

  // Where a train step's time goes: the inputs' tensors, LiteRT.js's run,
  // reading the outputs (ms per step, medians of `rounds` blocks).
  async profile({model, data, rounds, steps}) {
    const batches = await fetchJson(data);
    const trainer = await web.DeviceTrainer.load(model);
    const n = trainer.batchSize * trainer.exampleSize;
    const x = Float32Array.from(batches.x.slice(0, n));
    const y = Int32Array.from(batches.y.slice(0, trainer.batchSize));
    const signature = trainer._signatures.train;
    const shapes = signature.inputShapes;
    const values = {x, y};
    const parts = {tensors: [], run: [], read: []};
    const median = (v) => [...v].sort((a, b) => a - b)[Math.floor(v.length / 2)];
    for (let r = 0; r < rounds + 1; r++) {
      const spent = {tensors: 0, run: 0, read: 0};
      for (let i = 0; i < steps; i++) {
        let t = performance.now();
        const inputs = signature.inputNames.map((name, k) => new web.Tensor(values[name], shapes[k]));
        spent.tensors += performance.now() - t;
        t = performance.now();
        const outputs = await signature.runner.run(inputs);
        spent.run += performance.now() - t;
        t = performance.now();
        for (const output of outputs) await output.data();
        for (const tensor of [...inputs, ...outputs]) tensor.delete();
        spent.read += performance.now() - t;
      }
      if (r) for (const key in parts) parts[key].push(spent[key] / steps);
    }
    const result = Object.fromEntries(Object.entries(parts).map(([k, v]) => [k, median(v)]));
    // Whole calls of the other signatures, for their operator counts.
    for (const [name, call] of [['get_weights', () => trainer.getWeights()],
                                ['infer', () => trainer.predict(x)]]) {
      const blocks = [];
      for (let r = 0; r < rounds + 1; r++) {
        const start = performance.now();
        for (let i = 0; i < steps; i++) await call();
        if (r) blocks.push((performance.now() - start) / steps);
      }
      result[name] = median(blocks);
    }
    return result;
  },

  // What this browser offers: WebGPU adapter, and whether a model trains on it.
  async webgpu({model, data, jspi = false}) {
    const report = {navigatorGpu: 'gpu' in navigator};
    if (report.navigatorGpu) {
      const adapter = await navigator.gpu.requestAdapter();
      const info = adapter && adapter.info;
      report.adapter = adapter ? (info ? {vendor: info.vendor, architecture: info.architecture,
        device: info.device, description: info.description} : 'an adapter') : null;
    }
    const batches = await fetchJson(data);
    let trainer;
    report.load = await caught(async () => { trainer = await web.DeviceTrainer.load(model, {accelerator: 'webgpu', jspi}); });
    if (trainer) {
      report.fullyAccelerated = trainer.isFullyAccelerated;
      report.train = await caught(async () => {
        report.history = await trainer.fit(batches.x, batches.y, {epochs: batches.epochs, shuffle: false});
      });
      report.weights = await caught(async () => { report.finalWeights = plain(await trainer.getWeights()); });
    }
    return report;
  },
};

window.runJob = async (job) => {
  const run = jobs[job.kind];
  if (!run) throw new Error(`unknown job ${job.kind}`);
  return run(job);
};
document.getElementById('status').textContent = 'ready';

// The browser demo: draw digits, add them as examples, fine-tune the main
// job's exported model in LiteRT.js, predict; per-exit accuracy on the
// shipped held-out digits before and after, and the loss of every step.
import {DeviceTrainer} from '../../web/keras_spela_web.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const ASSETS = params.get('assets') || 'assets/';
const WEIGHTS_KEY = 'on_device_finetune';

// State the page shows, also read by tests/web_test.py.
const demo = window.demo = {rows: {}, losses: [], examples: {x: [], y: []}, fineTunes: 0};

function setState(state, text) {
  document.body.dataset.state = state;
  if (text) $('status').textContent = text;
}

// ------------------------------------------------------------------ drawing
const pad = $('pad');
const ink = pad.getContext('2d', {willReadFrequently: true});
let last = null;

function clearPad() {
  ink.fillStyle = '#000';
  ink.fillRect(0, 0, pad.width, pad.height);
  showPreview();
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width, (event.clientY - box.top) * pad.height / box.height];
}

pad.addEventListener('pointerdown', (event) => {
  pad.setPointerCapture(event.pointerId);
  last = point(event);
  stroke(last, last);
});
pad.addEventListener('pointermove', (event) => {
  if (!last) return;
  const next = point(event);
  stroke(last, next);
  last = next;
});
const lift = () => {
  last = null;
  showPreview();
};
pad.addEventListener('pointerup', lift);
pad.addEventListener('pointercancel', lift);

function stroke(from, to) {
  ink.strokeStyle = '#fff';
  ink.lineWidth = pad.width / 9;
  ink.lineCap = 'round';
  ink.beginPath();
  ink.moveTo(...from);
  ink.lineTo(...to);
  ink.stroke();
}

/** The drawing as the model's input: 8x8 block means of the ink, in
 * sixteenths like the embedded digits (0 = no ink, 1 = full). */
function drawingInput() {
  const size = demo.inputShape[0];
  const block = pad.width / size;
  const pixels = ink.getImageData(0, 0, pad.width, pad.height).data;
  const x = new Float32Array(size * size);
  for (let row = 0; row < size; row++) {
    for (let col = 0; col < size; col++) {
      let sum = 0;
      for (let i = 0; i < block; i++) {
        for (let j = 0; j < block; j++) sum += pixels[4 * ((row * block + i) * pad.width + col * block + j)];
      }
      x[row * size + col] = Math.round((sum / (block * block * 255)) * 16) / 16;
    }
  }
  return x;
}

function showPreview() {
  if (!demo.inputShape) return;
  const x = drawingInput();
  const preview = $('preview').getContext('2d');
  const image = preview.createImageData(8, 8);
  x.forEach((v, i) => image.data.set([255 * v, 255 * v, 255 * v, 255], 4 * i));
  preview.putImageData(image, 0, 0);
}

// -------------------------------------------------------------------- views
function percent(value) {
  return `${(100 * value).toFixed(2)}%`;
}

function showAccuracy() {
  const exits = demo.trainer.exits;
  const head = $('accuracy').tHead;
  head.innerHTML = '';
  const header = head.insertRow();
  for (const text of ['', ...['rotated', 'upright'].flatMap((t) => exits.map((e) => `${t} ${e}`))]) {
    header.appendChild(Object.assign(document.createElement('th'), {textContent: text}));
  }
  const body = $('accuracy').tBodies[0];
  body.innerHTML = '';
  for (const [stage, result] of Object.entries(demo.rows)) {
    const row = body.insertRow();
    row.insertCell().textContent = stage;
    for (const test of ['new', 'old']) {
      for (const exit of exits) row.insertCell().textContent = percent(result[test][exit]);
    }
  }
}

function plotLoss() {
  const canvas = $('loss');
  const g = canvas.getContext('2d');
  g.fillStyle = '#fff';
  g.fillRect(0, 0, canvas.width, canvas.height);
  g.strokeStyle = '#999';
  g.strokeRect(40, 10, canvas.width - 50, canvas.height - 40);
  const values = demo.losses;
  if (!values.length) return;
  const top = Math.max(...values);
  const x = (i) => 40 + ((canvas.width - 50) * i) / Math.max(values.length - 1, 1);
  const y = (v) => 10 + (canvas.height - 40) * (1 - v / top);
  g.fillStyle = '#333';
  g.font = '11px sans-serif';
  g.fillText(top.toFixed(2), 2, 16);
  g.fillText('0', 28, canvas.height - 28);
  g.fillText(`${values.length} steps`, canvas.width - 70, canvas.height - 12);
  g.strokeStyle = '#c33';
  g.beginPath();
  values.forEach((v, i) => (i ? g.lineTo(x(i), y(v)) : g.moveTo(x(i), y(v))));
  g.stroke();
}

// -------------------------------------------------------------------- model
async function accuracy() {
  const result = {};
  for (const [name, {x, y}] of Object.entries(demo.tests)) {
    const logs = await demo.trainer.evaluate(x, y);
    result[name] = Object.fromEntries(demo.trainer.exits.map((e) => [e, logs[`${e}_accuracy`]]));
  }
  return result;
}

function pixels(rows, levels) {
  const size = rows.length ? rows[0].length : 0;
  const x = new Float32Array(rows.length * size);
  rows.forEach((row, i) => row.forEach((v, j) => (x[i * size + j] = v / levels)));
  return x;
}

async function loadModel() {
  const response = await fetch(`${ASSETS}digits.json`);
  if (!response.ok) {
    throw new Error(`${ASSETS}digits.json is missing (HTTP ${response.status}): run ` +
        'python examples/browser/build_assets.py, then serve the repository root');
  }
  const assets = await response.json();
  demo.assets = assets;
  demo.inputShape = assets.input_shape;
  demo.tests = Object.fromEntries(Object.entries(assets.tests).map(
      ([name, t]) => [name, {x: pixels(t.x, assets.pixel_levels), y: Int32Array.from(t.y)}]));
  demo.shipped = {x: pixels(assets.device.x, assets.pixel_levels), y: Int32Array.from(assets.device.y)};
  $('shipped-count').textContent = assets.device.y.length;
  $('epochs').value = assets.settings.device_epochs;
  let accelerator = params.get('accelerator') || 'wasm';
  let note = '';
  try {
    demo.trainer = await DeviceTrainer.load(`${ASSETS}spela.tflite`, {accelerator});
  } catch (error) {
    if (accelerator === 'wasm') throw error;
    note = ` (${accelerator} failed: ${error.message})`;
    accelerator = 'wasm';
    demo.trainer = await DeviceTrainer.load(`${ASSETS}spela.tflite`, {accelerator});
  }
  const names = {wasm: 'wasm: XNNPack on the CPU, in WebAssembly', webgpu: 'webgpu: the GPU, through WebGPU'};
  demo.accelerator = demo.trainer.accelerator;
  $('accelerator').textContent = names[demo.trainer.accelerator] +
      (accelerator === 'webgpu' && !demo.trainer.isFullyAccelerated ? ' (some operators fall back to wasm)' : '') + note;
  demo.rows['Python LiteRT before'] = assets.accuracy.python_litert_before;
  demo.rows[`Python LiteRT after (${assets.settings.device_epochs} epochs)`] = assets.accuracy.python_litert_after;
  demo.rows['browser before'] = await accuracy();
  demo.before = demo.rows['browser before'];
  showAccuracy();
  showPreview();
}

async function fineTune() {
  const epochs = Number($('epochs').value);
  const parts = [];
  if ($('use-shipped').checked) parts.push(demo.shipped);
  if (demo.examples.y.length) {
    parts.push({x: Float32Array.from(demo.examples.x.flatMap((row) => Array.from(row))), y: Int32Array.from(demo.examples.y)});
  }
  if (!parts.length) throw new Error('no examples: add a drawing or tick the main job\'s device examples');
  const count = parts.reduce((n, p) => n + p.y.length, 0);
  const x = new Float32Array(parts.reduce((n, p) => n + p.x.length, 0));
  const y = new Int32Array(count);
  let at = 0;
  let row = 0;
  for (const part of parts) {
    x.set(part.x, at);
    y.set(part.y, row);
    at += part.x.length;
    row += part.y.length;
  }
  setState('training', `fine-tuning on ${count} examples, ${epochs} epochs...`);
  const start = performance.now();
  const history = await demo.trainer.fit(x, y, {
    epochs, seed: demo.fineTunes,
    onBatchEnd: (step, losses) => {
      demo.losses.push(losses.loss);
      if (step % 10 === 0) plotLoss();
    },
  });
  const seconds = (performance.now() - start) / 1000;
  plotLoss();
  demo.fineTunes += 1;
  demo.after = await accuracy();
  demo.rows[`browser after fine-tune ${demo.fineTunes} (${count} examples, ${epochs} epochs)`] = demo.after;
  showAccuracy();
  demo.lastFit = {count, epochs, seconds, loss: history.loss};
  return `fine-tuned on ${count} examples, ${epochs} epochs in ${seconds.toFixed(2)} s ` +
      `(last epoch's loss ${history.loss.at(-1).toFixed(4)})`;
}

async function predict() {
  const scores = await demo.trainer.predict(drawingInput(), 'all');
  const lines = demo.trainer.exits.map((exit) => {
    const row = scores[exit][0];
    let best = 0;
    row.forEach((v, k) => v > row[best] && (best = k));
    return `${exit}: class ${best} (cosine ${row[best].toFixed(3)})`;
  });
  demo.prediction = lines;
  $('prediction').textContent = lines.join('\n');
  return 'predicted the drawing';
}

// ------------------------------------------------------------------ buttons
function action(button, work) {
  $(button).addEventListener('click', async () => {
    if (['training', 'busy', 'loading'].includes(document.body.dataset.state)) return;
    try {
      setState('busy');
      setState('ready', await work());
    } catch (error) {
      setState('error', `error: ${error.message}`);
    }
  });
}

for (let k = 0; k < 10; k++) $('label').add(new Option(String(k), String(k)));
$('clear').addEventListener('click', clearPad);
action('add', async () => {
  demo.examples.x.push(drawingInput());
  demo.examples.y.push(Number($('label').value));
  $('examples-count').textContent = demo.examples.y.length;
  clearPad();
  return `added a drawing of class ${$('label').value}`;
});
action('finetune', fineTune);
action('predict', predict);
action('save', async () => {
  await demo.trainer.saveWeights(WEIGHTS_KEY);
  $('storage').textContent = `saved in this browser (IndexedDB) at ${new Date().toLocaleTimeString()}`;
  return 'saved the weights';
});
action('load', async () => {
  await demo.trainer.loadWeights(WEIGHTS_KEY);
  demo.rows['browser, saved weights loaded'] = await accuracy();
  showAccuracy();
  return 'loaded the saved weights';
});
action('download', async () => {
  await demo.trainer.downloadWeights('personal_weights.npz');
  return 'weights offered as personal_weights.npz (np.load, DeviceTrainer.load_weights)';
});

clearPad();
loadModel().then(
    () => setState('ready', 'ready: draw a digit, add it, fine-tune, predict'),
    (error) => setState('error', `error: ${error.message}`));

/**
 * Trains keras_spela `export_tflite` models in the browser with LiteRT.js.
 *
 * The browser counterpart of `export/device_trainer.py`'s DeviceTrainer: it
 * runs the model's `train`, `infer`, `get_weights` and `set_weights`
 * signatures on LiteRT.js (`@litertjs/core`; 'wasm' = XNNPack in
 * WebAssembly, or 'webgpu'), with the same file checks, padding of a short
 * last batch, errors and weight names.
 *
 * Example:
 *
 *   import {DeviceTrainer} from './keras_spela_web.js';
 *   const trainer = await DeviceTrainer.load('spela.tflite');
 *   const history = await trainer.fit(x, y, {epochs: 3});
 *   console.log(await trainer.evaluate(xTest, yTest));
 *   await trainer.saveWeights('personal');   // IndexedDB
 *
 * `x` is a Float32Array (or Float64Array, or array of numbers) of
 * `n * exampleSize` values, or an array of `n` examples of `exampleSize`
 * values each; `y` an Int32Array or array of integer class ids.
 */

import {getGlobalLiteRt, isWebGPUSupported, loadAndCompile, loadLiteRt, Tensor} from '@litertjs/core';

export {Tensor};

// ------------------------------------------------------------ the contract
// Every name shared with keras_spela's exporter and the Python device side
// (export/keras_spela_device/contract.py), in one place: tests/web_test.py
// compares each of them with the Python contract's.
export const CONTRACT = Object.freeze({
  // The signatures that make a model a keras_spela `export_tflite` model.
  SIGNATURES: Object.freeze(['train', 'infer', 'get_weights', 'set_weights']),
  TRAIN_INPUTS: Object.freeze(['x', 'y']),
  INFER_INPUT: 'x',
  // get_weights' one input (ignored by the model; Java's runSignature needs it).
  GET_WEIGHTS_INPUT: 'request',
  // 1 when the model learned from the batch (or took the weights), else 0.
  ACCEPTED_OUTPUT: 'accepted',
  LOSS_OUTPUT: 'loss',
  // infer's scores at the last exit; exit_<k>_scores at every exit k.
  SCORES_OUTPUT: 'scores',
  SCORES_SUFFIX: '_scores',
  EXIT_SCORES_PATTERN: '^exit_(\\d+)_scores$',
  LOSS_SUFFIX: '_loss',
  ACCURACY_SUFFIX: '_accuracy',
  // Rows labelled PADDING_LABEL are padding; models that ignore them say how
  // many real rows they learned from in PADDING_OUTPUT.
  PADDING_LABEL: -1,
  PADDING_OUTPUT: 'examples',
  // The device state of a SpelaModel(max_classes=...) export: 1 per active class.
  CLASS_MASK: 'active_classes',
});

const ACCELERATORS = ['wasm', 'webgpu'];
const WEIGHTS_DB = 'keras_spela';
const WEIGHTS_STORE = 'weights';

// ------------------------------------------------------------------ errors
/** Something the trainer refuses: a batch, a weight set, data or a model
 * file. Raised before anything changed (a batch the model itself rejected
 * changed nothing either). */
export class DeviceTrainingError extends Error {
  constructor(message) {
    super(message);
    this.name = 'DeviceTrainingError';
  }
}

/** A file that is not a model the trainer can run; the message names the
 * file and the problem. */
export class ModelFileError extends DeviceTrainingError {
  constructor(message) {
    super(message);
    this.name = 'ModelFileError';
  }
}

class TFLiteFormatError extends Error {}

// ------------------------------------------------- the .tflite file reader
// The public TFLite schema: root table Model -> subgraphs -> tensors / inputs
// / outputs, and signature_defs; file identifier "TFL3" at bytes 4..8. Every
// read is bounds-checked, so a broken file is refused before LiteRT (whose
// WebAssembly may crash on bad bytes) sees it.
const TENSOR_TYPES = [
  'float32', 'float16', 'int32', 'uint8', 'int64', 'string', 'bool', 'int16', 'complex64',
  'int8', 'float64', 'complex128', 'uint64', 'resource', 'variant', 'uint32', 'uint16',
  'int4', 'bfloat16',
];

function need(view, pos, size, what) {
  if (pos < 0 || size < 0 || pos + size > view.byteLength) {
    throw new TFLiteFormatError(
        `${what} reaches byte ${pos + size}, past the end of the file ` +
        `(${view.byteLength} bytes): the file is truncated or corrupt`);
  }
}

function u32(view, pos, what) {
  need(view, pos, 4, what);
  return view.getUint32(pos, true);
}

class Table {
  constructor(view, pos, what) {
    this.view = view;
    this.pos = pos;
    this.what = what;
    need(view, pos, 4, what);
    this.vtable = pos - view.getInt32(pos, true);
    need(view, this.vtable, 4, what);
    this.vtableSize = view.getUint16(this.vtable, true);
    this.tableSize = view.getUint16(this.vtable + 2, true);
    if (this.vtableSize < 4 || this.vtableSize % 2 || this.tableSize < 4) {
      throw new TFLiteFormatError(`${what} has a corrupt vtable: the file is not a TFLite model`);
    }
    need(view, this.vtable, this.vtableSize, what);
    need(view, pos, this.tableSize, what);
  }

  field(index) {
    const entry = 4 + 2 * index;
    if (entry >= this.vtableSize) return null;
    const offset = this.view.getUint16(this.vtable + entry, true);
    if (offset === 0) return null;
    if (offset >= this.tableSize) {
      throw new TFLiteFormatError(`${this.what}: field ${index} lies outside its table`);
    }
    return this.pos + offset;
  }

  scalar(index, kind, fallback = 0) {
    const pos = this.field(index);
    if (pos === null) return fallback;
    const size = {i8: 1, u32: 4, u64: 8}[kind];
    need(this.view, pos, size, this.what);
    if (kind === 'i8') return this.view.getInt8(pos);
    if (kind === 'u32') return this.view.getUint32(pos, true);
    return Number(this.view.getBigUint64(pos, true));
  }

  target(index) {
    const pos = this.field(index);
    return pos === null ? null : pos + u32(this.view, pos, this.what);
  }

  vector(index, elementSize, what) {
    const target = this.target(index);
    if (target === null) return [null, 0];
    const length = u32(this.view, target, what);
    need(this.view, target + 4, length * elementSize, what);
    return [target + 4, length];
  }

  tables(index, what) {
    const [start, length] = this.vector(index, 4, what);
    const tables = [];
    for (let i = 0; i < length; i++) {
      const slot = start + 4 * i;
      tables.push(new Table(this.view, slot + this.view.getUint32(slot, true), `${what} ${i}`));
    }
    return tables;
  }

  ints(index, what) {
    const [start, length] = this.vector(index, 4, what);
    const values = [];
    for (let i = 0; i < length; i++) values.push(this.view.getInt32(start + 4 * i, true));
    return {start, values};
  }

  string(index, what) {
    const [start, length] = this.vector(index, 1, what);
    if (start === null) return null;
    return new TextDecoder().decode(new Uint8Array(this.view.buffer, this.view.byteOffset + start, length));
  }
}

/**
 * Reads the structure of a .tflite flatbuffer (a port of
 * export/tflite_file.py's read_model_structure).
 *
 * Returns {subgraphs: [{inputs, outputs, tensors}], signatures: {key:
 * {subgraph, inputs: {name: tensor}, outputs: {name: tensor}}}}; a tensor is
 * {name, shape, dtype, index, shapeAt, signatureAt} (the byte offsets of its
 * shape and shape signature values, null when absent).
 */
export function readModelStructure(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const head = (n) => Array.from(bytes.subarray(0, n));
  const identifier = new TextDecoder().decode(bytes.subarray(4, 8));
  if (bytes.length < 8 || identifier !== 'TFL3') {
    if (bytes.length === 0) throw new TFLiteFormatError('the file is empty');
    if (head(4).join() === [0x50, 0x4b, 3, 4].join()) {
      throw new TFLiteFormatError(
          'it is a zip archive (a saved .keras model?), not a .tflite flatbuffer; ' +
          'export the model with keras_spela.export_tflite or export/export_tflite.py');
    }
    if (head(8).join() === [0x89, 0x48, 0x44, 0x46, 0x0d, 0x0a, 0x1a, 0x0a].join()) {
      throw new TFLiteFormatError('it is an HDF5 file (a .h5 Keras model?), not a .tflite flatbuffer');
    }
    throw new TFLiteFormatError(
        "it lacks the TFLite file identifier 'TFL3' at bytes 4..8: not a .tflite model");
  }
  const root = new Table(view, u32(view, 0, 'the root offset'), 'the Model table');
  const codes = root.tables(1, 'operator code');
  for (const code of codes) code.string(1, "an operator code's custom name");
  root.string(3, 'the model description');
  const buffers = root.tables(4, 'buffer');
  buffers.forEach((buffer, i) => {
    buffer.vector(0, 1, `the data of buffer ${i}`);
    const offset = buffer.scalar(1, 'u64');
    const size = buffer.scalar(2, 'u64');
    if (offset > 1) need(view, offset, size, `the data of buffer ${i}`);
  });
  root.tables(6, 'metadata').forEach((metadata, i) => {
    metadata.string(0, `the name of metadata ${i}`);
    if (metadata.scalar(1, 'u32') >= buffers.length) {
      throw new TFLiteFormatError(`metadata ${i} names a buffer that does not exist`);
    }
  });
  const subgraphs = root.tables(2, 'subgraph').map((subgraph, s) => {
    const where = `subgraph ${s}`;
    const tensors = subgraph.tables(0, `${where} tensor`).map((tensor, t) => {
      if (tensor.scalar(2, 'u32') >= Math.max(buffers.length, 1)) {
        throw new TFLiteFormatError(`${where} tensor ${t} names a buffer that does not exist`);
      }
      const dtype = tensor.scalar(1, 'i8');
      const shape = tensor.ints(0, `${where} tensor ${t} shape`);
      const signature = tensor.ints(7, `${where} tensor ${t} shape signature`);
      return {
        name: tensor.string(3, `${where} tensor ${t} name`) || '',
        shape: shape.values,
        shapeSignature: signature.values,
        dtype: TENSOR_TYPES[dtype] || `type ${dtype}`,
        index: t,
        shapeAt: shape.start,
        signatureAt: signature.start,
      };
    });
    const tensorList = (indices, what, optional = false) => {
      for (const i of indices) {
        if (!((optional ? -1 : 0) <= i && i < tensors.length)) {
          throw new TFLiteFormatError(`${what} name tensor ${i} of ${tensors.length}`);
        }
      }
      return indices.filter((i) => i >= 0).map((i) => tensors[i]);
    };
    const inputs = tensorList(subgraph.ints(1, `${where} inputs`).values, `${where} inputs`);
    const outputs = tensorList(subgraph.ints(2, `${where} outputs`).values, `${where} outputs`);
    subgraph.tables(3, `${where} operator`).forEach((op, o) => {
      const what = `${where} operator ${o}`;
      if (op.scalar(0, 'u32') >= codes.length) {
        throw new TFLiteFormatError(`${what} uses an operator code that does not exist`);
      }
      for (const [field, kind] of [[1, 'inputs'], [2, 'outputs'], [8, 'intermediates']]) {
        tensorList(op.ints(field, `${what} ${kind}`).values, `${what} ${kind}`, true);
      }
      if (op.target(4) !== null) new Table(view, op.target(4), `${what} options`);
      op.vector(5, 1, `${what} custom options`);
    });
    return {inputs, outputs, tensors};
  });
  if (!subgraphs.length) throw new TFLiteFormatError('it has no subgraph');
  const signatures = {};
  root.tables(7, 'signature').forEach((signature, g) => {
    const key = signature.string(2, `signature ${g} key`) || '';
    const index = signature.scalar(4, 'u32');
    if (index >= subgraphs.length) {
      throw new TFLiteFormatError(`signature '${key}' names a subgraph that does not exist`);
    }
    const tensors = subgraphs[index].tensors;
    const entry = {subgraph: index, inputs: {}, outputs: {}};
    for (const [field, kind] of [[0, 'inputs'], [1, 'outputs']]) {
      signature.tables(field, `signature '${key}' ${kind}`).forEach((map, m) => {
        const name = map.string(0, `signature '${key}' ${kind} ${m} name`) || '';
        const t = map.scalar(1, 'u32');
        if (t >= tensors.length) {
          throw new TFLiteFormatError(`signature '${key}' names a tensor that does not exist`);
        }
        entry[kind][name] = tensors[t];
      });
    }
    signatures[key] = entry;
  });
  return {subgraphs, signatures};
}

function sorted(names) {
  return [...names].sort();
}

function shapeText(shape) {
  return `[${shape.join(', ')}]`;
}

/** The input names of subgraph 0: from a signature over it, else from
 * its tensor names (`serving_default_x:0` -> `x`). */
function inputNames(structure) {
  const tensors = structure.subgraphs[0].inputs;
  for (const signature of Object.values(structure.signatures)) {
    if (signature.subgraph === 0) {
      const byIndex = new Map(Object.entries(signature.inputs).map(([name, t]) => [t.index, name]));
      return tensors.map((t) => byIndex.get(t.index));
    }
  }
  return tensors.map((t) => t.name.replace(/^serving_default_|:\d+$/g, ''));
}

/** The train signature's x and infer's scores of an export_tflite model, or
 * a TFLiteFormatError saying what the file is instead. */
function checkSignatureModel(structure) {
  const {signatures} = structure;
  const present = CONTRACT.SIGNATURES.filter((name) => name in signatures);
  if (present.length !== CONTRACT.SIGNATURES.length) {
    const inputs = inputNames(structure);
    if (!present.length && inputs.includes('x') && inputs.includes('y')) {
      throw new TFLiteFormatError(
          'a TFLite Micro train step (export_tflite_micro: one graph, no train/infer ' +
          'signatures); LiteRT.js runs the export_tflite model of the same network');
    }
    const keys = sorted(Object.keys(signatures));
    const listed = keys.length ? `[${keys.map((k) => `'${k}'`).join(', ')}]` : 'none';
    throw new TFLiteFormatError(
        `not a keras_spela export: it has neither the signatures ${CONTRACT.SIGNATURES.join(', ')} ` +
        `of export_tflite (its signatures: ${listed}) nor the x and y inputs of ` +
        `export_tflite_micro's train step (its inputs: [${inputs.map((n) => `'${n}'`).join(', ')}])`);
  }
  const train = signatures.train;
  const infer = signatures.infer;
  const [xName, yName] = CONTRACT.TRAIN_INPUTS;
  const x = train.inputs[xName];
  const y = train.inputs[yName];
  const problems = [];
  if (!x || !y) {
    problems.push(`its train signature takes [${sorted(Object.keys(train.inputs))}], not x and y`);
  } else if (x.dtype !== 'float32' || x.shape.length < 1 || x.shape.some((d) => d < 1)) {
    problems.push(`train's x is ${x.dtype} of shape ${shapeText(x.shape)}, not a float32 batch of static shape`);
  } else {
    if (y.dtype !== 'int32' || y.shape.length !== 1 || y.shape[0] !== x.shape[0]) {
      problems.push(`train's y is ${y.dtype} ${shapeText(y.shape)}, not int32 [${x.shape[0]}]`);
    }
    const inferX = infer.inputs[CONTRACT.INFER_INPUT];
    if (inferX && inferX.shape.slice(1).join() !== x.shape.slice(1).join()) {
      problems.push(`infer's x ${shapeText(inferX.shape)} and train's x ${shapeText(x.shape)} disagree`);
    }
  }
  const unknown = Object.keys(train.inputs).filter((n) => !CONTRACT.TRAIN_INPUTS.includes(n));
  if (unknown.length) {
    problems.push(`its train signature takes inputs [${sorted(unknown)}] that DeviceTrainer does not know`);
  }
  if (!(CONTRACT.ACCEPTED_OUTPUT in train.outputs) || !(CONTRACT.LOSS_OUTPUT in train.outputs)) {
    problems.push(`its train signature returns [${sorted(Object.keys(train.outputs))}], not accepted and loss`);
  }
  const scores = infer.outputs[CONTRACT.SCORES_OUTPUT];
  if (!(CONTRACT.INFER_INPUT in infer.inputs) || !scores || scores.shape.length !== 2) {
    problems.push('its infer signature does not map x to (batch, classes) scores');
  } else if (Object.values(infer.outputs).some(
      (t) => t.shape.length !== 2 || t.shape[1] !== scores.shape[1])) {
    problems.push('its infer outputs are not all (batch, classes) scores');
  } else if (!exitNames(structure).length) {
    problems.push('its infer signature has no exit_<k>_scores output');
  }
  if (sorted(Object.keys(signatures.set_weights.inputs)).join() !==
      sorted(Object.keys(signatures.get_weights.outputs)).join()) {
    problems.push('its set_weights inputs are not the get_weights outputs');
  }
  if (problems.length) {
    throw new TFLiteFormatError(`not a valid export_tflite model: ${problems.join('; ')}`);
  }
  return {x, scores};
}

/** `exit_<k>` for every exit_<k>_scores output of infer, in order of k. */
function exitNames(structure) {
  const pattern = new RegExp(CONTRACT.EXIT_SCORES_PATTERN);
  return Object.keys(structure.signatures.infer.outputs)
      .filter((n) => pattern.test(n))
      .map((n) => Number(n.match(pattern)[1]))
      .sort((a, b) => a - b)
      .map((k) => `exit_${k}`);
}

/**
 * A copy of the model whose infer signature takes batches of exactly
 * `batch` rows: LiteRT.js 2.5 binds a signature's inputs and outputs to
 * buffers of static shape and has no resize call, so the dynamic batch
 * dimension (-1 in the shape signature) of every tensor of the infer
 * subgraph is set to `batch` in place (the same shapes the runtime would
 * compute after resizing x to `batch`).
 */
function withStaticInferBatch(bytes, structure, batch) {
  const copy = new Uint8Array(bytes);
  const view = new DataView(copy.buffer);
  const subgraph = structure.subgraphs[structure.signatures.infer.subgraph];
  for (const tensor of subgraph.tensors) {
    const signature = tensor.shapeSignature;
    if (signature.length && signature[0] === -1 && tensor.shape.length === signature.length) {
      view.setInt32(tensor.signatureAt, batch, true);
      view.setInt32(tensor.shapeAt, batch, true);
    }
  }
  return copy;
}

// ------------------------------------------------------------------ runtime
let liteRtLoading = null;

/** Loads LiteRT.js's WebAssembly once per page, from `wasmPath` (default:
 * node_modules/@litertjs/core/wasm/ beside this module; no CDN). `jspi`
 * loads its JSPI build (needed to split a model between WebGPU and wasm);
 * the first call decides. */
export function loadRuntime(wasmPath, {jspi = false} = {}) {
  if (!liteRtLoading) {
    const path = wasmPath || new URL('./node_modules/@litertjs/core/wasm/', import.meta.url).href;
    liteRtLoading = loadLiteRt(path, {jspi}).catch((error) => {
      liteRtLoading = null;
      throw error;
    });
  }
  return liteRtLoading;
}

async function readSource(source) {
  if (source instanceof Uint8Array) return {bytes: source, name: 'the model bytes'};
  if (source instanceof ArrayBuffer) return {bytes: new Uint8Array(source), name: 'the model bytes'};
  if (typeof Blob !== 'undefined' && source instanceof Blob) {
    return {bytes: new Uint8Array(await source.arrayBuffer()), name: source.name || 'the model blob'};
  }
  const name = String(source);
  let response;
  try {
    response = await fetch(source);
  } catch (error) {
    throw new ModelFileError(`${name}: the model file could not be fetched (${error.message})`);
  }
  if (!response.ok) {
    throw new ModelFileError(
        response.status === 404 ? `${name}: the model file does not exist (HTTP 404)` :
                                  `${name}: the model file could not be fetched (HTTP ${response.status})`);
  }
  return {bytes: new Uint8Array(await response.arrayBuffer()), name};
}

function oneLine(error) {
  return String(error && error.message ? error.message : error).split(/\s+/).join(' ').trim();
}

/** One signature of the compiled model, run by position: LiteRT.js names a
 * signature's outputs after their tensors (infer's `scores` and
 * `exit_<last>_scores` are one tensor), so which names each position carries
 * comes from the file's signature defs. */
class Signature {
  constructor(compiled, structure, key) {
    const definition = structure.signatures[key];
    const graph = structure.subgraphs[definition.subgraph];
    const namesOf = (named, tensor) =>
      Object.keys(named).filter((n) => named[n].index === tensor.index);
    this.key = key;
    this.runner = compiled.signatures[key];
    this.inputNames = graph.inputs.map((t) => namesOf(definition.inputs, t)[0]);
    this.outputNames = graph.outputs.map((t) => namesOf(definition.outputs, t));
    this.inputShapes = this.runner.getInputDetails().map((d) => Array.from(d.shape));
    const listed = this.runner.getInputDetails().map((d) => d.name);
    const outputs = this.runner.getOutputDetails().map((d) => d.name);
    if (listed.join() !== this.inputNames.join() || outputs.length !== this.outputNames.length ||
        outputs.some((name, i) => !this.outputNames[i].includes(name))) {
      throw new Error(
          `LiteRT.js lists the ${key} signature as inputs [${listed}] and outputs [${outputs}], ` +
          `not as the file's inputs [${this.inputNames}] and outputs ` +
          `[${this.outputNames.map((n) => n.join('|'))}]`);
    }
  }

  /** Runs with {name: TypedArray}; returns {name: TypedArray}. */
  async run(values) {
    const inputs = this.inputTensors(values);
    const outputs = await this.runner.run(inputs);
    const results = {};
    try {
      for (let i = 0; i < outputs.length; i++) {
        const value = await outputs[i].data();
        for (const name of this.outputNames[i]) results[name] = value;
      }
    } finally {
      for (const tensor of outputs) tensor.delete();
    }
    return results;
  }

  /** The input tensors, holding `values`: host-memory tensors made on the
   * first run and written in place afterwards (as the Tensor constructor
   * writes them), which saves making and freeing them at every step. */
  inputTensors(values) {
    if (!this.inputs) {
      this.inputs = this.inputNames.map((name, i) => new Tensor(values[name], this.inputShapes[i]));
      return this.inputs;
    }
    const heap = () => getGlobalLiteRt().liteRtWasm;
    this.inputs.forEach((tensor, i) => {
      const value = values[this.inputNames[i]];
      const buffer = tensor.liteRtTensorBuffer;
      const bytes = new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
      if (bytes.length !== buffer.packedSize()) {
        throw new Error(`${this.key} input ${this.inputNames[i]}: ${bytes.length} bytes for a buffer of ${buffer.packedSize()}`);
      }
      const wasm = heap();
      const pointer = buffer.lock(wasm.LiteRtTensorBufferLockMode.WRITE);
      try {
        wasm.HEAPU8.set(bytes, pointer);
      } finally {
        buffer.unlock();
      }
    });
    return this.inputs;
  }

  delete() {
    for (const tensor of this.inputs || []) tensor.delete();
    this.inputs = null;
  }
}

// ---------------------------------------------------------------- helpers
const FLOAT_ARRAYS = [Float32Array, Float64Array];

function product(shape) {
  return shape.reduce((a, b) => a * b, 1);
}

/** A seeded generator of uniform numbers in [0, 1) (mulberry32). */
function randomGenerator(seed) {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function permutation(n, random) {
  const order = Array.from({length: n}, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  return order;
}

function typeName(value) {
  if (value === null || value === undefined) return String(value);
  return value.constructor ? value.constructor.name : typeof value;
}

function someNames(names, shown = 6) {
  if (names.length <= shown) return `[${names.join(', ')}]`;
  return `[${names.slice(0, shown).join(', ')}, ... (${names.length} in all)]`;
}

// ------------------------------------------------------------- the trainer
/**
 * Trains and runs an `export_tflite` model in the browser with LiteRT.js.
 *
 * Create it with `await DeviceTrainer.load(source, options)`. Attributes:
 * `batchSize`, `inputShape`, `exampleSize`, `numClasses`, `exits`
 * (`exit_<k>` names), `acceptsPadding`, `accelerator` ('wasm' or 'webgpu'),
 * `runtime` ('litert.js'), `weightShapes` ({name: shape}).
 */
export class DeviceTrainer {
  /**
   * Loads, checks and compiles an exported model.
   *
   * Args:
   *   source: a URL (string or URL), a Uint8Array / ArrayBuffer of the file,
   *     or a File / Blob.
   *   options.accelerator: 'wasm' (default: XNNPack on the CPU) or 'webgpu'.
   *   options.wasmPath: where LiteRT.js's .wasm files are served.
   *   options.jspi: load LiteRT.js's JSPI build (lets 'webgpu' run the
   *     operators it cannot take on wasm; the first load of a page decides).
   *
   * Returns:
   *   A DeviceTrainer.
   *
   * Throws:
   *   ModelFileError: the file is missing, empty, truncated, not a .tflite
   *     model, not a keras_spela export_tflite model, or LiteRT.js cannot
   *     compile it. DeviceTrainingError: an unknown accelerator, or 'webgpu'
   *     in a browser without WebGPU.
   */
  static async load(source, options = {}) {
    const accelerator = options.accelerator || 'wasm';
    if (!ACCELERATORS.includes(accelerator)) {
      throw new DeviceTrainingError(
          `accelerator must be one of ${ACCELERATORS.join(', ')}, received '${accelerator}'.`);
    }
    const {bytes, name} = await readSource(source);
    let structure;
    let checked;
    try {
      structure = readModelStructure(bytes);
      checked = checkSignatureModel(structure);
      checked.exits = exitNames(structure);
    } catch (error) {
      if (error instanceof TFLiteFormatError) throw new ModelFileError(`${name}: ${error.message}`);
      throw error;
    }
    await loadRuntime(options.wasmPath, {jspi: Boolean(options.jspi)});
    if (accelerator === 'webgpu' && !isWebGPUSupported()) {
      throw new DeviceTrainingError(
          "This browser offers no WebGPU (navigator.gpu); use accelerator 'wasm'.");
    }
    const batchSize = checked.x.shape[0];
    let compiled;
    let signatures;
    try {
      compiled = await loadAndCompile(withStaticInferBatch(bytes, structure, batchSize), {accelerator});
      signatures = {};
      for (const key of CONTRACT.SIGNATURES) signatures[key] = new Signature(compiled, structure, key);
    } catch (error) {
      if (compiled) compiled.delete();
      const hint = accelerator === 'webgpu' ?
          " (LiteRT.js's WebGPU delegate takes graphs of static-size tensors only, and the " +
          "signatures read the weights from resource variables, whose reads have a dynamic size: " +
          "use accelerator 'wasm')" : '';
      throw new ModelFileError(`${name}: LiteRT.js (${accelerator}) could not load the model: ${oneLine(error)}${hint}`);
    }
    const trainer = new DeviceTrainer(structure, checked, compiled, signatures, accelerator);
    trainer.modelName = name;
    try {
      await trainer.predict(new Float32Array(trainer.exampleSize));  // allocates now
      if (trainer.hasClassMask) await trainer.getWeights();
    } catch (error) {
      trainer.delete();
      throw new ModelFileError(`${name}: LiteRT.js (${accelerator}) could not run the model: ${oneLine(error)}`);
    }
    return trainer;
  }

  constructor(structure, checked, compiled, signatures, accelerator) {
    const {train, get_weights: getWeights} = structure.signatures;
    this.runtime = 'litert.js';
    this.accelerator = accelerator;
    this.batchSize = checked.x.shape[0];
    this.inputShape = checked.x.shape.slice(1);
    this.exampleSize = product(this.inputShape);
    this.numClasses = checked.scores.shape[checked.scores.shape.length - 1];
    this.acceptsPadding = CONTRACT.PADDING_OUTPUT in train.outputs;
    this.hasClassMask = CONTRACT.CLASS_MASK in getWeights.outputs;
    this.exits = checked.exits;
    this.weightShapes = {};
    for (const [n, tensor] of Object.entries(getWeights.outputs)) this.weightShapes[n] = tensor.shape;
    this.isFullyAccelerated = compiled.isFullyAccelerated;
    this._compiled = compiled;
    this._signatures = signatures;
    this._classMask = null;
    this._queue = Promise.resolve();
  }

  /** Runs `work` after every call queued before it (one model, one caller
   * at a time: a click on predict during fit waits for the step). */
  _serial(work) {
    const result = this._queue.then(work);
    this._queue = result.catch(() => {});
    return result;
  }

  /** Frees the compiled model (the trainer cannot be used afterwards). */
  delete() {
    for (const signature of Object.values(this._signatures)) signature.delete();
    this._compiled.delete();
  }

  // ------------------------------------------------------------------ train
  /**
   * Learns from one batch of 1 to `batchSize` examples (exactly `batchSize`
   * when the model does not ignore padding rows); a short batch is padded
   * with zero rows labelled -1.
   *
   * Returns:
   *   {loss, exit_<k>_loss, ...} of the batch.
   *
   * Throws:
   *   DeviceTrainingError: bad data (checked before the model runs), or a
   *     batch the model itself rejected (its weights are then unchanged).
   */
  trainBatch(x, y) {
    const batch = this._checkArrays(x, y);
    this._checkActive(batch.y);
    if (this.acceptsPadding) {
      if (!(batch.count >= 1 && batch.count <= this.batchSize)) {
        throw new DeviceTrainingError(
            `The train signature takes batches of 1 to at most ${this.batchSize} examples, ` +
            `received ${batch.count}.`);
      }
    } else if (batch.count !== this.batchSize) {
      throw new DeviceTrainingError(
          `The train signature takes batches of exactly ${this.batchSize} examples, received ${batch.count}.`);
    }
    return this._serial(() => this._trainChecked(batch.x, batch.y, batch.count));
  }

  async _trainChecked(x, y, count) {
    let xs = x;
    let ys = y;
    if (count < this.batchSize) {
      xs = new Float32Array(this.batchSize * this.exampleSize);
      ys = new Int32Array(this.batchSize).fill(CONTRACT.PADDING_LABEL);
      xs.set(x.subarray(0, count * this.exampleSize));
      ys.set(y.subarray(0, count));
    }
    const [xName, yName] = CONTRACT.TRAIN_INPUTS;
    const outputs = await this._signatures.train.run({[xName]: xs, [yName]: ys});
    if (outputs[CONTRACT.ACCEPTED_OUTPUT][0] !== 1) {
      throw new DeviceTrainingError(
          'The device model rejected the batch (a NaN/inf value, a label it refuses, a ' +
          'non-finite loss or gradients too large); its weights are unchanged.');
    }
    const losses = {};
    for (const [name, value] of Object.entries(outputs)) {
      if (name.endsWith(CONTRACT.LOSS_SUFFIX) || name === CONTRACT.LOSS_OUTPUT) losses[name] = value[0];
    }
    return losses;
  }

  /**
   * Trains for `epochs` passes over (x, y) in batches of `batchSize`; the
   * last, short batch of an epoch is padded with rows labelled -1 and learned
   * from like SpelaModel.fit's short last batch (the mean over its real
   * examples). A model that does not ignore padding drops it.
   *
   * Args:
   *   x, y: the examples and their labels.
   *   options: {epochs = 1, shuffle = true, seed = 0, onBatchEnd(step, losses),
   *     onEpochEnd(epoch, logs)}; a number is taken as `epochs`.
   *
   * Returns:
   *   {loss: [per epoch], exit_<k>_loss: [...]}: mean losses per example.
   *
   * Throws:
   *   DeviceTrainingError: bad data (nothing is trained), or a batch that the
   *     model rejected (the steps before it were learned).
   */
  async fit(x, y, options = {}) {
    const settings = typeof options === 'number' ? {epochs: options} : options;
    const {epochs = 1, shuffle = true, seed = 0, onBatchEnd, onEpochEnd} = settings;
    const data = this._checkArrays(x, y);
    this._checkActive(data.y);
    if (!Number.isInteger(epochs) || epochs < 1) {
      throw new DeviceTrainingError(`epochs must be a positive integer, received ${epochs}.`);
    }
    if (data.count === 0) throw new DeviceTrainingError('fit needs at least one example, received 0.');
    let steps;
    let used;
    if (this.acceptsPadding) {
      steps = Math.ceil(data.count / this.batchSize);
      used = data.count;
    } else {
      if (data.count < this.batchSize) {
        throw new DeviceTrainingError(
            `fit needs at least batch_size=${this.batchSize} examples, received ${data.count}.`);
      }
      steps = Math.floor(data.count / this.batchSize);
      used = steps * this.batchSize;
    }
    const random = randomGenerator(seed);
    const history = {};
    const size = this.exampleSize;
    for (let epoch = 0; epoch < epochs; epoch++) {
      const order = shuffle ? permutation(data.count, random) : Array.from({length: data.count}, (_, i) => i);
      const totals = {};
      for (let step = 0; step < steps; step++) {
        const index = order.slice(step * this.batchSize, (step + 1) * this.batchSize);
        const xs = new Float32Array(index.length * size);
        const ys = new Int32Array(index.length);
        index.forEach((row, i) => {
          xs.set(data.x.subarray(row * size, (row + 1) * size), i * size);
          ys[i] = data.y[row];
        });
        let losses;
        try {
          losses = await this._serial(() => this._trainChecked(xs, ys, index.length));
        } catch (error) {
          if (!(error instanceof DeviceTrainingError)) throw error;
          throw new DeviceTrainingError(
              `Epoch ${epoch + 1}/${epochs}, step ${step + 1}/${steps}: ${error.message}` +
              (epoch || step ? ' The steps before it were learned.' : ''));
        }
        for (const [key, value] of Object.entries(losses)) {
          totals[key] = (totals[key] || 0) + value * index.length;
        }
        if (onBatchEnd) onBatchEnd(epoch * steps + step, losses);
      }
      const logs = {};
      for (const [key, value] of Object.entries(totals)) {
        (history[key] = history[key] || []).push(value / used);
        logs[key] = value / used;
      }
      if (onEpochEnd) onEpochEnd(epoch, logs);
    }
    return history;
  }

  // ---------------------------------------------------------------- predict
  /**
   * Class scores: at the last exit (default), at exit `exit` (an index or a
   * name like 'exit_0'), or at every exit with exit = 'all' ({exit_k: rows}).
   * Scores are an array of Float32Array rows of `numClasses` values.
   */
  async predict(x, exit = undefined) {
    const name = this._exitName(exit);
    const data = this._checkInputs(x);
    const scores = await this._serial(() => this._infer(data.x, data.count));
    return name === null ? scores : scores[name];
  }

  /** The exit's name, or null for 'all'; a DeviceTrainingError for any other value. */
  _exitName(exit) {
    const exits = `[${this.exits.join(', ')}]`;
    if (exit === 'all') return null;
    if (exit === undefined || exit === null) return this.exits[this.exits.length - 1];
    if (typeof exit === 'string') {
      if (!this.exits.includes(exit)) throw new DeviceTrainingError(`Unknown exit '${exit}'; the exits are ${exits}.`);
      return exit;
    }
    if (Number.isInteger(exit)) {
      if (exit < -this.exits.length || exit >= this.exits.length) {
        throw new DeviceTrainingError(
            `exit=${exit} is out of range: the model has ${this.exits.length} exits ${exits} ` +
            `(indices ${-this.exits.length} to ${this.exits.length - 1}).`);
      }
      return this.exits.at(exit);
    }
    throw new DeviceTrainingError(`exit must be undefined, 'all', an exit index or name ${exits}, received ${exit}.`);
  }

  async _infer(x, count) {
    const rows = {};
    for (const name of this.exits) rows[name] = [];
    const size = this.exampleSize;
    for (let start = 0; start < count; start += this.batchSize) {
      const n = Math.min(this.batchSize, count - start);
      const chunk = new Float32Array(this.batchSize * size);
      chunk.set(x.subarray(start * size, (start + n) * size));
      const outputs = await this._signatures.infer.run({[CONTRACT.INFER_INPUT]: chunk});
      for (const name of this.exits) {
        const scores = outputs[`${name}${CONTRACT.SCORES_SUFFIX}`];
        for (let i = 0; i < n; i++) {
          rows[name].push(scores.slice(i * this.numClasses, (i + 1) * this.numClasses));
        }
      }
    }
    return rows;
  }

  /**
   * Accuracy at every exit: {exit_<k>_accuracy: ...}. For a max_classes
   * model, over the examples of the active classes only.
   */
  async evaluate(x, y) {
    let data = this._checkArrays(x, y);
    const active = this.activeClasses;
    if (active !== null) data = this._keep(data, (label) => active.includes(label));
    if (!data.count) {
      return Object.fromEntries(this.exits.map((n) => [`${n}${CONTRACT.ACCURACY_SUFFIX}`, 0]));
    }
    const scores = await this._serial(() => this._infer(data.x, data.count));
    const results = {};
    for (const name of this.exits) {
      let correct = 0;
      scores[name].forEach((row, i) => {
        let best = 0;
        for (let k = 1; k < row.length; k++) if (row[k] > row[best]) best = k;
        if (best === data.y[i]) correct += 1;
      });
      results[`${name}${CONTRACT.ACCURACY_SUFFIX}`] = correct / data.count;
    }
    return results;
  }

  _keep(data, predicate) {
    const keep = [];
    data.y.forEach((label, i) => predicate(label) && keep.push(i));
    const x = new Float32Array(keep.length * this.exampleSize);
    keep.forEach((row, i) => x.set(data.x.subarray(row * this.exampleSize, (row + 1) * this.exampleSize), i * this.exampleSize));
    return {x, y: Int32Array.from(keep.map((i) => data.y[i])), count: keep.length};
  }

  // ---------------------------------------------------------------- classes
  /** The active class ids of a SpelaModel(max_classes=...) export, or null. */
  get activeClasses() {
    if (!this.hasClassMask) return null;
    const active = [];
    this._classMask.forEach((value, k) => value > 0.5 && active.push(k));
    return active;
  }

  /** Starts class `classId` on the device: its labels are learned from and
   * it counts in predict / evaluate from now on (saved with the weights). */
  async activateClass(classId) {
    if (!this.hasClassMask) {
      throw new DeviceTrainingError('This model has no room for new classes: export a SpelaModel(..., max_classes=N).');
    }
    if (!Number.isInteger(classId) || classId < 0 || classId >= this.numClasses) {
      throw new DeviceTrainingError(
          `class_id must be an integer in [0, max_classes=${this.numClasses}), received ${classId}.`);
    }
    if (this._classMask[classId] > 0.5) {
      throw new DeviceTrainingError(`Class ${classId} is already active (active: [${this.activeClasses}]).`);
    }
    const weights = await this.getWeights();
    weights[CONTRACT.CLASS_MASK][classId] = 1;
    await this.setWeights(weights);
  }

  // ---------------------------------------------------------------- weights
  /** Every learned weight and optimizer state, by name: {name: Float32Array}
   * (shapes in `weightShapes`). */
  getWeights() {
    return this._serial(async () => {
      const request = new Int32Array([0]);
      const weights = await this._signatures.get_weights.run({[CONTRACT.GET_WEIGHTS_INPUT]: request});
      if (this.hasClassMask) this._classMask = Float32Array.from(weights[CONTRACT.CLASS_MASK]);
      return weights;
    });
  }

  /** Sets every learned weight and optimizer state (the names of
   * getWeights); values that are not finite are refused and change nothing. */
  setWeights(weights) {
    const names = Object.keys(this.weightShapes);
    const missing = names.filter((n) => !(n in weights)).sort();
    const unknown = Object.keys(weights).filter((n) => !(n in this.weightShapes)).sort();
    if (missing.length || unknown.length) {
      throw new DeviceTrainingError(
          `set_weights needs exactly the names of get_weights; missing ${someNames(missing)}, ` +
          `unknown ${someNames(unknown)}.`);
    }
    const values = {};
    for (const name of names) {
      const value = weights[name];
      const size = product(this.weightShapes[name]);
      if (!value || typeof value.length !== 'number' || value.length !== size) {
        throw new DeviceTrainingError(
            `Weight '${name}' must have shape (${this.weightShapes[name].join(', ')}): ${size} values, ` +
            `received ${value && typeof value.length === 'number' ? value.length : typeName(value)}.`);
      }
      const array = Float32Array.from(value);
      if (!array.every(Number.isFinite)) throw new DeviceTrainingError(`Weight '${name}' contains NaN or inf.`);
      if (name === CONTRACT.CLASS_MASK && !array.every((v) => v === 0 || v === 1)) {
        throw new DeviceTrainingError(`Weight '${name}' must hold 0 or 1 per class, received [${array}].`);
      }
      values[name] = array;
    }
    return this._serial(async () => {
      const outputs = await this._signatures.set_weights.run(values);
      if (outputs[CONTRACT.ACCEPTED_OUTPUT][0] !== 1) {
        throw new DeviceTrainingError('The device model refused the weights.');
      }
      if (this.hasClassMask) this._classMask = values[CONTRACT.CLASS_MASK];
    });
  }

  /** Saves every weight and optimizer state in this browser (IndexedDB
   * database 'keras_spela', under `key`). */
  async saveWeights(key = 'weights') {
    const weights = await this.getWeights();
    const record = {format: 'keras_spela weights', shapes: this.weightShapes, weights};
    await withStore('readwrite', (store) => store.put(record, key));
  }

  /** Restores weights saved by saveWeights(key). */
  async loadWeights(key = 'weights') {
    const record = await withStore('readonly', (store) => store.get(key));
    if (!record) {
      throw new DeviceTrainingError(
          `No weights saved under '${key}' in this browser (IndexedDB '${WEIGHTS_DB}'); call saveWeights('${key}') first.`);
    }
    try {
      await this.setWeights(record.weights);
    } catch (error) {
      if (error instanceof DeviceTrainingError) {
        throw new DeviceTrainingError(`IndexedDB '${key}': ${error.message}`);
      }
      throw error;
    }
  }

  /** The weights as the bytes of an .npz archive (np.load and the Python
   * DeviceTrainer.load_weights read it). */
  async weightsToNpz() {
    const weights = await this.getWeights();
    return writeNpz(Object.keys(weights).sort().map((name) => [name, this.weightShapes[name], weights[name]]));
  }

  /** Restores weights from .npz bytes (DeviceTrainer.save_weights or
   * weightsToNpz); `name` names the file in errors. */
  async loadWeightsFromNpz(bytes, name = 'the weights file') {
    let arrays;
    try {
      arrays = await readNpz(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes));
    } catch (error) {
      throw new DeviceTrainingError(`${name}: not an .npz archive of float32 arrays (${oneLine(error)})`);
    }
    const weights = {};
    for (const [key, {shape, data}] of Object.entries(arrays)) {
      const expected = this.weightShapes[key];
      if (expected && shape.join() !== expected.join()) {
        throw new DeviceTrainingError(
            `${name}: Weight '${key}' must have shape (${expected.join(', ')}), received (${shape.join(', ')}).`);
      }
      weights[key] = data;
    }
    try {
      await this.setWeights(weights);
    } catch (error) {
      if (error instanceof DeviceTrainingError) throw new DeviceTrainingError(`${name}: ${error.message}`);
      throw error;
    }
  }

  /** Offers the weights as a download (`filename`, an .npz archive). */
  async downloadWeights(filename = 'personal_weights.npz') {
    const bytes = await this.weightsToNpz();
    const url = URL.createObjectURL(new Blob([bytes], {type: 'application/octet-stream'}));
    const link = Object.assign(document.createElement('a'), {href: url, download: filename});
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }

  // ----------------------------------------------------------------- checks
  _checkInputs(x) {
    const size = this.exampleSize;
    const shape = `(batch, ${this.inputShape.join(', ')})`;
    let flat;
    if (ArrayBuffer.isView(x)) {
      if (!FLOAT_ARRAYS.some((type) => x instanceof type)) {
        throw new DeviceTrainingError(
            `x must hold floating-point values, received ${typeName(x)}; scale integer images to floats first.`);
      }
      flat = x;
    } else if (Array.isArray(x)) {
      if (x.length && typeof x[0] !== 'number') {
        const bad = x.findIndex((row) => !row || typeof row.length !== 'number' ||
            (ArrayBuffer.isView(row) ? !FLOAT_ARRAYS.some((type) => row instanceof type) : false));
        if (bad >= 0) {
          throw new DeviceTrainingError(
              `x must be numbers or examples of floating-point values; example ${bad} is ${typeName(x[bad])}.`);
        }
        const rows = x.map((row) => (Array.isArray(row) ? row.flat(Infinity) : row));
        const wrong = rows.findIndex((row) => row.length !== size);
        if (wrong >= 0) {
          throw new DeviceTrainingError(
              `x must have shape ${shape}: ${size} values per example, example ${wrong} has ${rows[wrong].length}.`);
        }
        flat = new Float32Array(rows.length * size);
        rows.forEach((row, i) => flat.set(row, i * size));
      } else {
        flat = x;
      }
    } else {
      throw new DeviceTrainingError(`x must be a Float32Array or an array of examples, received ${typeName(x)}.`);
    }
    if (flat.length % size !== 0) {
      throw new DeviceTrainingError(
          `x must have shape ${shape}: a multiple of ${size} values, received ${flat.length}.`);
    }
    const values = flat instanceof Float32Array ? flat : Float32Array.from(flat);
    for (let i = 0; i < values.length; i++) {
      if (!Number.isFinite(values[i])) throw new DeviceTrainingError('x contains NaN or infinite values.');
    }
    return {x: values, count: values.length / size};
  }

  _checkArrays(x, y) {
    const inputs = this._checkInputs(x);
    if (ArrayBuffer.isView(y)) {
      if (FLOAT_ARRAYS.some((type) => y instanceof type) || y instanceof BigInt64Array || y instanceof BigUint64Array) {
        throw new DeviceTrainingError(`Labels must be integer class ids, received ${typeName(y)}.`);
      }
    } else if (!Array.isArray(y)) {
      throw new DeviceTrainingError(`Labels must be an Int32Array or an array of class ids, received ${typeName(y)}.`);
    } else {
      const bad = y.find((v) => !Number.isInteger(v));
      if (bad !== undefined) throw new DeviceTrainingError(`Labels must be integer class ids, received ${bad}.`);
    }
    if (y.length !== inputs.count) {
      throw new DeviceTrainingError(`Labels must have shape (${inputs.count},), received (${y.length},).`);
    }
    const labels = Int32Array.from(y);
    if (labels.length) {
      const low = labels.reduce((a, b) => Math.min(a, b));
      const high = labels.reduce((a, b) => Math.max(a, b));
      if (low < 0 || high >= this.numClasses) {
        throw new DeviceTrainingError(
            `Labels must be in [0, ${this.numClasses}), received values in [${low}, ${high}].`);
      }
    }
    return {x: inputs.x, y: labels, count: inputs.count};
  }

  _checkActive(y) {
    const active = this.activeClasses;
    if (active === null) return;
    const inactive = [...new Set(y)].filter((k) => !active.includes(k)).sort((a, b) => a - b);
    if (inactive.length) {
      throw new DeviceTrainingError(
          `Labels of classes that are not active: [${inactive}]; call activate_class first (active: [${active}]).`);
    }
  }
}

// ---------------------------------------------------------------- IndexedDB
function withStore(mode, action) {
  return new Promise((resolve, reject) => {
    const opening = indexedDB.open(WEIGHTS_DB, 1);
    opening.onupgradeneeded = () => opening.result.createObjectStore(WEIGHTS_STORE);
    opening.onerror = () => reject(new DeviceTrainingError(`IndexedDB '${WEIGHTS_DB}' cannot be opened: ${opening.error}`));
    opening.onsuccess = () => {
      const db = opening.result;
      const transaction = db.transaction(WEIGHTS_STORE, mode);
      const request = action(transaction.objectStore(WEIGHTS_STORE));
      transaction.oncomplete = () => {
        db.close();
        resolve(request.result);
      };
      transaction.onerror = () => {
        db.close();
        reject(new DeviceTrainingError(`IndexedDB '${WEIGHTS_DB}': ${transaction.error}`));
      };
    };
  });
}

// --------------------------------------------------------------------- .npz
const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(bytes) {
  let crc = 0xffffffff;
  for (const byte of bytes) crc = CRC_TABLE[(crc ^ byte) & 0xff] ^ (crc >>> 8);
  return (crc ^ 0xffffffff) >>> 0;
}

/** One float32 array as .npy bytes (format 1.0, little-endian, C order). */
function npyBytes(shape, data) {
  const dims = shape.length === 1 ? `${shape[0]},` : shape.join(', ');
  let header = `{'descr': '<f4', 'fortran_order': False, 'shape': (${dims}), }`;
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const bytes = new Uint8Array(10 + header.length + data.length * 4);
  bytes.set([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59, 1, 0]);
  new DataView(bytes.buffer).setUint16(8, header.length, true);
  bytes.set(new TextEncoder().encode(header), 10);
  const values = Float32Array.from(data);
  bytes.set(new Uint8Array(values.buffer), 10 + header.length);
  return bytes;
}

/** An .npz (a zip of stored .npy files) of [name, shape, Float32Array]. */
export function writeNpz(arrays) {
  const encoder = new TextEncoder();
  const locals = [];
  const centrals = [];
  let offset = 0;
  for (const [name, shape, data] of arrays) {
    const fileName = encoder.encode(`${name}.npy`);
    const content = npyBytes(shape, data);
    const crc = crc32(content);
    const local = new Uint8Array(30 + fileName.length);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint16(4, 20, true);
    lv.setUint32(14, crc, true);
    lv.setUint32(18, content.length, true);
    lv.setUint32(22, content.length, true);
    lv.setUint16(26, fileName.length, true);
    local.set(fileName, 30);
    const central = new Uint8Array(46 + fileName.length);
    const cv = new DataView(central.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(4, 20, true);
    cv.setUint16(6, 20, true);
    cv.setUint32(16, crc, true);
    cv.setUint32(20, content.length, true);
    cv.setUint32(24, content.length, true);
    cv.setUint16(28, fileName.length, true);
    cv.setUint32(42, offset, true);
    central.set(fileName, 46);
    locals.push(local, content);
    centrals.push(central);
    offset += local.length + content.length;
  }
  const centralSize = centrals.reduce((s, c) => s + c.length, 0);
  const end = new Uint8Array(22);
  const ev = new DataView(end.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, arrays.length, true);
  ev.setUint16(10, arrays.length, true);
  ev.setUint32(12, centralSize, true);
  ev.setUint32(16, offset, true);
  const parts = [...locals, ...centrals, end];
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out;
}

async function inflateRaw(bytes) {
  const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream('deflate-raw'));
  return new Uint8Array(await new Response(stream).arrayBuffer());
}

function parseNpy(bytes, name) {
  const magic = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59];
  if (bytes.length < 10 || magic.some((b, i) => bytes[i] !== b)) throw new Error(`${name} is not an .npy array`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const major = bytes[6];
  const headerLength = major === 1 ? view.getUint16(8, true) : view.getUint32(8, true);
  const start = major === 1 ? 10 : 12;
  const header = new TextDecoder().decode(bytes.subarray(start, start + headerLength));
  const descr = (header.match(/'descr':\s*'([^']+)'/) || [])[1];
  const fortran = /'fortran_order':\s*True/.test(header);
  const shapeText = (header.match(/'shape':\s*\(([^)]*)\)/) || [])[1];
  if (!descr || shapeText === undefined) throw new Error(`${name} has no descr or shape`);
  const shape = shapeText.split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  const count = product(shape);
  const raw = bytes.slice(start + headerLength);
  const types = {'<f4': Float32Array, '<f8': Float64Array};
  if (!(descr in types)) throw new Error(`${name} holds ${descr}, not float32`);
  if (fortran && shape.length > 1) throw new Error(`${name} is in Fortran order`);
  const values = new types[descr](raw.buffer, 0, count);
  return {shape, data: Float32Array.from(values)};
}

/** The arrays of .npz bytes: {name: {shape, data: Float32Array}}. Reads
 * the zip's central directory (np.savez writes zip64 entries, whose sizes are
 * in their extra fields). */
export async function readNpz(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let end = bytes.length - 22;
  while (end >= 0 && view.getUint32(end, true) !== 0x06054b50) end -= 1;
  if (end < 0) throw new Error('no zip end record found');
  const entries = view.getUint16(end + 10, true);
  let pos = view.getUint32(end + 16, true);
  const arrays = {};
  for (let e = 0; e < entries; e++) {
    if (pos + 46 > bytes.length || view.getUint32(pos, true) !== 0x02014b50) {
      throw new Error('a broken zip central directory');
    }
    const method = view.getUint16(pos + 10, true);
    let size = view.getUint32(pos + 20, true);
    let uncompressed = view.getUint32(pos + 24, true);
    const nameLength = view.getUint16(pos + 28, true);
    const extraLength = view.getUint16(pos + 30, true);
    const commentLength = view.getUint16(pos + 32, true);
    let offset = view.getUint32(pos + 42, true);
    const name = new TextDecoder().decode(bytes.subarray(pos + 46, pos + 46 + nameLength));
    // zip64: the 64-bit values of the fields that hold 0xffffffff, in order.
    let extra = pos + 46 + nameLength;
    const extraEnd = extra + extraLength;
    while (extra + 4 <= extraEnd) {
      const id = view.getUint16(extra, true);
      const length = view.getUint16(extra + 2, true);
      if (id === 1) {
        let at = extra + 4;
        const next = () => { const value = Number(view.getBigUint64(at, true)); at += 8; return value; };
        if (uncompressed === 0xffffffff) uncompressed = next();
        if (size === 0xffffffff) size = next();
        if (offset === 0xffffffff) offset = next();
      }
      extra += 4 + length;
    }
    if (offset + 30 > bytes.length || view.getUint32(offset, true) !== 0x04034b50) {
      throw new Error(`${name}: a broken zip entry`);
    }
    const start = offset + 30 + view.getUint16(offset + 26, true) + view.getUint16(offset + 28, true);
    if (start + size > bytes.length) throw new Error(`${name} is truncated`);
    const stored = bytes.subarray(start, start + size);
    let content;
    if (method === 0) content = stored;
    else if (method === 8) content = await inflateRaw(stored);
    else throw new Error(`${name} uses zip method ${method}`);
    arrays[name.replace(/\.npy$/, '')] = parseNpy(content, name);
    pos += 46 + nameLength + extraLength + commentLength;
  }
  if (!Object.keys(arrays).length) throw new Error('no .npy entries found');
  return arrays;
}

"""A train step in the browser (LiteRT.js) against LiteRT's Python Interpreter.

The model is the README main job's architecture (examples/on_device_finetune.py:
8x8x1 digits -> Flatten -> SpelaDense(256) -> SpelaDense(34), Adam(1e-2) inside
the model), exported with `export_tflite` at batch 16. The same 16 digits are
learned from, step after step, on both sides, measured side by side in
alternating rounds:

- browser: `DeviceTrainer.trainBatch` of web/keras_spela_web.js in headless
  Chromium (Debian's), LiteRT.js 'wasm' (XNNPack in WebAssembly, one thread:
  the threaded build needs a cross-origin-isolated page);
- Python: `DeviceTrainer.train_batch` of export/device_trainer.py on LiteRT's
  Interpreter (`ai_edge_litert`), at its default threads and at one thread,
  and the bare `train` signature runner (no checks) for reference.

One browser page stays open (web/test/run_in_chromium.mjs --stdin). It first
trains for `--warmup_s` seconds: V8 starts LiteRT.js's WebAssembly on its
baseline compiler and moves the hot functions to its optimizing tier while
they run, so the first few hundred steps are slower (printed: the per-step time
of each block of 50 steps meanwhile). Then each round times `--blocks` blocks
of `--steps` steps per side, Python and browser in turn, and the medians of the
per-step times are compared: the goal is a browser step within 2x the
Interpreter's (default threads). A last browser run tries `accelerator:
'webgpu'` with Chromium's software WebGPU adapter (SwiftShader) and prints
what it did.

    python benchmarks/browser_speed.py            # 30 rounds of 50 steps per side
    python benchmarks/browser_speed.py --quick    # 2 rounds, short blocks, 5 s warm-up

Needs node, Debian's chromium and `npm ci` in web/ (bash tools/install_web.sh).
Output: benchmarks/results/browser_speed[_quick].txt
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from quiet_common import capture_native_stderr  # noqa: E402  (first: TensorFlow, quietly)
from quiet_common import common  # noqa: E402

import numpy as np  # noqa: E402

import keras_spela  # noqa: E402
from keras_spela_device import DeviceTrainer  # noqa: E402
from keras_spela import SpelaDense  # noqa: E402
from keras_spela import SpelaModel  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
DRIVER = REPO / "web" / "test" / "run_in_chromium.mjs"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
BATCH = 16
GOAL = 2.0
BROWSER_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Chromium's software WebGPU adapter, for the webgpu try.
WEBGPU_ARGS = [
    "--no-sandbox",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-unsafe-webgpu",
    "--use-webgpu-adapter=swiftshader",
]


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, received {text!r}")
    return value


def export_main_job_model(directory):
    """The main job's architecture and device optimizer, exported at batch 16."""
    keras_spela_model = SpelaModel(
        [
            common.keras.Input((8, 8, 1)),
            common.keras.layers.Flatten(),
            SpelaDense(256, name="hidden"),
            SpelaDense(34, name="last"),
        ],
        num_classes=10,
    )
    keras_spela_model.compile()
    path = os.path.join(directory, "spela.tflite")
    with capture_native_stderr():
        keras_spela.export_tflite(
            keras_spela_model,
            path,
            batch_size=BATCH,
            optimizer=keras_spela.DeviceOptimizer("adam", 1e-2),
        )
    return path


def browser_blocks(directory, job, args=BROWSER_ARGS):
    """Runs one job in a fresh headless Chromium; returns its result."""
    plan = {
        "root": str(REPO),
        "mounts": {"/__data__/": directory},
        "chromium": CHROMIUM,
        "args": args,
        "jobs": [dict(job, id="job")],
    }
    plan_path = os.path.join(directory, "plan.json")
    out_path = os.path.join(directory, "results.json")
    with open(plan_path, "w") as f:
        json.dump(plan, f)
    completed = subprocess.run(
        ["node", str(DRIVER), plan_path, out_path], capture_output=True, text=True, timeout=600
    )
    if completed.returncode != 0:
        raise SystemExit(f"error: the browser run failed: {completed.stderr.strip()[-500:]}")
    with open(out_path) as f:
        entry = json.load(f)["job"]
    if "error" in entry:
        raise SystemExit(f"error: the browser job failed: {entry['error']}")
    return entry["result"]


class BrowserPage:
    """One harness page in headless Chromium, kept open: `run(job)` sends a
    job to run_in_chromium.mjs --stdin and returns its result."""

    def __init__(self, directory):
        self.plan_path = os.path.join(directory, "page_plan.json")
        with open(self.plan_path, "w") as f:
            json.dump(
                {
                    "root": str(REPO),
                    "mounts": {"/__data__/": directory},
                    "chromium": CHROMIUM,
                    "args": BROWSER_ARGS,
                },
                f,
            )

    def __enter__(self):
        self.process = subprocess.Popen(
            ["node", str(DRIVER), self.plan_path, "--stdin"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        return self

    def run(self, job):
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(
                f"error: the browser page ended: {self.process.stderr.read().strip()[-500:]}"
            )
        answer = json.loads(line)
        if "error" in answer:
            raise SystemExit(f"error: the browser job failed: {answer['error']}")
        return answer["result"]

    def __exit__(self, *exc):
        self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        return False


def python_blocks(step, steps, blocks):
    """Per-step milliseconds of `blocks` blocks of `steps` calls of `step`."""
    times = []
    for _ in range(blocks):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        times.append(1000 * (time.perf_counter() - start) / steps)
    return times


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        # One line (argparse would print the whole usage first); exit code 2.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv=None):
    parser = _ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=_positive, default=30)
    parser.add_argument("--blocks", type=_positive, default=1, help="blocks per side per round")
    parser.add_argument("--steps", type=_positive, default=50, help="train steps per block")
    parser.add_argument("--warmup_s", type=_positive, default=15, help="browser warm-up seconds")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 blocks of 30 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.blocks, args.steps, args.warmup_s = 2, 2, 30, 5
    missing = [
        what
        for what, ok in (
            ("node", shutil.which("node")),
            (CHROMIUM, os.path.exists(CHROMIUM)),
            ("web/node_modules", (REPO / "web" / "node_modules" / "@litertjs").is_dir()),
        )
        if not ok
    ]
    if missing:
        print(f"error: needs {', '.join(missing)}: run bash tools/install_web.sh", file=sys.stderr)
        return 1

    directory = tempfile.mkdtemp(prefix="browser_speed_")
    model_path = export_main_job_model(directory)
    (x, y), _ = keras_spela.datasets.load_digits(flatten=False)
    x, y = x[:BATCH].astype(np.float32), y[:BATCH].astype(np.int32)
    with open(os.path.join(directory, "batch.json"), "w") as f:
        json.dump({"x": x.reshape(-1).tolist(), "y": y.tolist()}, f)

    trainers = {
        "default threads": DeviceTrainer(model_path, runtime="litert"),
        "1 thread": DeviceTrainer(model_path, runtime="litert", num_threads=1),
    }
    raw = trainers["default threads"]._backend._train
    python_steps = {
        f"Python DeviceTrainer.train_batch, {name}": (lambda t=t: t.train_batch(x, y))
        for name, t in trainers.items()
    }
    python_steps["Python train signature runner (no checks), default threads"] = lambda: raw(
        x=x, y=y
    )
    browser_name = "browser DeviceTrainer.trainBatch, wasm (1 thread)"
    times = {name: [] for name in [browser_name, *python_steps]}
    job = {
        "kind": "bench",
        "model": "/__data__/spela.tflite",
        "data": "/__data__/batch.json",
        "rounds": args.blocks,
        "steps": args.steps,
    }

    with BrowserPage(directory) as page:
        warmup = page.run(dict(job, rounds=0, warmupSeconds=args.warmup_s))["warmup"]
        for name, step in python_steps.items():  # warm-up
            python_blocks(step, args.steps, 1)
        for _ in range(args.rounds):
            for name, step in python_steps.items():
                times[name] += python_blocks(step, args.steps, args.blocks)
            times[browser_name] += page.run(job)["blocks"]

    with open(os.path.join(directory, "webgpu.json"), "w") as f:  # 2 steps
        json.dump(
            {"x": np.tile(x.reshape(-1), 2).tolist(), "y": np.tile(y, 2).tolist(), "epochs": 1}, f
        )
    webgpu = browser_blocks(
        directory,
        {"kind": "webgpu", "model": "/__data__/spela.tflite", "data": "/__data__/webgpu.json"},
        args=WEBGPU_ARGS,
    )
    shutil.rmtree(directory, ignore_errors=True)

    path = common.results_path("browser_speed.txt", args.quick)
    with common.Tee(path):
        print(
            f"# browser_speed.py ({time.strftime('%Y-%m-%d %H:%M')}); {common.environment_line()}"
        )
        print(
            f"# load average {common.load_average()}; {_chromium_version()}, node {_node_version()}, "
            f"@litertjs/core {_package_version('@litertjs/core')}"
        )
        print(
            f"# model: 8x8x1 -> Flatten -> 256 -> 34 (the main job's), Adam inside, batch {BATCH}; "
            f"{args.rounds} rounds x {args.blocks} blocks x {args.steps} steps per side, alternating"
        )
        reference = common.median(times["Python DeviceTrainer.train_batch, default threads"])
        rows = [
            [
                name,
                f"{common.median(values):.3f}",
                f"{min(values):.3f}",
                f"{max(values):.3f}",
                f"{common.median(values) / reference:.2f}x",
            ]
            for name, values in times.items()
        ]
        print(
            f"\nbrowser warm-up: {50 * len(warmup)} steps in {args.warmup_s} s; ms per step of its "
            f"first 10 blocks of 50: "
            + " ".join(f"{v:.2f}" for v in warmup[:10])
            + f"; fastest block {min(warmup):.2f}"
        )
        print(
            common.format_table(
                [
                    "train step at batch 16 (after the warm-up)",
                    "median ms",
                    "min ms",
                    "max ms",
                    "/ Python default",
                ],
                rows,
            )
        )
        ratio = common.median(times[browser_name]) / reference
        one_thread = common.median(times[browser_name]) / common.median(
            times["Python DeviceTrainer.train_batch, 1 thread"]
        )
        fastest = min(times[browser_name]) / min(
            times["Python DeviceTrainer.train_batch, default threads"]
        )
        print(
            f"\nbrowser / Python Interpreter step time: {ratio:.2f}x (default threads), "
            f"{one_thread:.2f}x (1 thread); goal <= {GOAL:.1f}x: {'met' if ratio <= GOAL else 'NOT met'}"
        )
        print(
            f"fastest block / fastest block: {fastest:.2f}x (the machine's other load slows "
            f"both sides; Chromium's several processes more)"
        )
        print("\nwebgpu: " + _describe_webgpu(webgpu))
    print(f"saved {path}")
    return 0


def _describe_webgpu(report):
    if not report.get("navigatorGpu"):
        return "this Chromium has no navigator.gpu"
    adapter = report.get("adapter")
    where = (
        f"adapter {adapter.get('vendor')}/{adapter.get('architecture')}"
        if isinstance(adapter, dict)
        else "no adapter"
    )
    if report.get("load"):
        return (
            f"{where}; DeviceTrainer.load(accelerator 'webgpu') failed: {report['load']['message']}"
        )
    if report.get("train"):
        return f"{where}; loaded (fully accelerated: {report.get('fullyAccelerated')}), training failed: {report['train']['message']}"
    return (
        f"{where}; trained 2 steps, loss {report['history']['loss']}, fully accelerated: "
        f"{report.get('fullyAccelerated')}"
    )


def _chromium_version():
    try:
        return subprocess.run(
            [CHROMIUM, "--version"], capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except OSError:
        return "chromium ?"


def _node_version():
    return subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()


def _package_version(name):
    with open(REPO / "web" / "node_modules" / name / "package.json") as f:
        return json.load(f)["version"]


if __name__ == "__main__":
    sys.exit(main())

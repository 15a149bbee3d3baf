"""A 2.4 GB ONNX model (external data) through every precision: exit code, wall time, peak memory (issue 14).

Builds ``big.onnx`` + ``big.onnx.data``: four ``MatMul`` 12288 x 12288 (float32, 576 MiB each) with
``Relu`` between, a dynamic batch axis, and ``calib.npz`` with 8 calibration samples (a few input
channels carry outliers, as in transformer activations). Then runs, each as its own ``compressor``
process writing into the same folder:

- int8 dynamic with ``--calibration-data`` (SmoothQuant smoothing), int8 dynamic without,
  static int8 (QDQ, minmax), int4 (MatMulNBits), fp16;

and prints, per run: exit code, wall time, the process's peak resident memory (``ru_maxrss`` of
the child, from ``os.wait4``) and its ratio to the model size, the compression step's own peak
(``peak_rss_bytes`` in the report), output size, cosine against fp32, and whether the output loads
in ONNX Runtime with its own data file (``<output>.data``). Inputs are hashed before and after.

Run: ``.venv/bin/python tests/benchmarks/big_model.py [--dir DIR] [--keep] [--only int8-calib,int4]``.
Needs about 10 GB of free disk in DIR (default: a temporary folder, deleted afterwards unless --keep).
``--check`` exits 1 unless every run exits 0, every int8 cosine is >= 0.99, and int8 dynamic and
int4 peak at most 2.5 times the model size.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "compressor"]
FAST_BENCH = ["--runs", "5", "--warmup", "1", "--no-measure-memory"]

RUNS = {
    "int8-calib": ["--calibration-data", "{calib}"],
    "int8": [],
    "int4": ["--precision", "int4"],
    "fp16": ["--precision", "fp16"],
    "int8-static": ["--mode", "static", "--calibration-data", "{calib}"],  # the most memory (calibrator)
    "export": [],  # compressor export of the same weights as a PyTorch pickle (4 x Linear, 2.4 GB)
}
BOUNDED = ("int8-calib", "int8", "int4")  # peak RSS must stay within 2.5 x the model size


def build_big_model(folder: Path, *, dim: int = 12288, layers: int = 4, samples: int = 8, seed: int = 0,
                    name: str = "big.onnx") -> tuple[Path, Path]:
    """Write ``name`` + ``name.data`` (``layers`` MatMul dim x dim with Relu between) and ``calib.npz``.

    Weights are made and written one at a time (memory: one weight), through compressor's own
    :class:`~compressor.external_data.DataWriter`; every initializer is in the data file.

    Returns:
        (model path, calibration npz path).
    """
    import onnx
    from onnx import TensorProto, helper

    from compressor.external_data import DataWriter

    rng = np.random.default_rng(seed)
    path = folder / name
    writer = DataWriter(path)
    nodes, inits, x = [], [], "x"
    for i in range(layers):
        t = onnx.TensorProto(name=f"w{i}")
        w = rng.standard_normal((dim, dim), dtype=np.float32)
        w *= np.float32(1.0 / np.sqrt(dim))
        writer.put(t, w)
        del w
        inits.append(t)
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"mm{i}"], name=f"matmul_{i}"))
        x = f"mm{i}"
        if i < layers - 1:
            nodes.append(helper.make_node("Relu", [x], [f"relu{i}"], name=f"relu_{i}"))
            x = f"relu{i}"
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", dim])],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, ["batch", dim])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    writer.save(model, base_dir=None)
    calib = rng.standard_normal((samples, dim)).astype(np.float32)
    calib[:, :: max(dim // 16, 1)] *= 20.0  # a few outlier channels (what SmoothQuant is for)
    npz = folder / "calib.npz"
    np.savez(npz, x=calib)
    return path, npz


def build_big_torch(folder: Path, *, dim: int = 12288, layers: int = 4, seed: int = 0) -> Path:
    """``big.pt``: ``torch.save`` of 4 x (Linear dim x dim, no bias) with ReLU between (2.4 GB at 12288).

    The weights are those of :func:`build_big_model` (same seed, transposed), so the export computes
    the same function as ``big.onnx``.
    """
    import torch

    rng = np.random.default_rng(seed)
    mods: list[torch.nn.Module] = []
    for i in range(layers):
        w = rng.standard_normal((dim, dim), dtype=np.float32)
        w *= np.float32(1.0 / np.sqrt(dim))
        lin = torch.nn.Linear(dim, dim, bias=False, device="meta")
        lin.weight = torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(w.T)), requires_grad=False)
        del w
        mods.append(lin)
        if i < layers - 1:
            mods.append(torch.nn.ReLU())
    path = folder / "big.pt"
    torch.save(torch.nn.Sequential(*mods).eval(), path)
    return path


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(64 << 20):
            h.update(chunk)
    return h.hexdigest()


def run_cli(args: list[str]) -> tuple[int, float, int, str, str]:
    """Run compressor in a child process; (exit code, wall s, child's peak RSS bytes, stdout, stderr)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen([*CLI, *args], stdout=out, stderr=err, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        return proc.returncode, wall, usage.ru_maxrss * 1024, out.read().decode(), err.read().decode()


def _loads_with_own_data(path: Path, x: np.ndarray) -> tuple[bool, np.ndarray | None]:
    import onnx
    import onnxruntime as ort

    m = onnx.load_model(str(path), load_external_data=False)
    locs = {kv.value for t in m.graph.initializer for kv in t.external_data if kv.key == "location"}
    own = locs <= {f"{path.name}.data"}
    del m
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    y = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    del sess
    return own, y


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one)")
    ap.add_argument("--keep", action="store_true", help="keep the models afterwards")
    ap.add_argument("--only", default=",".join(RUNS), help=f"comma-separated runs among {','.join(RUNS)}")
    ap.add_argument("--dim", type=int, default=12288, help="MatMul size (12288: 2.4 GB)")
    ap.add_argument("--check", action="store_true", help="exit 1 unless the acceptance holds")
    args = ap.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="big-model-", dir=os.environ.get("TMPDIR", "/tmp")))
    folder.mkdir(parents=True, exist_ok=True)
    failures = []
    try:
        t0 = time.perf_counter()
        model, calib = build_big_model(folder, dim=args.dim)
        size = model.stat().st_size + (folder / "big.onnx.data").stat().st_size
        print(f"built {model} ({size / 1e9:.2f} GB, {size / 2**30:.2f} GiB) in {time.perf_counter() - t0:.0f} s")
        cpu = json.loads(subprocess.run([*CLI, "doctor", "--json"], capture_output=True, text=True, cwd=ROOT).stdout
                         or "{}")
        isa = cpu.get("cpu", cpu).get("isa") if isinstance(cpu, dict) else None
        print(f"cpu: {cpu.get('cpu', {}).get('cpu_model', '?') if isinstance(cpu.get('cpu'), dict) else '?'}; "
              f"isa flags: {isa}")
        hashes = {p.name: _sha256(p) for p in (model, folder / "big.onnx.data", calib)}
        x = np.load(calib)["x"][:2]
        import onnxruntime as ort

        ref = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        print(f"{'run':<12} {'exit':>4} {'wall s':>7} {'peak RSS GB':>11} {'x model':>7} {'step peak GB':>12} "
              f"{'out MB':>8} {'cosine':>7} {'own .data':>9} {'loads':>5}")
        for name in args.only.split(","):
            extra = [a.format(calib=calib) for a in RUNS[name]]
            out = folder / f"big.{name}.onnx"
            if name == "export":
                pt = build_big_torch(folder, dim=args.dim)
                cmd = ["export", str(pt), "--calibration-data", str(calib), "-o", str(out), "--json"]
            else:
                cmd = ["quantize", str(model), *extra, "-o", str(out), "--json", *FAST_BENCH]
            code, wall, peak, stdout, stderr = run_cli(cmd)
            if name == "export":
                pt.unlink()
            step_peak = cosine = out_mb = None
            own = loads = False
            if code == 0:
                rep = json.loads(stdout)
                step_peak = rep["steps"][0].get("peak_rss_bytes")
                if name == "export":
                    print(f"  export: {rep['export'].get('exporter')}, max abs diff {rep['export'].get('max_abs_diff')}")
                out_mb = rep["result"]["size_bytes"] / 1e6
                try:
                    own, y = _loads_with_own_data(out, x)
                    loads = True
                    cosine = float(np.sum(y * ref) / (np.linalg.norm(y) * np.linalg.norm(ref)))
                except Exception as e:  # report it, go on with the others
                    print(f"  {name}: output does not load: {e}")
            else:
                print(f"  {name}: exit {code}: {stderr.strip().splitlines()[-1] if stderr.strip() else ''}")
            ratio = peak / size
            print(f"{name:<12} {code:>4} {wall:>7.1f} {peak / 1e9:>11.2f} {ratio:>7.2f} "
                  f"{(step_peak or 0) / 1e9:>12.2f} {out_mb or 0:>8.1f} {cosine or 0:>7.4f} {own!s:>9} {loads!s:>5}",
                  flush=True)
            if code != 0 or not loads or not own:
                failures.append(f"{name}: exit {code}, loads {loads}, own data file {own}")
            if name.startswith("int8") and (cosine or 0) < 0.99:
                failures.append(f"{name}: cosine {cosine}")
            if name in BOUNDED and ratio > 2.5:
                failures.append(f"{name}: peak RSS {ratio:.2f} x the model")
        after = {p.name: _sha256(p) for p in (model, folder / "big.onnx.data", calib)}
        print(f"inputs unchanged: {after == hashes}")
        if after != hashes:
            failures.append("an input changed")
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    for f in failures:
        print(f"FAIL {f}")
    return 1 if (failures and args.check) else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`compressor quantize` on the real all-MiniLM-L6-v2: int8 (default), int4 and fp16.

What it measures
----------------
1. Exports all-MiniLM-L6-v2 as a user would (``torch.onnx.export`` of ``last_hidden_state``,
   inputs ``input_ids`` and ``attention_mask``, dynamic batch and sequence axes) plus 8
   tokenised calibration sentences and 8 held-out sentences (batch 8 x 128 tokens), via
   ``minilm_export.export_minilm`` (reused when the files exist).
2. Runs the CLI exactly as a user would, once per precision::

       compressor quantize minilm.onnx -o OUT --calibration-data minilm_calib.npz \\
           --batch-size 8 --threads 2 --json [--precision int4|fp16]

   and reads its JSON report (size_ratio, speedup with 95% CI from interleaved runs).
3. Computes, with ONNX Runtime, the per-sentence cosine between attention-mask mean-pooled
   sentence embeddings of fp32 and the result, on the calibration sentences and on the
   held-out sentences.
4. Prints one table; ``--check`` exits 1 unless the targets of the quantization issue hold:
   int8 speedup >= 1.8, every calibration sentence's pooled cosine >= 0.99, size_ratio <=
   0.26; int4 size_ratio <= 0.2 and min cosine >= 0.95; fp16 size_ratio <= 0.51 and cosine
   >= 0.999.

Run: ``.venv/bin/python tests/benchmarks/minilm_quantize.py [--work-dir DIR] [--check]``
(needs ``pip install -e ".[bench]"``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

# Sibling script; importable because running this file puts its folder first on sys.path.
from minilm_export import CALIB_NAME, EVAL_NAME, ONNX_NAME, export_minilm, mean_pooled_cosine, run_onnx

BATCH_SIZE = 8
THREADS = 2
TARGETS = {  # precision -> (max size_ratio, min speedup or None, min pooled cosine)
    "int8": (0.26, 1.8, 0.99),
    "int4": (0.20, None, 0.95),
    "fp16": (0.51, None, 0.999),
}


def ensure_export(work_dir: Path) -> tuple[Path, Path, Path]:
    paths = work_dir / ONNX_NAME, work_dir / CALIB_NAME, work_dir / EVAL_NAME
    if all(p.is_file() for p in paths):
        print(f"reusing {', '.join(str(p) for p in paths)}")
        return paths
    export_minilm(work_dir)
    return paths


def run_cli(onnx_path: Path, calib_path: Path, out_path: Path, precision: str) -> dict[str, Any]:
    exe = Path(sys.executable).parent / "compressor"  # not resolved: the console script lives in the venv
    cmd = [str(exe), "quantize", str(onnx_path), "-o", str(out_path), "--calibration-data", str(calib_path),
           "--batch-size", str(BATCH_SIZE), "--threads", str(THREADS), "--json"]
    if precision != "int8":
        cmd += ["--precision", precision]
    print("running:", shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise RuntimeError(f"compressor exited with status {proc.returncode}")
    print(f"  finished in {time.perf_counter() - t0:.1f}s; warnings: {json.loads(proc.stdout)['warnings']}")
    return json.loads(proc.stdout)


def feeds_of(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {k: np.asarray(data[k], dtype=np.int64) for k in ("input_ids", "attention_mask")}


def benchmark(work_dir: Path, check: bool, precisions: list[str]) -> int:
    work_dir.mkdir(parents=True, exist_ok=True)
    onnx_path, calib_path, eval_path = ensure_export(work_dir)
    calib, held = feeds_of(calib_path), feeds_of(eval_path)
    ref_calib = run_onnx(onnx_path, calib, threads=THREADS)
    ref_held = run_onnx(onnx_path, held, threads=THREADS)
    rows, failed = [], []
    for precision in precisions:
        out = work_dir / f"minilm.{precision}.onnx"
        out.unlink(missing_ok=True)
        rep = run_cli(onnx_path, calib_path, out, precision)
        cos_c = mean_pooled_cosine(ref_calib, run_onnx(out, calib, threads=THREADS), calib["attention_mask"])
        cos_h = mean_pooled_cosine(ref_held, run_onnx(out, held, threads=THREADS), held["attention_mask"])
        q = rep["quantization"]
        rows.append((precision, rep, cos_c, cos_h, q))
        max_size, min_speedup, min_cos = TARGETS[precision]
        if rep["size_ratio"] > max_size:
            failed.append(f"{precision}: size_ratio {rep['size_ratio']:.3f} > {max_size}")
        if min_speedup is not None and rep["speedup"] < min_speedup:
            failed.append(f"{precision}: speedup {rep['speedup']:.3f} < {min_speedup}")
        if cos_c.min() < min_cos:
            failed.append(f"{precision}: min pooled cosine {cos_c.min():.4f} < {min_cos}")
    print()
    print(f"all-MiniLM-L6-v2, fp32 ONNX as exported by torch.onnx.export; batch {BATCH_SIZE} x 128 tokens, "
          f"{THREADS} threads, interleaved runs")
    header = (f"{'precision':<9} {'size_ratio':>10} {'speedup':>8} {'95% CI':>15} {'fp32 p50':>9} {'p50 ms':>8} "
              f"{'cos min':>8} {'cos mean':>8} {'held min':>8} {'held mean':>9}  settings")
    print(header)
    for precision, rep, cos_c, cos_h, q in rows:
        lo, hi = rep["speedup_ci95"]
        settings = (f"{q['mode']} w={q['weight_type']} {q['weight_scheme']} a={q['activation_type']} "
                    f"per_channel={q['per_channel']} rewrites={q.get('rewrites')}"
                    + (f" candidate={next(c['format'] for c in q['format_candidates'] if c.get('chosen'))}"
                       if q.get("format_candidates") else ""))
        print(f"{precision:<9} {rep['size_ratio']:>10.3f} {rep['speedup']:>8.3f} {f'[{lo:.2f}, {hi:.2f}]':>15} "
              f"{rep['baseline']['latency_ms']['p50']:>9.1f} {rep['result']['latency_ms']['p50']:>8.1f} "
              f"{cos_c.min():>8.4f} {cos_c.mean():>8.4f} {cos_h.min():>8.4f} {cos_h.mean():>9.4f}  {settings}")
    print("(cos: per-sentence cosine of mean-pooled embeddings vs fp32 on the 8 calibration sentences; "
          "held: on 8 held-out sentences)")
    if check:
        if failed:
            print("CHECK FAILED: " + "; ".join(failed), file=sys.stderr)
            return 1
        print("check passed")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where to put/reuse the export and results (default: a temporary folder)")
    parser.add_argument("--precisions", default="int8,int4,fp16", help="comma-separated subset of int8,int4,fp16")
    parser.add_argument("--check", action="store_true", help="exit 1 unless the targets are met")
    args = parser.parse_args(argv)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if args.work_dir is not None:
        return benchmark(args.work_dir, args.check, precisions)
    with tempfile.TemporaryDirectory(prefix="minilm_quantize_") as tmp:
        return benchmark(Path(tmp), args.check, precisions)


if __name__ == "__main__":
    sys.exit(main())

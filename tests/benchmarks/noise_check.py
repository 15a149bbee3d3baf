"""Noise check of the benchmark: a model against a byte-identical copy of itself.

Exports the sample digits CNN, copies it, and runs ``compressor bench m.onnx m_copy.onnx
--json`` five times in a row. A sound measurement gives a speedup near 1.0 whose 95%
confidence interval contains 1.0 every time.

Run: ``.venv/bin/python tests/benchmarks/noise_check.py [--repeats 5] [--model FILE.onnx]``
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "compressor"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", type=Path, default=None, help="ONNX model (default: the sample CNN, exported)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        m = Path(d) / "m.onnx"
        if args.model:
            shutil.copy(args.model, m)
        else:
            subprocess.run([*CLI, "export", str(ROOT / "sample_models/digits_cnn.pt"), "--input-shape", "1,1,8,8",
                            "-o", str(m)], check=True, cwd=ROOT)
        copy = Path(d) / "m_copy.onnx"
        shutil.copy(m, copy)
        ok = True
        print(f"{'run':>3} {'speedup':>8} {'ci95 low':>9} {'ci95 high':>9} {'rounds':>7}  contains 1.0")
        for i in range(args.repeats):
            out = subprocess.run([*CLI, "bench", str(m), str(copy), "--json"], capture_output=True, text=True, cwd=ROOT)
            if out.returncode != 0:
                print(out.stderr, file=sys.stderr)
                return 1
            rep = json.loads(out.stdout)
            low, high = rep["speedup_ci95"]
            inside = low <= 1.0 <= high and 0.95 <= rep["speedup"] <= 1.05
            ok &= inside
            print(f"{i + 1:>3} {rep['speedup']:>8.4f} {low:>9.4f} {high:>9.4f} {rep['baseline']['latency_ms']['runs']:>7}  {inside}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

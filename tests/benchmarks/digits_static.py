"""Static int8 acceptance numbers on the digits CNN (issue: quantization, first acceptance line).

Runs ``compressor quantize sample_models/digits_cnn.pt --mode static --calibration-data
digits_calib.npz --eval-data digits_eval.npz`` with the default settings, ``--repeats`` times,
each with a batch-size sweep (interleaved runs, fresh sessions per block), and prints top-1
accuracy before and after, and the speedup (p50 fp32 / p50 int8) with its 95% CI per batch size.
It also runs ``--scheme symmetric`` once for comparison (Relus kept in float).

Run: ``.venv/bin/python tests/benchmarks/digits_static.py [--check] [--threads N]``. ``--check``
exits 1 unless the accuracy drop is <= 0.5 points and, at every batch size of the sweep, the
median speedup over the repeats is >= 1.0 or the 95% CIs of the repeats include 1.0 (not worse).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "compressor"]
BATCHES = "1,8,32,64"


def cli(*args: str) -> dict:
    proc = subprocess.run([*CLI, *map(str, args), "--json"], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode not in (0, 3):
        raise SystemExit(f"compressor failed ({proc.returncode}): {proc.stderr}")
    return json.loads(proc.stdout)


def quantize(out: Path, threads: int, *extra: str) -> dict:
    s = ROOT / "sample_models"
    return cli("quantize", s / "digits_cnn.pt", "--mode", "static", "--calibration-data", s / "digits_calib.npz",
               "--eval-data", s / "digits_eval.npz", "--batch-sizes", BATCHES, "--threads", threads,
               "--no-measure-memory", "-o", out, *extra)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = its default)")
    args = parser.parse_args(argv)
    per_batch: dict[int, list[tuple[float, list[float], float, float]]] = {}
    with tempfile.TemporaryDirectory() as d:
        reports = [quantize(Path(d) / f"q{i}.onnx", args.threads) for i in range(args.repeats)]
        sym = quantize(Path(d) / "sym.onnx", args.threads, "--scheme", "symmetric")
    q = reports[0]["quantization"]
    acc = reports[0]["accuracy"]
    print(f"digits CNN, static int8 ({q['weight_type']} {q['weight_scheme']} weights per "
          f"{'channel' if q['per_channel'] else 'tensor'}, {q['activation_type']} {q['activation_scheme']} activations, "
          f"{q['calibration_method']} on {q['calibration_samples']} samples), threads {args.threads or 'default'}")
    print(f"  rewrites: {q['rewrites']}")
    print(f"  top-1 on {acc['samples']} eval samples: fp32 {acc['baseline'] * 100:.2f} %, int8 "
          f"{acc['result'] * 100:.2f} %, drop {acc['drop_points']:.2f} points")
    print("| batch | fp32 p50 ms | int8 p50 ms | speedup [95% CI], one line per repeat |")
    print("|---|---|---|---|")
    for rep in reports:
        for row in rep["sweep"]:
            per_batch.setdefault(row["batch_size"], []).append(
                (row["speedup"], row["speedup_ci95"], row["baseline_latency_ms"]["p50"], row["result_latency_ms"]["p50"]))
    for bs, rows in per_batch.items():
        cells = "; ".join(f"{s:.2f} [{lo:.2f}, {hi:.2f}]" for s, (lo, hi), _, _ in rows)
        print(f"| {bs} | {statistics.median(r[2] for r in rows):.4f} | {statistics.median(r[3] for r in rows):.4f} "
              f"| {cells} |")
    sym_bs1 = next(r for r in sym["sweep"] if r["batch_size"] == 1)
    print(f"  for comparison, --scheme symmetric (Relus kept between DQ and Q): batch 1 speedup "
          f"{sym_bs1['speedup']:.2f} [{sym_bs1['speedup_ci95'][0]:.2f}, {sym_bs1['speedup_ci95'][1]:.2f}]")
    if not args.check:
        return 0
    failed = []
    if acc["drop_points"] > 0.5:
        failed.append(f"accuracy drop {acc['drop_points']:.2f} > 0.5 points")
    for bs, rows in per_batch.items():
        med = statistics.median(r[0] for r in rows)
        if med < 1.0 and not all(lo <= 1.0 <= hi for _, (lo, hi), _, _ in rows):
            failed.append(f"batch {bs}: median speedup {med:.2f} < 1.0")
    for f in failed:
        print("FAIL:", f)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

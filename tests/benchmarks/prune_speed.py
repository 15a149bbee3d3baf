"""Pruning acceptance numbers: digits ResNet with recovery, and a ResNet-18-shaped CNN at 224x224.

1. ``compressor prune sample_models/digits_resnet.pt --ratio 0.5 --recover`` on
   ``digits_calib.npz`` (no labels): top-1 accuracy on ``digits_eval.npz`` before and after
   recovery, wall time, and speedup (interleaved runs) at batch 1 and batch 64.
2. A ResNet-18-shaped CNN (random init, seeded) at ratio 0.5, batch 1, 224x224: MACs ratio and
   speedup.

Run: ``.venv/bin/python tests/benchmarks/prune_speed.py [--check]``; ``--check`` exits 1 unless
drop <= 1.5 points, digits speedup >= 1.8 (at the larger of the two batches), wall time < 180 s,
ResNet-18 MACs ratio <= 0.3 and speedup >= 3.0.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
CLI = [sys.executable, "-m", "compressor"]


def cli(*args: str) -> dict:
    proc = subprocess.run([*CLI, *map(str, args), "--json"], capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"compressor failed ({proc.returncode}): {proc.stderr}")
    return json.loads(proc.stdout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    import torch

    from tests.case_models import ResNet18

    failed = []
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        s = ROOT / "sample_models"
        t0 = time.perf_counter()
        rep = cli("prune", s / "digits_resnet.pt", "--model-class", "sample_models.digits_nets:DigitsResNet",
                  "--ratio", "0.5", "--recover", "--calibration-data", s / "digits_calib.npz",
                  "--eval-data", s / "digits_eval.npz", "-o", d / "r.onnx")
        wall = time.perf_counter() - t0
        cli("export", s / "digits_resnet.pt", "--model-class", "sample_models.digits_nets:DigitsResNet",
                   "--input-shape", "1,1,8,8", "-o", d / "base.onnx")
        acc = rep["accuracy"]
        print(f"digits ResNet, ratio 0.5, --recover on 256 unlabeled samples: wall {wall:.1f} s")
        print(f"  top-1: original {acc['baseline']:.4f}, pruned {acc['before_recovery']:.4f}, "
              f"recovered {acc['after_recovery']:.4f} (ONNX {acc['result']:.4f}); drop {acc['drop_points']:.2f} points")
        print(f"  MACs ratio {rep['macs_ratio']:.3f}, parameters {rep['baseline']['parameters']} -> {rep['result']['parameters']}")
        speedups = {}
        for batch in (1, 64):
            b = cli("bench", d / "base.onnx", d / "r.onnx", "--calibration-data", s / "digits_calib.npz",
                    "--batch-size", batch)
            speedups[batch] = b["speedup"]
            print(f"  batch {batch:>3}: fp32 p50 {b['baseline']['latency_ms']['p50']:.4f} ms, pruned "
                  f"{b['result']['latency_ms']['p50']:.4f} ms, speedup {b['speedup']:.2f} "
                  f"[{b['speedup_ci95'][0]:.2f}, {b['speedup_ci95'][1]:.2f}]")
        if acc["drop_points"] > 1.5:
            failed.append("digits accuracy drop > 1.5 points")
        if max(speedups.values()) < 1.8:
            failed.append("digits speedup < 1.8")
        if wall > 180:
            failed.append("digits recovery took over 3 minutes")

        torch.manual_seed(0)
        torch.save(ResNet18().eval(), d / "r18.pt")
        rep = cli("prune", d / "r18.pt", "--trust-pickle", "--input-shape", "1,3,224,224", "--ratio", "0.5",
                  "-o", d / "r18.onnx", "--min-time", "10")
        print(f"ResNet-18 shape, 224x224, batch 1, ratio 0.5: MACs {rep['baseline']['macs'] / 1e9:.2f} G -> "
              f"{rep['result']['macs'] / 1e9:.2f} G (ratio {rep['macs_ratio']:.3f}); p50 "
              f"{rep['baseline']['latency_ms']['p50']:.1f} -> {rep['result']['latency_ms']['p50']:.1f} ms, speedup "
              f"{rep['speedup']:.2f} [{rep['speedup_ci95'][0]:.2f}, {rep['speedup_ci95'][1]:.2f}]")
        if rep["macs_ratio"] > 0.3:
            failed.append("ResNet-18 MACs ratio > 0.3")
        if rep["speedup"] < 3.0:
            failed.append("ResNet-18 speedup < 3.0")
    if args.check and failed:
        print("CHECK FAILED: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

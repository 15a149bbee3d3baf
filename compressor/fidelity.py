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


def output_names(path: Path) -> list[str]:
    """Names of an ONNX model's outputs, in order (no session is built)."""
    import onnx

    model = onnx.load_model(str(path), load_external_data=False)
    return [o.name for o in model.graph.output]


#: Output names that are embeddings, never logits, whatever their shape (``[samples, hidden]`` looks like
#: logits): sentence-transformers' pooled output, transformers' pooler and CLIP-style embeddings. Their argmax
#: means nothing, so they get no top-1 agreement and no accuracy.
EMBEDDING_OUTPUTS = frozenset({"sentence_embedding", "pooler_output", "text_embeds", "image_embeds", "embeddings"})


def is_classifier_output(out: np.ndarray, name: str | None = None) -> bool:
    """True for ``[samples, classes]`` float logits with at least 2 classes.

    Never for an output named in :data:`EMBEDDING_OUTPUTS` (when ``name`` is given).
    """
    return out.ndim == 2 and out.shape[1] >= 2 and out.dtype.kind == "f" and name not in EMBEDDING_OUTPUTS


def is_integer_output(out: np.ndarray) -> bool:
    """True for integer or boolean outputs (ArgMax / TopK indices, ids, flags): compared by exact match."""
    return out.dtype.kind in "biu"


#: Fidelity below these on the data given means the result collapsed (int8 normally gives cosine >= 0.99 and
#: top-1 agreement >= 0.98 on real data).
COLLAPSE_COSINE_MIN = 0.9
COLLAPSE_AGREEMENT = 0.95


def attention_mask_of(data: SampleData) -> tuple[str, np.ndarray] | None:
    """The attention-mask input of ``data``, if it has one.

    An input is the mask when its name contains ``mask`` (``attention_mask``, ``input_mask``) and it is an
    integer or boolean ``[samples, sequence]`` array of 0/1 values with some 0 (padding); ``attention_mask``
    wins over other names.

    Returns:
        ``(name, mask)`` with ``mask`` a boolean ``[samples, sequence]`` array, or None.
    """
    found = []
    for name, arr in data.arrays.items():
        if "mask" not in name.lower() or arr.ndim != 2 or arr.dtype.kind not in "biu":
            continue
        if not np.isin(arr, (0, 1)).all() or arr.all():  # all ones: no padding to leave out
            continue
        found.append((name != "attention_mask", name, arr.astype(bool)))
    if not found:
        return None
    _, name, mask = sorted(found, key=lambda t: t[:2])[0]
    return name, mask


def sequence_outputs(path: Path, mask_input: str) -> set[str]:
    """Outputs of an ONNX model whose axis 1 can be the sequence axis of the input ``mask_input``.

    An output whose axis 1 is fixed in the graph while the mask's is dynamic (a classifier's ``[N, classes]``)
    is not a token output, whatever its size in one run.
    """
    import onnx

    graph = onnx.load_model(str(path), load_external_data=False).graph

    def axis1(v: Any) -> int | str | None:
        dims = v.type.tensor_type.shape.dim
        if len(dims) < 2:
            return -1
        d = dims[1]
        return int(d.dim_value) if d.HasField("dim_value") else (d.dim_param or None)

    mask = next((axis1(i) for i in graph.input if i.name == mask_input), None)
    out = set()
    for o in graph.output:
        a = axis1(o)
        if a == -1 or (isinstance(a, int) and not isinstance(mask, int)):
            continue
        if isinstance(a, int) and isinstance(mask, int) and a != mask:
            continue
        out.add(o.name)
    return out


def _positions(out: np.ndarray, mask: np.ndarray | None) -> np.ndarray | None:
    """``[samples, sequence, 1, ...]`` weights of the real positions of ``out``, or None when it has no token axis.

    An output carries the sequence axis of an attention mask ``[samples, S]`` when its axis 1 has the same size S
    (S > 1) and its samples are the mask's: ``last_hidden_state [N, S, H]``, token logits ``[N, S, C]``, span
    logits ``[N, S]``.
    """
    if mask is None or out.ndim < 2 or mask.shape[1] < 2 or out.shape[:2] != mask.shape:
        return None
    return mask.reshape(mask.shape + (1,) * (out.ndim - 2))


def _compare_one(b: np.ndarray, r: np.ndarray, real: np.ndarray | None, name: str | None = None) -> dict[str, Any]:
    """Figures of one output pair (see :func:`compare_outputs`)."""
    n = b.shape[0]
    if is_integer_output(b) or is_integer_output(r):
        eq = (b == r) if real is None else (b == r) | ~np.broadcast_to(real, b.shape)
        counted = b.size if real is None else int(np.broadcast_to(real, b.shape).sum())
        wrong = int((~eq).sum())
        per_sample = eq.reshape(n, -1).all(axis=1) if b.size else np.ones(n, bool)
        return {"kind": "integer", "exact_match": 1.0 - wrong / max(counted, 1),
                "samples_exact": float(per_sample.mean())}
    b64, r64 = b.astype(np.float64), r.astype(np.float64)
    if real is not None:  # padded positions count as equal zeros in both: they add nothing to any figure
        w = np.broadcast_to(real, b.shape)
        b64, r64 = np.where(w, b64, 0.0), np.where(w, r64, 0.0)
    bf, rf = b64.reshape(n, -1), r64.reshape(n, -1)
    nb, nr = np.linalg.norm(bf, axis=1), np.linalg.norm(rf, axis=1)
    cos = np.where((nb == 0) & (nr == 0), 1.0, (bf * rf).sum(axis=1) / np.maximum(nb * nr, 1e-30))
    cos = np.clip(cos, -1.0, 1.0)  # rounding can put |cos| a hair above 1
    noise = float(((bf - rf) ** 2).sum())
    signal = float((bf**2).sum())
    sqnr = float("inf") if noise == 0 else 10.0 * float(np.log10(max(signal, 1e-30) / noise))
    out: dict[str, Any] = {
        "kind": "float",
        "max_abs_diff": float(np.max(np.abs(bf - rf))) if bf.size else 0.0,
        "cosine_mean": float(cos.mean()),
        "cosine_min": float(cos.min()),
        "sqnr_db": sqnr if np.isfinite(sqnr) else None,
    }
    if is_classifier_output(b, name):
        out["top1_agreement"] = float((b.argmax(1) == r.argmax(1)).mean())
    return out


def compare_outputs(baseline: list[np.ndarray], result: list[np.ndarray], *, names: list[str] | None = None,
                    attention_mask: tuple[str, np.ndarray] | None = None,
                    token_outputs: set[str] | None = None) -> dict[str, Any]:
    """Fidelity of ``result`` against ``baseline`` (same inputs), for every output and as a worst-case summary.

    Float outputs are compared per sample (each sample's output flattened): cosine similarity, SQNR
    (signal-to-quantization-noise ratio, ``10*log10(sum x^2 / sum (x-y)^2)`` in dB, as in torchao's checks) and
    max abs diff; classifier logits ``[samples, classes]`` also by top-1 agreement. Integer and boolean outputs
    (ArgMax / TopK indices, ids) are compared by exact-match rate, never by cosine of index values. Outputs
    whose axis 1 is the sequence axis of ``attention_mask`` are compared on real positions only (padding has no
    meaning and is left out).

    Args:
        baseline: Reference outputs, each ``[samples, ...]``.
        result: Outputs of the compressed model, same shapes and order.
        names: Output names (default ``output_0``, ``output_1``, ...).
        attention_mask: ``(input name, bool [samples, sequence])`` from :func:`attention_mask_of`, or None.
        token_outputs: Names of the outputs that may carry the mask's sequence axis (see
            :func:`sequence_outputs`); None: any output whose first two axes match the mask's shape.

    Returns:
        The summary, worst over outputs: ``max_abs_diff`` (largest over float outputs), ``cosine_mean`` and
        ``cosine_min`` (lowest over float outputs; None when every output is integer), ``sqnr_db`` (lowest;
        None when the float outputs are identical or absent), ``top1_agreement`` (lowest over classifier
        outputs), ``exact_match`` (lowest over integer outputs), ``samples``, ``worst_output`` (the output
        with the lowest cosine, or exact-match rate), ``positions`` (``"attention_mask: padding left out"``
        when a mask was applied) and ``outputs``: one entry per output with its own figures, its ``name``,
        ``kind`` (``float`` or ``integer``) and ``positions`` (``"all"`` or ``"real tokens (<mask> == 1)"``).

    Raises:
        ParityError: The outputs differ in count or shape.
    """
    if len(baseline) != len(result) or any(b.shape != r.shape for b, r in zip(baseline, result, strict=False)):
        shapes_b = [list(b.shape) for b in baseline]
        shapes_r = [list(r.shape) for r in result]
        from compressor.errors import ParityError

        raise ParityError(f"the result's outputs {shapes_r} do not match the baseline's {shapes_b}")
    names = list(names) if names and len(names) == len(baseline) else [f"output_{i}" for i in range(len(baseline))]
    mask_name, mask = attention_mask if attention_mask is not None else (None, None)
    per: list[dict[str, Any]] = []
    for name, b, r in zip(names, baseline, result, strict=True):
        real = _positions(b, mask) if token_outputs is None or name in token_outputs else None
        entry = {"name": name, **_compare_one(b, r, real, name),
                 "positions": "all" if real is None else f"real tokens ({mask_name} == 1)"}
        per.append(entry)
    floats = [p for p in per if p["kind"] == "float"]
    ints = [p for p in per if p["kind"] == "integer"]
    out: dict[str, Any] = {
        "max_abs_diff": max((p["max_abs_diff"] for p in floats), default=0.0),
        "cosine_mean": min((p["cosine_mean"] for p in floats), default=None),
        "cosine_min": min((p["cosine_min"] for p in floats), default=None),
        "sqnr_db": min((p["sqnr_db"] for p in floats if p["sqnr_db"] is not None), default=None),
        "samples": int(baseline[0].shape[0]),
    }
    agree = [p["top1_agreement"] for p in floats if "top1_agreement" in p]
    if agree:
        out["top1_agreement"] = min(agree)
    if ints:
        out["exact_match"] = min(p["exact_match"] for p in ints)
    worst = min(floats, key=lambda p: p["cosine_min"]) if floats else min(ints, key=lambda p: p["exact_match"])
    out["worst_output"] = worst["name"]
    if any(p["positions"] != "all" for p in per):
        out["positions"] = f"{mask_name}: padded positions left out of outputs with its sequence axis"
    out["outputs"] = per
    return out


def pooling_mask_of(data: SampleData) -> np.ndarray | None:
    """The ``attention_mask`` input of ``data`` as a boolean ``[samples, sequence]`` array, padding or not.

    Unlike :func:`attention_mask_of`, a mask of all ones counts: mean pooling over the real tokens is the
    sentence embedding whether or not the batch has padding.

    Returns:
        The mask, or None when ``data`` has no integer or boolean 0/1 ``[samples, sequence]`` ``attention_mask``.
    """
    arr = data.arrays.get("attention_mask")
    if arr is None or arr.ndim != 2 or arr.dtype.kind not in "biu" or not np.isin(arr, (0, 1)).all():
        return None
    return arr.astype(bool)


def mean_pool(out: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mean of token vectors over the real tokens: the sentence embedding of sentence-transformers' mean pooling.

    Args:
        out: float ``[samples, sequence, hidden]`` token outputs (``last_hidden_state``).
        mask: bool ``[samples, sequence]`` attention mask (True on real tokens).

    Returns:
        float64 ``[samples, hidden]``: ``sum(out * mask) / max(sum(mask), 1e-9)`` per sample (the formula of
        sentence-transformers' ``Pooling(pooling_mode_mean_tokens=True)``).
    """
    w = mask.astype(np.float64)[:, :, None]
    return (out.astype(np.float64) * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-9)


def pooled_fidelity(baseline: list[np.ndarray], result: list[np.ndarray], *, names: list[str], mask: np.ndarray,
                    token_outputs: set[str] | None = None) -> list[dict[str, Any]]:
    """Fidelity of the mean-pooled sentence embedding of each token output (encoders without a pooling head).

    A float output ``[samples, sequence, hidden]`` whose first two axes are the mask's (and, when
    ``token_outputs`` is given, whose axis 1 can be the mask's sequence axis in the graph) is pooled with
    :func:`mean_pool` in baseline and result, and the two ``[samples, hidden]`` embeddings are compared per
    sample as any float output (cosine, SQNR, max abs diff).

    Args:
        baseline: Reference outputs, each ``[samples, ...]``.
        result: Outputs of the compressed model, same shapes.
        names: Output names, in order.
        mask: bool ``[samples, sequence]`` from :func:`pooling_mask_of`.
        token_outputs: Outputs that may carry the sequence axis (:func:`sequence_outputs`), or None.

    Returns:
        One entry per pooled output: ``name`` ``"pooled(<output>)"``, ``kind`` ``"float"``, ``pooled_from``,
        ``pooling`` ``"mean over attention_mask"``, ``positions`` and the figures of :func:`compare_outputs`'
        entries. These entries are derived, not outputs of the model: the summary's worst-over-outputs figures
        (and the ``--min-cosine`` gate) do not include them.
    """
    out = []
    for name, b, r in zip(names, baseline, result, strict=False):
        if b.ndim != 3 or b.dtype.kind != "f" or b.shape[:2] != mask.shape or mask.shape[1] < 2:
            continue
        if token_outputs is not None and name not in token_outputs:
            continue
        entry = _compare_one(mean_pool(b, mask), mean_pool(r, mask), None)
        entry.pop("top1_agreement", None)  # an embedding, not logits
        out.append({"name": f"pooled({name})", **entry, "positions": "mean over real tokens (attention_mask == 1)",
                    "pooled_from": name, "pooling": "mean over attention_mask"})
    return out


def collapse_figures(fid: dict[str, Any]) -> str | None:
    """The figures that show a collapsed result, or None when fidelity is in the range int8 normally gives.

    Collapsed, per output: a classifier's logits (``[samples, classes]``) whose top-1 agreement is under
    :data:`COLLAPSE_AGREEMENT` (0.95) or whose mean cosine is under :data:`COLLAPSE_COSINE_MIN` (0.9); any
    other float output whose least per-sample cosine is under 0.9; an integer output whose exact-match rate
    is under 0.95. A classifier is judged on its decisions: one sample's logits can turn (a low cosine_min
    over hundreds of samples) while its class and the model's accuracy stay, as after pruning with recovery.

    Args:
        fid: A fidelity summary from :func:`compare_outputs`.

    Returns:
        E.g. ``"output 'logits' top-1 agreement 0.830, cosine mean 0.512 (min 0.101) on 64 samples"``, or None.
    """
    bad = []
    for p in fid.get("outputs") or []:
        parts = []
        if p["kind"] == "integer":
            if p["exact_match"] < COLLAPSE_AGREEMENT:
                parts.append(f"exact match {p['exact_match']:.3f}")
        elif "top1_agreement" in p:
            if p["top1_agreement"] < COLLAPSE_AGREEMENT:
                parts.append(f"top-1 agreement {p['top1_agreement']:.3f}")
            if p["cosine_mean"] < COLLAPSE_COSINE_MIN or parts:
                parts.append(f"cosine mean {p['cosine_mean']:.3f} (min {p['cosine_min']:.3f})")
        elif p["cosine_min"] < COLLAPSE_COSINE_MIN:
            parts.append(f"cosine min {p['cosine_min']:.3f} (mean {p['cosine_mean']:.3f})")
        if parts:
            bad.append(f"output '{p['name']}' " + ", ".join(parts))
    if not bad:
        return None
    return "; ".join(bad) + f" on {fid['samples']} samples"


def top1_accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of samples whose argmax over ``logits [samples, classes]`` equals ``labels [samples]``."""
    return float((logits.argmax(axis=1) == labels).mean())

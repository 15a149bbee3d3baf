"""Per-layer sensitivity, and accuracy-aware fallback of int8 layers to float.

**Sensitivity** (:func:`layer_sensitivity`): for each Conv / ConvTranspose / Gemm / MatMul layer, the model
is compressed in that layer only (int8 through the quantize pass with every other layer excluded, the
same settings and kernel format as the whole-model run; or structured pruning of that layer's output
channels at ``ratio`` through the prune pass), and its outputs are compared with the float model's on the
run's data: ``error = 1 - cosine_min`` (the worst per-sample cosine over float outputs, as the report's
``fidelity.cosine_min``), plus the top-1 accuracy drop with labelled eval data. Layers are ranked by error,
most sensitive first. This is the one-layer-at-a-time analysis of NNCF's and OpenVINO POT's
accuracy-aware quantization (NNCF ``quantize_with_accuracy_control``, POT ``AccuracyAwareQuantization``:
"ranking subset" of layers by their contribution to the accuracy drop).

**Fallback** (:func:`accuracy_aware_fallback`): start from the full int8 model; while the budget
(``max_accuracy_drop`` points and/or ``min_cosine``) is missed, return the next most sensitive layer to
float (ONNX Runtime ``nodes_to_exclude``, the quantize pass's ``exclude``). When returning one more layer
stops helping, that layer goes back to int8 and the remaining layers are re-ranked by the improvement each
gives when returned to float on the *current* model (POT re-ranks the same way after each step that does
not help). The result keeps every layer it can in int8; ``fallback_layers`` names those left in float and
the error each caused.
"""

from __future__ import annotations

import dataclasses
import glob
from pathlib import Path
from typing import Any

from compressor.artifact import ModelArtifact
from compressor.context import RunContext
from compressor.errors import CompressorError, UsageError

#: ONNX op types whose sensitivity is measured (the weight-holding layers int8 and pruning change).
LAYER_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")
KINDS = ("quantize", "prune")


def _escape(name: str) -> str:
    """A node or module name as an exact-match glob (``[``, ``*`` and ``?`` escaped)."""
    return glob.escape(name)


def _sub_ctx(ctx: RunContext, workdir: Path) -> RunContext:
    """A context for one trial build: its own scratch folder and warnings (a trial's warnings are not the run's)."""
    workdir.mkdir(parents=True, exist_ok=True)
    return dataclasses.replace(ctx, workdir=workdir, warnings=[], on_warning=None, on_progress=None)


def _reference(path: Path, ctx: RunContext) -> dict[str, Any]:
    """Outputs of the float ONNX model on ``ctx.data`` and, with labelled eval data, its top-1 accuracy."""
    from compressor.fidelity import run_onnx, top1_accuracy

    ref = {"outputs": run_onnx(path, ctx.data), "accuracy": None}
    ev = ctx.eval_data
    if ev is not None and ev.labels is not None:
        ref["accuracy"] = top1_accuracy(run_onnx(path, ev)[0], ev.labels)
    return ref


def _figures(outputs: list[Any], ref: dict[str, Any], eval_logits: Any, ctx: RunContext) -> dict[str, Any]:
    """``cosine_min``, ``error`` (1 - cosine_min) and ``accuracy_drop_pct`` of outputs against the reference."""
    from compressor.fidelity import compare_outputs, top1_accuracy

    fid = compare_outputs(ref["outputs"], outputs)
    cos = fid.get("cosine_min")
    drop = None
    if ref["accuracy"] is not None and eval_logits is not None:
        drop = 100.0 * (ref["accuracy"] - top1_accuracy(eval_logits, ctx.eval_data.labels))
    return {"cosine_min": cos, "error": None if cos is None else 1.0 - cos, "accuracy_drop_pct": drop}


def onnx_figures(path: Path, ref: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Fidelity figures of an ONNX model against the float reference (see :func:`_figures`).

    Measured as the pipeline measures a result: outputs on ``ctx.data`` (eval inputs, else calibration data, at
    most 512 samples), accuracy on ``ctx.eval_data``.
    """
    from compressor.fidelity import run_onnx

    ev = ctx.eval_data
    logits = run_onnx(path, ev)[0] if ref["accuracy"] is not None else None
    return _figures(run_onnx(path, ctx.data), ref, logits, ctx)


def quantizable_layers(model_path: Path, config: Any, ctx: RunContext) -> list[tuple[str, str]]:
    """The Conv/ConvTranspose/Gemm/MatMul nodes the quantize pass would quantize with ``config``, in graph order.

    Nodes excluded by ``config.exclude`` and those the chosen scheme leaves in float (dynamic int8 keeps
    convolutions in float unless ``op_types`` names them) are left out.

    Returns:
        ``[(node name, op type), ...]``.

    Raises:
        UsageError: No such layer.
    """
    import onnx

    from compressor.passes import quant_inventory as inv
    from compressor.passes.quantize import choose_settings
    from compressor.scope import ExclusionScope

    model = onnx.load_model(str(model_path), load_external_data=False)
    excluded = set(ExclusionScope(config.exclude).onnx_nodes(model)) if config.exclude else set()
    has_conv = any(n.op_type in inv.CONV_OPS for n in model.graph.node)
    scheme = config.precision if config.precision != "int8" else choose_settings(
        config, has_conv=has_conv, has_calibration=ctx.calibration is not None)["mode"]
    chosen, _ = inv.candidates(model, scheme=scheme, op_types=config.op_types, excluded=excluded)
    layers = [(w.name, w.op_type) for w in chosen if w.op_type in LAYER_OPS and not w.subgraph]
    if not layers:
        raise UsageError(f"the model has no {'/'.join(LAYER_OPS)} layer that {config.precision} ({scheme}) would "
                         "quantize; sensitivity needs at least one")
    return layers


def _fixed_format(config: Any, details: dict[str, Any]) -> Any:
    """``config`` with the kernel format a whole-model run chose, so that each trial builds the same kernels untimed."""
    fmt = details.get("kernel_format")
    if config.format == "auto" and fmt and config.precision == "int8":
        try:
            return dataclasses.replace(config, format=fmt)
        except CompressorError:  # flags that fix the types too: keep the config as it is
            return config
    return config


def _quantize(artifact: ModelArtifact, config: Any, ctx: RunContext, workdir: Path) -> Any:
    """Run the quantize pass in its own scratch folder; its warnings are kept apart, in ``result.trial_warnings``."""
    from compressor.passes.quantize import run_quantize

    sub = _sub_ctx(ctx, workdir)
    res = run_quantize(artifact, dataclasses.replace(config, fallback=False), sub)
    res.trial_warnings = list(sub.warnings)
    return res


def _rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows sorted most sensitive first (error, then accuracy drop), with ``rank`` 1..n; failed rows last, unranked."""
    ok = [r for r in rows if r.get("error") is not None]
    ok.sort(key=lambda r: (-r["error"], -(r.get("accuracy_drop_pct") or 0.0)))
    for i, r in enumerate(ok, 1):
        r["rank"] = i
    bad = [r for r in rows if r.get("error") is None]
    for r in bad:
        r["rank"] = None
    return ok + bad


def layer_sensitivity(artifact: ModelArtifact, ctx: RunContext, *, kind: str = "quantize", config: Any = None,
                      ratio: float = 0.5, exclude_fixed: tuple[str, ...] = (),
                      reference: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Rank the model's layers by the output error when only that layer is compressed.

    ``kind="quantize"``: ``artifact`` is a float ONNX model; each Conv/ConvTranspose/Gemm/MatMul node that the
    quantize pass would quantize with ``config`` is quantized alone (every other such node excluded; the
    kernel format of the whole-model run, so every trial uses the same kernels), through
    :func:`compressor.passes.quantize.run_quantize` (pre-processing, rewrites, calibration and all).
    ``kind="prune"``: ``artifact`` is a PyTorch model with its Python classes; each Conv/Linear module loses
    ``ratio`` of its output channels alone (structured L1, the prune pass with every other layer excluded),
    compared in PyTorch.

    Args:
        artifact: The float model (ONNX for quantize, PyTorch for prune).
        ctx: The run's context: ``ctx.data`` (inputs the error is measured on: eval inputs, else calibration
            data), ``ctx.eval_data`` (labels: accuracy drop), ``ctx.calibration`` (static int8 ranges).
        kind: ``"quantize"`` or ``"prune"``.
        config: :class:`~compressor.passes.configs.QuantizeConfig` (quantize; default ``QuantizeConfig()``).
        ratio: Fraction of output channels removed from the layer (prune), in (0, 1).
        exclude_fixed: Node names kept in float in every trial besides the other layers (used by the fallback to
            measure sensitivity on the current model).
        reference: Precomputed :func:`_reference` of the float model (quantize), to save a run.

    Returns:
        One dict per layer, most sensitive first: ``layer`` (node or module name), ``op_type`` (ONNX op type, or
        the module class for prune), ``error`` (1 - cosine_min; None when the trial failed), ``cosine_min``,
        ``accuracy_drop_pct`` (top-1 points; None without labels), ``rank`` (1 = most sensitive; None when
        failed) and, for a failed trial, ``note`` (why).

    Raises:
        UsageError: An unknown kind, no layer to measure, or a model of the wrong form for ``kind``.
    """
    if kind not in KINDS:
        raise UsageError(f"--kind '{kind}' is unknown; use quantize or prune")
    if kind == "prune":
        return _prune_sensitivity(artifact, ctx, ratio=ratio)
    from compressor.passes.configs import QuantizeConfig

    config = config or QuantizeConfig()
    if artifact.format.is_torch:
        raise UsageError("quantization sensitivity works on the ONNX model; export it first")
    layers = quantizable_layers(artifact.path, config, ctx)
    ref = reference or _reference(artifact.path, ctx)
    if config.precision == "int8" and config.format == "auto" and len(layers) > 1:
        ctx.progress("sensitivity: int8 of every layer (kernel format)", 0, 1)
        full = _quantize(artifact, config, ctx, ctx.workdir / "sens-full")
        ctx.progress("sensitivity: int8 of every layer (kernel format)", 1, 1)
        config = _fixed_format(config, full.details)  # every trial builds the kernels of the whole-model run
    names = [n for n, _ in layers]
    fixed = [n for n in exclude_fixed if n not in names]
    rows = []
    for k, (name, op_type) in enumerate(layers):
        task = f"sensitivity: int8 of {name} alone ({k + 1}/{len(layers)})"
        ctx.progress(task, 0, 1)
        others = [_escape(n) for n in names if n != name] + [_escape(n) for n in fixed]
        trial = dataclasses.replace(config, exclude=tuple(dict.fromkeys([*config.exclude, *others])))
        row: dict[str, Any] = {"layer": name, "op_type": op_type}
        try:
            res = _quantize(artifact, trial, ctx, ctx.workdir / f"sens-{k:03d}")
            row.update(onnx_figures(res.artifact.path, ref, ctx))
        except CompressorError as e:
            row.update(error=None, cosine_min=None, accuracy_drop_pct=None, note=str(e))
        rows.append(row)
        ctx.progress(task, 1, 1, **({"error": row["error"]} if row.get("error") is not None else {}))
    return _rank(rows)


def _prune_sensitivity(artifact: ModelArtifact, ctx: RunContext, *, ratio: float) -> list[dict[str, Any]]:
    """Structured pruning of one Conv/Linear layer at a time, compared in PyTorch (see :func:`layer_sensitivity`)."""
    import numpy as np
    import torch

    from compressor.errors import UnsupportedModelError
    from compressor.export import torch_forward
    from compressor.fidelity import top1_accuracy
    from compressor.passes.configs import PruneConfig
    from compressor.passes.prune import run_prune

    if not artifact.format.is_torch or not artifact.format.has_python_classes:
        raise UnsupportedModelError("pruning sensitivity needs the model's Python classes: give a torch.save(model) "
                                    "pickle or a state_dict with --model-class package.module:ClassName")
    module = artifact.loaded
    layers = [(n, type(m).__name__) for n, m in module.named_modules()
              if n and isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd))]
    if not layers:
        raise UsageError("the model has no Conv or Linear layer to prune")
    PruneConfig(ratio=ratio)  # validates the ratio (FieldError names --ratio)
    ev = ctx.eval_data
    with torch.no_grad():
        ref = {"outputs": [np.asarray(o) for o in torch_forward(module, ctx.data.arrays, ctx.io)], "accuracy": None}
        if ev is not None and ev.labels is not None:
            ref["accuracy"] = top1_accuracy(np.asarray(torch_forward(module, ev.arrays, ctx.io)[0]), ev.labels)
    rows = []
    for k, (name, op_type) in enumerate(layers):
        task = f"sensitivity: pruning {name} alone ({k + 1}/{len(layers)})"
        ctx.progress(task, 0, 1)
        others = tuple(_escape(n) for n, _ in layers if n != name)
        row: dict[str, Any] = {"layer": name, "op_type": op_type}
        try:
            res = run_prune(artifact, PruneConfig(ratio=ratio, exclude=others), _sub_ctx(ctx, ctx.workdir / f"sens-{k:03d}"))
            pruned = res.artifact.loaded
            with torch.no_grad():
                outs = [np.asarray(o) for o in torch_forward(pruned, ctx.data.arrays, ctx.io)]
                logits = np.asarray(torch_forward(pruned, ev.arrays, ctx.io)[0]) if ref["accuracy"] is not None else None
            row.update(_figures(outs, ref, logits, ctx))
        except CompressorError as e:
            row.update(error=None, cosine_min=None, accuracy_drop_pct=None, note=str(e))
        rows.append(row)
        ctx.progress(task, 1, 1, **({"error": row["error"]} if row.get("error") is not None else {}))
    return _rank(rows)


# ----------------------------------------------------------------------------- accuracy-aware fallback


def _shortfall(fig: dict[str, Any], max_drop: float | None, min_cos: float | None) -> tuple[float, float]:
    """How far a model misses the budget (0 when it holds), then its error (1 - cosine_min) as a tie-break.

    Each missed bound counts relative to its own allowance, so that points of accuracy and cosine add up.
    """
    miss = 0.0
    cos = fig.get("cosine_min")
    err = 1.0 - cos if cos is not None else float("inf")
    if max_drop is not None:
        drop = fig.get("accuracy_drop_pct")
        miss += float("inf") if drop is None else max(0.0, drop - max_drop) / max(max_drop, 0.1)
    if min_cos is not None:
        miss += float("inf") if cos is None else max(0.0, min_cos - cos) / max(1.0 - min_cos, 1e-4)
    return miss, err


def _describe(fig: dict[str, Any]) -> str:
    parts = []
    if fig.get("cosine_min") is not None:
        parts.append(f"cosine_min {fig['cosine_min']:.5f}")
    if fig.get("accuracy_drop_pct") is not None:
        parts.append(f"accuracy drop {fig['accuracy_drop_pct']:.2f} points")
    return ", ".join(parts) or "no figures"


def accuracy_aware_fallback(artifact: ModelArtifact, config: Any, ctx: RunContext, *,
                            max_accuracy_drop: float | None = None, min_cosine: float | None = None,
                            ranking: list[dict[str, Any]] | None = None) -> Any:
    """Int8 with the fewest layers in float that meets an accuracy budget (accuracy-aware quantization).

    The approach of NNCF's ``quantize_with_accuracy_control`` and OpenVINO POT's
    ``AccuracyAwareQuantization``: quantize everything, measure; while the budget is missed, return the most
    sensitive remaining layer (ranked by :func:`layer_sensitivity`: the error when that layer alone is int8) to
    float with ``nodes_to_exclude`` and measure again. When a layer's return does not lower the shortfall (nor,
    at equal shortfall, the error), it goes back to int8 and the remaining layers are re-ranked on the current
    model: each is returned to float in turn and the one that helps most is taken. The budget is judged as the
    pipeline's gates judge the result (``fidelity.cosine_min`` on ``ctx.data``, top-1 drop on
    ``ctx.eval_data``), against this step's float input.

    Args:
        artifact: The float ONNX model to quantize.
        config: :class:`~compressor.passes.configs.QuantizeConfig` (``exclude`` stays excluded throughout).
        ctx: The run's context (data, eval data with labels for the accuracy budget, calibration data).
        max_accuracy_drop: Largest top-1 accuracy drop in percentage points (needs labelled eval data).
        min_cosine: Least worst-sample cosine of the outputs to the float model's.
        ranking: A precomputed ranking from :func:`layer_sensitivity` (computed when needed otherwise).

    Returns:
        The quantize pass's :class:`~compressor.passes.PassResult` of the chosen model; its details get
        ``fallback_layers`` (``[{"layer", "op_type", "reason", "error", "cosine_min", "accuracy_drop_pct"}]``:
        each layer left in float, in the order returned, with the error it caused quantized alone) and
        ``fallback`` (the budget, ``met``, ``ranking``, ``reranked`` (times), ``trials`` (each model tried and
        its figures), ``int8_layers`` left).

    Raises:
        UsageError: No budget, or an accuracy budget without labelled eval data.
        QuantizationError: The whole-model quantization failed.
    """
    if max_accuracy_drop is None and min_cosine is None:
        raise UsageError("accuracy-aware fallback needs a budget: --max-accuracy-drop POINTS (with labelled "
                         "--eval-data) or --min-cosine X")
    if max_accuracy_drop is not None and (ctx.eval_data is None or ctx.eval_data.labels is None):
        raise UsageError("--max-accuracy-drop needs --eval-data FILE.npz with 'labels' for the fallback to judge it")
    ref = _reference(artifact.path, ctx)
    work = ctx.workdir
    trials: list[dict[str, Any]] = []
    n_trial = [0]

    def build(float_layers: list[str], cfg: Any) -> tuple[Any, dict[str, Any]]:
        n_trial[0] += 1
        trial = dataclasses.replace(cfg, exclude=tuple(dict.fromkeys([*config.exclude,
                                                                       *(_escape(n) for n in float_layers)])))
        task = f"fallback: int8 with {len(float_layers)} layer(s) in float"
        ctx.progress(task, 0, 1)
        res = _quantize(artifact, trial, ctx, work / f"fallback-{n_trial[0]:03d}")
        fig = onnx_figures(res.artifact.path, ref, ctx)
        trials.append({"float_layers": list(float_layers), **fig})
        ctx.progress(task, 1, 1, **({"cosine_min": fig["cosine_min"]} if fig["cosine_min"] is not None else {}))
        return res, fig

    best, fig = build([], config)
    cfg = _fixed_format(config, best.details)
    score = _shortfall(fig, max_accuracy_drop, min_cosine)
    budget = {"max_accuracy_drop": max_accuracy_drop, "min_cosine": min_cosine}
    state: dict[str, Any] = {"budget": budget, "met": score[0] == 0.0, "full_int8": dict(fig), "reranked": 0}
    float_layers: list[dict[str, Any]] = []
    if score[0] > 0.0:
        if ranking is None:
            ranking = layer_sensitivity(artifact, ctx, config=cfg, reference=ref)
        state["ranking"] = [{k: r.get(k) for k in ("layer", "op_type", "error", "cosine_min", "accuracy_drop_pct",
                                                    "rank")} for r in ranking]
        by_name = {r["layer"]: r for r in ranking}
        queue = [r["layer"] for r in ranking if r.get("error") is not None]
        total = len(queue)
        tried: set[str] = set()
        while score[0] > 0.0 and queue:
            if len(float_layers) + 1 >= total:
                break  # the last int8 layer stays: a model with none quantized is no int8 model
            name = queue.pop(0)
            names = [f["layer"] for f in float_layers] + [name]
            res, new_fig = build(names, cfg)
            new_score = _shortfall(new_fig, max_accuracy_drop, min_cosine)
            if new_score < score:
                r = by_name[name]
                float_layers.append({"layer": name, "op_type": r["op_type"], "error": r.get("error"),
                                     "cosine_min": r.get("cosine_min"), "accuracy_drop_pct": r.get("accuracy_drop_pct"),
                                     "reason": f"int8 alone it caused error {r['error']:.3g} (1 - cosine_min; "
                                               + _describe(r) + f"); in float the model reaches {_describe(new_fig)}"})
                best, fig, score = res, new_fig, new_score
                continue
            tried.add(name)  # it did not help: back to int8, re-rank the rest on the current model
            rest = [n for n in queue if n not in tried]
            if not rest:
                break
            state["reranked"] += 1
            current = [f["layer"] for f in float_layers]
            gains = []
            for other in rest:
                res2, fig2 = build(current + [other], cfg)
                gains.append((_shortfall(fig2, max_accuracy_drop, min_cosine), other, res2, fig2))
            gains.sort(key=lambda g: g[0])
            queue = [g[1] for g in gains]
            top = gains[0]
            if top[0] < score:
                r = by_name[top[1]]
                queue.pop(0)
                float_layers.append({"layer": top[1], "op_type": r["op_type"], "error": r.get("error"),
                                     "cosine_min": r.get("cosine_min"), "accuracy_drop_pct": r.get("accuracy_drop_pct"),
                                     "reason": f"re-ranked on the current model: in float it helps most, reaching "
                                               f"{_describe(top[3])} (int8 alone it caused error {r['error']:.3g})"})
                best, fig, score = top[2], top[3], top[0]
            else:
                break  # no single layer helps any more
        state["met"] = score[0] == 0.0
        if not state["met"]:
            ctx.warn(f"accuracy-aware fallback could not meet the budget ({_describe(fig)} with {len(float_layers)} "
                     "layer(s) in float); the closest model is kept and the gate judges it")
    state["result"] = dict(fig)
    state["trials"] = trials
    names = {f["layer"] for f in float_layers}
    state["int8_layers"] = [r["layer"] for r in (ranking or []) if r["layer"] not in names] if ranking else None
    for w in getattr(best, "trial_warnings", []):  # the kept model's own warnings are the run's
        ctx.warn(w)
    best.details["fallback_layers"] = float_layers
    best.details["fallback"] = state
    return best

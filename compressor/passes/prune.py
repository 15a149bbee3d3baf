"""Pruning: structured (Torch-Pruning, L1 filter norm) and unstructured (torch.nn.utils.prune).

Structured pruning removes whole output channels / hidden units, ranked by the L1 norm of
their weights (Li et al. 2017, "Pruning Filters for Efficient ConvNets"), with coupled
layers (residual adds, BatchNorm, concat, flatten into Linear) kept consistent by
Torch-Pruning's dependency graph (Fang et al. 2023, "DepGraph"). Unstructured pruning zeroes
the globally smallest-magnitude weights of every Conv/Linear (torch.nn.utils.prune
``global_unstructured`` with ``L1Unstructured``) and makes the masks permanent.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from compressor.artifact import ModelFormat, save_onnx
from compressor.context import RunContext
from compressor.errors import PruningError, UnsupportedModelError
from compressor.export import export_to_onnx
from compressor.passes.configs import PruneConfig


@dataclass
class PassOutcome:
    """What a pass produced.

    Attributes:
        path: The result ONNX file (in the scratch folder).
        details: Pass-specific report fields.
    """

    path: Path
    details: dict[str, Any] = field(default_factory=dict)


def run_prune(ctx: RunContext, config: PruneConfig) -> PassOutcome:
    """Prune ``ctx.artifact`` and export the result to ONNX.

    Raises:
        UnsupportedModelError: Structured pruning of a file without Python classes
            (ExportedProgram, TorchScript, ONNX).
        PruningError: Nothing was removed or Torch-Pruning failed.
        ExportError: The pruned model does not export faithfully.
    """
    if config.method == "structured":
        return _structured(ctx, config)
    return _unstructured(ctx, config)


# ----------------------------------------------------------------------------- structured

_FORMAT_NAMES = {
    ModelFormat.EXPORTED_PROGRAM: "an ExportedProgram (.pt2)",
    ModelFormat.TORCHSCRIPT: "a TorchScript file",
    ModelFormat.ONNX: "an ONNX file",
    ModelFormat.TORCH_MODULE: "a pickled module",
    ModelFormat.STATE_DICT: "a state_dict",
}


def _structured(ctx: RunContext, config: PruneConfig) -> PassOutcome:
    art = ctx.artifact
    if not art.format.has_python_classes:
        raise UnsupportedModelError(
            f"structured pruning needs the model's Python classes, which {_FORMAT_NAMES[art.format]} does not carry; "
            "either (1) load it from a torch.save(model) pickle or a state_dict with --model-class package.module:ClassName, "
            "or (2) use --method unstructured"
        )
    import torch
    import torch_pruning as tp

    model = copy.deepcopy(art.loaded).eval()
    frozen = not any(p.requires_grad for p in model.parameters())
    for p in model.parameters():  # a frozen model gives an empty dependency graph (case P2)
        p.requires_grad_(True)
    example = tuple(torch.from_numpy(np.ascontiguousarray(ctx.data.batch(0, 2)[n])) for n in ctx.io.input_names)
    ignored = _output_layers(model, example)
    before = _channel_counts(model)
    params_before = sum(p.numel() for p in model.parameters())
    importance = tp.importance.MagnitudeImportance(
        p=1, target_types=[torch.nn.modules.conv._ConvNd, torch.nn.Linear]
    )
    try:
        pruner = tp.pruner.MetaPruner(
            model, example, importance=importance, pruning_ratio=config.ratio, ignored_layers=ignored
        )
        pruner.step()
    except Exception as e:
        raise PruningError(f"Torch-Pruning failed on this model: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from e
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    params_after = sum(p.numel() for p in model.parameters())
    if params_after >= params_before:
        raise PruningError(
            f"structured pruning at ratio {config.ratio} removed no channel (no prunable Conv/Linear outside the "
            "output layer, or every layer is too small); try a larger --ratio or --method unstructured"
        )
    after = _channel_counts(model)
    layers = [
        {"name": name, "channels_before": before[name], "channels_after": after.get(name, before[name])}
        for name in before
    ]
    ctx.steps.append({"name": "prune", "method": "structured", "parameters_before": params_before,
                      "parameters_after": params_after})
    path = ctx.workdir / "result.onnx"
    res = export_to_onnx(model, ctx.io, path, check_data=ctx.data, opset=ctx.export.opset, atol=ctx.export.atol,
                         rtol=ctx.export.rtol, exporter=ctx.export.exporter)
    ctx.steps.append({"name": "export", "of": "pruned model", **res.to_json()})
    return PassOutcome(path, {
        "method": "structured",
        "pruning_ratio": config.ratio,
        "criterion": "l1",
        "criterion_source": "L1 filter norm, Li et al. 2017; dependency graph: Torch-Pruning (Fang et al. 2023)",
        "ignored_layers": [n for n, m in model.named_modules() if any(m is i for i in ignored)],
        "frozen_input": frozen,
        "layers": layers,
        "torch_parameters_before": params_before,
        "torch_parameters_after": params_after,
    })


def _output_layers(model: Any, example: tuple) -> list[Any]:
    """The Conv/Linear layers that run last (the classifier / output head): never pruned at the output."""
    import torch

    order: list[Any] = []
    hooks = [
        m.register_forward_hook(lambda mod, _i, _o: order.append(mod))
        for m in model.modules()
        if isinstance(m, (torch.nn.modules.conv._ConvNd, torch.nn.Linear))
    ]
    try:
        with torch.no_grad():
            model(*example)
    finally:
        for h in hooks:
            h.remove()
    return [order[-1]] if order else []


def _channel_counts(model: Any) -> dict[str, int]:
    import torch

    out = {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.modules.conv._ConvNd):
            out[name] = int(m.out_channels)
        elif isinstance(m, torch.nn.Linear):
            out[name] = int(m.out_features)
    return out


# --------------------------------------------------------------------------- unstructured


def _global_magnitude_masks(tensors: list[Any], amount: float) -> list[Any]:
    """Apply torch.nn.utils.prune global L1 magnitude pruning to copies of ``tensors`` and return them."""
    import torch
    from torch.nn.utils import prune

    holders = []
    for t in tensors:
        h = torch.nn.Module()
        h.weight = torch.nn.Parameter(t.detach().clone().float(), requires_grad=False)
        holders.append(h)
    pairs = [(h, "weight") for h in holders]
    prune.global_unstructured(pairs, pruning_method=prune.L1Unstructured, amount=amount)
    for h in holders:
        prune.remove(h, "weight")  # masks made permanent: plain weight tensors, no weight_orig/weight_mask
    return [h.weight.detach().to(t.dtype) for h, t in zip(holders, tensors, strict=True)]


def _torch_weight_params(model: Any, fmt: ModelFormat) -> list[tuple[str, Any]]:
    """(name, parameter) of every Conv/Linear weight of a PyTorch model of any loaded format."""
    import torch

    if fmt is ModelFormat.EXPORTED_PROGRAM:
        ep = model
        targets = {"linear", "conv1d", "conv2d", "conv3d", "convolution", "conv_transpose1d", "conv_transpose2d",
                   "conv_transpose3d", "addmm", "mm"}
        sig = ep.graph_signature.inputs_to_parameters
        names = []
        for node in ep.graph.nodes:
            if node.op == "call_function" and getattr(node.target, "__name__", "").split(".")[0] in targets:
                w = node.args[2] if node.target.__name__.startswith("addmm") else node.args[1]
                if hasattr(w, "name") and w.name in sig and sig[w.name] not in names:
                    names.append(sig[w.name])
        state = ep.state_dict
        return [(n, state[n]) for n in names]
    params = []
    conv_linear = ("Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d", "Linear")
    for name, m in model.named_modules():
        kind = getattr(m, "original_name", type(m).__name__)
        if isinstance(m, (torch.nn.modules.conv._ConvNd, torch.nn.Linear)) or kind in conv_linear:
            w = getattr(m, "weight", None)
            if isinstance(w, torch.Tensor):
                params.append((f"{name}.weight" if name else "weight", w))
    return params


def _unstructured(ctx: RunContext, config: PruneConfig) -> PassOutcome:
    art = ctx.artifact
    if art.format is ModelFormat.ONNX:
        return _unstructured_onnx(ctx, config)
    import torch

    if art.format is ModelFormat.EXPORTED_PROGRAM:
        model = copy.deepcopy(art.loaded)
    elif art.format is ModelFormat.TORCHSCRIPT:
        model = torch.jit.load(str(art.path), map_location="cpu").eval()  # a fresh copy
    else:
        model = copy.deepcopy(art.loaded).eval()
    named = _torch_weight_params(model, art.format)
    if not named:
        raise PruningError("the model has no Conv or Linear weights to prune; nothing would change")
    pruned = _global_magnitude_masks([p for _, p in named], config.ratio)
    with torch.no_grad():
        for (_, p), new in zip(named, pruned, strict=True):
            p.copy_(new)
    zeros = sum(int((p == 0).sum()) for _, p in named)
    total = sum(p.numel() for _, p in named)
    ctx.steps.append({"name": "prune", "method": "unstructured", "weights": len(named), "sparsity": zeros / total})
    path = ctx.workdir / "result.onnx"
    res = export_to_onnx(model, ctx.io, path, check_data=ctx.data, opset=ctx.export.opset, atol=ctx.export.atol,
                         rtol=ctx.export.rtol, exporter=ctx.export.exporter)
    ctx.steps.append({"name": "export", "of": "pruned model", **res.to_json()})
    return PassOutcome(path, _unstructured_details(config, [n for n, _ in named], zeros / total))


def _unstructured_details(config: PruneConfig, names: list[str], sparsity: float) -> dict[str, Any]:
    return {
        "method": "unstructured",
        "pruning_ratio": config.ratio,
        "criterion": "l1",
        "criterion_source": "global L1 magnitude, torch.nn.utils.prune.global_unstructured",
        "pruned_tensors": names,
        "target_sparsity": config.ratio,
        "achieved_sparsity": sparsity,
        "note": "unstructured sparsity shrinks the compressed (e.g. zip) size, not the dense ONNX file, and "
                "ONNX Runtime's CPU kernels do not skip zeros: expect no speedup",
    }


def _unstructured_onnx(ctx: RunContext, config: PruneConfig) -> PassOutcome:
    import onnx
    import torch
    from onnx import numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(art_model := ctx.artifact.loaded)
    del art_model
    inits = {i.name: i for i in model.graph.initializer}
    names: list[str] = []
    for node in model.graph.node:
        idx = {"Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1}.get(node.op_type)
        if idx is not None and idx < len(node.input) and node.input[idx] in inits and node.input[idx] not in names:
            arr_init = inits[node.input[idx]]
            if arr_init.data_type in (1, 10, 11):
                names.append(node.input[idx])
    if not names:
        raise PruningError("the ONNX graph has no Conv/Gemm/MatMul weight initializers to prune; nothing would change")
    arrays = [numpy_helper.to_array(inits[n]) for n in names]
    pruned = _global_magnitude_masks([torch.from_numpy(a.astype(np.float32)) for a in arrays], config.ratio)
    zeros = total = 0
    for n, a, p in zip(names, arrays, pruned, strict=True):
        new = p.numpy().astype(a.dtype)
        zeros += int((new == 0).sum())
        total += new.size
        inits[n].CopyFrom(numpy_helper.from_array(new, n))
    ctx.steps.append({"name": "prune", "method": "unstructured", "weights": len(names), "sparsity": zeros / total})
    path = ctx.workdir / "result.onnx"
    save_onnx(model, path)
    return PassOutcome(path, _unstructured_details(config, names, zeros / total))

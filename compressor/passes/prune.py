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
import dataclasses
from typing import Any

import numpy as np

from compressor.artifact import ModelArtifact, ModelFormat, save_onnx
from compressor.context import RunContext
from compressor.errors import CompressorError, PruningError, UnsupportedModelError
from compressor.onnx_graph import DENSE_WEIGHT_OPS, FLOAT_ELEM_TYPES, initializers, weight_input
from compressor.passes import PassResult
from compressor.passes.configs import PruneConfig
from compressor.scope import ExclusionScope, match_globs


def check_prune(config: PruneConfig, ctx: RunContext, *, form: str, has_python_classes: bool,
                artifact: ModelArtifact | None = None) -> None:
    """Refuse, before any work, settings this run cannot satisfy.

    Args:
        config: Prune settings.
        ctx: Run context (the data given).
        form: ``"torch"`` or ``"onnx"``: the form of the model this step will get.
        has_python_classes: The PyTorch model carries its own ``nn.Module`` classes.
        artifact: The model this step will get, when it is known before any work (the input model).

    Raises:
        UsageError: Structured pruning of an ONNX-only model or of a file without Python classes,
            ``taylor`` without calibration data, ``recover`` without data, an ``exclude`` glob that
            matches no layer.
    """
    from compressor.errors import UsageError

    if config.method == "structured" and (form == "onnx" or not has_python_classes):
        what = "an ONNX model" if form == "onnx" else "a file without the model's Python classes"
        raise UnsupportedModelError(
            f"structured pruning needs the model's Python classes, and this step gets {what}; load it from a "
            "torch.save(model) pickle or a state_dict with --model-class package.module:ClassName, put pruning "
            "before quantization, or use --method unstructured")
    if config.criterion == "taylor" and ctx.calibration is None:
        raise UsageError("--criterion taylor needs --calibration-data FILE.npz (gradients come from real inputs)")
    if config.recover and ctx.train_data is None and ctx.calibration is None:
        raise UsageError("--recover needs inputs to learn from: pass --calibration-data FILE.npz (no labels needed) "
                         "or --train-data FILE.npz (inputs plus labels)")
    if config.exclude and config.method == "structured" and artifact is not None and artifact.format.is_torch:
        ExclusionScope(config.exclude).torch_modules(dict(artifact.loaded.named_modules()))


def run_prune(artifact: ModelArtifact, config: PruneConfig, ctx: RunContext) -> PassResult:
    """Prune a model; the input artifact is never changed.

    PyTorch in, PyTorch out (the pipeline exports it); ONNX in (unstructured only), ONNX out.

    Args:
        artifact: A PyTorch model (structured needs its Python classes) or an ONNX model.
        config: Prune settings.
        ctx: Inputs, data (calibration data for recovery and Taylor importance), callbacks.

    Returns:
        The pruned model and the report's ``pruning`` section.

    Raises:
        UnsupportedModelError: Structured pruning of a file without Python classes
            (ExportedProgram, TorchScript, ONNX).
        PruningError: Nothing was removed or Torch-Pruning failed.
    """
    if config.method == "structured":
        return _structured(artifact, ctx, config)
    return _unstructured(artifact, ctx, config)


# ----------------------------------------------------------------------------- structured

_FORMAT_NAMES = {
    ModelFormat.EXPORTED_PROGRAM: "an ExportedProgram (.pt2)",
    ModelFormat.TORCHSCRIPT: "a TorchScript file",
    ModelFormat.ONNX: "an ONNX file",
    ModelFormat.TORCH_MODULE: "a pickled module",
    ModelFormat.STATE_DICT: "a state_dict",
}


def _structured(art: ModelArtifact, ctx: RunContext, config: PruneConfig) -> PassResult:
    if not art.format.has_python_classes:
        raise UnsupportedModelError(
            f"structured pruning needs the model's Python classes, which {_FORMAT_NAMES[art.format]} does not carry; "
            "either (1) load it from a torch.save(model) pickle or a state_dict with --model-class package.module:ClassName, "
            "or (2) use --method unstructured"
        )
    import torch
    import torch_pruning as tp

    teacher = art.loaded
    model = copy.deepcopy(teacher).eval()
    frozen = not any(p.requires_grad for p in model.parameters())
    for p in model.parameters():  # a frozen model gives an empty dependency graph (case P2)
        p.requires_grad_(True)
    example = tuple(torch.from_numpy(np.ascontiguousarray(ctx.data.batch(0, 2)[n])) for n in ctx.io.input_names)
    example1 = tuple(t[:1] for t in example)
    named = dict(model.named_modules())
    ignored = _output_layers(model, example)
    ignored += [m for m in ExclusionScope(config.exclude).torch_modules(named) if m not in ignored]
    num_heads, attn_modules = _attention_heads(model)
    if config.heads is not None and not num_heads:
        raise UnsupportedModelError("--heads needs attention layers (nn.MultiheadAttention or BERT-style "
                                    "self-attention with query/key/value Linear layers); this model has none")
    if num_heads:  # transformers: prune heads and FFN hidden units only, keep the hidden (residual) width
        keep = set(num_heads) | {m for m in named.values() if isinstance(m, torch.nn.Linear)
                                 and m.out_features > m.in_features}
        ignored += [m for m in named.values() if isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd))
                    and m not in keep and m not in ignored]
        ignored += [m for m in named.values() if isinstance(m, torch.nn.MultiheadAttention) and m not in ignored]
    ratio_dict = {}
    for pattern, r in config.layer_ratios:
        for name in match_globs((pattern,), list(named), flag="layer ratio", kind="layer"):
            ratio_dict[named[name]] = min(r, config.max_layer_ratio)
    uniform_ratio = config.ratio if config.global_pruning else min(config.ratio, config.max_layer_ratio)
    macs_before, params_before = _count(model, example1)
    before = _channel_counts(model)
    importance = _importance(config.criterion)
    try:
        pruner = tp.pruner.MetaPruner(
            model, example, importance=importance, global_pruning=config.global_pruning,
            pruning_ratio=uniform_ratio, pruning_ratio_dict=ratio_dict or None,
            max_pruning_ratio=config.max_layer_ratio, iterative_steps=config.steps, ignored_layers=ignored,
            round_to=config.round_to, num_heads=num_heads, prune_num_heads=config.heads is not None,
            head_pruning_ratio=config.heads or 0.0, prune_head_dims=config.heads is None and not num_heads,
        )
        for _ in range(config.steps):
            if config.criterion == "taylor":
                _taylor_gradients(model, ctx)
            pruner.step()
    except CompressorError:
        raise
    except Exception as e:
        raise PruningError(f"Torch-Pruning failed on this model: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from e
    _update_attention_attributes(attn_modules)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    macs_after, params_after = _count(model, example1)
    if params_after >= params_before:
        raise PruningError(
            f"structured pruning at ratio {config.ratio} removed no channel (no prunable Conv/Linear outside the "
            "output layer and --exclude, or every layer is too small); try a larger --ratio or --method unstructured"
        )
    after = _channel_counts(model)
    layers = [{"name": name, "channels_before": before[name], "channels_after": after.get(name, before[name])}
              for name in before]
    over = [la["name"] for la in layers
            if la["channels_before"] - la["channels_after"] > config.max_layer_ratio * la["channels_before"]
            + (config.round_to or 1)]
    if over:
        ctx.warn(f"layers {', '.join(over)} lost more than --max-layer-ratio {config.max_layer_ratio} of their channels "
                 "(coupled layers are pruned together); lower --ratio or --exclude them")
    details: dict[str, Any] = {
        "method": "structured",
        "pruning_ratio": config.ratio,
        "criterion": config.criterion,
        "criterion_source": _CRITERION_SOURCES[config.criterion],
        "global": config.global_pruning,
        "steps": config.steps,
        "round_to": config.round_to,
        "max_layer_ratio": config.max_layer_ratio,
        "heads": _head_counts(attn_modules) if attn_modules else None,
        "ignored_layers": [n for n, m in model.named_modules() if any(m is i for i in ignored)],
        "frozen_input": frozen,
        "layers": layers,
        "torch_parameters_before": params_before,
        "torch_parameters_after": params_after,
        "macs_before": macs_before,
        "macs_after": macs_after,
        "lossless": False,
        "note": "structured pruning changes the function: fidelity and accuracy are measured against the original",
    }
    if config.recover:
        details["advice_when_far"] = "use a lower --ratio, more --recover-steps, or --train-data with labels"
    if ctx.eval_data is not None:
        details["accuracy_before_recovery"] = _torch_accuracy(model, ctx)
    if config.recover:
        details["recovery"] = recover(model, teacher, ctx, config)
        if ctx.eval_data is not None:
            details["accuracy_after_recovery"] = _torch_accuracy(model, ctx)
    return PassResult(_torch_artifact(art, model, ModelFormat.TORCH_MODULE), details)


def _torch_artifact(source: ModelArtifact, model: Any, fmt: ModelFormat) -> ModelArtifact:
    """An in-memory PyTorch result: no file of its own yet (``path`` names the model it came from)."""
    return dataclasses.replace(source, format=fmt, loaded=model, details={"in_memory": True})


_CRITERION_SOURCES = {
    "l1": "L1 filter norm, Li et al. 2017 (Torch-Pruning MagnitudeImportance p=1)",
    "l2": "L2 filter norm (Torch-Pruning MagnitudeImportance p=2)",
    "fpgm": "filter pruning via geometric median, He et al. 2019 (Torch-Pruning FPGMImportance)",
    "bn-scale": "BatchNorm scaling factors, network slimming, Liu et al. 2017 (Torch-Pruning BNScaleImportance)",
    "taylor": "first-order Taylor expansion, Molchanov et al. 2019 (Torch-Pruning TaylorImportance)",
    "random": "random ranking (a baseline; Torch-Pruning RandomImportance)",
}


def _importance(criterion: str) -> Any:
    import torch
    import torch_pruning as tp

    conv_linear = [torch.nn.modules.conv._ConvNd, torch.nn.Linear]
    if criterion == "l1":
        return tp.importance.MagnitudeImportance(p=1, target_types=conv_linear)
    if criterion == "l2":
        return tp.importance.MagnitudeImportance(p=2, target_types=conv_linear)
    if criterion == "fpgm":
        return tp.importance.FPGMImportance()
    if criterion == "bn-scale":
        return tp.importance.BNScaleImportance()
    if criterion == "taylor":
        return tp.importance.TaylorImportance()
    return tp.importance.RandomImportance()


def _taylor_gradients(model: Any, ctx: RunContext) -> None:
    """Gradients for the Taylor criterion from unlabeled data: cross-entropy against the model's own predictions."""
    import torch

    from compressor.errors import UsageError

    if ctx.calibration is None:
        raise UsageError("--criterion taylor needs --calibration-data FILE.npz (gradients come from real inputs)")
    model.zero_grad()
    data = ctx.calibration
    for start in range(0, min(data.num_samples, 256), 64):
        batch = data.batch(start, 64)
        out = _first_output(model(*[torch.from_numpy(np.ascontiguousarray(batch[n])) for n in ctx.io.input_names]))
        if out.dim() == 2 and out.shape[1] > 1:
            loss = torch.nn.functional.cross_entropy(out, out.detach().argmax(1))
        else:
            loss = out.pow(2).mean()
        loss.backward()


def _first_output(out: Any) -> Any:
    import torch

    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (list, tuple)):
        return _first_output(out[0])
    if isinstance(out, dict):
        return _first_output(next(iter(out.values())))
    if hasattr(out, "to_tuple"):
        return _first_output(out.to_tuple()[0])
    raise PruningError(f"cannot read the model's output of type {type(out).__name__}")


def _count(model: Any, example: tuple) -> tuple[int, int]:
    """(MACs per sample, parameters) by Torch-Pruning's op counter."""
    import torch
    import torch_pruning as tp

    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, example)
    return int(macs), int(params)


def _attention_heads(model: Any) -> tuple[dict[Any, int], list[Any]]:
    """Torch-Pruning ``num_heads`` map for BERT-style self-attention (query/key/value Linear) and nn.MultiheadAttention."""
    import torch

    num_heads: dict[Any, int] = {}
    modules = []
    for m in model.modules():
        if all(isinstance(getattr(m, a, None), torch.nn.Linear) for a in ("query", "key", "value")) and hasattr(
            m, "num_attention_heads"
        ):
            for a in ("query", "key", "value"):
                num_heads[getattr(m, a)] = int(m.num_attention_heads)
            modules.append(m)
        elif isinstance(m, torch.nn.MultiheadAttention):
            num_heads[m] = int(m.num_heads)
            modules.append(m)
    return num_heads, modules


def _update_attention_attributes(modules: list[Any]) -> None:
    """After head pruning, make BERT-style attention modules agree with their new projection sizes."""
    for m in modules:
        if hasattr(m, "query") and hasattr(m, "attention_head_size"):
            m.num_attention_heads = m.query.out_features // m.attention_head_size
            m.all_head_size = m.query.out_features
        elif hasattr(m, "num_heads") and hasattr(m, "head_dim"):
            m.num_heads = m.embed_dim // m.head_dim if m.embed_dim % m.head_dim == 0 else m.num_heads


def _head_counts(modules: list[Any]) -> list[int]:
    return [int(getattr(m, "num_attention_heads", getattr(m, "num_heads", 0))) for m in modules]


def _torch_accuracy(model: Any, ctx: RunContext) -> float:
    """Top-1 accuracy of a PyTorch classifier on ``--eval-data``."""
    import torch

    data = ctx.eval_data
    correct = 0
    with torch.no_grad():
        for start in range(0, data.num_samples, 256):
            batch = data.batch(start, 256)
            out = _first_output(model(*[torch.from_numpy(np.ascontiguousarray(batch[n])) for n in ctx.io.input_names]))
            correct += int((out.argmax(1).numpy() == data.labels[start : start + 256]).sum())
    return correct / data.num_samples


def recover(student: Any, teacher: Any, ctx: RunContext, config: PruneConfig) -> dict[str, Any]:
    """Fine-tune a pruned model to match the original by knowledge distillation (Hinton et al. 2015).

    Loss: KL divergence between temperature-softened outputs (``T^2``-scaled) for classifiers
    (``[N, classes]`` outputs), MSE otherwise; plus cross-entropy when ``--train-data`` has labels.
    Data: the unlabeled inputs of ``--calibration-data``. Adam, seeded sampling with replacement.

    Args:
        student: The pruned ``nn.Module`` (trained in place).
        teacher: The original model (frozen).
        ctx: Run context with ``calibration`` (and optionally ``train_data``).
        config: Recovery settings.

    Returns:
        ``{"steps", "loss_first", "loss_last", "samples", "labels"}``.

    Raises:
        UsageError: No calibration or training data.
    """
    import torch

    from compressor.errors import UsageError

    data = ctx.train_data or ctx.calibration
    if data is None:
        raise UsageError("--recover needs inputs to learn from: pass --calibration-data FILE.npz (no labels needed) "
                         "or --train-data FILE.npz (inputs plus labels)")
    torch.manual_seed(config.seed)
    names = ctx.io.input_names
    arrays = [torch.from_numpy(np.ascontiguousarray(data.arrays[n])) for n in names]
    teacher.eval()
    with torch.no_grad():
        t_out = torch.cat([_first_output(teacher(*[a[i : i + 256] for a in arrays]))
                           for i in range(0, data.num_samples, 256)])
    labels = torch.from_numpy(data.labels) if data.labels is not None else None
    classifier = t_out.dim() == 2 and t_out.shape[1] > 1
    for p in student.parameters():
        p.requires_grad_(True)
    student.train()
    opt = torch.optim.Adam(student.parameters(), lr=config.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=config.recover_steps)
    gen = torch.Generator().manual_seed(config.seed)
    T = config.temperature
    losses = []
    ctx.progress("recovery", 0, config.recover_steps)
    every = max(1, config.recover_steps // 20)
    for step in range(config.recover_steps):
        idx = torch.randint(0, data.num_samples, (min(config.recover_batch_size, data.num_samples),), generator=gen)
        out = _first_output(student(*[a[idx] for a in arrays]))
        if classifier:
            loss = torch.nn.functional.kl_div(torch.log_softmax(out / T, 1), torch.softmax(t_out[idx] / T, 1),
                                              reduction="batchmean") * T * T
        else:
            loss = torch.nn.functional.mse_loss(out, t_out[idx])
        if labels is not None and classifier:
            loss = loss + torch.nn.functional.cross_entropy(out, labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(float(loss))
        if (step + 1) % every == 0 or step + 1 == config.recover_steps:
            ctx.progress("recovery", step + 1, config.recover_steps, loss=float(np.mean(losses[-every:])))
    student.eval()
    for p in student.parameters():
        p.requires_grad_(False)
    return {"steps": config.recover_steps, "loss_first": losses[0], "loss_last": float(np.mean(losses[-10:])),
            "samples": data.num_samples, "data": data.source, "labels": labels is not None,
            "method": "knowledge distillation (Hinton et al. 2015): "
                      + ("KL on softened logits" if classifier else "MSE on outputs")
                      + (" + cross-entropy on labels" if labels is not None else "")}


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


def _unstructured(art: ModelArtifact, ctx: RunContext, config: PruneConfig) -> PassResult:
    if art.format is ModelFormat.ONNX:
        return _unstructured_onnx(art, ctx, config)
    import torch

    if art.format is ModelFormat.EXPORTED_PROGRAM:
        model = copy.deepcopy(art.loaded)
    elif art.format is ModelFormat.TORCHSCRIPT and not art.details.get("in_memory"):
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
    return PassResult(_torch_artifact(art, model, art.format),
                      _unstructured_details(config, [n for n, _ in named], zeros / total))


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


def _unstructured_onnx(art: ModelArtifact, ctx: RunContext, config: PruneConfig) -> PassResult:
    import onnx
    import torch
    from onnx import numpy_helper

    from compressor.external_data import has_external_data

    external = has_external_data(art.loaded if art.loaded is not None else art.path)
    if art.loaded is not None and not external:
        model = onnx.ModelProto()
        model.CopyFrom(art.loaded)
    else:  # an ONNX file made by an earlier step, or weights in external data (the loader keeps them on disk)
        model = onnx.load_model(str(art.path))
    inits = initializers(model)
    names: list[str] = []
    for node in model.graph.node:
        w = weight_input(node) if node.op_type in DENSE_WEIGHT_OPS else None
        if w in inits and w not in names and inits[w].data_type in FLOAT_ELEM_TYPES:
            names.append(w)
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
    path = ctx.workdir / "pruned.onnx"
    save_onnx(model, path, external=external or None)  # external data in, external data out
    return PassResult(ModelArtifact(path, ModelFormat.ONNX, io=art.io),
                      _unstructured_details(config, names, zeros / total))

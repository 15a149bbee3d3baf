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
import math
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
            ``taylor`` without calibration data, ``recover`` without data or with unstructured pruning, an
            ``exclude`` glob that
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
    if config.recover and config.method != "structured":
        raise UsageError("--recover fine-tunes the smaller network that structured pruning leaves; unstructured "
                         "pruning keeps zeros in dense tensors and has no recovery here: drop --recover, or use "
                         "--method structured")
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

    teacher = art.loaded
    model = copy.deepcopy(teacher).eval()
    frozen = not any(p.requires_grad for p in model.parameters())
    for p in model.parameters():  # a frozen model gives an empty dependency graph (case P2)
        p.requires_grad_(True)
    example = tuple(torch.from_numpy(np.ascontiguousarray(ctx.data.batch(0, 2)[n])) for n in ctx.io.input_names)
    example1 = tuple(t[:1] for t in example)
    named = dict(model.named_modules())
    names = {m: n for n, m in named.items()}
    num_heads, attn_modules = _attention_heads(model)
    try:
        with torch.no_grad():
            reference = _output_signature(model(*example))
    except Exception as e:
        _stop_if_interrupted(e)
        raise PruningError(f"the model does not run on its example inputs before pruning ({_first_line(e)})") from e
    try:
        flow = channel_flow(model, example1)
    except Exception as e:
        _stop_if_interrupted(e)
        raise PruningError(f"structured pruning could not trace where this model's channels go ({_first_line(e)}); "
                           "use --method unstructured") from e
    fused = [m for m in flow.fused_qkv if m not in num_heads]
    if config.heads is not None and not num_heads:
        extra = (f"; its fused-qkv attention ({', '.join(names[m] for m in fused)}) keeps its heads: drop --heads to "
                 "prune the MLP only") if fused else ""
        raise UnsupportedModelError("--heads needs attention layers (nn.MultiheadAttention or BERT-style "
                                    f"self-attention with query/key/value Linear layers); this model has none{extra}")
    kept = _kept_layers(model, config, flow, num_heads, fused, names)
    conv_linear = [m for m in named.values() if isinstance(m, (torch.nn.modules.conv._ConvNd, torch.nn.Linear))]
    candidates = [m for m in conv_linear if m not in kept]
    if not candidates:
        raise _nothing_to_prune(config, kept, flow, names)
    _warn_left_unpruned(ctx, flow, kept, names)
    macs_before, params_before = _count(model, example1)
    before = _channel_counts(model)
    pristine = copy.deepcopy(model)
    attempt = _Attempt(example=example, reference=reference, config=config, num_heads_names={
        names[m]: h for m, h in num_heads.items()}, ctx=ctx)
    ignored_names = [names[m] for m in kept]
    model, plan, broken = attempt.run_guarded(pristine, ignored_names)
    for name, why in broken.items():
        kept[named[name]] = why
    if broken:
        ctx.warn(f"structured pruning left {', '.join(broken)} unpruned: Torch-Pruning 1.6.1 could not prune "
                 f"{'them' if len(broken) > 1 else 'it'} without breaking the model ({next(iter(broken.values()))})")
    _, attn_modules = _attention_heads(model)  # attributes already updated by the attempt
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    macs_after, params_after = _count(model, example1)
    after = _channel_counts(model)
    # Torch-Pruning 1.6.1 skips, without a word, a group its own check refuses (e.g. a split whose pieces feed one
    # reused module, Torch-Pruning's test_split structure, case R27): say so instead of a changed ratio
    declined = [n for n, r in plan["ratio_dict"].items() if r > 0 and n in before and after.get(n) == before[n]
                and named[n] not in kept]
    for n in declined:
        kept[named[n]] = ("Torch-Pruning 1.6.1 declined to prune its group (its channels are coupled through a split, "
                          "a reused module or a layer it cannot shrink)")
    if params_after >= params_before:
        if declined:
            raise PruningError(f"structured pruning at ratio {config.ratio} removed no channel: Torch-Pruning 1.6.1 "
                               f"declined to prune {', '.join(declined[:6])} (coupled through a split, a reused module "
                               "or a layer it cannot shrink) and every other layer keeps its outputs; use --method "
                               "unstructured")
        raise _nothing_to_prune(config, kept, flow, names, plan=plan)
    if declined:
        ctx.warn(f"structured pruning left {', '.join(declined[:6])} unpruned: Torch-Pruning 1.6.1 declined to prune "
                 f"{'their groups' if len(declined) > 1 else 'its group'} (coupled through a split, a reused module or "
                 "a layer it cannot shrink); see pruning.left_unpruned in the report")
    layers = _layer_rows(before, after, plan, {names[m]: why for m, why in kept.items()})
    over = [la["name"] for la in layers
            if la["channels_before"] - la["channels_after"] > config.max_layer_ratio * la["channels_before"]
            + (config.round_to or 1)]
    if over:
        ctx.warn(f"layers {', '.join(over)} lost more than --max-layer-ratio {config.max_layer_ratio} of their channels "
                 "(coupled layers are pruned together); lower --ratio or --exclude them")
    _warn_ratio_changed(ctx, config, [la for la in layers if la["name"] in plan["ratio_dict"]])
    pruned_rows = [la for la in layers if la["kept_because"] is None]
    details: dict[str, Any] = {
        "method": "structured",
        "pruning_ratio": config.ratio,
        "achieved_ratio": (sum(la["channels_before"] - la["channels_after"] for la in pruned_rows)
                           / max(1, sum(la["channels_before"] for la in pruned_rows))),
        "criterion": config.criterion,
        "criterion_source": _CRITERION_SOURCES[config.criterion],
        "global": config.global_pruning,
        "steps": config.steps,
        "round_to": config.round_to,
        "max_layer_ratio": config.max_layer_ratio,
        "heads": _head_counts(attn_modules) if attn_modules else None,
        "ignored_layers": [n for n, m in named.items() if m in kept],
        "left_unpruned": [{"name": names[m], "reason": why} for m, why in kept.items()],
        "unsupported_layers": [{"name": n, "type": t} for n, t in flow.unsupported],
        "frozen_input": frozen,
        "layers": layers,
        "torch_parameters_before": params_before,
        "torch_parameters_after": params_after,
        "lossless": False,
        "note": "structured pruning changes the function: fidelity and accuracy are measured against the original",
    }
    if macs_before is not None and macs_after is not None:
        details["macs_before"] = macs_before
        details["macs_after"] = macs_after
    if config.recover:
        details["advice_when_far"] = "use a lower --ratio, more --recover-steps, or --train-data with labels"
    if ctx.eval_data is not None:
        details["accuracy_before_recovery"] = _torch_accuracy(model, ctx)
    if config.recover:
        details["recovery"] = recover(model, teacher, ctx, config)
        if ctx.eval_data is not None:
            details["accuracy_after_recovery"] = _torch_accuracy(model, ctx)
    return PassResult(_torch_artifact(art, model, ModelFormat.TORCH_MODULE), details)


def _first_line(e: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters; the type alone when the message is empty)."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:300]}" if text else type(e).__name__


def _output_signature(out: Any) -> Any:
    """The structure of a model's output with each tensor replaced by its shape (tuples, lists, dicts kept)."""
    import torch

    if isinstance(out, torch.Tensor):
        return tuple(out.shape)
    if isinstance(out, dict):
        return {k: _output_signature(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return type(out)(_output_signature(v) for v in out) if type(out) in (list, tuple) else \
            tuple(_output_signature(v) for v in out)
    if hasattr(out, "to_tuple"):
        return _output_signature(out.to_tuple())
    return type(out).__name__


def _kept_layers(model: Any, config: PruneConfig, flow: ChannelFlow, num_heads: dict[Any, int], fused: list[Any],
                 names: dict[Any, str]) -> dict[Any, str]:
    """Every layer that keeps its output width, with the reason (dict in model order of discovery)."""
    import torch

    named = {n: m for m, n in names.items()}
    kept: dict[Any, str] = {}
    for m in flow.output_layers:
        kept.setdefault(m, "its output is a model output")
    for m in ExclusionScope(config.exclude).torch_modules(named):
        kept.setdefault(m, "--exclude")
    for m in named.values():
        if type(m).__name__ in _UNSUPPORTED_TYPES:
            kept.setdefault(m, f"{type(m).__name__} layers are not pruned structurally")
    for m, what in flow.feeds_unsupported.items():
        kept.setdefault(m, f"it feeds {what}, which structured pruning does not change")
    for m in fused:
        kept.setdefault(m, "fused-qkv attention keeps its width")
    for m, structure in flow.structures.items():
        if m not in num_heads:
            kept.setdefault(m, f"its output goes through {structure}, which Torch-Pruning 1.6.1 cannot follow")
    if num_heads or fused:  # transformers: prune heads and FFN hidden units only, keep the hidden (residual) width
        prunable = set(num_heads) | {m for m in named.values() if isinstance(m, torch.nn.Linear)
                                     and m.out_features > m.in_features and m not in fused}
        for m in named.values():
            if isinstance(m, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)) and m not in prunable:
                kept.setdefault(m, "attention model: the hidden (residual) width and attention projections are kept")
            elif isinstance(m, torch.nn.MultiheadAttention):
                kept.setdefault(m, "attention model: nn.MultiheadAttention keeps its width")
    return kept


def _nothing_to_prune(config: PruneConfig, kept: dict[Any, str], flow: ChannelFlow, names: dict[Any, str], *,
                      plan: dict[str, Any] | None = None) -> CompressorError:
    """The one-line error of a run that cannot remove any channel, saying why."""
    reasons: dict[str, list[str]] = {}
    for m, why in kept.items():
        reasons.setdefault(why, []).append(names.get(m, "?"))
    why = "; ".join(f"{', '.join(ns[:4])}{' ...' if len(ns) > 4 else ''}: {r}" for r, ns in list(reasons.items())[:3])
    if plan and plan.get("smallest"):
        name, frac = plan["smallest"]
        return PruningError(f"structured pruning at ratio {config.ratio} removed no channel: the smallest step any layer "
                            f"can take is {frac:.2f} of its channels ('{name}': channel groups, --round-to or "
                            f"--max-layer-ratio); use --ratio {frac:.2f} or more")
    types = sorted({t for _, t in flow.unsupported})
    if types and all(r.startswith(("its output is", "--exclude", "it feeds", *types)) for r in reasons):
        return UnsupportedModelError(
            f"structured pruning cannot remove any channel of this model: it does not prune {', '.join(types)} "
            f"layers ({', '.join(n for n, _ in flow.unsupported[:4])}) and every other layer keeps its outputs "
            f"({why}); use --method unstructured")
    return PruningError(
        f"structured pruning at ratio {config.ratio} removed no channel: no prunable Conv/Linear layer is left "
        f"({why or 'every layer is too small'}); try a larger --ratio, fewer --exclude, or --method unstructured")


def _warn_left_unpruned(ctx: RunContext, flow: ChannelFlow, kept: dict[Any, str], names: dict[Any, str]) -> None:
    """Warn, before the work, about layers kept because of unsupported layer types or structures."""
    feeders = [names[m] for m in flow.feeds_unsupported]
    if feeders or any(t not in ("Embedding", "EmbeddingBag") for _, t in flow.unsupported):
        # an embedding fed by integer ids constrains nothing: listed in the report only
        ctx.warn(f"structured pruning does not prune {', '.join(sorted({t for _, t in flow.unsupported}))} layers "
                 f"({', '.join(n for n, _ in flow.unsupported[:6])}); they keep their widths"
                 + (f", and so do the layers feeding them ({', '.join(feeders[:6])})" if feeders else "")
                 + "; see pruning.left_unpruned in the report")
    structures = [(names[m], why) for m, why in kept.items() if "cannot follow" in why or "fused-qkv" in why]
    if structures:
        ctx.warn("structured pruning left " + "; ".join(f"'{n}' unpruned ({why})" for n, why in structures[:4])
                 + ("; ..." if len(structures) > 4 else "") + "; see pruning.left_unpruned in the report")


def _layer_rows(before: dict[str, int], after: dict[str, int], plan: dict[str, Any],
                kept: dict[str, str]) -> list[dict[str, Any]]:
    """The report's per-layer rows: channels before/after, the ratio removed, the ratio asked for, why kept."""
    rows = []
    for name, ch in before.items():
        now = after.get(name, ch)
        target = plan["targets"].get(name)
        rows.append({"name": name, "channels_before": ch, "channels_after": now,
                     "pruning_ratio": round(1.0 - now / ch, 4) if ch else 0.0,
                     "target_ratio": None if name in kept else target,
                     "channel_step": plan["steps"].get(name, 1),
                     "kept_because": kept.get(name)})
    return rows


def _warn_ratio_changed(ctx: RunContext, config: PruneConfig, layers: list[dict[str, Any]]) -> None:
    """One warning naming the layers whose removed share differs from the one asked for by a channel or more."""
    off = [la for la in layers if la["target_ratio"] is not None
           and abs((la["channels_before"] - la["channels_after"]) - la["target_ratio"] * la["channels_before"]) >= 1.0]
    if not off:
        return
    shown = ", ".join(f"{la['name']} {la['channels_before']}->{la['channels_after']} (removed {la['pruning_ratio']:.2f}, "
                      f"asked {la['target_ratio']:.2f}, step {la['channel_step']})" for la in off[:6])
    ctx.warn(f"the pruning ratio could not be met exactly in {len(off)} layer{'s' if len(off) > 1 else ''}: {shown}"
             f"{' ...' if len(off) > 6 else ''}; channel counts stay multiples of their channel groups (GroupNorm "
             "groups, grouped convolutions, --round-to) and within --max-layer-ratio; pruning.layers gives each "
             "layer's ratio")


def _feasible_kept(units: int, ratio: float, *, max_ratio: float, step: int, round_to: int | None,
                   divisors: tuple[int, ...] = ()) -> int:
    """Units (channel groups) a layer keeps: the feasible count nearest to ``ratio``.

    Feasible: at least one unit kept, at most ``max_ratio`` of the units removed, and the kept channel count
    (``units * step``) a multiple of ``round_to`` and of every group count in ``divisors`` (e.g. a GroupNorm's
    groups next to a grouped convolution's). Ties keep more units (never remove more than asked on a tie).
    """
    best, best_err = units, ratio * units
    for k in range(units - 1, 0, -1):
        removed = units - k
        if removed > max_ratio * units + 1e-9:
            break
        if any(d and (k * step) % d for d in (round_to, *divisors)):
            continue
        err = abs(removed - ratio * units)
        if err < best_err - 1e-9:
            best, best_err = k, err
    return best


@dataclasses.dataclass
class _Attempt:
    """Runs Torch-Pruning on a fresh copy of the model and checks the result keeps the model's interface."""

    example: tuple
    reference: Any
    config: PruneConfig
    num_heads_names: dict[str, int]
    ctx: RunContext

    def run_guarded(self, pristine: Any, ignored_names: list[str]) -> tuple[Any, dict[str, Any], dict[str, str]]:
        """Prune; when Torch-Pruning fails or breaks the interface, find the groups that break and prune around them.

        Returns:
            (pruned model, plan, {layer name: why it was left unpruned}) .

        Raises:
            PruningError: Pruning fails even around the groups that break, naming the module.
        """
        try:
            model, plan = self.run(pristine, ignored_names)
            return model, plan, {}
        except _Broken as first:
            error = first
        broken: dict[str, str] = {}
        roots = self.plan_only(pristine, ignored_names)["roots"]
        for root, members in roots.items():
            try:
                self.run(pristine, ignored_names, only=members)
            except _Broken as e:
                broken[root] = f"pruning it breaks the model: {e}"
                for m in members:
                    broken.setdefault(m, broken[root])
        if not broken:
            raise PruningError(f"Torch-Pruning 1.6.1 broke the model ({error}); no single layer group causes it: "
                               "use --exclude on the layers around the failing structure") from error
        try:
            model, plan = self.run(pristine, ignored_names + [n for n in broken if n not in ignored_names])
        except _Broken as e:
            raise PruningError(f"structured pruning broke the model even around {', '.join(broken)} ({e}); "
                               "use --exclude on the layers around the failing structure") from e
        return model, plan, broken

    def _pruner(self, model: Any, ignored_names: list[str], *, ratio: float, ratio_dict: dict[Any, float] | None,
                round_to: int | None) -> Any:
        import torch
        import torch_pruning as tp

        named = dict(model.named_modules())
        ignored = [named[n] for n in ignored_names if n in named]
        num_heads = {named[n]: h for n, h in self.num_heads_names.items() if n in named}
        cfg = self.config
        return tp.pruner.MetaPruner(
            model, self.example, importance=_importance(cfg.criterion), global_pruning=cfg.global_pruning,
            pruning_ratio=ratio, pruning_ratio_dict=ratio_dict or None, max_pruning_ratio=cfg.max_layer_ratio,
            iterative_steps=cfg.steps, ignored_layers=ignored, round_to=round_to, num_heads=num_heads,
            prune_num_heads=cfg.heads is not None, head_pruning_ratio=cfg.heads or 0.0,
            prune_head_dims=cfg.heads is None and not num_heads,
            # LSTMs are not roots: their Torch-Pruning 1.6.1 pruner fails on stacked/batch-first LSTMs (case R28)
            root_module_types=[torch.nn.modules.conv._ConvNd, torch.nn.Linear],
        )

    def plan_only(self, pristine: Any, ignored_names: list[str]) -> dict[str, Any]:
        """Per-group pruning ratios that give each layer the feasible channel count nearest to the ratio asked.

        Torch-Pruning 1.6.1 (``BasePruner._prune``, local pruning) removes ``units - int(units * (1 - r))`` units per
        group, where a unit is one channel in each of the group's channel groups (GroupNorm groups, grouped
        convolutions): at ratio 0.5 a Conv followed by GroupNorm(4, 12) keeps 1 unit of 3 (4 of 12 channels), and
        0.8 asks for 0 units and removes nothing. Here the count kept is chosen first (:func:`_feasible_kept`) and
        passed to Torch-Pruning as the ratio ``1 - (kept + 0.5) / units``, which its formula turns back into exactly
        ``kept``. Uses the private ``_get_channel_groups`` and ``_is_atten_group`` of Torch-Pruning 1.6.1.

        Returns:
            ``{"ratio_dict": {module name: ratio}, "targets": {layer: ratio asked}, "steps": {layer: channels per
            unit}, "roots": {root layer: [layers pruned with it]}, "smallest": (layer, smallest removable share)}``.
        """
        import torch

        cfg = self.config
        model = copy.deepcopy(pristine)
        named = dict(model.named_modules())
        names = {m: n for n, m in named.items()}
        user: dict[str, float] = {}
        for pattern, r in cfg.layer_ratios:
            for name in match_globs((pattern,), list(named), flag="layer ratio", kind="layer"):
                user[name] = min(r, cfg.max_layer_ratio)
        uniform = cfg.ratio if cfg.global_pruning else min(cfg.ratio, cfg.max_layer_ratio)
        probe = self._pruner(model, ignored_names, ratio=uniform, ratio_dict=None, round_to=cfg.round_to)
        plan: dict[str, Any] = {"ratio_dict": {}, "targets": {}, "steps": {}, "roots": {}, "smallest": None}
        conv_linear = (torch.nn.modules.conv._ConvNd, torch.nn.Linear)
        for group in probe.DG.get_all_groups(ignored_layers=probe.ignored_layers,
                                             root_module_types=probe.root_module_types):
            members = [names[dep.target.module] for dep, _ in group
                       if probe.DG.is_out_channel_pruning_fn(dep.handler) and dep.target.module in names]
            layers = [n for n in members if isinstance(named[n], conv_linear)]
            if not layers:
                continue
            root = layers[0]
            plan["roots"][root] = members
            is_attn, _ = probe._is_atten_group(group)
            ch_groups = probe._get_channel_groups(group)
            channels = probe.DG.get_out_channels(group[0][0].target.module)
            units = channels // max(1, ch_groups)
            asked = next((user[n] for n in members if n in user), uniform)
            divisors = tuple({g for dep, _ in group for g in (probe.out_channel_groups.get(dep.target.module, 1),
                                                              probe.in_channel_groups.get(dep.target.module, 1))
                              if g > 1})
            for n in layers:
                plan["targets"][n] = asked
                plan["steps"][n] = math.lcm(max(1, ch_groups), *divisors, cfg.round_to or 1)
            if is_attn or cfg.global_pruning or units < 2:
                continue
            kept = _feasible_kept(units, asked, max_ratio=cfg.max_layer_ratio, step=ch_groups, round_to=cfg.round_to,
                                  divisors=divisors)
            smallest = _feasible_kept(units, 1.0 / units, max_ratio=cfg.max_layer_ratio, step=ch_groups,
                                      round_to=cfg.round_to, divisors=divisors)
            if smallest < units and (plan["smallest"] is None or (units - smallest) / units < plan["smallest"][1]):
                plan["smallest"] = (root, (units - smallest) / units)
            for n in members:
                plan["ratio_dict"][n] = 0.0 if kept >= units else 1.0 - (kept + 0.5) / units
        return plan

    def run(self, pristine: Any, ignored_names: list[str], *, only: list[str] | None = None) -> tuple[Any, dict]:
        """Prune a fresh copy of ``pristine`` (only the group of ``only`` when given) and check its outputs.

        Raises:
            _Broken: Torch-Pruning raised, or the pruned model fails or changes its outputs' structure or shapes.
        """
        import torch

        cfg = self.config
        try:
            plan = self.plan_only(pristine, ignored_names)
        except CompressorError:
            raise
        except Exception as e:
            _stop_if_interrupted(e)
            raise PruningError(f"Torch-Pruning 1.6.1 cannot build this model's dependency graph ({_first_line(e)}); "
                               "use --method unstructured") from e
        model = copy.deepcopy(pristine)
        named = dict(model.named_modules())
        uniform = cfg.ratio if cfg.global_pruning else min(cfg.ratio, cfg.max_layer_ratio)
        if only is not None:
            ratio_dict = {named[n]: plan["ratio_dict"].get(n, uniform) for n in only if n in named}
            uniform, round_to = 0.0, None
        elif cfg.global_pruning:
            ratio_dict = {}
            for pattern, r in cfg.layer_ratios:
                for name in match_globs((pattern,), list(named), flag="layer ratio", kind="layer"):
                    ratio_dict[named[name]] = min(r, cfg.max_layer_ratio)
            round_to = cfg.round_to
        else:
            ratio_dict = {named[n]: r for n, r in plan["ratio_dict"].items()}
            round_to = None  # folded into the planned counts
        try:
            pruner = self._pruner(model, ignored_names, ratio=uniform, ratio_dict=ratio_dict, round_to=round_to)
            for _ in range(cfg.steps):
                if cfg.criterion == "taylor":
                    _taylor_gradients(model, self.ctx)
                pruner.step()
            _update_attention_attributes([m for m in model.modules() if _is_attention(m)])
            with torch.no_grad():
                model.eval()
                got = _output_signature(model(*self.example))
        except CompressorError:
            raise
        except Exception as e:
            _stop_if_interrupted(e)
            raise _Broken(_first_line(e)) from e
        if got != self.reference:
            raise _Broken(f"the outputs changed from {self.reference} to {got}")
        return model, plan


def _stop_if_interrupted(exc: BaseException) -> None:
    """Re-raise a Ctrl-C or SIGTERM that torch wrapped in another error: an interrupt is never a pruning failure."""
    from compressor.errors import stop_requested
    from compressor.export import _interruption

    stop = _interruption(exc) or stop_requested()
    if stop is not None:
        raise stop from exc


class _Broken(Exception):
    """Torch-Pruning failed, or its result does not run or changed the model's outputs."""


def _is_attention(m: Any) -> bool:
    import torch

    return isinstance(m, torch.nn.MultiheadAttention) or (
        hasattr(m, "query") and hasattr(m, "attention_head_size") and hasattr(m, "num_attention_heads"))


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


def _float_outputs(out: Any) -> list[Any]:
    """A model's floating-point output tensors, flattened in order (see :func:`_tensors`).

    The first is the one :func:`_first_output` gives when that is float.
    """
    return [t for t in _tensors(out) if t.is_floating_point()]


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


def _count(model: Any, example: tuple) -> tuple[int | None, int]:
    """(MACs per sample by Torch-Pruning's op counter, or None where it fails; parameters, each tensor once).

    Parameters are counted here, not by the op counter: Torch-Pruning 1.6.1's counter fails on some recurrent
    models (case R28) and counts only the modules its hooks know.
    """
    import torch
    import torch_pruning as tp

    params = sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
    try:
        with torch.no_grad():
            macs, _ = tp.utils.count_ops_and_params(model, example)
        return int(macs), int(params)
    except Exception:  # the count is informative; a model the counter cannot follow still gets pruned
        return None, int(params)


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
        chunks = [_float_outputs(teacher(*[a[i : i + 256] for a in arrays])) for i in range(0, data.num_samples, 256)]
    # every float output is distilled (a multi-head model's other heads drift otherwise); the first one as before,
    # the others by mean squared error relative to the teacher's variance, so that their scales do not matter
    if not chunks[0]:
        raise UsageError("--recover distills the model's float outputs, and this model has none")
    t_all = [torch.cat([c[k] for c in chunks]) for k in range(len(chunks[0]))]
    t_out, t_rest = t_all[0], t_all[1:]
    rest_scale = [float(t.var()) + 1e-12 for t in t_rest]
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
        outs = _float_outputs(student(*[a[idx] for a in arrays]))
        out = outs[0]
        if classifier:
            loss = torch.nn.functional.kl_div(torch.log_softmax(out / T, 1), torch.softmax(t_out[idx] / T, 1),
                                              reduction="batchmean") * T * T
        else:
            loss = torch.nn.functional.mse_loss(out, t_out[idx])
        if labels is not None and classifier:
            loss = loss + torch.nn.functional.cross_entropy(out, labels[idx])
        for o, t, v in zip(outs[1:], t_rest, rest_scale, strict=True):
            loss = loss + torch.nn.functional.mse_loss(o, t[idx]) / v
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


def _channel_counts(model: Any) -> dict[str, int]:
    import torch

    out = {}
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.modules.conv._ConvNd):
            out[name] = int(m.out_channels)
        elif isinstance(m, torch.nn.Linear):
            out[name] = int(m.out_features)
    return out


# ------------------------------------------------------------------- channel flow (what the pruner must respect)

#: Layer types structured pruning does not change: Torch-Pruning 1.6.1 has pruners for nn.LSTM and nn.Embedding, but
#: its LSTM pruner fails with an IndexError on stacked or batch-first LSTMs and its op counter on RNNs; GRU and RNN have
#: none. These layers, and the layers whose outputs feed them, keep their widths (case R14/R28).
_UNSUPPORTED_TYPES = ("LSTM", "GRU", "RNN", "LSTMCell", "GRUCell", "RNNCell", "Embedding", "EmbeddingBag")

_LAYER_FUNCS = frozenset({"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                          "conv_transpose3d"})
_SPLIT_VIEW_FUNCS = frozenset({"view", "reshape", "unflatten", "view_as", "reshape_as"})
_REORDER_FUNCS = frozenset({"transpose", "permute", "swapaxes", "swapdims", "movedim", "moveaxis", "transpose_"})
_SHUFFLE_FUNCS = {"pixel_shuffle": "a pixel shuffle", "pixel_unshuffle": "a pixel unshuffle",
                  "channel_shuffle": "a channel shuffle", "native_channel_shuffle": "a channel shuffle"}
_UNBIND_FUNCS = frozenset({"unbind", "chunk", "split", "tensor_split"})


@dataclasses.dataclass
class ChannelFlow:
    """Where each Conv/Linear layer's output channels go, found by running the model once.

    Attributes:
        output_layers: Layers whose outputs reach a model output through ops without weights (every output of a
            tuple, list, dict or ``ModelOutput``): their output width is the model's interface.
        structures: Layer -> the structure between it and the next layer that reorders or regroups its channels
            (a reshape that splits the channel axis followed by a transpose/permute, as in a channel shuffle or a
            fused-qkv attention; a pixel shuffle), which Torch-Pruning 1.6.1 maps with wrong channel indices.
        fused_qkv: Linear layers whose output is reshaped, permuted and unbound into query, key and value.
        feeds_unsupported: Layer -> the unsupported layer (type and name) its output feeds.
        unsupported: ``(name, type)`` of layers of :data:`_UNSUPPORTED_TYPES`.
    """

    output_layers: list[Any]
    structures: dict[Any, str]
    fused_qkv: list[Any]
    feeds_unsupported: dict[Any, str]
    unsupported: list[tuple[str, str]]


def _tensors(obj: Any) -> list[Any]:
    """Every tensor in a nest of tuples, lists, dicts and ``ModelOutput``-like objects."""
    import torch

    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, dict):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v)]
    if hasattr(obj, "to_tuple"):
        return _tensors(obj.to_tuple())
    return []


def channel_flow(model: Any, example: tuple) -> ChannelFlow:
    """Trace which layers feed the model's outputs, unsupported layers, or channel-reordering structures.

    Runs ``model(*example)`` once under a ``torch.overrides.TorchFunctionMode`` that tags every tensor with the
    Conv/Linear layers its values come from (through ops without weights) and with the reshapes, transposes and
    shuffles met on the way. Works on any eager model (no symbolic tracing), data-dependent branches included.

    Args:
        model: The ``nn.Module``.
        example: Positional example inputs.

    Returns:
        The :class:`ChannelFlow` of the model.
    """
    import torch
    from torch.overrides import TorchFunctionMode

    layers = {id(m.weight): m for m in model.modules()
              if isinstance(m, (torch.nn.modules.conv._ConvNd, torch.nn.Linear)) and isinstance(m.weight, torch.Tensor)}
    unsupported = [(n, type(m).__name__) for n, m in model.named_modules() if type(m).__name__ in _UNSUPPORTED_TYPES]
    names = {m: n for n, m in model.named_modules()}
    structures: dict[Any, set[str]] = {}
    feeds_unsupported: dict[Any, str] = {}
    taint: dict[int, dict[Any, frozenset[str]]] = {}
    alive: list[Any] = []  # keeps traced tensors alive so that their ids stay unique during the trace

    def tags_of(objs: Any) -> dict[Any, frozenset[str]]:
        merged: dict[Any, frozenset[str]] = {}
        for t in _tensors(objs):
            for src, flags in taint.get(id(t), {}).items():
                merged[src] = merged.get(src, frozenset()) | flags
        return merged

    class _Flow(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, D105
            kwargs = kwargs or {}
            out = func(*args, **kwargs)
            outs = _tensors(out)
            if not outs:
                return out
            name = getattr(func, "__name__", "")
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            layer = layers.get(id(weight)) if name in _LAYER_FUNCS else None
            if layer is not None:
                for src, flags in tags_of(args[:1]).items():
                    if flags & {"reorder", "shuffle"}:
                        structures.setdefault(src, set()).update(flags)
                new = {layer: frozenset()}
            else:
                new = tags_of((args, kwargs))
                add: set[str] = set()
                if name in _SHUFFLE_FUNCS:
                    add = {"shuffle", _SHUFFLE_FUNCS[name]}
                elif name in _SPLIT_VIEW_FUNCS and isinstance(args[0], torch.Tensor) and outs[0].dim() > args[0].dim():
                    add = {"split_view"}
                elif name in _REORDER_FUNCS:
                    add = {"reorder_after_split"}
                elif name in _UNBIND_FUNCS:
                    add = {"unbind"}
                if add:
                    new = {src: _promote(flags | add) for src, flags in new.items()}
            for t in outs:
                taint[id(t)] = new
                alive.append(t)
            return out

    def before_unsupported(module: Any, args: tuple) -> None:
        for src in tags_of(args):
            feeds_unsupported.setdefault(src, f"{type(module).__name__} '{names.get(module, '?')}'")

    hooks = [m.register_forward_pre_hook(before_unsupported) for m in model.modules()
             if type(m).__name__ in _UNSUPPORTED_TYPES]
    try:
        with torch.no_grad(), _Flow():
            out = model(*example)
        output_layers = list(tags_of(out))
    finally:
        for h in hooks:
            h.remove()
        alive.clear()
    fused = [m for m, flags in structures.items() if isinstance(m, torch.nn.Linear) and "unbind" in flags
             and "reorder" in flags and m.out_features % 3 == 0]
    return ChannelFlow(
        output_layers=output_layers,
        structures={m: _structure_name(flags, m in fused) for m, flags in structures.items()},
        fused_qkv=fused,
        feeds_unsupported=feeds_unsupported,
        unsupported=unsupported,
    )


def _promote(flags: frozenset[str]) -> frozenset[str]:
    """A transpose/permute after a reshape that split an axis regroups channels ("reorder")."""
    if "reorder_after_split" in flags:
        flags = flags - {"reorder_after_split"}
        if "split_view" in flags:
            flags = flags | {"reorder"}
    return flags


def _structure_name(flags: set[str], fused_qkv: bool) -> str:
    if fused_qkv:
        return "a fused-qkv attention (one Linear reshaped, permuted and unbound into query, key and value)"
    names = sorted(f for f in flags if f.startswith("a "))
    if names:
        return " and ".join(names)
    return "a reshape that splits the channel axis followed by a transpose (e.g. a channel shuffle)"


# --------------------------------------------------------------------------- unstructured


def _global_magnitude_masks(tensors: list[Any], amount: float, *, max_ratio: float = 1.0) -> list[Any]:
    """Global L1 magnitude pruning of copies of ``tensors`` (torch.nn.utils.prune), no tensor above ``max_ratio``.

    One global threshold over all tensors (``global_unstructured`` with ``L1Unstructured``) would empty whole
    tensors whose weights are small by construction (an LSTM's next to an N(0, 1) embedding table). Tensors the
    global ranking would prune beyond ``max_ratio`` are pruned at ``max_ratio`` on their own (``l1_unstructured``)
    and the rest of the budget is ranked globally over the others (water-filling), so the total stays ``amount``
    where the cap allows.

    Args:
        tensors: Weight tensors (any float dtype); not changed.
        amount: Fraction of all their elements to zero, in (0, 1).
        max_ratio: Largest fraction zeroed in any one tensor.

    Returns:
        The pruned copies, same dtypes, masks made permanent.
    """
    import torch
    from torch.nn.utils import prune

    sizes = [t.numel() for t in tensors]
    budget = amount * sum(sizes)
    capped: set[int] = set()
    while True:
        holders = []
        for t in tensors:
            h = torch.nn.Module()
            h.weight = torch.nn.Parameter(t.detach().clone().float(), requires_grad=False)
            holders.append(h)
        free = [i for i in range(len(tensors)) if i not in capped]
        for i in capped:
            prune.l1_unstructured(holders[i], "weight", amount=int(round(max_ratio * sizes[i])))
        rest = budget - sum(int(round(max_ratio * sizes[i])) for i in capped)
        free_total = sum(sizes[i] for i in free)
        if free and rest > 0:
            prune.global_unstructured([(holders[i], "weight") for i in free], pruning_method=prune.L1Unstructured,
                                      amount=min(int(round(rest)), free_total))
        over = [i for i in free if prune.is_pruned(holders[i])
                and float((holders[i].weight_mask == 0).sum()) > max_ratio * sizes[i] + 0.5]
        if not over:
            break
        capped.update(over)
    for h in holders:
        if prune.is_pruned(h):
            prune.remove(h, "weight")  # masks made permanent: plain weight tensors, no weight_orig/weight_mask
    return [h.weight.detach().to(t.dtype) for h, t in zip(holders, tensors, strict=True)]


#: Weight-matrix parameters of each layer type that unstructured pruning covers (case R14/R30): Conv/Linear
#: kernels, embedding tables, recurrent input/hidden(/projection) matrices, nn.MultiheadAttention's packed or
#: separate q/k/v projections (its out_proj is an nn.Linear). Biases and norm scales stay dense.
_UNSTRUCTURED_PARAMS = {
    "Conv1d": ("weight",), "Conv2d": ("weight",), "Conv3d": ("weight",), "ConvTranspose1d": ("weight",),
    "ConvTranspose2d": ("weight",), "ConvTranspose3d": ("weight",), "Linear": ("weight",),
    "NonDynamicallyQuantizableLinear": ("weight",), "Embedding": ("weight",), "EmbeddingBag": ("weight",),
    "MultiheadAttention": ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight"),
    "LSTMCell": ("weight_ih", "weight_hh"), "GRUCell": ("weight_ih", "weight_hh"), "RNNCell": ("weight_ih", "weight_hh"),
}
_RECURRENT = ("LSTM", "GRU", "RNN")


def _torch_weight_params(model: Any, fmt: ModelFormat) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    """The weight matrices of a PyTorch model of any loaded format: (covered, left dense).

    Covered: see :data:`_UNSTRUCTURED_PARAMS` (plus every ``weight_*`` of LSTM/GRU/RNN). Left dense: every other
    parameter with two or more dimensions (e.g. a custom layer's ``nn.Parameter`` matrix), reported by name.
    Shared (tied) tensors are listed once.
    """
    import torch

    if fmt is ModelFormat.EXPORTED_PROGRAM:
        ep = model
        targets = {"linear", "conv1d", "conv2d", "conv3d", "convolution", "conv_transpose1d", "conv_transpose2d",
                   "conv_transpose3d", "addmm", "mm", "embedding"}
        sig = ep.graph_signature.inputs_to_parameters
        names = []
        for node in ep.graph.nodes:
            if node.op == "call_function" and getattr(node.target, "__name__", "").split(".")[0] in targets:
                op = node.target.__name__.split(".")[0]
                w = node.args[2] if op == "addmm" else node.args[0] if op == "embedding" else node.args[1]
                if hasattr(w, "name") and w.name in sig and sig[w.name] not in names:
                    names.append(sig[w.name])
        state = ep.state_dict
        others = [(n, state[n]) for n in sig.values() if n in state and n not in names and state[n].dim() >= 2]
        return [(n, state[n]) for n in names], others
    params: list[tuple[str, Any]] = []
    seen: set[int] = set()
    for name, m in model.named_modules():
        kind = getattr(m, "original_name", type(m).__name__)
        if isinstance(m, torch.nn.modules.conv._ConvNd):
            kind = "Conv2d"
        elif isinstance(m, torch.nn.Linear):
            kind = "Linear"
        wanted = _UNSTRUCTURED_PARAMS.get(kind, ())
        for pname, w in m.named_parameters(recurse=False) if hasattr(m, "named_parameters") else ():
            if (pname in wanted or (kind in _RECURRENT and pname.startswith("weight_"))) and id(w) not in seen:
                seen.add(id(w))
                params.append((f"{name}.{pname}" if name else pname, w))
    others = []
    for pname, w in model.named_parameters():
        if id(w) not in seen and w.dim() >= 2:
            seen.add(id(w))
            others.append((pname, w))
    return params, others


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
    named, others = _torch_weight_params(model, art.format)
    if not named:
        raise PruningError("the model has no Conv, Linear, embedding, recurrent or attention weights to prune; "
                           "nothing would change")
    pruned = _global_magnitude_masks([p for _, p in named], config.ratio, max_ratio=config.max_layer_ratio)
    with torch.no_grad():
        for (_, p), new in zip(named, pruned, strict=True):
            p.copy_(new)
    counts = [(n, int((p == 0).sum()), p.numel()) for n, p in named]
    skipped = [(n, int((p == 0).sum()), p.numel()) for n, p in others]
    return PassResult(_torch_artifact(art, model, art.format), _unstructured_details(config, counts, skipped, ctx))


def _unstructured_details(config: PruneConfig, counts: list[tuple[str, int, int]],
                          skipped: list[tuple[str, int, int]], ctx: RunContext) -> dict[str, Any]:
    """The report's ``pruning`` section of unstructured pruning, with sparsities measured on the result.

    Args:
        config: Prune settings.
        counts: ``(tensor name, zeros, elements)`` of each pruned weight tensor, measured after pruning.
        skipped: The same for weight matrices left dense (warned about).
        ctx: Run context (warnings).
    """
    zeros = sum(z for _, z, _ in counts)
    total = sum(t for _, _, t in counts)
    all_zeros = zeros + sum(z for _, z, _ in skipped)
    all_total = total + sum(t for _, _, t in skipped)
    if skipped:
        ctx.warn(f"unstructured pruning left {len(skipped)} weight tensor{'s' if len(skipped) > 1 else ''} dense "
                 f"({', '.join(n for n, _, _ in skipped[:4])}{' ...' if len(skipped) > 4 else ''}: "
                 f"{sum(t for _, _, t in skipped):,} of {all_total:,} weights); measured sparsity over all weights "
                 f"{all_zeros / all_total:.3f}")
    return {
        "method": "unstructured",
        "pruning_ratio": config.ratio,
        "criterion": "l1",
        "criterion_source": "global L1 magnitude, torch.nn.utils.prune.global_unstructured",
        "pruned_tensors": [n for n, _, _ in counts],
        "skipped_tensors": [{"name": n, "elements": t} for n, _, t in skipped],
        "target_sparsity": config.ratio,
        "achieved_sparsity": all_zeros / all_total,
        "pruned_tensors_sparsity": zeros / total,
        "sparsity_scope": "zeros measured on the result over every weight matrix (pruned and skipped tensors)",
        "weights_total": all_total,
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
    names = _onnx_weight_names(model, inits)
    if not names:
        raise PruningError("the ONNX graph has no Conv/Gemm/MatMul, recurrent or embedding weight initializers to "
                           "prune; nothing would change")
    arrays = [numpy_helper.to_array(inits[n]) for n in names]
    pruned = _global_magnitude_masks([torch.from_numpy(a.astype(np.float32)) for a in arrays], config.ratio,
                                     max_ratio=config.max_layer_ratio)
    counts = []
    for n, a, p in zip(names, arrays, pruned, strict=True):
        new = p.numpy().astype(a.dtype)
        counts.append((n, int((new == 0).sum()), int(new.size)))
        inits[n].CopyFrom(numpy_helper.from_array(new, n))
    skipped = []
    biases = {n.input[3] for n in model.graph.node if n.op_type in _ONNX_RECURRENT_WEIGHTS and len(n.input) > 3}
    for n, init in inits.items():  # other float matrices (e.g. a constant added to activations) stay dense
        if n not in names and n not in biases and init.data_type in FLOAT_ELEM_TYPES and len(init.dims) >= 2:
            a = numpy_helper.to_array(init)
            skipped.append((n, int((a == 0).sum()), int(a.size)))
    path = ctx.workdir / "pruned.onnx"
    save_onnx(model, path, external=external or None)  # external data in, external data out
    return PassResult(ModelArtifact(path, ModelFormat.ONNX, io=art.io),
                      _unstructured_details(config, counts, skipped, ctx))


#: ONNX recurrent ops and the inputs holding their weight matrices: ``LSTM(X, W, R, ...)`` (same for GRU, RNN).
_ONNX_RECURRENT_WEIGHTS = {"LSTM": (1, 2), "GRU": (1, 2), "RNN": (1, 2)}


def _onnx_weight_names(model: Any, inits: dict[str, Any]) -> list[str]:
    """Float weight initializers unstructured pruning covers (case R14).

    Conv/ConvTranspose/Gemm/MatMul weights, the W and R matrices of LSTM/GRU/RNN, and embedding tables (the data
    of a Gather, two or more dimensions).
    """
    names: list[str] = []
    for node in model.graph.node:
        if node.op_type in DENSE_WEIGHT_OPS:
            cands = [weight_input(node)]
        elif node.op_type in _ONNX_RECURRENT_WEIGHTS:
            cands = [node.input[i] for i in _ONNX_RECURRENT_WEIGHTS[node.op_type] if i < len(node.input)]
        elif node.op_type == "Gather" and node.input and node.input[0] in inits and len(inits[node.input[0]].dims) >= 2:
            cands = [node.input[0]]
        else:
            cands = []
        for w in cands:
            if w in inits and w not in names and inits[w].data_type in FLOAT_ELEM_TYPES:
                names.append(w)
    return names

"""ONNX Runtime's transformer fusions (Attention, SkipLayerNormalization, BiasGelu) as a quantization candidate.

ONNX Runtime fuses a BERT-style encoder layer into a few ``com.microsoft`` kernels: ``Attention`` (one Q/K/V
GEMM plus the scaled-dot-product with its mask), ``SkipLayerNormalization`` (residual add + bias + LayerNorm)
and ``BiasGelu``. Its session-time optimizer does that for float graphs, but not after dynamic int8
quantization, whose ``MatMulInteger`` no longer matches the patterns; fused offline *before* quantization,
``quantize_dynamic`` turns ``Attention`` into ``QAttention`` (int8 Q/K/V weights, the attention kernel on top).
Measured on all-MiniLM-L6-v2 (8 x 128, 1 thread, AMD EPYC with AVX512-VNNI, ONNX Runtime 1.32): 119.8 ms
against 138.0 ms for ONNX Runtime's own ``quantize_dynamic`` graph, but no faster (68.3 against 66.1 ms) than
compressor's unfused graph, whose Gelu rewrite already gets BiasGelu at load time; ONNX Runtime's
``SkipLayerNormalization`` CPU kernel is the slow part of both (see :func:`flatten_residual_layernorm`). Every
variant is a measured candidate (:func:`compressor.passes.kernel_formats.dynamic_formats`). SmoothQuant's
``Mul`` between LayerNorm and Q/K/V breaks the Attention pattern, so smoothed graphs get no fused candidate.

The fusions are ONNX Runtime's Python transformer optimizer (``onnxruntime.transformers.optimizer``,
``model_type="bert"``, ``opt_level=0``: pattern fusions only, no CPU-specific layout, so the file stays
portable). Its Attention pattern wants the additive attention mask written the classic way; the masks
exported from transformers 5 by ``torch.export`` (``GatherND``/``And``/``Where`` over position ranges) are
not matched. :func:`canonicalize_attention_mask` replaces such a mask with the form the optimizer matches,
``Where(Cast(1 - Expand(Unsqueeze(Unsqueeze(mask)))), fill, 0)``, only after checking on real and generated
padding patterns (right, left, holes) that both compute the same tensor: a causal, sliding-window or
otherwise structured mask differs and is left alone. Exports of transformers' SDPA attention are not fused
even then (all-MiniLM-L6-v2: the mask is rewritten and compressor's ``softmax_nan_guard`` rewrite removes the
``IsNaN``/``Where`` guard, but the Q/K scaling that SDPA's export writes matches none of the optimizer's
patterns); the eager attention export is.
"""

from __future__ import annotations

import collections
import contextlib
from pathlib import Path
from typing import Any

import numpy as np

from compressor import onnx_graph

#: Fused operator types counted in the report.
FUSED_OPS = ("Attention", "MultiHeadAttention", "SkipLayerNormalization", "BiasGelu", "Gelu", "FastGelu",
             "LayerNormalization", "EmbedLayerNormalization")


def looks_like_bert(model: Any) -> bool:
    """True for graphs with the ops of a BERT-style encoder: Softmax, LayerNormalization (or its parts), MatMul."""
    ops = collections.Counter(n.op_type for n in model.graph.node)
    return bool(ops["Softmax"] and ops["MatMul"] >= 4 and (ops["LayerNormalization"] or ops["ReduceMean"]))


def _mask_adds(model: Any) -> tuple[str | None, list[Any]]:
    """The tensor added to every attention softmax's scores as its mask, and the Add nodes that add it.

    Returns ``(mask tensor, adds)``, or ``(None, [])`` when the softmaxes do not share one additive mask.
    """
    producers = onnx_graph.producers(model)
    masks: dict[str, list[Any]] = collections.defaultdict(list)
    softmaxes = [n for n in model.graph.node if n.op_type == "Softmax"]
    for sm in softmaxes:
        add = producers.get(sm.input[0])
        if add is None or add.op_type != "Add":
            return None, []
        # the mask is the operand that does not come from a MatMul (the scores do, maybe through a scale)
        for i, name in enumerate(add.input):
            p = producers.get(name)
            if p is not None and p.op_type in ("Where", "Mul", "Cast", "Sub", "Expand", "Unsqueeze", "Reshape"):
                other = producers.get(add.input[1 - i])
                if other is not None and other.op_type in ("Mul", "Div", "MatMul"):
                    masks[name].append(add)
                    break
    if len(masks) != 1:
        return None, []
    name, adds = next(iter(masks.items()))
    return (name, adds) if len(adds) == len(softmaxes) else (None, [])


def _mask_input(model: Any, mask: str) -> Any | None:
    """The one rank-2 integer or float graph input the mask tensor is computed from, or None."""
    import onnx

    producers = onnx_graph.producers(model)
    inputs = {i.name: i for i in model.graph.input}
    seen, stack, found = set(), [mask], set()
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in inputs:
            found.add(t)
            continue
        p = producers.get(t)
        if p is None:
            continue
        if p.op_type == "MatMul":  # the mask never depends on the hidden states
            return None
        stack.extend(x for x in p.input if x)
    if len(found) != 1:
        return None
    vi = inputs[found.pop()]
    tt = vi.type.tensor_type
    ok = (onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.FLOAT)
    return vi if tt.elem_type in ok and len(tt.shape.dim) == 2 else None


def _mask_variants(mask: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """Padding patterns to check a mask rewrite on: the data's own, none, right, left, and random holes."""
    b, s = mask.shape
    out = [mask, np.ones_like(mask)]
    lengths = rng.integers(1, s + 1, size=b)
    right = (np.arange(s)[None, :] < lengths[:, None]).astype(mask.dtype)
    out += [right, right[:, ::-1].copy()]
    holes = (rng.random((b, s)) < 0.7).astype(mask.dtype)
    holes[:, 0] = 1
    out.append(holes)
    return out


def canonicalize_attention_mask(model: Any, feeds: dict[str, np.ndarray], workdir: Path) -> dict[str, Any] | None:
    """Rewrite the attention mask into the pattern ONNX Runtime's Attention fusion matches, when provably the same.

    The additive mask shared by every attention softmax (``Add(scores, mask)``, ``mask [B, 1, S|1, S]``
    float32, computed from one ``[B, S]`` graph input) is evaluated on ``feeds`` with five padding patterns;
    when each equals ``where(m[:, None, None, :] != 0, 0, fill)`` for one negative constant ``fill``, the Adds
    take ``Where(Cast(1 - Expand(Unsqueeze(Unsqueeze(m, 1), 2)), bool), fill, 0)`` instead and the old mask
    subgraph is pruned. The model is changed in place.

    Args:
        model: The float ONNX model (weights loaded).
        feeds: One batch of the model's inputs (``[B, ...]`` arrays keyed by input name).
        workdir: Scratch folder (the probe model with the mask as an extra output is written there).

    Returns:
        ``{"input", "fill_value", "replaced"}`` when the mask was rewritten, else None (model unchanged).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from compressor.runtime import make_session

    mask, adds = _mask_adds(model)
    if mask is None:
        return None
    vi = _mask_input(model, mask)
    if vi is None or vi.name not in feeds:
        return None
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(helper.make_empty_tensor_value_info(mask))
    path = workdir / "mask_probe.onnx"
    onnx.save(probe, str(path))
    del probe
    try:
        sess = make_session(path, threads=1, optimization="basic")
        names = {i.name for i in sess.get_inputs()}
        fill = None
        rng = np.random.default_rng(0)
        for m in _mask_variants(np.asarray(feeds[vi.name]), rng):
            got = sess.run([mask], {k: (m if k == vi.name else v) for k, v in feeds.items() if k in names})[0]
            if got.dtype != np.float32 or got.ndim != 4 or got.shape[0] != m.shape[0] or got.shape[-1] != m.shape[1]:
                return None
            keep = np.broadcast_to((m != 0)[:, None, None, :], got.shape[:1] + got.shape[1:])
            if np.any(got[keep] != 0):
                return None
            masked = got[~keep]
            if masked.size:
                if fill is None:
                    fill = float(masked.flat[0])
                if fill >= 0 or np.any(masked != np.float32(fill)):
                    return None
    except Exception:  # a graph the probe cannot run: leave the mask as it is
        return None
    finally:
        path.unlink(missing_ok=True)
    if fill is None:
        return None
    dtype = {TensorProto.INT64: np.int64, TensorProto.INT32: np.int32,
             TensorProto.FLOAT: np.float32}[vi.type.tensor_type.elem_type]
    p = "canonical_attention_mask"
    model.graph.initializer.extend([
        numpy_helper.from_array(np.array([1], np.int64), f"{p}.axis1"),
        numpy_helper.from_array(np.array([2], np.int64), f"{p}.axis2"),
        numpy_helper.from_array(np.array([1, 1, 1, 1], np.int64), f"{p}.ones"),
        numpy_helper.from_array(np.array(1, dtype), f"{p}.one"),
        numpy_helper.from_array(np.array(fill, np.float32), f"{p}.fill"),
        numpy_helper.from_array(np.array(0, np.float32), f"{p}.zero"),
    ])
    new = [
        helper.make_node("Unsqueeze", [vi.name, f"{p}.axis1"], [f"{p}.u1"], name=f"{p}.u1"),
        helper.make_node("Unsqueeze", [f"{p}.u1", f"{p}.axis2"], [f"{p}.u2"], name=f"{p}.u2"),
        helper.make_node("Expand", [f"{p}.u2", f"{p}.ones"], [f"{p}.e"], name=f"{p}.e"),
        helper.make_node("Sub", [f"{p}.one", f"{p}.e"], [f"{p}.inv"], name=f"{p}.inv"),
        helper.make_node("Cast", [f"{p}.inv"], [f"{p}.padded"], name=f"{p}.padded", to=TensorProto.BOOL),
        helper.make_node("Where", [f"{p}.padded", f"{p}.fill", f"{p}.zero"], [p], name=p),
    ]
    for add in adds:
        for i, name in enumerate(add.input):
            if name == mask:
                add.input[i] = p
    nodes = new + list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    from onnxruntime.transformers.onnx_model import OnnxModel

    om = OnnxModel(model)
    om.prune_graph()
    om.topological_sort()
    return {"input": vi.name, "fill_value": fill, "replaced": len(adds)}


def attention_heads(model: Any) -> tuple[int, int] | None:
    """``(num_heads, hidden_size)`` read from the 4-D head-splitting Reshapes before the attention MatMuls.

    The last two entries of the Reshape's target shape (an initializer, or a Concat whose last two inputs
    are constants) are ``[heads, head_size]``; a ``-1`` among them is resolved with the output width of the
    projection feeding the Reshape (``MatMul`` weight ``[in, hidden]``, maybe through a bias ``Add``). The
    most common pair wins. None when no such Reshape exists.
    """
    from compressor.passes.rewrites import _constants

    consts = {k: v for k, v in _constants(model, max_size=8).items() if v.size <= 8}
    producers = onnx_graph.producers(model)
    inits = onnx_graph.initializers(model)

    def width(name: str) -> int | None:
        p = producers.get(name)
        if p is not None and p.op_type == "Add":
            p = next((producers[x] for x in p.input if x in producers and producers[x].op_type == "MatMul"), None)
        if p is None or p.op_type != "MatMul" or p.input[1] not in inits or len(inits[p.input[1]].dims) != 2:
            return None
        return int(inits[p.input[1]].dims[1])

    pairs: collections.Counter[tuple[int, int]] = collections.Counter()
    for n in model.graph.node:
        if n.op_type != "Reshape" or len(n.input) < 2:
            continue
        shape = consts.get(n.input[1])
        if shape is None:
            c = producers.get(n.input[1])
            if c is None or c.op_type != "Concat" or len(c.input) != 4:
                continue
            tail = [consts.get(x) for x in c.input[2:]]
            if any(t is None or t.size != 1 for t in tail):
                continue
            shape = np.array([0, 0, *(int(t.reshape(())) for t in tail)])
        if shape.size == 4 and sorted(shape[2:].tolist())[0] == -1 and max(shape[2:]) > 0:
            hidden = width(n.input[0])
            if hidden is None or hidden % int(max(shape[2:])):
                continue
            shape = shape.copy()
            shape[2 if shape[2] == -1 else 3] = hidden // int(max(shape[2:]))
        if shape.size == 4 and shape[2] > 0 and shape[3] > 0:
            pairs[(int(shape[2]), int(shape[3]))] += 1
    if not pairs:
        return None
    heads, size = pairs.most_common(1)[0][0]
    return heads, heads * size


def fuse_transformer(src: Path, dst: Path, feeds: dict[str, np.ndarray], workdir: Path) -> dict[str, Any] | None:
    """Write ``src`` with ONNX Runtime's BERT fusions to ``dst``; None when the graph is no BERT-style encoder.

    Steps: :func:`canonicalize_attention_mask`, :func:`attention_heads`, then
    ``onnxruntime.transformers.optimizer.optimize_model(model_type="bert", opt_level=0)`` with the raw 2-D
    attention mask kept (any padding pattern, not only right padding) and the embedding fusion off (it
    assumes positions ``0..S-1`` and a segment input). The result is checked with
    ``onnx.checker.check_model(full_check=True)``.

    Args:
        src: Float ONNX model (weights in the file).
        dst: Where the fused model goes.
        feeds: One batch of inputs, for the mask check.
        workdir: Scratch folder.

    Returns:
        ``{"fused_ops": {op type: count}, "num_heads", "hidden_size", "attention_mask": canonicalization or
        None}``, or None when no Attention was fused (``dst`` not written): SkipLayerNormalization and BiasGelu
        alone are what ONNX Runtime's session optimizer does anyway.
    """
    import onnx

    model = onnx.load_model(str(src))
    if not looks_like_bert(model):
        return None
    mask = canonicalize_attention_mask(model, feeds, workdir)
    heads = attention_heads(model)
    if heads is None:
        return None
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    before = collections.Counter(n.op_type for n in model.graph.node)  # the optimizer changes the model in place

    options = FusionOptions("bert")
    options.use_raw_attention_mask(True)
    options.enable_embed_layer_norm = False
    import logging

    # the optimizer logs each pattern it does not find (warnings included) and may write temp files: keep both
    # out of the user's terminal and folder
    disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with contextlib.chdir(workdir), contextlib.redirect_stdout(None):
            fused = optimize_model(model, model_type="bert", num_heads=heads[0], hidden_size=heads[1], opt_level=0,
                                   optimization_options=options, use_gpu=False)
    finally:
        logging.disable(disabled)
    after = collections.Counter(n.op_type for n in fused.model.graph.node)
    counts = {op: after[op] - before[op] for op in FUSED_OPS if after[op] > before[op]}
    if not counts.get("Attention"):  # SkipLayerNormalization and BiasGelu alone: ONNX Runtime fuses those at load
        return None
    fused.topological_sort()
    fused.save_model_to_file(str(dst))  # declares the com.microsoft opset
    onnx.checker.check_model(str(dst), full_check=True)
    return {"fused_ops": counts, "num_heads": heads[0], "hidden_size": heads[1], "attention_mask": mask}


def flatten_residual_layernorm(model: Any) -> int:
    """Compute each residual ``Add -> LayerNormalization`` on 2-D ``[tokens, hidden]`` views; same results.

    ONNX Runtime fuses a residual ``Add`` of two 3-D tensors followed by ``LayerNormalization`` into
    ``SkipLayerNormalization`` when it loads a model (its ``SkipLayerNormFusion`` wants 3-D inputs). In ONNX
    Runtime 1.32 that CPU kernel is slow: profiled on dynamic int8 all-MiniLM-L6-v2 (8 x 128, 1 thread, AMD
    EPYC with AVX512-VNNI) the 12 fused nodes took 39.5 ms of 155 ms, the same 12 pairs unfused 8.4 ms. On 2-D
    views (``Reshape`` to ``[-1, hidden]``, which copies nothing, and back to the input's shape after the
    LayerNormalization) the fusion does not apply. Only pairs whose two Add inputs have the same inferred
    3-D shape (every dim known or named alike, the last one a number), whose Add feeds only the LayerNormalization, and whose LayerNormalization
    normalizes the last axis with one output are changed. The model is changed in place.

    Returns:
        The number of pairs rewritten.
    """
    import onnx
    from onnx import helper, numpy_helper

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else d.dim_param or None
                       for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
              if v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")}
    del inferred
    producers, consumers = onnx_graph.producers(model), onnx_graph.consumers(model)
    outputs = {o.name for o in model.graph.output}
    before: dict[str, list[Any]] = {}
    after: dict[str, Any] = {}
    changed: set[str] = set()
    for n in model.graph.node:
        if n.op_type != "LayerNormalization" or len(n.output) != 1 or not n.name:
            continue
        axis = next((a.i for a in n.attribute if a.name == "axis"), -1)
        add = producers.get(n.input[0])
        if add is None or add.op_type != "Add" or not add.name or len(consumers.get(add.output[0], [])) != 1:
            continue
        if add.output[0] in outputs:
            continue
        sa, sb = shapes.get(add.input[0]), shapes.get(add.input[1])
        # the same known or named dims (no broadcasting: an unknown dim could hide one)
        if not sa or sa != sb or len(sa) != 3 or None in sa or not isinstance(sa[2], int) or sa[2] <= 0:
            continue
        if axis not in (-1, 2):
            continue
        p = f"{n.name}.flat"
        model.graph.initializer.append(numpy_helper.from_array(np.array([-1, sa[2]], np.int64), f"{p}.tokens"))
        before[add.name] = [
            helper.make_node("Shape", [add.input[0]], [f"{p}.shape"], name=f"{p}.shape"),
            helper.make_node("Reshape", [add.input[0], f"{p}.tokens"], [f"{p}.a"], name=f"{p}.a"),
            helper.make_node("Reshape", [add.input[1], f"{p}.tokens"], [f"{p}.b"], name=f"{p}.b"),
        ]
        add.input[0], add.input[1] = f"{p}.a", f"{p}.b"
        out = n.output[0]
        n.output[0] = f"{p}.normalized"
        after[n.name] = helper.make_node("Reshape", [f"{p}.normalized", f"{p}.shape"], [out], name=f"{p}.back")
        changed |= {add.output[0]}
    if not before:
        return 0
    nodes = []
    for n in model.graph.node:
        nodes += before.get(n.name, [])
        nodes.append(n)
        if n.name in after:
            nodes.append(after[n.name])
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    keep = [v for v in model.graph.value_info if v.name not in changed]  # the Add outputs are 2-D now
    del model.graph.value_info[:]
    model.graph.value_info.extend(keep)
    return len(before)

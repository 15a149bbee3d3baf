"""Graph rewrites that provably keep a model's results, applied before quantization.

Each rewrite checks its precondition on the graph and does nothing where it does not hold.
The report lists the rewrites that ran and how often.

- ``softmax_nan_guard``: exporters of Hugging Face attention put ``Where(IsNaN(p), 0, p)``
  after the attention softmax, for rows whose scores are all ``-inf``. When the additive
  mask's fill value is a finite constant (``torch.finfo(float32).min``), softmax of finite
  scores is never NaN, so the guard is the identity and is removed (shared/cases Q9: about
  7% of fp32 time on MiniLM-L6, 2 threads).
- ``gelu``: the exact erf GELU written out as ``x * 0.5 * (1 + erf(x / sqrt(2)))`` becomes one
  ``com.microsoft.Gelu`` node, ONNX Runtime's kernel for the same formula (Hendrycks & Gimpel
  2016), which ONNX Runtime can then fuse with the preceding bias add.
- ``gemm_alpha_beta`` (every int8 and int4 run, whatever ``rewrites`` says): ``alpha`` folded into
  the constant weight and ``beta`` into the bias of each ``Gemm`` (case R25); ``gemm_trans_a``: a
  ``transA`` becomes a ``Transpose`` of the input, so that the Gemm has the form the quantizers take.
- ``global_average_pool`` (static QDQ only): ``ReduceMean`` over all spatial axes becomes
  ``GlobalAveragePool``, which has a fused int8 kernel.
- ``float_output`` (static QDQ only, after quantization): the last Gemm/MatMul writes float32
  logits directly instead of through a ``QuantizeLinear -> DequantizeLinear`` pair.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from compressor import onnx_graph


def _constants(model: Any, *, max_size: int | None = None) -> dict[str, np.ndarray]:
    """Values of the initializers and Constant nodes held in the graph.

    Initializers left in external data files (the large weights of a graph loaded by
    :func:`compressor.external_data.load_graph`) are skipped: no rewrite here reads a weight.
    ``max_size`` also skips initializers with more elements (no weight is converted to numpy).
    """
    import onnx
    from onnx import numpy_helper

    consts = {name: numpy_helper.to_array(i) for name, i in onnx_graph.initializers(model).items()
              if i.data_location != onnx.TensorProto.EXTERNAL and (max_size is None or np.prod(i.dims) <= max_size)}
    for n in model.graph.node:
        if n.op_type == "Constant":
            for a in n.attribute:
                if a.name == "value":
                    consts[n.output[0]] = numpy_helper.to_array(a.t)
    return consts


def _scalar(consts: dict[str, np.ndarray], name: str) -> float | None:
    v = consts.get(name)
    if v is None or v.size != 1:
        return None
    return float(v.reshape(()))


def _graph_outputs(model: Any) -> set[str]:
    return {o.name for o in model.graph.output}


def _rename_uses(model: Any, old: str, new: str) -> None:
    for n in model.graph.node:
        for i, name in enumerate(n.input):
            if name == old:
                n.input[i] = new


def remove_softmax_nan_guard(model: Any) -> int:
    """Remove ``Where(IsNaN(softmax), 0, softmax)`` when the softmax input cannot be ``-inf`` everywhere.

    Precondition (checked per softmax): its input is ``Add(scores, mask)`` where ``mask`` is a
    ``Where`` whose two value branches are finite scalar constants, or a finite constant.

    Returns:
        The number of guards removed.
    """
    consts = _constants(model)
    producers, consumers = onnx_graph.producers(model), onnx_graph.consumers(model)
    outputs = _graph_outputs(model)
    remove = []
    for sm in [n for n in model.graph.node if n.op_type == "Softmax"]:
        add = producers.get(sm.input[0])
        if add is None or add.op_type != "Add":
            continue
        finite_mask = False
        for operand in add.input:
            if operand in consts:
                finite_mask = finite_mask or bool(np.isfinite(consts[operand]).all())
                continue
            p = producers.get(operand)
            if p is not None and p.op_type == "Where":
                a, b = _scalar(consts, p.input[1]), _scalar(consts, p.input[2])
                finite_mask = finite_mask or (a is not None and b is not None and math.isfinite(a) and math.isfinite(b))
        if not finite_mask:
            continue
        users = consumers.get(sm.output[0], [])
        isnan = [u for u in users if u.op_type == "IsNaN"]
        wheres = [u for u in users if u.op_type == "Where"]
        if len(isnan) != 1 or len(wheres) != 1 or len(users) != 2:
            continue
        w = wheres[0]
        fill = _scalar(consts, w.input[1])
        if w.input[0] != isnan[0].output[0] or w.input[2] != sm.output[0] or fill is None:
            continue
        if len(consumers.get(isnan[0].output[0], [])) != 1:
            continue
        if w.output[0] in outputs:  # keep the graph output's name: the softmax writes it directly
            sm.output[0] = w.output[0]
        else:
            _rename_uses(model, w.output[0], sm.output[0])
        remove += [isnan[0], w]
    for n in remove:
        model.graph.node.remove(n)
    return len(remove) // 2


def fuse_gelu(model: Any) -> int:
    """Replace ``x * (0.5 * (1 + erf(x / sqrt(2))))`` (any operand order) by ``com.microsoft.Gelu(x)``.

    Returns:
        The number of GELUs fused.
    """
    from onnx import helper

    consts = _constants(model)
    consumers = onnx_graph.consumers(model)
    outputs = _graph_outputs(model)

    def single_use(name: str) -> bool:
        return len(consumers.get(name, [])) == 1 and name not in outputs

    def other(node: Any, name: str) -> str:
        return node.input[1] if node.input[0] == name else node.input[0]

    fused = 0
    new_nodes: list[tuple[Any, Any]] = []
    dead: list[Any] = []
    for div in [n for n in model.graph.node if n.op_type == "Div"]:
        x = div.input[0]
        s = _scalar(consts, div.input[1])
        if s is None or abs(s - math.sqrt(2.0)) > 1e-3 or not single_use(div.output[0]):
            continue
        erf = consumers[div.output[0]][0]
        if erf.op_type != "Erf" or not single_use(erf.output[0]):
            continue
        add = consumers[erf.output[0]][0]
        if add.op_type != "Add" or _scalar(consts, other(add, erf.output[0])) != 1.0 or not single_use(add.output[0]):
            continue
        m1 = consumers[add.output[0]][0]
        if m1.op_type != "Mul" or not single_use(m1.output[0]):
            continue
        half_first = _scalar(consts, other(m1, add.output[0])) == 0.5
        m2 = consumers[m1.output[0]][0]
        if m2.op_type != "Mul":
            continue
        if half_first and other(m2, m1.output[0]) == x:
            chain = [div, erf, add, m1, m2]
        elif other(m1, add.output[0]) == x and single_use(m1.output[0]) and _scalar(consts, other(m2, m1.output[0])) == 0.5:
            chain = [div, erf, add, m1, m2]
        else:
            continue
        gelu = helper.make_node("Gelu", [x], [m2.output[0]], name=f"{m2.name or div.name}_gelu", domain="com.microsoft")
        new_nodes.append((m2, gelu))
        dead += chain
        fused += 1
    if not fused:
        return 0
    for last, gelu in new_nodes:
        idx = list(model.graph.node).index(last)
        model.graph.node.insert(idx, gelu)
    for n in dead:
        model.graph.node.remove(n)
    if not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return fused


def gemm_to_matmul(model: Any, *, tensors: Any = None) -> int:
    """Rewrite ``Gemm(A, B, C)`` with a constant ``B`` (alpha = beta = 1, no transA) as ``MatMul(A, B') + C``.

    ONNX Runtime's int4 quantizer (MatMulNBits) only takes MatMul; the rewrite is exact (``B'`` is
    ``B`` or its transpose, stored once).

    Args:
        model: ``onnx.ModelProto``, changed in place.
        tensors: :class:`~compressor.external_data.TensorStore` that reads and writes weights
            (for a graph whose weights stay in external data); None: weights are in the graph.

    Returns:
        The number of Gemm nodes rewritten.
    """
    from onnx import helper

    from compressor.external_data import TensorStore

    tensors = tensors or TensorStore()

    inits = onnx_graph.initializers(model)
    users = onnx_graph.use_counts(model)
    done = 0
    for n in list(model.graph.node):
        if n.op_type != "Gemm" or len(n.input) < 2 or n.input[1] not in inits or users[n.input[1]] != 1:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if attrs.get("alpha", 1.0) != 1.0 or attrs.get("beta", 1.0) != 1.0 or attrs.get("transA", 0):
            continue
        if attrs.get("transB", 0):
            w = tensors.get(inits[n.input[1]])
            tensors.set(inits[n.input[1]], np.ascontiguousarray(w.T))
            del w
        pos = list(model.graph.node).index(n)
        has_bias = len(n.input) > 2 and n.input[2]
        mm_out = f"{n.output[0]}_matmul" if has_bias else n.output[0]
        new = [helper.make_node("MatMul", [n.input[0], n.input[1]], [mm_out], name=f"{n.name}_matmul")]
        if has_bias:
            new.append(helper.make_node("Add", [mm_out, n.input[2]], [n.output[0]], name=f"{n.name}_bias"))
        model.graph.node.remove(n)
        for k, node in enumerate(new):
            model.graph.node.insert(pos + k, node)
        done += 1
    return done


def fold_gemm_alpha_beta(model: Any) -> int:
    """Fold ``alpha`` into a constant ``B`` and ``beta`` into a constant ``C`` of every ``Gemm`` (case R25).

    ``Gemm(A, B, C) = alpha * op(A) @ op(B) + beta * C`` equals ``op(A) @ op(alpha * B) + (beta * C)``
    with ``alpha = beta = 1``: the same result (bit for bit when alpha and beta are powers of two,
    else within one float32 rounding). ONNX Runtime's quantizers assume ``alpha = beta = 1``: its
    QDQ Gemm quantizer (1.32.0) quantizes the bias with ``beta`` reset to 1 without scaling it
    (cosine 0.897 on a Gemm with beta 2), and its dynamic and int4 paths skip such a Gemm. A ``B``
    shared with another node gets its own scaled copy; a ``C`` that is not constant is scaled by a
    ``Mul``. A Gemm whose ``B`` is not constant is left as it is (it has no weight to quantize).

    Args:
        model: ``onnx.ModelProto`` (float32/float16 initializers), changed in place.

    Returns:
        The number of Gemm nodes rewritten.
    """
    from onnx import helper, numpy_helper

    inits = onnx_graph.initializers(model)
    users = onnx_graph.use_counts(model)
    done = 0
    for n in list(model.graph.node):
        if n.op_type != "Gemm" or n.domain not in ("", "ai.onnx") or len(n.input) < 2 or n.input[1] not in inits:
            continue
        dtype = numpy_helper.to_array(inits[n.input[1]]).dtype
        attrs = {a.name: a for a in n.attribute}
        alpha = helper.get_attribute_value(attrs["alpha"]) if "alpha" in attrs else 1.0
        beta = helper.get_attribute_value(attrs["beta"]) if "beta" in attrs else 1.0
        if alpha == 1.0 and beta == 1.0:
            continue
        if alpha != 1.0:
            w = numpy_helper.to_array(inits[n.input[1]])
            name = n.input[1] if users[n.input[1]] == 1 else f"{n.input[1]}_alpha_{n.name or done}"
            scaled = numpy_helper.from_array((w * np.asarray(alpha, dtype=w.dtype)).astype(w.dtype), name)
            if name == n.input[1]:
                inits[name].CopyFrom(scaled)
            else:
                model.graph.initializer.append(scaled)
                users[n.input[1]] -= 1
                n.input[1] = name
        has_bias = len(n.input) > 2 and bool(n.input[2])
        if beta != 1.0 and has_bias:
            c_name = n.input[2]
            if c_name in inits:
                c = numpy_helper.to_array(inits[c_name])
                name = c_name if users[c_name] == 1 else f"{c_name}_beta_{n.name or done}"
                scaled = numpy_helper.from_array((c * np.asarray(beta, dtype=c.dtype)).astype(c.dtype), name)
                if name == c_name:
                    inits[name].CopyFrom(scaled)
                else:
                    model.graph.initializer.append(scaled)
                    users[c_name] -= 1
                    n.input[2] = name
            else:  # a computed C: C * beta before the Gemm (the same product the Gemm would form)
                b_name, out = f"{n.name or c_name}_beta", f"{c_name}_times_beta_{done}"
                model.graph.initializer.append(numpy_helper.from_array(np.asarray(beta, dtype=dtype), b_name))
                pos = list(model.graph.node).index(n)
                model.graph.node.insert(pos, helper.make_node("Mul", [c_name, b_name], [out], name=f"{b_name}_mul"))
                n.input[2] = out
        for key in ("alpha", "beta"):
            if key in attrs:
                n.attribute.remove(attrs[key])
        done += 1
    return done


def gemm_trans_a_to_transpose(model: Any) -> int:
    """Rewrite ``Gemm(A, B, C, transA=1)`` with a constant ``B`` as ``Gemm(Transpose(A), B, C)`` (case R25's kind).

    The same product (a transpose moves values, it computes nothing). ONNX Runtime 1.32.0's dynamic
    quantizer and the int4 rewrite to MatMul only take ``transA = 0``; without this such a Gemm stays float.

    Args:
        model: ``onnx.ModelProto``, changed in place.

    Returns:
        The number of Gemm nodes rewritten.
    """
    from onnx import helper

    inits = onnx_graph.initializers(model)
    done = 0
    for n in list(model.graph.node):
        if n.op_type != "Gemm" or n.domain not in ("", "ai.onnx") or len(n.input) < 2 or n.input[1] not in inits:
            continue
        trans = [a for a in n.attribute if a.name == "transA"]
        if not trans or not helper.get_attribute_value(trans[0]):
            continue
        out = f"{n.input[0]}_transposed_{n.name or done}"
        pos = list(model.graph.node).index(n)
        model.graph.node.insert(pos, helper.make_node("Transpose", [n.input[0]], [out], name=f"{n.name}_transpose_a",
                                                      perm=[1, 0]))
        n.input[0] = out
        n.attribute.remove(trans[0])
        done += 1
    return done


def reduce_mean_to_global_average_pool(model: Any) -> int:
    """Rewrite a ``ReduceMean`` over every spatial axis (``keepdims=1``) as ``GlobalAveragePool``.

    ``[N, C, H, W] -> [N, C, 1, 1]`` (float32) either way: the same mean. PyTorch exports
    ``AdaptiveAvgPool2d(1)`` as ``ReduceMean(axes=[-1, -2])``; ONNX Runtime has no fused int8
    ``ReduceMean``, so a QDQ graph keeps it in float between ``DequantizeLinear`` and
    ``QuantizeLinear``, while ``DQ -> GlobalAveragePool -> Q`` fuses into
    ``QLinearGlobalAveragePool`` (channels-last with the convolutions). Needs the input's rank
    from shape inference; does nothing where it is unknown.

    Returns:
        The number of nodes rewritten.
    """
    from onnx import helper

    consts = _constants(model)
    ranks = {}
    for vi in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            ranks[vi.name] = len(t.shape.dim)
    done = 0
    for n in model.graph.node:
        if n.op_type != "ReduceMean" or n.domain not in ("", "ai.onnx"):
            continue
        rank = ranks.get(n.input[0])
        if rank is None or rank < 3:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if attrs.get("keepdims", 1) != 1:
            continue
        if len(n.input) > 1 and n.input[1]:
            if n.input[1] not in consts:
                continue
            axes = [int(a) for a in np.asarray(consts[n.input[1]]).reshape(-1)]
        else:
            axes = list(attrs.get("axes", []))
        if sorted(a % rank for a in axes) != list(range(2, rank)):
            continue
        del n.input[1:]
        del n.attribute[:]
        n.op_type = "GlobalAveragePool"
        done += 1
    return done


def float_graph_outputs(model: Any) -> int:
    """Remove the ``QuantizeLinear -> DequantizeLinear`` pair that ends a QDQ graph after a Gemm or MatMul.

    The layer then writes its float32 result straight to the graph output: ONNX Runtime runs it
    as ``QGemm`` / ``MatMulIntegerToFloat`` with a float output, one node fewer and no rounding
    of the logits to 8 bits (keeping the last layer's output in float is the usual practice of
    QDQ toolchains, e.g. TensorRT and NNCF). Applied to a quantized model; only where the
    layer's output feeds nothing but that pair.

    Returns:
        The number of graph outputs made float.
    """
    producers, users = onnx_graph.producers(model), onnx_graph.use_counts(model)
    remove = []
    for out in model.graph.output:
        dq = producers.get(out.name)
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        q = producers.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear" or users.get(q.output[0], 0) != 1:
            continue
        layer = producers.get(q.input[0])
        if layer is None or layer.op_type not in ("Gemm", "MatMul") or users.get(q.input[0], 0) != 1:
            continue
        if any(o.name == q.input[0] for o in model.graph.output):
            continue
        layer.output[list(layer.output).index(q.input[0])] = out.name
        remove += [q, dq]
    for n in remove:
        model.graph.node.remove(n)
    # drop the pair's scale and zero point when nothing else reads them
    freed = {name for n in remove for name in n.input[1:]}
    still = onnx_graph.use_counts(model)
    for init in [i for i in model.graph.initializer if i.name in freed and i.name not in still]:
        model.graph.initializer.remove(init)
    return len(remove) // 2


REWRITES = {"softmax_nan_guard": remove_softmax_nan_guard, "gelu": fuse_gelu}


def apply_rewrites(model: Any) -> dict[str, int]:
    """Run every rewrite in place; returns ``{name: count}`` of those that changed something."""
    done = Counter()
    for name, fn in REWRITES.items():
        n = fn(model)
        if n:
            done[name] += n
    return dict(done)


def smooth_activations(
    model: Any, feeds_list: list[dict[str, np.ndarray]], *, alpha: float = 0.5, skip_nodes: set[str] | None = None,
    tensors: Any = None,
) -> int:
    """SmoothQuant (Xiao et al. 2023): move activation outliers of MatMul inputs into the weights.

    For each activation ``X`` (``[..., K]``) that feeds MatMuls with constant 2-D weights
    ``W`` (``[K, N]``), a per-channel scale ``s_k = max|X_k|^alpha / max|W_k|^(1-alpha)`` (from
    the calibration inputs) gives ``X W = (X / s) (s W)``: a ``Mul`` by ``1/s`` is inserted and
    the weight rows are multiplied by ``s``. The fp32 result is unchanged up to rounding; per-
    tensor activation quantization then loses far less to outlier channels.

    Args:
        model: ``onnx.ModelProto``, changed in place.
        feeds_list: Calibration batches (``input name -> ndarray``).
        alpha: Migration strength in [0, 1].
        skip_nodes: MatMul node names left alone (e.g. excluded from quantization).
        tensors: :class:`~compressor.external_data.TensorStore` for a graph whose weights stay in
            external data files (models over 2 GB): the activation probe then runs from the graph
            alone, its weights read by ONNX Runtime from ``tensors.base_dir``, and each scaled
            weight is written out as it is made. None: weights are in the graph.

    Returns:
        The number of activations smoothed.
    """
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    from compressor.external_data import TensorStore, has_external_data

    tensors = tensors or TensorStore()

    inits = onnx_graph.initializers(model)
    users = onnx_graph.use_counts(model)
    groups: dict[str, list] = {}
    for n in model.graph.node:
        if n.op_type == "MatMul" and n.input[1] in inits and len(inits[n.input[1]].dims) == 2 and (
            n.name not in (skip_nodes or set())
        ):
            if users[n.input[1]] == 1:  # a weight shared elsewhere (tied) is left alone
                groups.setdefault(n.input[0], []).append(n)
    graph_inputs = {i.name for i in model.graph.input}
    groups = {x: ns for x, ns in groups.items() if x not in graph_inputs and x not in inits}
    if not groups or not feeds_list:
        return 0
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    for x in groups:
        if x not in have:
            probe.graph.output.append(helper.make_tensor_value_info(x, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if has_external_data(probe):
        # the graph without its weights serializes far below protobuf's 2 GB limit; ONNX Runtime (1.32) reads
        # the external weights from this folder when a model comes as bytes
        opts.add_session_config_entry("session.model_external_initializers_file_folder_path", tensors.base_dir or ".")
    sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    amax: dict[str, np.ndarray] = {}
    for feeds in feeds_list:
        outs = dict(zip(names, sess.run(None, feeds), strict=True))
        for x in groups:
            a = np.abs(outs[x]).reshape(-1, outs[x].shape[-1]).max(axis=0)
            amax[x] = a if x not in amax else np.maximum(amax[x], a)
        del outs
    del sess, probe
    done = 0
    for x, nodes in groups.items():
        # one weight in memory at a time: max |W_k| per row, then each weight again to scale it
        wmax = np.max([np.abs(tensors.get(inits[n.input[1]])).max(axis=1) for n in nodes], axis=0)
        a = amax[x]
        if a.shape != wmax.shape:
            continue
        s = np.where((a > 0) & (wmax > 0), a**alpha / np.maximum(wmax, 1e-8) ** (1 - alpha), 1.0)
        s = np.clip(s, 1e-4, 1e4).astype(np.float32)
        inv_name = f"{x}_smooth_inv_scale"
        out_name = f"{x}_smoothed"
        model.graph.initializer.append(numpy_helper.from_array((1.0 / s).astype(np.float32), inv_name))
        mul = helper.make_node("Mul", [x, inv_name], [out_name], name=f"{x}_smooth")
        first = min(list(model.graph.node).index(n) for n in nodes)
        model.graph.node.insert(first, mul)
        for n in nodes:
            w = tensors.get(inits[n.input[1]])
            w = (w * s[:, None]).astype(w.dtype)
            tensors.set(inits[n.input[1]], w)
            del w
            n.input[0] = out_name
        done += 1
    return done

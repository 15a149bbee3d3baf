"""Structure statistics of ONNX graphs: parameter count, weight sparsity, op-type histogram."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from compressor.onnx_graph import ELEM_TYPES, FLOAT_ELEM_TYPES, initializers, producers
from compressor.passes.quant_inventory import WEIGHT_OPS

#: Element types counted as parameters: float, fp16, double, bf16, u8, s8, u4, s4, and int32 (the biases of
#: QDQ Conv/Gemm); int64 (shape constants) and the rest are not.
_PARAMETER_ELEM_TYPES = frozenset(ELEM_TYPES[n] for n in ("float32", "float16", "float64", "bfloat16", "uint8", "int8",
                                                          "uint4", "int4", "int32"))
_QPARAM_INPUTS = {"QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2), "DynamicQuantizeLinear": (),
                  "ConvInteger": (2, 3), "MatMulInteger": (2, 3), "QLinearConv": (1, 2, 4, 5, 6, 7),
                  "QLinearMatMul": (1, 2, 4, 5, 6, 7), "MatMulNBits": (2, 3, 4),
                  # ONNX Runtime contrib ops (com.microsoft): scales, zero points and MatMulNBits' g_idx
                  "GatherBlockQuantized": (2, 3), "DynamicQuantizeLSTM": (8, 9, 10, 11), "QAttention": (3, 4, 6, 7),
                  "QGemm": (1, 2, 4, 5, 7, 8), "DynamicQuantizeMatMul": (2, 3), "MatMulIntegerToFloat": (2, 3, 4, 5),
                  "QEmbedLayerNormalization": tuple(range(8, 18))}

#: Zero point input of each weight input of the integer ops: ``{op type: {weight input: zero point input}}``.
_WEIGHT_ZERO_POINT = {"ConvInteger": {1: 3}, "MatMulInteger": {1: 3}, "QLinearConv": {3: 5}, "QLinearMatMul": {3: 5},
                      "QGemm": {3: 5}, "DynamicQuantizeMatMul": {1: 3}, "MatMulIntegerToFloat": {1: 5},
                      "DynamicQuantizeLSTM": {1: 9, 2: 11}, "QAttention": {1: 7}, "MatMulNBits": {1: 3}}

#: Embedding tables: parameters, but not counted for sparsity (pruning leaves them dense).
_TABLE_OPS = frozenset({"Gather", "GatherBlockQuantized", "EmbedLayerNormalization", "QEmbedLayerNormalization"})


def _attr(node: Any, name: str, default: int) -> int:
    return next((a.i for a in node.attribute if a.name == name), default)


def _logical_elements(inits: dict[str, Any], model: Any) -> dict[str, int]:
    """Logical weight count of initializers stored packed (case R16): ``{initializer name: elements}``.

    ONNX Runtime's ``MatMulNBits`` stores B as bytes ``[N, blocks, block_size * bits / 8]`` (two 4-bit
    values per byte, the last block padded): N x K weights. ``GatherBlockQuantized`` stores a 4-bit
    table as uint8 with two values per byte.
    """
    out = {}
    for n in model.graph.node:
        if n.op_type == "MatMulNBits" and len(n.input) > 1 and n.input[1] in inits:
            out[n.input[1]] = _attr(n, "K", 0) * _attr(n, "N", 0)
        elif n.op_type == "GatherBlockQuantized" and n.input and n.input[0] in inits:
            t = inits[n.input[0]]
            if t.data_type == ELEM_TYPES["uint8"]:
                out[n.input[0]] = int(np.prod(t.dims)) * 8 // _attr(n, "bits", 4)
    return out


def _unpack_nbits(node: Any, packed: np.ndarray, zp: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """MatMulNBits' B as ``[N, K]`` values and its zero points broadcast to them (4-bit; default zero point 8)."""
    bits, k, n_out = _attr(node, "bits", 4), _attr(node, "K", 0), _attr(node, "N", 0)
    block = _attr(node, "block_size", 32)
    if bits != 4:
        raise ValueError(bits)
    q = np.stack([packed & 0x0F, packed >> 4], axis=-1).reshape(n_out, -1)  # low nibble first
    blocks = q.shape[1] // block
    if zp is None:
        z = np.full((n_out, blocks), 8, np.uint8)
    elif zp.dtype == np.uint8:
        z = np.stack([zp & 0x0F, zp >> 4], axis=-1).reshape(n_out, -1)[:, :blocks]
    else:  # float zero points (same type as the scales): compare in the float domain
        z = zp.reshape(n_out, blocks)
    return q[:, :k], np.repeat(z, block, axis=1)[:, :k]


def _quantized_copies(inits: dict[str, Any], weights: dict[str, tuple[str | None, Any]], *, base_dir: str = "") -> int:
    """Elements of 8-bit weights that are copies of a float initializer still in the graph (counted once, case R16).

    A weight tied to an embedding table stays float for the ``Gather`` while ONNX Runtime stores an
    int8 (transposed) copy for the ``MatMul``: one logical weight, two tensors. A copy is an 8-bit
    weight whose values (minus the zero point) are proportional, channel by channel (cosine >= 0.99
    along one axis), to a float initializer of the same element count, as it is or transposed.
    """
    from onnx import numpy_helper

    by_size: dict[int, list[str]] = {}
    for name, t in inits.items():
        if t.data_type in FLOAT_ELEM_TYPES and len(t.dims) >= 2:
            by_size.setdefault(int(np.prod(t.dims)), []).append(name)
    copies = 0
    for name, (zp_name, nbits) in weights.items():
        t = inits[name]
        if nbits is not None or t.data_type not in (ELEM_TYPES["int8"], ELEM_TYPES["uint8"]) or len(t.dims) < 2:
            continue
        size = int(np.prod(t.dims))
        if size < 16 or size not in by_size:
            continue
        q = numpy_helper.to_array(t, base_dir=base_dir).astype(np.float64)
        zp = (numpy_helper.to_array(inits[zp_name], base_dir=base_dir).astype(np.float64)
              if zp_name and zp_name in inits else 0.0)
        for other in by_size[size]:
            w = numpy_helper.to_array(inits[other], base_dir=base_dir).astype(np.float64)
            if any(_proportional(q, zp, cand) for cand in (w, w.T) if cand.size == q.size):
                copies += size
                by_size[size].remove(other)
                break
    return copies


def _proportional(q: np.ndarray, zp: Any, w: np.ndarray) -> bool:
    """True when ``q - zp`` and ``w`` (same element count) agree up to one scale per row or per column."""
    w = w.reshape(q.shape)
    for axis in (0, q.ndim - 1):
        z = np.asarray(zp)
        if z.ndim == 1 and z.size == q.shape[axis] and z.size > 1:
            shape = [1] * q.ndim
            shape[axis] = z.size
            z = z.reshape(shape)
        elif z.size != 1:
            continue
        a = np.moveaxis(q - z, axis, 0).reshape(q.shape[axis], -1)
        b = np.moveaxis(w, axis, 0).reshape(q.shape[axis], -1)
        norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
        if np.all(norms > 0) and np.min((a * b).sum(1) / norms) >= 0.99:
            return True
    return False


def _align(zp: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Insert singleton axes into ``zp`` so that it broadcasts against ``shape``, matching its axes left to right.

    E.g. DynamicQuantizeLSTM's W ``[directions, input, 4 * hidden]`` with zero points ``[directions, 4 * hidden]``.
    """
    out, k = [], 0
    for d in shape:
        if k < zp.ndim and zp.shape[k] == d:
            out.append(d)
            k += 1
        else:
            out.append(1)
    return zp.reshape(out) if k == zp.ndim else zp


def graph_stats(model: Any, *, base_dir: str | None = None) -> dict[str, Any]:
    """Parameters, weight sparsity and op histogram of an ``onnx.ModelProto``.

    Args:
        model: The model, with its external data loaded or not.
        base_dir: Folder of the model's external data files, when they are not loaded: each
            weight is then read on its own (memory: one tensor at a time).

    Returns:
        ``parameters``: logical weights, counted the same way in every precision (case R16):
        elements of float, 8-/4-bit and int32 (quantized bias) initializers, packed 4-bit
        weights (``MatMulNBits``, ``GatherBlockQuantized``) as the values they hold;
        quantization scales, zero points and int64 shape constants excluded;
        ``sparsity``: fraction of zero weights (zero = equal to the zero point for quantized
        weights, 4-bit values unpacked) in the weight inputs of every weight-holding op of the
        top graph (Conv / ConvTranspose / Gemm / MatMul, LSTM / GRU / RNN, com.microsoft
        Attention), embedding tables of Gather (float or 8-bit; not the packed 4-bit or fused
        embedding forms) and their quantized forms (see ``quant_inventory.WEIGHT_OPS``);
        ``op_types``: node count per op type, sorted by name.
    """
    from onnx import numpy_helper

    inits = initializers(model)
    qparams: set[str] = set()
    for node in model.graph.node:
        for idx in _QPARAM_INPUTS.get(node.op_type, ()):
            if idx < len(node.input):
                qparams.add(node.input[idx])
    # weight inputs (possibly through a DequantizeLinear) of every weight-holding op but embedding tables
    writers = producers(model)
    weights: dict[str, tuple[str | None, Any]] = {}  # initializer name -> (zero point name, MatMulNBits node)
    for node in model.graph.node:
        spec = WEIGHT_OPS.get(node.op_type)
        # embedding tables count (unstructured pruning prunes them, case R14), but not the packed 4-bit and fused
        # embedding forms, whose values this function does not unpack
        if spec is None or (node.op_type in _TABLE_OPS and node.op_type != "Gather"):
            continue
        for idx in spec[1]:
            if idx >= len(node.input) or not node.input[idx]:
                continue
            name, zp_name = node.input[idx], None
            if name not in inits and name in writers:
                p = writers[name]
                if p.op_type == "DequantizeLinear" and p.input[0] in inits:
                    name = p.input[0]
                    zp_name = p.input[2] if len(p.input) > 2 else None
                elif p.op_type in ("Transpose", "Reshape", "Identity") and p.input[0] in inits:
                    name = p.input[0]
            zp_idx = _WEIGHT_ZERO_POINT.get(node.op_type, {}).get(idx)
            if zp_idx is not None:
                zp_name = node.input[zp_idx] if zp_idx < len(node.input) and node.input[zp_idx] else None
            if node.op_type == "Gather" and (name not in inits or len(inits[name].dims) < 2):
                continue  # index constants and vectors are not embedding tables
            if name in inits:
                weights[name] = (zp_name, node if node.op_type == "MatMulNBits" else None)

    params = 0
    logical = _logical_elements(inits, model)
    for name, init in inits.items():
        if name in qparams or name.endswith(("_scale", "_zero_point")):  # ONNX Runtime's names for quant params
            continue
        if init.data_type in _PARAMETER_ELEM_TYPES:
            n = int(np.prod(init.dims)) if len(init.dims) else 1
            params += logical.get(name, n)
    params -= _quantized_copies(inits, weights, base_dir=base_dir or "")
    zeros = 0
    total = 0
    for name, (zp_name, nbits) in weights.items():
        arr = numpy_helper.to_array(inits[name], base_dir=base_dir or "")
        zp = 0
        if nbits is not None:
            zpa = numpy_helper.to_array(inits[zp_name], base_dir=base_dir or "") if zp_name and zp_name in inits else None
            try:
                q, z = _unpack_nbits(nbits, arr, zpa)
            except ValueError:  # not 4-bit: packed values this function cannot read
                continue
            zeros += int(np.count_nonzero(q == z))
            total += q.size
            continue
        if zp_name and zp_name in inits:
            zp = numpy_helper.to_array(inits[zp_name], base_dir=base_dir or "")
            if zp.ndim == 1 and arr.ndim >= 1 and zp.shape[0] != 1:
                axis = next((a for a, d in enumerate(arr.shape) if d == zp.shape[0]), 0)
                shape = [1] * arr.ndim
                shape[axis] = zp.shape[0]
                zp = zp.reshape(shape)
            elif 1 < zp.ndim < arr.ndim:
                zp = _align(zp, arr.shape)
        try:
            zeros += int(np.count_nonzero(arr == zp))
        except ValueError:  # a zero-point layout this function does not know: leave the weight out, never fail
            continue
        total += arr.size
        del arr
    return {
        "parameters": params,
        "sparsity": float(zeros / total) if total else 0.0,
        "op_types": dict(sorted(Counter(n.op_type for n in model.graph.node).items())),
    }

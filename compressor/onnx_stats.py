"""Structure statistics of ONNX graphs: parameter count, weight sparsity, op-type histogram."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from compressor.onnx_graph import ELEM_TYPES, initializers, producers, weight_input

#: Element types counted as parameters: float, fp16, double, bf16, u8, s8, u4, s4, and int32 (the biases of
#: QDQ Conv/Gemm); int64 (shape constants) and the rest are not.
_PARAMETER_ELEM_TYPES = frozenset(ELEM_TYPES[n] for n in ("float32", "float16", "float64", "bfloat16", "uint8", "int8",
                                                          "uint4", "int4", "int32"))
_QPARAM_INPUTS = {"QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2), "DynamicQuantizeLinear": (),
                  "ConvInteger": (2, 3), "MatMulInteger": (2, 3), "QLinearConv": (1, 2, 4, 5, 6, 7),
                  "QLinearMatMul": (1, 2, 4, 5, 6, 7), "MatMulNBits": (2, 3)}


#: Inputs of recurrent ops holding weight matrices: ``LSTM(X, W, R, B, ...)``, same for GRU and RNN.
_RECURRENT_WEIGHTS = {"LSTM": (1, 2), "GRU": (1, 2), "RNN": (1, 2)}


def _is_table(name: str, inits: dict[str, Any], writers: dict[str, Any]) -> bool:
    """A Gather's data is an embedding table: a float (or dequantized) initializer of two or more dimensions."""
    from compressor.onnx_graph import FLOAT_ELEM_TYPES

    if name not in inits and name in writers and writers[name].op_type == "DequantizeLinear":
        name = writers[name].input[0]
        return name in inits and len(inits[name].dims) >= 2
    return name in inits and inits[name].data_type in FLOAT_ELEM_TYPES and len(inits[name].dims) >= 2


def graph_stats(model: Any) -> dict[str, Any]:
    """Parameters, weight sparsity and op histogram of an ``onnx.ModelProto`` (external data loaded).

    Returns:
        ``parameters``: elements of float, 8-/4-bit and int32 (quantized bias) initializers,
        quantization scales and zero points and int64 shape constants excluded;
        ``sparsity``: fraction of zero weights (zero = equal to the zero point for quantized
        weights) in the weight inputs of Conv / ConvTranspose / Gemm / MatMul and their
        quantized forms, the W and R matrices of LSTM / GRU / RNN, and the embedding tables of
        Gather (float initializers of two or more dimensions);
        ``op_types``: node count per op type, sorted by name.
    """
    from onnx import numpy_helper

    inits = initializers(model)
    qparams: set[str] = set()
    for node in model.graph.node:
        for idx in _QPARAM_INPUTS.get(node.op_type, ()):
            if idx < len(node.input):
                qparams.add(node.input[idx])
    # weight inputs (possibly through a DequantizeLinear)
    writers = producers(model)
    weights: dict[str, Any] = {}  # initializer name -> zero point (or 0)
    for node in model.graph.node:
        if node.op_type in _RECURRENT_WEIGHTS:  # W and R of LSTM/GRU/RNN count as weights too (case R14)
            for idx in _RECURRENT_WEIGHTS[node.op_type]:
                if idx < len(node.input) and node.input[idx] in inits:
                    weights.setdefault(node.input[idx], None)
            continue
        name = weight_input(node)
        if name is None:
            continue
        if node.op_type == "Gather" and not _is_table(name, inits, writers):  # index constants are not weights
            continue
        zp_name = None
        if name not in inits and name in writers:
            p = writers[name]
            if p.op_type == "DequantizeLinear" and p.input[0] in inits:
                name = p.input[0]
                zp_name = p.input[2] if len(p.input) > 2 else None
            elif p.op_type in ("Transpose", "Reshape", "Identity") and p.input[0] in inits:
                name = p.input[0]
        if node.op_type in ("ConvInteger", "MatMulInteger") and len(node.input) > 3:
            zp_name = node.input[3] or None
        if node.op_type in ("QLinearConv", "QLinearMatMul"):
            zp_name = node.input[5]
        if name in inits:
            weights[name] = zp_name

    params = 0
    for name, init in inits.items():
        if name in qparams or name.endswith(("_scale", "_zero_point")):  # ONNX Runtime's names for quant params
            continue
        if init.data_type in _PARAMETER_ELEM_TYPES:
            n = int(np.prod(init.dims)) if len(init.dims) else 1
            params += n
    zeros = 0
    total = 0
    for name, zp_name in weights.items():
        arr = numpy_helper.to_array(inits[name])
        zp = 0
        if zp_name and zp_name in inits:
            zp = numpy_helper.to_array(inits[zp_name])
            if zp.ndim == 1 and arr.ndim >= 1 and zp.shape[0] != 1:
                axis = next((a for a, d in enumerate(arr.shape) if d == zp.shape[0]), 0)
                shape = [1] * arr.ndim
                shape[axis] = zp.shape[0]
                zp = zp.reshape(shape)
        zeros += int(np.count_nonzero(arr == zp))
        total += arr.size
    return {
        "parameters": params,
        "sparsity": float(zeros / total) if total else 0.0,
        "op_types": dict(sorted(Counter(n.op_type for n in model.graph.node).items())),
    }

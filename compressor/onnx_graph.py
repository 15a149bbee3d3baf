"""One place for the facts about ONNX graphs that several modules need.

- who writes and who reads each tensor (:func:`producers`, :func:`consumers`,
  :func:`input_uses`, :func:`use_counts`);
- the initializers by name (:func:`initializers`);
- which input of each op type holds its weight (:data:`WEIGHT_INPUT`, :func:`weight_input`);
- ONNX element types and numpy dtype names (:data:`ELEM_TYPES`, :func:`dtype_name`,
  :func:`np_dtype`, :func:`elem_type`).

Every function takes an ``onnx.ModelProto`` or an ``onnx.GraphProto`` and reads only the top
graph (not the bodies of ``If``/``Loop``/``Scan``). Nothing here imports ``onnx`` or numpy at
import time, so the CLI starts fast. Source: the operator signatures of the ONNX specification
(https://onnx.ai/onnx/operators/) and ONNX Runtime's contrib ops (``com.microsoft``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

#: Input index of the weight of each op type that has one: ``Conv(X, W, B)``, ``Gemm(A, B, C)``,
#: ``MatMul(A, B)``, ``Gather(data, indices)`` (the embedding table), their 8-bit integer forms
#: (``ConvInteger(x, w, ...)``, ``QLinearConv(x, x_scale, x_zp, w, ...)``) and ONNX Runtime's
#: blockwise int4 ``MatMulNBits(A, B, ...)``. Recurrent ops (LSTM/GRU/RNN) are not listed: no pass
#: handles them yet.
WEIGHT_INPUT: Mapping[str, int] = MappingProxyType({
    "Conv": 1, "ConvTranspose": 1, "Gemm": 1, "MatMul": 1,
    "ConvInteger": 1, "MatMulInteger": 1, "QLinearConv": 3, "QLinearMatMul": 3,
    "Gather": 0, "MatMulNBits": 1,
})

#: Float ops whose weight is a matrix or kernel (pruned; counted for sparsity).
DENSE_WEIGHT_OPS: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul")

#: Float ops with a weight that ONNX Runtime's quantizer can quantize: the dense ones and ``Gather`` tables.
FLOAT_WEIGHT_OPS: tuple[str, ...] = (*DENSE_WEIGHT_OPS, "Gather")

#: ONNX ``TensorProto.DataType`` codes by numpy dtype name (the names ``onnx.helper.tensor_dtype_to_np_dtype``
#: gives: STRING is ``object``; bfloat16, float8 and 4-bit types are the ``ml_dtypes`` names).
ELEM_TYPES: Mapping[str, int] = MappingProxyType({
    "float32": 1, "uint8": 2, "int8": 3, "uint16": 4, "int16": 5, "int32": 6, "int64": 7, "object": 8,
    "bool": 9, "float16": 10, "float64": 11, "uint32": 12, "uint64": 13, "complex64": 14, "complex128": 15,
    "bfloat16": 16, "float8_e4m3fn": 17, "float8_e4m3fnuz": 18, "float8_e5m2": 19, "float8_e5m2fnuz": 20,
    "uint4": 21, "int4": 22,
})

#: Element types of float tensors: float32, float16, float64.
FLOAT_ELEM_TYPES: frozenset[int] = frozenset(ELEM_TYPES[n] for n in ("float32", "float16", "float64"))


def _graph(model: Any) -> Any:
    """The ``GraphProto`` of a model, or the argument itself when it is a graph."""
    return getattr(model, "graph", model)


def producers(model: Any) -> dict[str, Any]:
    """The node writing each tensor.

    Args:
        model: ``onnx.ModelProto`` or ``onnx.GraphProto``.

    Returns:
        ``{tensor name: NodeProto}``; graph inputs and initializers have no entry.
    """
    return {o: n for n in _graph(model).node for o in n.output}


def consumers(model: Any) -> dict[str, list[Any]]:
    """The nodes reading each tensor, in graph order.

    A node reading a tensor twice (``Mul(x, x)``) is listed twice, so ``len(consumers[t])``
    is the number of uses.

    Args:
        model: ``onnx.ModelProto`` or ``onnx.GraphProto``.

    Returns:
        ``{tensor name: [NodeProto, ...]}``; tensors read by no node (graph outputs only) have no entry.
    """
    out: dict[str, list[Any]] = {}
    for n in _graph(model).node:
        for name in n.input:
            out.setdefault(name, []).append(n)
    return out


def input_uses(model: Any) -> dict[str, list[tuple[Any, int]]]:
    """Like :func:`consumers`, with the input index of each use.

    Returns:
        ``{tensor name: [(NodeProto, input index), ...]}`` in graph order.
    """
    out: dict[str, list[tuple[Any, int]]] = {}
    for n in _graph(model).node:
        for i, name in enumerate(n.input):
            out.setdefault(name, []).append((n, i))
    return out


def use_counts(model: Any) -> Counter[str]:
    """Number of node inputs reading each tensor (a ``Counter``: 0 for unread tensors)."""
    return Counter(name for n in _graph(model).node for name in n.input)


def initializers(model: Any) -> dict[str, Any]:
    """The initializers by name: ``{name: TensorProto}`` (the protos themselves, so edits land in the model)."""
    return {i.name: i for i in _graph(model).initializer}


def weight_input(node: Any) -> str | None:
    """Name of the tensor feeding a node's weight input (see :data:`WEIGHT_INPUT`).

    Returns:
        The input name, or ``None`` for op types without a weight, or a node with too few inputs.
    """
    idx = WEIGHT_INPUT.get(node.op_type)
    if idx is None or idx >= len(node.input):
        return None
    return node.input[idx]


def np_dtype(elem_type: int) -> np.dtype:
    """The numpy dtype of an ONNX element type (``onnx.helper.tensor_dtype_to_np_dtype``).

    Raises:
        KeyError: An element type ONNX does not define (or 0, UNDEFINED).
    """
    import numpy as np
    import onnx

    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))


def dtype_name(elem_type: int, *, undefined: str = "float32") -> str:
    """The numpy dtype name of an ONNX element type, e.g. ``1 -> "float32"``, ``7 -> "int64"``.

    Args:
        elem_type: ``TensorProto.DataType`` code.
        undefined: The name returned for 0 (UNDEFINED, a value_info without a type).
    """
    return np_dtype(elem_type).name if elem_type else undefined


def elem_type(dtype: str | np.dtype | type) -> int:
    """ONNX element type of a numpy dtype or dtype name, e.g. ``"int64" -> 7``.

    Raises:
        UsageError: A dtype ONNX has no element type for.
    """
    import numpy as np

    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    if name not in ELEM_TYPES:
        from compressor.errors import UsageError

        raise UsageError(f"dtype '{name}' has no ONNX element type; use one of {', '.join(ELEM_TYPES)}")
    return ELEM_TYPES[name]

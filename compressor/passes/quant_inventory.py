"""What the quantize pass sees in an ONNX graph: its weight-holding ops and the form of their weights.

One inventory serves four questions, so that they always agree:

- **node lists** (:func:`node_lists`): every op that holds a constant weight in the *output*
  graph, by the float op type it computes (``MatMulInteger`` and ``MatMulNBits`` are ``MatMul``,
  ``DynamicQuantizeLSTM`` is ``LSTM``, ``QAttention`` is ``Attention``), quantized or not
  (cases R1, R23). A ``Gather`` over an activation (taking a time step) holds no weight;
  recurrent layers, com.microsoft ``Attention``, embedding tables and ops inside ``If`` /
  ``Loop`` / ``Scan`` bodies do;
- **already quantized inputs** (:func:`quantized_form`): QDQ pairs, QOperator / integer ops,
  or weights stored as integers are refused for every precision (case R7);
- **float16 inputs** (:func:`float16_weight_nodes`, :func:`upcast_float16`): upcast to float32
  before int8/int4 quantization, and refused for ``--precision fp16`` (case R8);
- **what a run would quantize** (:func:`candidates`): dynamic int8 keeps convolutions in float
  unless ``--op-types`` names them (ONNX Runtime's guidance: ``ConvInteger`` is slow on CPU),
  and a run with no candidate is refused up front (case R21).

Sources: the operator signatures of the ONNX specification and of ONNX Runtime's contrib ops
(``com.microsoft``: DynamicQuantizeLSTM, QAttention, MatMulNBits, GatherBlockQuantized, ...), and
the op registries of ``onnxruntime.quantization.registry`` (ONNX Runtime 1.32.0).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

#: Op type -> (the float op type it computes, input indices of its constant weights). Float ops first, then
#: their 8-bit / 4-bit forms from ONNX Runtime's quantizers.
WEIGHT_OPS: dict[str, tuple[str, tuple[int, ...]]] = {
    "Conv": ("Conv", (1,)), "ConvTranspose": ("ConvTranspose", (1,)), "Gemm": ("Gemm", (1,)),
    "MatMul": ("MatMul", (1,)), "Gather": ("Gather", (0,)),
    "LSTM": ("LSTM", (1, 2)), "GRU": ("GRU", (1, 2)), "RNN": ("RNN", (1, 2)),
    "Attention": ("Attention", (1,)), "EmbedLayerNormalization": ("EmbedLayerNormalization", (2,)),
    # quantized forms
    "ConvInteger": ("Conv", (1,)), "QLinearConv": ("Conv", (3,)), "MatMulInteger": ("MatMul", (1,)),
    "QLinearMatMul": ("MatMul", (3,)), "DynamicQuantizeMatMul": ("MatMul", (1,)),
    "MatMulIntegerToFloat": ("MatMul", (1,)), "MatMulNBits": ("MatMul", (1,)), "QGemm": ("Gemm", (3,)),
    "DynamicQuantizeLSTM": ("LSTM", (1, 2)), "QAttention": ("Attention", (1,)),
    "GatherBlockQuantized": ("Gather", (0,)), "QEmbedLayerNormalization": ("EmbedLayerNormalization", (2,)),
}

#: Op types that only exist in a quantized graph (QOperator / integer / blockwise forms).
QUANTIZED_OP_TYPES: frozenset[str] = frozenset(
    op for op, (logical, _) in WEIGHT_OPS.items() if op != logical) | {
    "QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "QLinearAdd", "QLinearMul", "QLinearSigmoid",
    "QLinearLeakyRelu", "QLinearAveragePool", "QLinearGlobalAveragePool", "QLinearConcat", "QLinearSoftmax",
    "QLinearWhere", "QLinearReduceMean", "QLinearConvTranspose",
}

#: Ops a constant weight may pass through on its way to the op that uses it (their other inputs are shapes,
#: axes, quantization parameters or, for the arithmetic ones, constant scales: ``Cast(int8 w) * scale``).
_PASS_THROUGH = frozenset({"DequantizeLinear", "Transpose", "Reshape", "Identity", "Cast", "Squeeze", "Unsqueeze",
                           "Flatten", "Slice", "Concat", "Split", "Mul", "Div", "Add", "Sub"})

#: ONNX element types of integer weights (quantized storage): uint8, int8, uint16, int16, uint4, int4.
_INT_WEIGHT_TYPES = frozenset({2, 3, 4, 5, 21, 22})
_FLOAT16 = 10


@dataclass(frozen=True)
class WeightNode:
    """One op holding a constant weight.

    Attributes:
        name: Node name (``op_type#index`` when the node has none).
        node_op_type: The op type in the graph (e.g. ``MatMulInteger``).
        op_type: The float op type it computes (e.g. ``MatMul``): the key of the report's node lists.
        stored_as: numpy dtype name of the stored weight (``int8``, ``uint8``, ``float16``, ...).
        quantized: Integer form, or an integer weight (directly or through ``DequantizeLinear``).
        subgraph: True for a node inside an ``If`` / ``Loop`` / ``Scan`` body.
        weight_index: The input holding the weight (0 for ``MatMul(W, x)``, a weight on the left).
    """

    name: str
    node_op_type: str
    op_type: str
    stored_as: str
    quantized: bool
    subgraph: bool = False
    weight_index: int = 1

    def to_json(self) -> dict[str, Any]:
        """The report's form: ``{"name", "op_type", "node_op_type", "stored_as", "quantized"}``."""
        return {"name": self.name, "op_type": self.op_type, "node_op_type": self.node_op_type,
                "stored_as": self.stored_as, "quantized": self.quantized}


def _subgraphs(node: Any) -> list[Any]:
    from onnx import AttributeProto

    out = []
    for a in node.attribute:
        if a.type == AttributeProto.GRAPH:
            out.append(a.g)
        elif a.type == AttributeProto.GRAPHS:
            out.extend(a.graphs)
    return out


class _Constants:
    """Resolves a tensor name to the constant it comes from (initializer or ``Constant``), through pass-through ops."""

    def __init__(self, graph: Any, outer: dict[str, tuple[int, bool]] | None = None) -> None:
        self.roots: dict[str, tuple[int, bool]] = dict(outer or {})  # name -> (elem type, through DequantizeLinear)
        for i in graph.initializer:
            self.roots[i.name] = (i.data_type, False)
        for n in graph.node:
            if n.op_type == "Constant" and n.output:
                t = next((a.t for a in n.attribute if a.name == "value" and a.HasField("t")), None)
                if t is not None:
                    self.roots[n.output[0]] = (t.data_type, False)
        self.writers = {o: n for n in graph.node for o in n.output if o}
        self.inputs = {i.name for i in graph.input}
        self._memo: dict[str, tuple[int, bool] | None] = {}

    def resolve(self, name: str, depth: int = 0) -> tuple[int, bool] | None:
        """``(element type of the stored constant, passed through DequantizeLinear)``, or None if not constant."""
        if not name or name in self.inputs and name not in self.roots:
            return None
        if name in self.roots and name not in self.writers:
            return self.roots[name]
        if name in self._memo:
            return self._memo[name]
        self._memo[name] = None  # cycles (invalid graphs) end here
        node = self.writers.get(name)
        result = None
        if node is not None and node.op_type == "Constant":
            result = self.roots.get(name)
        elif node is not None and node.op_type in _PASS_THROUGH and node.input and depth < 32:
            first = self.resolve(node.input[0], depth + 1)
            rest = [self.resolve(i, depth + 1) for i in node.input[1:] if i]
            if first is not None and all(r is not None for r in rest):
                result = (first[0], first[1] or node.op_type == "DequantizeLinear")
        self._memo[name] = result
        return result


def weight_nodes(model: Any) -> list[WeightNode]:
    """Every op holding a constant weight, in the top graph and in subgraph bodies, in graph order.

    A weight is constant when it is an initializer or a ``Constant``, possibly through
    ``DequantizeLinear``, ``Transpose``, ``Reshape``, ``Cast``, ``Slice``, ``Concat`` and the like.
    ``Gather`` counts only when its table (input 0) is constant: a ``Gather`` that takes a time step
    from an activation holds no weight (case R1). ``MatMul`` / ``Gemm`` with a constant first
    input and a variable second one count too.

    Args:
        model: ``onnx.ModelProto`` (external data need not be loaded).

    Returns:
        One :class:`WeightNode` per weight-holding node.
    """
    from compressor.onnx_graph import dtype_name

    out: list[WeightNode] = []

    def walk(graph: Any, outer: dict[str, tuple[int, bool]] | None, sub: bool) -> None:
        consts = _Constants(graph, outer)
        for k, node in enumerate(graph.node):
            spec = WEIGHT_OPS.get(node.op_type)
            if spec is not None:
                logical, idxs = spec
                found = [(consts.resolve(node.input[i]), i) for i in idxs if i < len(node.input)]
                if node.op_type in ("MatMul", "Gemm") and (not found or found[0][0] is None) and node.input:
                    found = [(consts.resolve(node.input[0]), 0)]  # weight on the left: W @ x
                found = [(f, i) for f, i in found if f is not None]
                if found:
                    (elem, through_dq), index = found[0]
                    quantized = (node.op_type != logical or through_dq or elem in _INT_WEIGHT_TYPES)
                    out.append(WeightNode(node.name or f"{node.op_type}#{k}", node.op_type, logical,
                                          dtype_name(elem), quantized, sub, index))
            for g in _subgraphs(node):
                walk(g, consts.roots, True)

    walk(model.graph, None, False)
    return out


def node_lists(model: Any, *, precision: str = "int8") -> dict[str, Any]:
    """The report's node lists, read from one graph (the output): quantized and unquantized weight nodes by type.

    Args:
        model: The output ``onnx.ModelProto``.
        precision: ``int8`` / ``int4`` (quantized = integer weights) or ``fp16`` (quantized = float16 weights).

    Returns:
        ``{"quantized_nodes": {op type: count}, "unquantized_nodes": {op type: count},
        "weight_nodes": [WeightNode.to_json(), ...]}`` with op types as in :attr:`WeightNode.op_type`.
    """
    nodes = weight_nodes(model)
    done = Counter()
    left = Counter()
    listed = []
    for w in nodes:
        q = w.quantized or (precision == "fp16" and w.stored_as == "float16")
        (done if q else left)[w.op_type] += 1
        listed.append({**w.to_json(), "quantized": q})
    return {"quantized_nodes": dict(sorted(done.items())), "unquantized_nodes": dict(sorted(left.items())),
            "weight_nodes": listed}


def quantized_form(model: Any) -> str | None:
    """Describe how a model is already quantized, or None for a float model (case R7).

    Recognises QDQ graphs (``QuantizeLinear`` / ``DequantizeLinear``), QOperator and integer ops
    (``QLinearConv``, ``MatMulInteger``, ``DynamicQuantizeLSTM``, ``MatMulNBits``, ...) and weights
    stored as 8- or 4-bit integers, in the top graph and in subgraph bodies.

    Returns:
        E.g. ``"QDQ (4 QuantizeLinear/DequantizeLinear nodes)"``, or None.
    """
    ops: Counter[str] = Counter()

    def walk(graph: Any) -> None:
        for n in graph.node:
            ops[n.op_type] += 1
            for g in _subgraphs(n):
                walk(g)

    walk(model.graph)
    qdq = ops["QuantizeLinear"] + ops["DequantizeLinear"]
    if qdq:
        return f"QDQ ({qdq} QuantizeLinear/DequantizeLinear nodes)"
    qops = sorted(op for op in ops if op in QUANTIZED_OP_TYPES or op.startswith(("QLinear", "DynamicQuantize")))
    if qops:
        return "QOperator / integer ops (" + ", ".join(f"{ops[o]} {o}" for o in qops) + ")"
    ints = [w for w in weight_nodes(model) if w.quantized]
    if ints:
        return "integer weights (" + ", ".join(f"{w.op_type} {w.name}: {w.stored_as}" for w in ints[:3]) + (
            ", ..." if len(ints) > 3 else "") + ")"
    return None


def float16_weight_nodes(model: Any) -> list[WeightNode]:
    """Weight-holding nodes whose weight is stored as float16 (case R8)."""
    return [w for w in weight_nodes(model) if not w.quantized and w.stored_as == "float16"]


#: Float op types each precision's ONNX Runtime quantizer turns into an integer form (the op registries of
#: ``onnxruntime.quantization.registry`` and ``MatMulNBitsQuantizer``, ONNX Runtime 1.32.0). Gemm under dynamic
#: int8 and int4 goes through the exact Gemm -> MatMul + Add rewrite first.
QUANTIZABLE: dict[str, frozenset[str]] = {
    "dynamic": frozenset({"Conv", "MatMul", "Gemm", "Gather", "LSTM", "Attention", "EmbedLayerNormalization"}),
    "static": frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Gather"}),
    "int4": frozenset({"MatMul", "Gemm", "Gather"}),
    "fp16": frozenset(op for op, (logical, _) in WEIGHT_OPS.items() if op == logical),
}

#: Convolutions: kept in float by dynamic int8 unless ``--op-types`` names them (case R21).
CONV_OPS = frozenset({"Conv", "ConvTranspose"})


def dynamic_op_types(requested: tuple[str, ...] | list[str] | None) -> list[str] | None:
    """``op_types_to_quantize`` for ONNX Runtime's ``quantize_dynamic``: convolutions stay float unless asked.

    ONNX Runtime's documentation advises static quantization for CNNs: dynamic ``ConvInteger``
    has no fast kernel on CPU (measured 5-7x slower than fp32 here, case R21).

    Args:
        requested: The user's ``--op-types`` (empty or None: the default).

    Returns:
        The requested list unchanged, or every op type of ONNX Runtime's dynamic registry but ``Conv``.
    """
    if requested:
        return list(requested)
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    return sorted(op for op in IntegerOpsRegistry if op not in CONV_OPS)


def candidates(model: Any, *, scheme: str, op_types: tuple[str, ...] | list[str] | None = None,
               excluded: set[str] | frozenset[str] = frozenset()) -> tuple[list[WeightNode], list[WeightNode]]:
    """Split a float model's weight nodes into those a run would quantize and convolutions kept float by default.

    Args:
        model: The float ``onnx.ModelProto``.
        scheme: ``dynamic``, ``static``, ``int4`` or ``fp16``.
        op_types: The user's ``--op-types`` (restricts the candidates; naming ``Conv`` lets dynamic int8 take it).
        excluded: Node names kept in float by ``--exclude``.

    Returns:
        ``(candidates, convolutions kept in float by the dynamic default)``.
    """
    allowed = QUANTIZABLE[scheme]
    chosen, convs = [], []
    for w in weight_nodes(model):
        if w.quantized or w.name in excluded or w.op_type not in allowed:
            continue
        if w.op_type in ("MatMul", "Gemm") and w.weight_index == 0 and scheme in ("dynamic", "int4"):
            continue  # ONNX Runtime quantizes a constant B only (MatMulConstBOnly; MatMulNBits)
        if op_types and w.op_type not in op_types and w.node_op_type not in op_types:
            continue
        if scheme == "dynamic" and w.op_type in CONV_OPS and not op_types:
            convs.append(w)
            continue
        chosen.append(w)
    return chosen, convs


def upcast_float16(model: Any) -> int:
    """Rewrite a float16 model to compute in float32, keeping its interface (case R8), in place.

    Initializers, ``Constant`` values and ``Cast``/``ConstantOfShape`` targets of float16 become
    float32, in subgraph bodies too; float16 graph inputs get a ``Cast`` to float32 after them and
    float16 graph outputs a ``Cast`` back, so callers feed and read the same dtypes as before.
    Exact for every value float16 can hold (float16 -> float32 loses nothing); the arithmetic then
    runs in float32. ONNX Runtime 1.32.0's quantizers take float32 graphs only
    (``DynamicQuantizeLinear`` has no float16 kernel), hence the upcast.

    Args:
        model: ``onnx.ModelProto`` with external data loaded.

    Returns:
        The number of float16 initializers and constants converted.
    """
    import numpy as np
    from onnx import AttributeProto, TensorProto, helper, numpy_helper

    count = 0

    def tensor32(t: Any) -> Any:
        arr = numpy_helper.to_array(t).astype(np.float32)
        return numpy_helper.from_array(arr, t.name)

    def fix_types(values: Any) -> None:
        for v in values:
            tt = v.type.tensor_type
            if v.type.HasField("tensor_type") and tt.elem_type == TensorProto.FLOAT16:
                tt.elem_type = TensorProto.FLOAT

    def fix_graph(graph: Any, top: bool) -> None:
        nonlocal count
        for i, t in enumerate(graph.initializer):
            if t.data_type == TensorProto.FLOAT16:
                graph.initializer[i].CopyFrom(tensor32(t))
                count += 1
        for n in graph.node:
            for a in n.attribute:
                if a.type == AttributeProto.TENSOR and a.t.data_type == TensorProto.FLOAT16:
                    a.t.CopyFrom(tensor32(a.t))
                    count += 1
                elif a.type == AttributeProto.INT and a.name in ("to", "dtype") and a.i == TensorProto.FLOAT16:
                    a.i = TensorProto.FLOAT
                elif a.type == AttributeProto.GRAPH:
                    fix_graph(a.g, False)
                elif a.type == AttributeProto.GRAPHS:
                    for g in a.graphs:
                        fix_graph(g, False)
        fix_types(graph.value_info)
        if not top:
            fix_types(graph.input)
            fix_types(graph.output)

    fix_graph(model.graph, True)
    g = model.graph
    head, tail = [], []
    for v in g.input:
        if v.type.tensor_type.elem_type == TensorProto.FLOAT16:
            new = v.name + "_float32"
            _rename_uses(g, v.name, new)
            head.append(helper.make_node("Cast", [v.name], [new], to=TensorProto.FLOAT, name=new + "_cast"))
    for v in g.output:
        if v.type.tensor_type.elem_type == TensorProto.FLOAT16:
            new = v.name + "_float32"
            for n in g.node:
                n.output[:] = [new if o == v.name else o for o in n.output]
            _rename_uses(g, v.name, new)
            tail.append(helper.make_node("Cast", [new], [v.name], to=TensorProto.FLOAT16, name=v.name + "_cast16"))
    if head or tail:
        nodes = [*head, *g.node, *tail]
        g.ClearField("node")
        g.node.extend(nodes)
    return count


def _rename_uses(graph: Any, old: str, new: str) -> None:
    """Point every use of ``old`` (in this graph and in subgraph bodies) at ``new``."""
    for n in graph.node:
        n.input[:] = [new if i == old else i for i in n.input]
        for g in _subgraphs(n):
            if not any(v.name == old for v in g.input):  # a body input of the same name shadows the outer one
                _rename_uses(g, old, new)


def topological_sort(model: Any) -> None:
    """Sort the top graph's nodes so that every input is written before it is read, in place (case R11).

    ONNX Runtime 1.32.0's float16 converter (``convert_float_to_float16`` with ``keep_io_types``)
    appends the Casts it inserts after the graph inputs at the end of the node list: ONNX Runtime
    loads that, but ``onnx.checker`` rejects it. Uses ONNX Runtime's own
    ``OnnxModel.graph_topological_sort`` (top graph only, as it is).
    """
    from onnxruntime.transformers.onnx_model import OnnxModel

    OnnxModel.graph_topological_sort(model.graph)

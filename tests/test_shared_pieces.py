"""The shared pieces: the ONNX graph helper and the exclusion scope, on tiny hand-built models."""

from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from compressor import onnx_graph
from compressor.errors import UsageError
from compressor.scope import ExclusionScope, match_globs, require_op_types


def _init(name: str, arr: np.ndarray) -> TensorProto:
    return numpy_helper.from_array(arr, name)


def _model() -> onnx.ModelProto:
    """ids -> Gather(table) -> MatMul(w) -> Gemm(g_w, g_b) -> Mul(y, y) -> Relu -> out; x -> Conv(k) -> conv_out."""
    rng = np.random.default_rng(0)
    inits = [
        _init("table", rng.standard_normal((10, 4)).astype(np.float32)),
        _init("w", rng.standard_normal((4, 4)).astype(np.float32)),
        _init("g_w", rng.standard_normal((3, 4)).astype(np.float32)),
        _init("g_b", np.zeros(3, np.float32)),
        _init("k", rng.standard_normal((2, 1, 3, 3)).astype(np.float32)),
        _init("shape", np.array([1, 3], np.int64)),
    ]
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"], name="embed"),
        helper.make_node("MatMul", ["emb", "w"], ["h"], name="layer.0.mm"),
        helper.make_node("Gemm", ["h", "g_w", "g_b"], ["g"], name="layer.1.gemm", transB=1),
        helper.make_node("Mul", ["g", "g"], ["sq"], name="layer.1.sq"),
        helper.make_node("Relu", ["sq"], ["out"], name=""),
        helper.make_node("Conv", ["x", "k"], ["conv_out"], name="conv"),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, [1]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 5, 5])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3]),
         helper.make_tensor_value_info("conv_out", TensorProto.FLOAT, ["batch", 2, 3, 3])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


# ------------------------------------------------------------------------------------------ onnx_graph


def test_producers_consumers_uses_on_model_and_graph():
    model = _model()
    for m in (model, model.graph):
        prod = onnx_graph.producers(m)
        assert {t: n.name for t, n in prod.items()} == {
            "emb": "embed", "h": "layer.0.mm", "g": "layer.1.gemm", "sq": "layer.1.sq", "out": "", "conv_out": "conv"}
        cons = onnx_graph.consumers(m)
        assert {t: [n.op_type for n in ns] for t, ns in cons.items()} == {
            "table": ["Gather"], "ids": ["Gather"], "emb": ["MatMul"], "w": ["MatMul"], "h": ["Gemm"], "g_w": ["Gemm"],
            "g_b": ["Gemm"], "g": ["Mul", "Mul"], "sq": ["Relu"], "x": ["Conv"], "k": ["Conv"]}
        uses = onnx_graph.input_uses(m)
        assert [(n.op_type, i) for n, i in uses["g"]] == [("Mul", 0), ("Mul", 1)]
        assert [(n.op_type, i) for n, i in uses["table"]] == [("Gather", 0)]
        counts = onnx_graph.use_counts(m)
        assert counts["g"] == 2 and counts["w"] == 1 and counts["out"] == 0 and "shape" not in counts


def test_initializers_are_the_protos_themselves():
    model = _model()
    inits = onnx_graph.initializers(model)
    assert list(inits) == ["table", "w", "g_w", "g_b", "k", "shape"]
    inits["w"].CopyFrom(_init("w", np.ones((4, 4), np.float32)))
    assert numpy_helper.to_array(model.graph.initializer[1]).sum() == 16.0


def test_weight_input_per_op_type_matches_the_onnx_schemas():
    # the named input of each standard op's schema is its weight; com.microsoft MatMulNBits is (A, B, ...)
    expected = {"Conv": "W", "ConvTranspose": "W", "Gemm": "B", "MatMul": "B", "ConvInteger": "w",
                "MatMulInteger": "B", "QLinearConv": "w", "QLinearMatMul": "b", "Gather": "data"}
    for op, idx in onnx_graph.WEIGHT_INPUT.items():
        if op == "MatMulNBits":
            assert idx == 1
            continue
        assert onnx.defs.get_schema(op).inputs[idx].name == expected[op], op
    assert set(onnx_graph.WEIGHT_INPUT) == {*expected, "MatMulNBits"}
    assert onnx_graph.DENSE_WEIGHT_OPS == ("Conv", "ConvTranspose", "Gemm", "MatMul")
    assert set(onnx_graph.FLOAT_WEIGHT_OPS) == {"Conv", "ConvTranspose", "Gemm", "MatMul", "Gather"}
    with pytest.raises(TypeError):
        onnx_graph.WEIGHT_INPUT["LSTM"] = 1  # read-only


def test_weight_input_of_nodes():
    model = _model()
    got = {n.name or n.op_type: onnx_graph.weight_input(n) for n in model.graph.node}
    assert got == {"embed": "table", "layer.0.mm": "w", "layer.1.gemm": "g_w", "layer.1.sq": None, "Relu": None,
                   "conv": "k"}
    qconv = helper.make_node("QLinearConv", ["x", "xs", "xz", "wq", "ws", "wz", "ys", "yz"], ["y"])
    assert onnx_graph.weight_input(qconv) == "wq"
    assert onnx_graph.weight_input(helper.make_node("MatMul", ["a"], ["y"])) is None  # too few inputs


def test_elem_types_agree_with_onnx():
    for name, code in onnx_graph.ELEM_TYPES.items():
        assert helper.tensor_dtype_to_np_dtype(code).name == name
        assert onnx_graph.dtype_name(code) == name
    assert onnx_graph.ELEM_TYPES["float32"] == TensorProto.FLOAT and onnx_graph.ELEM_TYPES["int4"] == TensorProto.INT4
    assert onnx_graph.FLOAT_ELEM_TYPES == {TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE}
    assert onnx_graph.dtype_name(TensorProto.UNDEFINED) == "float32"
    assert onnx_graph.dtype_name(0, undefined="int64") == "int64"
    assert onnx_graph.np_dtype(TensorProto.FLOAT16) == np.float16
    assert onnx_graph.elem_type("int64") == TensorProto.INT64
    assert onnx_graph.elem_type(np.float16) == TensorProto.FLOAT16
    assert onnx_graph.elem_type(np.dtype("bool")) == TensorProto.BOOL
    with pytest.raises(UsageError, match="dtype 'float128' has no ONNX element type"):
        onnx_graph.elem_type("float128")
    with pytest.raises(KeyError):
        onnx_graph.np_dtype(999)
    from compressor.artifact import DTYPES

    assert set(DTYPES) <= set(onnx_graph.ELEM_TYPES)  # every --input-shape dtype maps to an ONNX type


def test_users_of_the_helper_read_the_tiny_graph():
    from compressor.artifact import weights_bytes
    from compressor.loaders.onnx import onnx_io_spec
    from compressor.onnx_stats import graph_stats

    model = _model()
    spec = onnx_io_spec(model)
    assert [(t.name, t.dtype, t.shape) for t in spec.inputs] == [("ids", "int64", (1,)), ("x", "float32", (1, 1, 5, 5))]
    assert [(t.name, t.dtype, t.shape) for t in spec.outputs] == [("out", "float32", (1, 3)),
                                                                 ("conv_out", "float32", ("batch", 2, 3, 3))]
    assert weights_bytes(model) == (40 + 16 + 12 + 3 + 18) * 4 + 2 * 8
    stats = graph_stats(model)
    assert stats["parameters"] == 40 + 16 + 12 + 3 + 18  # the int64 shape constant is not a parameter
    assert stats["op_types"] == {"Conv": 1, "Gather": 1, "Gemm": 1, "MatMul": 1, "Mul": 1, "Relu": 1}
    inits = onnx_graph.initializers(model)
    w = numpy_helper.to_array(inits["w"]).copy()
    w[:2] = 0  # 8 of the 40 + 16 + 12 + 18 weights (the Gather's embedding table counts too, case R14)
    inits["w"].CopyFrom(_init("w", w))
    assert graph_stats(model)["sparsity"] == pytest.approx(8 / 86)


def test_quantize_helpers_read_the_tiny_graph(tmp_path):
    from compressor.passes import quantize as q

    model = _model()
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    assert q._non_2d_matmuls(path) == []
    assert q._tied_gathers(path) == {}
    tied = _model()  # the Gemm reads the embedding table too: a tied output layer
    tied.graph.node[2].input[1] = "table"
    onnx.save(tied, str(path))
    assert q._tied_gathers(path) == {"embed": "table"}
    # the MatMul's weight through a DequantizeLinear counts as quantized; the Gemm's float weight does not
    qm = _model()
    qm.graph.initializer.extend([_init("w_q", np.zeros((4, 4), np.int8)), _init("w_s", np.array(1.0, np.float32))])
    qm.graph.node.insert(0, helper.make_node("DequantizeLinear", ["w_q", "w_s"], ["w_dq"], name="dq"))
    qm.graph.node[2].input[1] = "w_dq"
    summary = q._node_summary(_model(), qm)
    lists = {k: summary[k] for k in ("quantized_nodes", "unquantized_nodes")}
    assert lists == {"quantized_nodes": {"MatMul": 1}, "unquantized_nodes": {"Conv": 1, "Gather": 1, "Gemm": 1}}
    assert [(w["name"], w["stored_as"], w["quantized"]) for w in summary["weight_nodes"]] == [
        ("embed", "float32", False), ("layer.0.mm", "int8", True), ("layer.1.gemm", "float32", False),
        ("conv", "float32", False)]


def test_unstructured_onnx_prunes_float_dense_weights_only(tmp_path):
    from compressor.artifact import ModelArtifact, ModelFormat
    from compressor.passes import prune
    from compressor.passes.configs import PruneConfig

    model = _model()
    model.graph.initializer.append(_init("w16", np.ones((4, 4), np.int32)))
    model.graph.node.append(helper.make_node("MatMul", ["h", "w16"], ["int_out"], name="int_mm"))
    art = ModelArtifact(tmp_path / "in.onnx", ModelFormat.ONNX, loaded=model)
    ctx = SimpleNamespace(workdir=tmp_path)
    out = prune.run_prune(art, PruneConfig(method="unstructured", ratio=0.5), ctx)
    # the Gather's embedding table is a weight matrix too (case R14); the int32 weight is not pruned
    assert out.details["pruned_tensors"] == ["table", "w", "g_w", "k"]
    assert out.artifact.format is ModelFormat.ONNX and out.artifact.path.parent == tmp_path
    result = onnx_graph.initializers(onnx.load(str(out.artifact.path)))
    zeros = sum(int((numpy_helper.to_array(result[n]) == 0).sum()) for n in ("table", "w", "g_w", "k"))
    assert zeros == 43  # half of 40 + 16 + 12 + 18 weights, by global magnitude
    assert out.details["achieved_sparsity"] == pytest.approx(43 / 86)
    assert (numpy_helper.to_array(result["w16"]) == 1).all()


# --------------------------------------------------------------------------------------------- scope


def test_scope_matches_onnx_node_names_in_pattern_order():
    model = _model()
    assert ExclusionScope(("layer.1.*", "layer.*", "embed")).onnx_nodes(model) == [
        "layer.1.gemm", "layer.1.sq", "layer.0.mm", "embed"]
    assert ExclusionScope(("conv",), op_types=("MatMul", "Conv")).onnx_nodes(model) == ["conv", "layer.0.mm"]
    assert ExclusionScope().onnx_nodes(model) == [] and not ExclusionScope()
    assert ExclusionScope(op_types=("Relu",)).onnx_nodes(model) == []  # the only Relu has no name
    assert ExclusionScope(("LAYER.*",), validate=False).onnx_nodes(model) == []  # case-sensitive


def test_scope_errors_name_the_flag_the_pattern_and_real_names():
    model = _model()
    with pytest.raises(UsageError) as e:
        ExclusionScope(("nope*",)).onnx_nodes(model)
    assert str(e.value) == ("--exclude 'nope*' matches no node; node names look like: "
                            "embed, layer.0.mm, layer.1.gemm, layer.1.sq, conv")
    with pytest.raises(UsageError) as e:
        ExclusionScope(op_types=("Softmax", "Gemm", "LSTM")).onnx_nodes(model)
    assert str(e.value) == "excluded op types Softmax, LSTM not in the graph; it has Conv, Gather, Gemm, MatMul, Mul, Relu"
    with pytest.raises(UsageError) as e:
        require_op_types(("Conv", "Attention"), ["MatMul", "Conv"])
    assert str(e.value) == "--op-types Attention not in the graph; it has Conv, MatMul"
    require_op_types((), [])


def test_scope_config_is_frozen_validated_and_round_trips_json():
    scope = ExclusionScope(["a.*", "b"], op_types=["Gather"])  # JSON gives lists
    assert scope.patterns == ("a.*", "b") and scope.op_types == ("Gather",)
    assert ExclusionScope(**json.loads(json.dumps(dataclasses.asdict(scope)))) == scope
    with pytest.raises(dataclasses.FrozenInstanceError):
        scope.patterns = ()
    with pytest.raises(UsageError, match="--exclude has an empty or non-text entry ''"):
        ExclusionScope(("a", ""))
    with pytest.raises(UsageError, match="--exclude takes a list of strings, got the string 'a.b'"):
        ExclusionScope("a.b")
    with pytest.raises(UsageError, match="--skip-ops has an empty or non-text entry 3"):
        ExclusionScope(op_types=(3,), op_types_flag="--skip-ops")


class _Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3)
        self.fc = torch.nn.Linear(4, 2)


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Conv2d(1, 1, 1)
        self.block = _Block()
        self.head = torch.nn.Linear(2, 2)


def test_scope_matches_torch_module_names():
    net = _Net()
    named = dict(net.named_modules())
    assert ExclusionScope(("block.*", "head")).torch_modules(named) == [net.block.conv, net.block.fc, net.head]
    assert ExclusionScope(("*",)).torch_modules(named) == [m for n, m in named.items() if n]  # never the root
    assert ExclusionScope(op_types=("Linear",)).torch_modules(named) == [net.block.fc, net.head]
    with pytest.raises(UsageError) as e:
        ExclusionScope(("blocks.*",)).torch_modules(named)
    assert str(e.value) == ("--exclude 'blocks.*' matches no layer; layer names look like: "
                            "stem, block, block.conv, block.fc, head")
    with pytest.raises(UsageError) as e:
        ExclusionScope(op_types=("Conv1d",)).torch_modules(named)
    assert str(e.value) == "excluded op types Conv1d not in the model; it has Conv2d, Linear, _Block, _Net"
    with pytest.raises(UsageError, match="^layer ratio 'x' matches no layer"):
        match_globs(("x",), list(named), flag="layer ratio", kind="layer")
    assert match_globs(("x", "head"), list(named), flag="layer ratio", kind="layer", validate=False) == ["head"]

"""Graph rewrites keep results exactly where their precondition holds, and do nothing elsewhere."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from compressor.passes.rewrites import (
    float_graph_outputs,
    fuse_gelu,
    reduce_mean_to_global_average_pool,
    remove_softmax_nan_guard,
    smooth_activations,
)


def _run(model, feeds):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)[0]


def _attention(fill: float):
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "wk"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array(fill, np.float32), "fill")]
    nodes = [helper.make_node("MatMul", ["x", "wk"], ["k"]),
             helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["x", "kt"], ["scores"]),
             helper.make_node("Where", ["mask", "zero", "fill"], ["bias"]),
             helper.make_node("Add", ["scores", "bias"], ["masked"]),
             helper.make_node("Softmax", ["masked"], ["p"], axis=-1),
             helper.make_node("IsNaN", ["p"], ["nan"]),
             helper.make_node("Where", ["nan", "zero", "p"], ["y"])]
    graph = helper.make_graph(nodes, "att", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 8]),
                                             helper.make_tensor_value_info("mask", TensorProto.BOOL, [2, 1, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, 5])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_nan_guard_removed_only_with_finite_mask():
    rng = np.random.default_rng(1)
    feeds = {"x": rng.standard_normal((2, 5, 8)).astype(np.float32), "mask": rng.random((2, 1, 5)) > 0.3}
    feeds["mask"][:, :, 0] = True
    model = _attention(float(np.finfo(np.float32).min))
    ref = _run(model, feeds)
    assert remove_softmax_nan_guard(model) == 1
    assert {n.op_type for n in model.graph.node}.isdisjoint({"IsNaN"})
    np.testing.assert_array_equal(_run(model, feeds), ref)
    unsafe = _attention(float("-inf"))  # an all-masked row would give NaN: the guard is needed
    assert remove_softmax_nan_guard(unsafe) == 0 and any(n.op_type == "IsNaN" for n in unsafe.graph.node)


def test_gelu_fused_exactly():
    nodes = [helper.make_node("Div", ["x", "sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
             helper.make_node("Add", ["e", "one"], ["a"]), helper.make_node("Mul", ["half", "a"], ["m"]),
             helper.make_node("Mul", ["x", "m"], ["y"])]
    inits = [numpy_helper.from_array(np.array(np.sqrt(2), np.float32), "sqrt2"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one"),
             numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = {"x": np.random.default_rng(0).standard_normal((4, 16)).astype(np.float32) * 3}
    ref = _run(model, x)
    assert fuse_gelu(model) == 1
    assert [n.op_type for n in model.graph.node] == ["Gelu"]
    np.testing.assert_allclose(_run(model, x), ref, atol=1e-6)


def test_smoothquant_keeps_fp32_results():
    rng = np.random.default_rng(0)
    w1 = rng.standard_normal((16, 32)).astype(np.float32)
    w2 = rng.standard_normal((16, 8)).astype(np.float32)
    scale = np.ones(16, np.float32)
    scale[3] = 50.0  # an outlier channel
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(scale, "s")]
    nodes = [helper.make_node("Mul", ["x", "s"], ["h"]), helper.make_node("MatMul", ["h", "w1"], ["y1"]),
             helper.make_node("MatMul", ["h", "w2"], ["y2"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 16])],
                              [helper.make_tensor_value_info("y1", TensorProto.FLOAT, ["n", 32]),
                               helper.make_tensor_value_info("y2", TensorProto.FLOAT, ["n", 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    calib = [{"x": rng.standard_normal((32, 16)).astype(np.float32)}]
    test = {"x": rng.standard_normal((8, 16)).astype(np.float32)}
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, test)
    assert smooth_activations(model, calib, alpha=0.7) == 1
    onnx.checker.check_model(model)
    got = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, test)
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    inv = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name.endswith("_smooth_inv_scale")))
    assert inv[3] < inv[[0, 1, 2]].min()  # the outlier channel is scaled down the most


def _pool_model(axes, keepdims=1, rank=4):
    shape = [2, 3, 5, 4][:rank]
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("ReduceMean", ["r", "axes"], ["y"], keepdims=keepdims)]
    graph = helper.make_graph(nodes, "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(np.array(axes, np.int64), "axes")])
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))


def test_reduce_mean_over_spatial_axes_becomes_global_average_pool():
    x = np.random.default_rng(3).standard_normal((2, 3, 5, 4)).astype(np.float32)
    for axes in ([2, 3], [-1, -2]):
        model = _pool_model(axes)
        expected = _run(model, {"x": x})
        assert reduce_mean_to_global_average_pool(model) == 1
        assert [n.op_type for n in model.graph.node] == ["Relu", "GlobalAveragePool"]
        np.testing.assert_allclose(_run(model, {"x": x}), expected, rtol=1e-6, atol=1e-6)
    # not over every spatial axis, or dropping the axes: a different result shape, so left alone
    for model in (_pool_model([3]), _pool_model([2, 3], keepdims=0), _pool_model([1, 2, 3])):
        assert reduce_mean_to_global_average_pool(model) == 0
        assert "ReduceMean" in [n.op_type for n in model.graph.node]


def _qdq_tail(extra_user: bool = False):
    """x -> DQ(w) Gemm -> Q -> DQ -> y (and optionally the Gemm output also feeds a second graph output)."""
    rng = np.random.default_rng(4)
    inits = [numpy_helper.from_array(rng.integers(-127, 127, (4, 6), dtype=np.int8), "w_q"),
             numpy_helper.from_array(np.array(0.02, np.float32), "w_s"),
             numpy_helper.from_array(np.array(0, np.int8), "w_z"),
             numpy_helper.from_array(np.array(0.1, np.float32), "y_s"),
             numpy_helper.from_array(np.array(3, np.int8), "y_z")]
    nodes = [helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w"]),
             helper.make_node("Gemm", ["x", "w"], ["g"], transB=1),
             helper.make_node("QuantizeLinear", ["g", "y_s", "y_z"], ["g_q"]),
             helper.make_node("DequantizeLinear", ["g_q", "y_s", "y_z"], ["y"])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])]
    if extra_user:
        nodes.append(helper.make_node("Relu", ["g"], ["z"]))
        outputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 4]))
    graph = helper.make_graph(nodes, "tail", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6])],
                              outputs, inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_float_graph_outputs_drops_the_final_qdq_pair():
    x = np.random.default_rng(5).standard_normal((2, 6)).astype(np.float32)
    model = _qdq_tail()
    quantized_logits = _run(model, {"x": x})
    assert float_graph_outputs(model) == 1
    assert [n.op_type for n in model.graph.node] == ["DequantizeLinear", "Gemm"]
    assert model.graph.node[1].output[0] == "y"
    assert {i.name for i in model.graph.initializer} == {"w_q", "w_s", "w_z"}  # the pair's scale/zero point go too
    logits = _run(model, {"x": x})
    assert not np.array_equal(logits, quantized_logits)  # no longer rounded to the 8-bit output grid
    np.testing.assert_allclose(logits, quantized_logits, atol=0.1 / 2 + 1e-6)  # half a step of the output scale
    # a Gemm output that something else also reads keeps its pair
    shared = _qdq_tail(extra_user=True)
    assert float_graph_outputs(shared) == 0 and len(shared.graph.node) == 5

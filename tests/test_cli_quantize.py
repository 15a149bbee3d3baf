"""compressor quantize: schemes, zero points, accuracy, ONNX and PyTorch inputs."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from tests.conftest import FAST_BENCH, run_cli


def _weight_zero_points(path):
    """(weight dtype, zero-point arrays) of the MatMulInteger/ConvInteger weights in a dynamic-quantized model."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    dtypes, zps = set(), []
    for node in model.graph.node:
        if node.op_type in ("MatMulInteger", "ConvInteger"):
            dtypes.add(inits[node.input[1]].dtype.name)
            zps.append(inits[node.input[3]])
    return dtypes, zps


def _accuracy(path, eval_npz):
    d = np.load(eval_npz)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = sess.run(None, {sess.get_inputs()[0].name: d["x"]})[0]
    return float((logits.argmax(1) == d["labels"]).mean())


@pytest.mark.parametrize("scheme", ["asymmetric", "symmetric"])
def test_quantize_cnn_scheme(samples, tmp_path, scheme):
    out = tmp_path / f"cnn.{scheme}.onnx"
    base = tmp_path / "cnn.onnx"
    assert run_cli("export", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "-o", base).code == 0
    # dynamic int8 keeps convolutions in float unless --op-types names them (case R21): name them here
    r = run_cli("quantize", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "--scheme", scheme, "--op-types",
                "Conv,Gemm", "-o", out, "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    rep = r.report
    q = rep["quantization"]
    assert q["weight_scheme"] == scheme and q["chosen_by"] == "user"
    assert q["weight_type"] == ("uint8" if scheme == "asymmetric" else "int8")
    assert q["activation_type"] == "uint8" and q["per_channel"] is True
    assert rep["export"]["exporter"] in ("dynamo", "torchscript")
    assert rep["size_ratio"] < 0.5
    # the zero points promised by the scheme are the ones stored
    dtypes, zps = _weight_zero_points(out)
    assert zps, "no integer op in the quantized model"
    if scheme == "symmetric":
        assert dtypes == {"int8"} and all(np.all(z == 0) for z in zps)
    else:
        assert dtypes == {"uint8"} and any(np.any(z != 0) for z in zps)
    # per-channel: one zero point per output channel of each Conv
    assert any(z.size > 1 for z in zps)
    # accuracy on the held-out digits within 1 point of fp32
    eval_npz = samples / "digits_eval.npz"
    assert abs(_accuracy(base, eval_npz) - _accuracy(out, eval_npz)) <= 0.01
    # convolutions under dynamic quantization: the tool says static suits CNNs (case Q6)
    assert any("static" in w for w in rep["warnings"])


def test_quantize_default_names_scheme_and_reports_accuracy(samples, tmp_path):
    r = run_cli("quantize", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "--eval-data",
                samples / "digits_eval.npz", "-o", tmp_path / "q.onnx", "--per-tensor", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    rep = r.report
    q = rep["quantization"]
    assert q["chosen_by"] == "default" and q["weight_scheme"] == "symmetric" and q["per_channel"] is False
    assert "reason" in q and q["cpu_isa"]
    assert rep["accuracy"]["baseline"] >= 0.95
    assert rep["accuracy"]["drop_points"] <= 1.0
    assert rep["benchmark"]["cpu"]["onnxruntime"] == ort.__version__


def test_quantize_onnx_input_with_dynamic_axes_needs_shape(tmp_path):
    # MatMul model with a dynamic second axis: without --input-shape or data the tool says which flag to pass
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", "seq", 16])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", "seq", 32])
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 32)).astype(np.float32), "w")
    graph = onnx.helper.make_graph([onnx.helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [w])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    path = tmp_path / "mm.onnx"
    onnx.save(model, str(path))
    r = run_cli("quantize", path)
    assert r.code == 2 and "--input-shape" in r.stderr and len(r.error_lines) == 1
    r = run_cli("quantize", path, "--input-shape", "x:2x7x16", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    assert r.report["result"]["op_types"].get("MatMulInteger") == 1
    assert r.report["fidelity"]["cosine_mean"] > 0.99
    assert (tmp_path / "mm.quantized.onnx").exists()


def test_quantize_model_without_weights_fails_clearly(tmp_path):
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 4])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "g", [x], [y])
    path = tmp_path / "relu.onnx"
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), str(path))
    r = run_cli("quantize", path)  # refused before any work, as bad input (case R21)
    assert r.code == 2 and "would quantize no node" in r.stderr and len(r.error_lines) == 1
    assert not (tmp_path / "relu.quantized.onnx").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["relu.onnx"]

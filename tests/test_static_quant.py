"""Static QDQ quantization with calibration (ONNX Runtime quantize_static)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import numpy_helper

from tests.conftest import FAST_BENCH, run_cli


def _accuracy(path, eval_npz):
    d = np.load(eval_npz)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return float((sess.run(None, {sess.get_inputs()[0].name: d["x"]})[0].argmax(1) == d["labels"]).mean())


def _weight_qparams(path):
    """(zero-point arrays, weight dtypes) of DequantizeLinear nodes fed by an initializer (the weights)."""
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    zps, dtypes = [], set()
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and inits[n.input[0]].ndim >= 2:
            dtypes.add(inits[n.input[0]].dtype.name)
            zps.append(inits[n.input[2]])
    return zps, dtypes


def test_static_int8_cnn_accuracy(samples, tmp_path):
    base, out = tmp_path / "cnn.onnx", tmp_path / "cnn.static.onnx"
    assert run_cli("export", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "-o", base).code == 0
    # the QDQ structure of ONNX Runtime's own default format (S8S8); the default format is measured
    # (tests/test_kernel_formats.py)
    r = run_cli("quantize", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "--mode", "static",
                "--calibration-data", samples / "digits_calib.npz", "--eval-data", samples / "digits_eval.npz",
                "--format", "qdq-s8s8", "-o", out, "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    q = r.report["quantization"]
    assert q["mode"] == "static" and q["format"] == "QDQ" and q["kernel_format"] == "qdq-s8s8"
    assert (q["weight_type"], q["activation_type"]) == ("int8", "int8")
    assert q["calibration_samples"] == 256
    assert abs(_accuracy(base, samples / "digits_eval.npz") - _accuracy(out, samples / "digits_eval.npz")) <= 0.005
    assert r.report["accuracy"]["drop_points"] <= 0.5
    zps, dtypes = _weight_qparams(out)
    assert dtypes == {"int8"} and all(np.all(z == 0) for z in zps)
    # activations carry a zero point (ONNX Runtime's default), so the Relus fold into the range and go
    assert q["activation_scheme"] == "asymmetric"
    model = onnx.load(str(out))
    ops = [n.op_type for n in model.graph.node]
    assert "Relu" not in ops and "ReduceMean" not in ops and "GlobalAveragePool" in ops
    assert q["rewrites"] == {"global_average_pool": 1, "float_output": 1}
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    act_zps = [inits[n.input[2]] for n in model.graph.node
               if n.op_type == "QuantizeLinear" and n.input[0] not in inits]
    assert act_zps and any(np.any(z != 0) for z in act_zps)
    # the logits come straight from the last Gemm (float output), not through Q -> DQ
    producer = {o: n for n in model.graph.node for o in n.output}
    assert producer[model.graph.output[0].name].op_type == "Gemm"
    assert not any("symmetric activations keep" in w for w in r.report["warnings"])


def test_symmetric_activations_warn_about_kept_relus(samples, tmp_path):
    out = tmp_path / "sym.onnx"
    r = run_cli("quantize", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "--mode", "static",
                "--scheme", "symmetric", "--calibration-data", samples / "digits_calib.npz",
                "--calibration-samples", "64", "-o", out, "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    assert r.report["quantization"]["activation_scheme"] == "symmetric"
    assert [n.op_type for n in onnx.load(str(out)).graph.node].count("Relu") == 4
    assert any("symmetric activations keep 4 Relu/Clip" in w for w in r.report["warnings"])


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_static_calibration_methods_and_asymmetric(samples, tmp_path, method):
    out = tmp_path / "q.onnx"
    r = run_cli("quantize", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "--scheme", "asymmetric",
                "--calibration-data", samples / "digits_calib.npz", "--calibration-method", method,
                "--calibration-samples", "64", "-o", out, "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    q = r.report["quantization"]
    assert q["calibration_method"] == method and q["calibration_samples"] == 64
    assert (q["weight_type"], q["activation_type"]) == ("uint8", "uint8")
    zps, dtypes = _weight_qparams(out)
    assert dtypes == {"uint8"} and any(np.any(z != 0) for z in zps)
    assert r.report["fidelity"]["top1_agreement"] >= 0.98


def test_static_without_data_says_how(samples, tmp_path):
    r = run_cli("quantize", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "--mode", "static", "-o", tmp_path / "q.onnx")
    assert r.code == 2 and "--calibration-data" in r.stderr and len(r.error_lines) == 1
    assert not (tmp_path / "q.onnx").exists()
    r = run_cli("quantize", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "--mode", "static",
                "--calibration-data", "random", "-o", tmp_path / "q.onnx", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    assert any("random" in w for w in r.report["warnings"])


def test_dynamic_refuses_int8_activations(samples, tmp_path):
    r = run_cli("quantize", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "--mode", "dynamic",
                "--activation-type", "int8", "-o", tmp_path / "q.onnx")
    assert r.code == 2 and "uint8" in r.stderr and len(r.error_lines) == 1


def test_q1_conv_transpose_per_channel_axis(tmp_path):
    """Case Q1: ConvTranspose2d 3->64 per-channel static QDQ: 64 scales on weight axis 1, SQNR > 30 dB."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.ConvTranspose2d(3, 64, 3, padding=1)).eval()
    src = tmp_path / "ct.pt"
    torch.save(model, src)
    np.savez(tmp_path / "calib.npz", x=np.random.default_rng(0).standard_normal((32, 3, 32, 32)).astype(np.float32))
    out = tmp_path / "ct.onnx"
    r = run_cli("quantize", src, "--mode", "static", "--calibration-data", tmp_path / "calib.npz", "-o", out, "--json",
                *FAST_BENCH)
    assert r.code == 0, r.stderr
    m = onnx.load(str(out))
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    deq = [n for n in m.graph.node if n.op_type == "DequantizeLinear" and inits.get(n.input[0]) is not None
           and inits[n.input[0]].ndim == 4]
    assert len(deq) == 1
    scale = inits[deq[0].input[1]]
    axis = next(a.i for a in deq[0].attribute if a.name == "axis")
    assert scale.shape == (64,) and axis == 1 and inits[deq[0].input[0]].shape[1] == 64
    assert r.report["fidelity"]["sqnr_db"] > 30


def _activation_scales(path):
    model = onnx.load(str(path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    return {n.input[0]: float(inits[n.input[1]]) for n in model.graph.node
            if n.op_type == "QuantizeLinear" and n.input[0] not in inits}


def test_entropy_calibration_differs_from_minmax(samples, tmp_path):
    # ONNX Runtime's quantize_static runs entropy with as many histogram bins as quantized bins (128/128), which
    # leaves one candidate threshold: the full range, i.e. minmax. compressor calibrates with 2048/255 bins.
    scales = {}
    for method in ("minmax", "entropy"):
        r = run_cli("quantize", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "--mode", "static",
                    "--calibration-data", samples / "digits_calib.npz", "--calibration-method", method,
                    "--calibration-samples", "64", "--format", "qdq-u8s8", "-o", tmp_path / f"{method}.onnx",
                    "--json", *FAST_BENCH)
        assert r.code == 0, r.stderr
        assert "Collecting tensor data" not in r.stderr and "histogram" not in r.stderr
        scales[method] = _activation_scales(tmp_path / f"{method}.onnx")
    assert scales["minmax"].keys() == scales["entropy"].keys()
    # KL calibration clips the long tail of the post-ReLU activations: smaller ranges than min/max
    clipped = [k for k in scales["minmax"] if scales["entropy"][k] < 0.9 * scales["minmax"][k]]
    assert clipped, (scales["minmax"], scales["entropy"])
    assert all(scales["entropy"][k] <= scales["minmax"][k] * 1.0001 for k in scales["minmax"])


def test_s8u8_is_refused_up_front(samples, tmp_path):
    r = run_cli("quantize", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "--mode", "static",
                "--calibration-data", samples / "digits_calib.npz", "--weight-type", "uint8", "-o", tmp_path / "q.onnx")
    assert r.code == 2 and "S8U8" in r.stderr and "--activation-type uint8" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "q.onnx").exists()

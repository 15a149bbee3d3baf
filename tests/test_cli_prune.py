"""compressor prune on the sample models (real torch, Torch-Pruning, ONNX Runtime)."""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.conftest import FAST_BENCH, run_cli


def _md5(p):
    return hashlib.md5(p.read_bytes()).hexdigest()


def test_structured_prune_cnn_pickle(samples, tmp_path):
    src = samples / "digits_cnn.pt"
    before = _md5(src)
    out = tmp_path / "cnn.pruned.onnx"
    r = run_cli("prune", src, "--ratio", "0.5", "--input-shape", "1,1,8,8", "-o", out, "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    rep = r.report
    assert rep["schema_version"] == "1.3" and rep["command"].startswith("compressor prune")
    assert rep["result"]["parameters"] < rep["baseline"]["parameters"]
    assert rep["size_ratio"] < 0.6
    assert rep["speedup"] > 0
    for key in ("max_abs_diff", "cosine_mean", "top1_agreement"):
        assert key in rep["fidelity"]
    for side in ("baseline", "result"):
        for key in ("path", "size_bytes", "parameters", "sparsity"):
            assert key in rep[side]
        assert set(rep[side]["latency_ms"]) >= {"p50", "p90", "mean"}
    assert rep["result"]["path"] == str(out) and out.exists()
    assert rep["pruning"]["method"] == "structured"
    # the final classifier keeps its 10 outputs; hidden layers lose half their channels
    layers = {la["name"]: la for la in rep["pruning"]["layers"]}
    last = rep["pruning"]["ignored_layers"][0]
    assert layers[last]["channels_after"] == 10
    assert all(la["channels_after"] == la["channels_before"] // 2 for n, la in layers.items() if n != last)
    # the output really is an ONNX model with a dynamic batch axis
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (1, 3, 8):
        assert sess.run(None, {sess.get_inputs()[0].name: np.zeros((batch, 1, 8, 8), np.float32)})[0].shape == (batch, 10)
    assert _md5(src) == before
    # no scratch files left beside the output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.pruned.onnx"]


def test_structured_prune_resnet_state_dict_residual(samples, tmp_path):
    out = tmp_path / "resnet.onnx"
    r = run_cli("prune", samples / "digits_resnet.pt", "--model-class", "sample_models.digits_nets:DigitsResNet",
                "--ratio", "0.5", "--input-shape", "1,1,8,8", "--eval-data", samples / "digits_eval.npz",
                "-o", out, "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    rep = r.report
    assert rep["input"]["format"] == "state_dict"
    assert rep["result"]["parameters"] < 0.5 * rep["baseline"]["parameters"]
    assert rep["size_ratio"] < 0.6
    assert "speedup" in rep and "fidelity" in rep
    assert rep["fidelity"]["inputs"].endswith("digits_eval.npz") and rep["fidelity"]["samples"] == 450
    assert rep["accuracy"]["baseline"] >= 0.95
    assert 0 <= rep["accuracy"]["result"] <= 1
    # the residual add survived pruning
    assert rep["result"]["op_types"].get("Add", 0) >= 2


def test_unstructured_prune_exported_program(samples, tmp_path):
    out = tmp_path / "mlp.onnx"
    r = run_cli("prune", samples / "digits_mlp.pt2", "--method", "unstructured", "--ratio", "0.5", "-o", out,
                "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    rep = r.report
    assert rep["input"]["format"] == "exported_program"
    assert abs(rep["result"]["sparsity"] - 0.5) <= 0.01
    assert rep["baseline"]["sparsity"] < 0.01
    assert rep["result"]["parameters"] == rep["baseline"]["parameters"]
    assert "no speedup" in rep["pruning"]["note"]
    # no mask Mul nodes in the export (case P4)
    assert "Mul" not in rep["result"]["op_types"]
    weights = [onnx.numpy_helper.to_array(i) for i in onnx.load(str(out)).graph.initializer if len(i.dims) == 2]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.size for w in weights)
    assert abs(zeros - 0.5) <= 0.01


def test_structured_prune_needs_python_classes(samples, tmp_path):
    out = tmp_path / "x.onnx"
    r = run_cli("prune", samples / "digits_mlp.pt2", "--ratio", "0.5", "-o", out)
    assert r.code == 2
    assert len(r.error_lines) == 1
    msg = r.error_lines[0]
    assert "--model-class" in msg and "--method unstructured" in msg
    assert "Traceback" not in r.stderr
    assert not out.exists()


def test_unstructured_prune_onnx_input(tmp_path, samples):
    onnx_path = tmp_path / "cnn.onnx"
    assert run_cli("export", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "-o", onnx_path).code == 0
    r = run_cli("prune", onnx_path, "--method", "unstructured", "--ratio", "0.3", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    assert abs(r.report["result"]["sparsity"] - 0.3) <= 0.01
    assert (tmp_path / "cnn.pruned.onnx").exists()


@pytest.mark.parametrize("ratio", ["1.5", "0", "1", "-0.2"])
def test_ratio_outside_unit_interval(samples, ratio, tmp_path):
    r = run_cli("prune", samples / "digits_cnn.pt", "--ratio", ratio, "--input-shape", "1,1,8,8", "-o", tmp_path / "o.onnx")
    assert r.code == 2
    assert len(r.error_lines) == 1 and "--ratio" in r.stderr
    assert not (tmp_path / "o.onnx").exists()

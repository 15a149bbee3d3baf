"""Pruning: criteria, scope, recovery, transformers heads, and cases P1-P4 from ../shared/cases."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tests import case_models
from tests.conftest import FAST_BENCH, run_cli


def _save(model, path):
    torch.save(model, path)
    return path


def test_resnet_recovery_restores_accuracy(samples, tmp_path):
    out = tmp_path / "r.onnx"
    r = run_cli("prune", samples / "digits_resnet.pt", "--model-class", "sample_models.digits_nets:DigitsResNet",
                "--ratio", "0.5", "--recover", "--calibration-data", samples / "digits_calib.npz",
                "--eval-data", samples / "digits_eval.npz", "-o", out, "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    acc = r.report["accuracy"]
    assert acc["before_recovery"] < acc["after_recovery"]
    assert acc["drop_points"] <= 1.5  # within 1.5 points of the original, from unlabeled data
    assert acc["result"] == pytest.approx(acc["after_recovery"], abs=0.005)  # ONNX agrees with PyTorch
    assert r.report["pruning"]["recovery"]["labels"] is False
    assert r.report["macs_ratio"] <= 0.3 and r.report["result"]["macs"] < r.report["baseline"]["macs"]


@pytest.mark.parametrize("criterion", ["fpgm", "bn-scale", "taylor"])
def test_criteria(samples, tmp_path, criterion):
    r = run_cli("prune", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "--ratio", "0.25", "--criterion", criterion,
                "--calibration-data", samples / "digits_calib.npz", "-o", tmp_path / "p.onnx", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    p = r.report["pruning"]
    assert p["criterion"] == criterion and p["torch_parameters_after"] < p["torch_parameters_before"]


def test_taylor_needs_data(samples, tmp_path):
    r = run_cli("prune", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "--criterion", "taylor", "-o", tmp_path / "p.onnx")
    assert r.code == 2 and "--calibration-data" in r.stderr


def test_scope_global_exclude_round_to_layer_ratios(samples, tmp_path):
    ratios = tmp_path / "ratios.toml"
    ratios.write_text('"0" = 0.25\n')
    r = run_cli("prune", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "--exclude", "3", "--layer-ratios", ratios,
                "--round-to", "4", "--steps", "2", "-o", tmp_path / "p.onnx", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    layers = {la["name"]: la for la in r.report["pruning"]["layers"]}
    assert layers["3"]["channels_after"] == layers["3"]["channels_before"]  # excluded
    assert layers["0"]["channels_after"] == 12  # 16 channels at ratio 0.25
    ignored = set(r.report["pruning"]["ignored_layers"])
    assert all(la["channels_after"] % 4 == 0 for la in layers.values() if la["name"] not in ignored)
    r = run_cli("prune", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "--exclude", "nope*", "-o", tmp_path / "x.onnx")
    assert r.code == 2 and "nope*" in r.stderr
    r = run_cli("prune", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "--global", "--ratio", "0.6",
                "-o", tmp_path / "g.onnx", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    assert r.report["pruning"]["global"] is True
    assert all(la["channels_after"] >= 1 for la in r.report["pruning"]["layers"])  # no layer emptied


def test_resnet18_shape_macs(tmp_path):
    torch.manual_seed(0)
    src = _save(case_models.ResNet18().eval(), tmp_path / "r18.pt")
    r = run_cli("prune", src, "--trust-pickle", "--input-shape", "1,3,224,224", "--ratio", "0.5", "-o", tmp_path / "r18.onnx",
                "--json", "--runs", "10", "--warmup", "1")
    assert r.code == 0, r.stderr
    assert r.report["macs_ratio"] <= 0.3
    assert r.report["result"]["op_types"]["Conv"] == r.report["baseline"]["op_types"]["Conv"]


def test_bert_heads_halved(tmp_path):
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    src = _save(case_models.TinyBert().eval(), tmp_path / "bert.pt")
    calib = tmp_path / "calib.npz"
    rng = np.random.default_rng(0)
    np.savez(calib, input_ids=rng.integers(0, 200, (16, 16)).astype(np.int64), attention_mask=np.ones((16, 16), np.int64))
    out = tmp_path / "bert.onnx"
    r = run_cli("prune", src, "--trust-pickle", "--calibration-data", calib, "--heads", "0.5", "--ratio", "0.25",
                "-o", out, "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    assert r.report["pruning"]["heads"] == [2, 2]  # 4 heads per layer -> 2
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    ids = rng.integers(0, 200, (3, 11)).astype(np.int64)
    y = sess.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})[0]
    assert y.shape == (3, 11, 64)  # hidden width kept, dynamic batch and sequence


def test_p1_one_output_conv(tmp_path):
    torch.manual_seed(0)
    src = _save(case_models.p1_one_output_conv().eval(), tmp_path / "p1.pt")
    out = tmp_path / "p1.onnx"
    r = run_cli("prune", src, "--input-shape", "1,3,224,224", "--ratio", "0.3", "-o", out, "--json", "--runs", "4")
    assert r.code == 0, r.stderr
    layers = {la["name"]: la for la in r.report["pruning"]["layers"]}
    assert layers["6"]["channels_after"] == 1  # the one-output conv keeps its output
    assert layers["3"]["channels_after"] < 64  # its input channels were pruned with the previous layer
    assert r.report["export"]["max_abs_diff"] <= 1e-4  # ONNX Runtime equals the pruned PyTorch model
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert sess.run(None, {sess.get_inputs()[0].name: np.zeros((1, 3, 224, 224), np.float32)})[0].shape == (1, 1, 112, 112)


def test_p2_frozen_model_really_pruned(tmp_path):
    torch.manual_seed(0)
    src = _save(case_models.p2_frozen_cnn().eval(), tmp_path / "p2.pt")
    r = run_cli("prune", src, "--input-shape", "1,3,32,32", "--ratio", "0.5", "-o", tmp_path / "p2.onnx", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    rep = r.report
    assert rep["pruning"]["frozen_input"] is True
    assert rep["result"]["parameters"] < rep["baseline"]["parameters"] and rep["result"]["macs"] < rep["baseline"]["macs"]
    assert {la["name"]: la["channels_after"] for la in rep["pruning"]["layers"]}["0"] == 8


def test_p3_not_called_lossless(tmp_path):
    torch.manual_seed(0)
    src = _save(case_models.p3_mnist_cnn().eval(), tmp_path / "p3.pt")
    r = run_cli("prune", src, "--input-shape", "1,1,28,28", "--ratio", "0.5", "-o", tmp_path / "p3.onnx", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    rep = r.report
    assert rep["pruning"]["lossless"] is False
    assert rep["fidelity"]["max_abs_diff"] > 0 and rep["fidelity"]["cosine_mean"] < 1.0
    assert "original" in rep["fidelity"]["against"]


def test_p4_unstructured_masks_removed(tmp_path):
    torch.manual_seed(0)
    (tmp_path / "p4mod.py").write_text("from tests.case_models import P4MLP\n")
    src = _save(case_models.P4MLP().eval(), tmp_path / "p4.pt")
    saved = tmp_path / "p4.pruned.pt"
    out = tmp_path / "p4.onnx"
    r = run_cli("prune", src, "--trust-pickle", "--input-shape", "1,784", "--method", "unstructured", "--ratio", "0.8",
                "--save-torch", saved, "-o", out, "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    rep = r.report
    assert abs(rep["result"]["sparsity"] - 0.8) <= 0.01
    assert "Mul" not in rep["result"]["op_types"]
    assert "no speedup" in rep["pruning"]["note"]
    loaded = torch.load(saved, weights_only=False)
    sd = loaded.state_dict()
    assert not any(k.endswith(("_orig", "_mask")) for k in sd)
    fresh = case_models.P4MLP()
    fresh.load_state_dict(sd, strict=True)
    zeros = sum(int((v == 0).sum()) for k, v in sd.items() if k.endswith("weight"))
    assert abs(zeros / sum(v.numel() for k, v in sd.items() if k.endswith("weight")) - 0.8) <= 0.01
    json.dumps(rep)


def test_save_torch_exported_program(samples, tmp_path):
    saved = tmp_path / "cnn.pruned.pt2"
    r = run_cli("prune", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "--save-torch", saved,
                "-o", tmp_path / "p.onnx", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    ep = torch.export.load(str(saved))
    assert ep.module()(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    assert r.report["torch_output"]["format"] == "exported_program"
    assert onnx.load(str(tmp_path / "p.onnx")) is not None


def test_max_layer_ratio_caps_uniform_pruning(samples, tmp_path):
    r = run_cli("prune", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "--ratio", "0.5", "--max-layer-ratio", "0.25",
                "-o", tmp_path / "p.onnx", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    p = r.report["pruning"]
    assert p["max_layer_ratio"] == 0.25
    for la in p["layers"]:
        assert la["channels_after"] >= 0.75 * la["channels_before"] - 1, la

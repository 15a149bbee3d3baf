"""Cases R3, R4, R5, R9, R17-R20, R24, R26 of ../shared/cases/README.md (Round 2): fidelity and data checks.

Each test builds a small seeded model (PyTorch in tests/fidelity_models.py, or an ONNX graph here) and
runs the real CLI; expected values are computed independently in the test (ONNX Runtime / PyTorch / numpy).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto as T
from onnx import helper as oh
from onnx import numpy_helper as nh

from tests import fidelity_models as fm
from tests.conftest import FAST_BENCH, run_cli

OPSET = [oh.make_opsetid("", 18)]


def _save_torch(module: torch.nn.Module, path):
    torch.save(module.eval(), path)
    return path


def _save_onnx(graph, path):
    model = oh.make_model(graph, opset_imports=OPSET)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def _run(path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def _valid(report: dict) -> dict:
    """The report passes the shipped JSON schema (the new fields included)."""
    import jsonschema

    from compressor.report import schema

    jsonschema.Draft202012Validator(schema()).validate(report)
    return report


def _no_work_done(r) -> None:
    """The run stopped before any step: no export, pass or benchmark started."""
    assert not r.progress_lines, r.progress_lines
    assert len(r.error_lines) == 1, r.error_lines


# ----------------------------------------------------------------------------- ONNX graphs built here
def _two_output_mlp(path, *, scale_second: np.ndarray | None = None):
    """x [batch, 8] -> MatMul -> y1 [batch, 3]; MatMul -> y2 [batch, 2] (y2 optionally multiplied per sample)."""
    rng = np.random.default_rng(0)
    inits = [nh.from_array(rng.standard_normal((8, 3)).astype(np.float32), "w1"),
             nh.from_array(rng.standard_normal((8, 2)).astype(np.float32), "w2")]
    nodes = [oh.make_node("MatMul", ["x", "w1"], ["y1"])]
    if scale_second is None:
        nodes.append(oh.make_node("MatMul", ["x", "w2"], ["y2"]))
    else:  # y2 * sign of a fixed function of x: flips the second output on the samples it picks
        inits.append(nh.from_array(scale_second.astype(np.float32), "probe"))
        nodes += [oh.make_node("MatMul", ["x", "w2"], ["z2"]), oh.make_node("MatMul", ["x", "probe"], ["p"]),
                  oh.make_node("Sign", ["p"], ["s"]), oh.make_node("Mul", ["z2", "s"], ["y2"])]
    g = oh.make_graph(nodes, "two_outputs", [oh.make_tensor_value_info("x", T.FLOAT, ["batch", 8])],
                      [oh.make_tensor_value_info("y1", T.FLOAT, ["batch", 3]),
                       oh.make_tensor_value_info("y2", T.FLOAT, ["batch", 2])], inits)
    return _save_onnx(g, path)


def _token_encoder(path, *, flip_padding: bool = False, mask_name: str = "attention_mask", vocab: int = 20):
    """input_ids, mask [batch, sequence] -> Gather(table [vocab, 8]) -> MatMul -> hidden [batch, sequence, 8].

    ``flip_padding``: the hidden state is negated (and tripled) where the mask is 0, a result that differs
    from the baseline only at padded positions.
    """
    rng = np.random.default_rng(1)
    inits = [nh.from_array(rng.standard_normal((vocab, 8)).astype(np.float32), "table"),
             nh.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w"),
             nh.from_array(np.array(-3.0, np.float32), "neg3")]
    nodes = [oh.make_node("Gather", ["table", "input_ids"], ["emb"]), oh.make_node("MatMul", ["emb", "w"], ["h"])]
    if flip_padding:
        nodes += [oh.make_node("Cast", [mask_name], ["mb"], to=T.BOOL), oh.make_node("Unsqueeze", ["mb", "ax"], ["m3"]),
                  oh.make_node("Mul", ["h", "neg3"], ["hn"]), oh.make_node("Where", ["m3", "h", "hn"], ["hidden"])]
        inits.append(nh.from_array(np.array([-1], np.int64), "ax"))
    else:  # the mask still feeds the graph (as in an encoder): hidden = h * 1 + 0 * mask
        nodes += [oh.make_node("Cast", [mask_name], ["mf"], to=T.FLOAT), oh.make_node("Unsqueeze", ["mf", "ax"], ["m3"]),
                  oh.make_node("Mul", ["m3", "zero"], ["m0"]), oh.make_node("Add", ["h", "m0"], ["hidden"])]
        inits += [nh.from_array(np.array([-1], np.int64), "ax"), nh.from_array(np.array(0.0, np.float32), "zero")]
    g = oh.make_graph(nodes, "encoder", [oh.make_tensor_value_info("input_ids", T.INT64, ["batch", "sequence"]),
                                         oh.make_tensor_value_info(mask_name, T.INT64, ["batch", "sequence"])],
                      [oh.make_tensor_value_info("hidden", T.FLOAT, ["batch", "sequence", 8])], inits)
    return _save_onnx(g, path)


def _padded_tokens(n: int = 32, seq: int = 12, vocab: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Token ids padded with 0 and their attention mask: lengths 2 .. seq/2 (most positions are padding)."""
    rng = np.random.default_rng(seed)
    ids = np.zeros((n, seq), np.int64)
    mask = np.zeros((n, seq), np.int64)
    for i, length in enumerate(rng.integers(2, seq // 2 + 1, n)):
        ids[i, :length] = rng.integers(1, vocab, length)
        mask[i, :length] = 1
    return ids, mask


def _token_classifier(path, *, vocab: int = 20, bias: np.ndarray | None = None):
    """input_ids [batch, sequence] -> Gather(table [vocab, 8]) -> ReduceMean(seq) -> MatMul -> logits [batch, 4]
    and ArgMax -> pred [batch] (int64)."""
    rng = np.random.default_rng(0)
    inits = [nh.from_array(rng.standard_normal((vocab, 8)).astype(np.float32), "table"),
             nh.from_array(rng.standard_normal((8, 4)).astype(np.float32), "w"),
             nh.from_array(np.array([1], np.int64), "axes")]
    nodes = [oh.make_node("Gather", ["table", "input_ids"], ["emb"], name="embedding"),
             oh.make_node("ReduceMean", ["emb", "axes"], ["pooled"], keepdims=0),
             oh.make_node("MatMul", ["pooled", "w"], ["z"])]
    if bias is None:
        nodes.append(oh.make_node("Identity", ["z"], ["logits"]))
    else:
        inits.append(nh.from_array(bias.astype(np.float32), "bias"))
        nodes.append(oh.make_node("Add", ["z", "bias"], ["logits"]))
    nodes.append(oh.make_node("ArgMax", ["logits"], ["pred"], axis=1, keepdims=0))
    g = oh.make_graph(nodes, "token_classifier", [oh.make_tensor_value_info("input_ids", T.INT64, ["batch", "sequence"])],
                      [oh.make_tensor_value_info("logits", T.FLOAT, ["batch", 4]),
                       oh.make_tensor_value_info("pred", T.INT64, ["batch"])], inits)
    return _save_onnx(g, path)


# ----------------------------------------------------------------------------- R3
def test_r3_every_output_judged_worst_case_summary_and_gate(tmp_path):
    """Two models that agree on output 1 and differ on output 2 (sign flipped on some samples)."""
    a = _two_output_mlp(tmp_path / "a.onnx")
    probe = np.random.default_rng(5).standard_normal((8, 1))
    b = _two_output_mlp(tmp_path / "b.onnx", scale_second=probe)
    x = np.random.default_rng(2).standard_normal((40, 8)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    ra, rb = _run(a, {"x": x}), _run(b, {"x": x})
    want_cos2 = _cosines(ra[1], rb[1])
    assert want_cos2.min() == pytest.approx(-1.0) and np.allclose(_cosines(ra[0], rb[0]), 1.0)

    r = run_cli("bench", a, b, "--calibration-data", tmp_path / "x.npz", "--min-cosine", "0.99", "--json",
                *FAST_BENCH)
    assert r.code == 3, r.stderr
    fid = _valid(r.report)["fidelity"]
    assert [o["name"] for o in fid["outputs"]] == ["y1", "y2"]
    y1, y2 = fid["outputs"]
    assert y1["cosine_min"] == pytest.approx(1.0, abs=1e-6)
    assert y2["cosine_min"] == pytest.approx(want_cos2.min(), abs=1e-6)
    assert y2["cosine_mean"] == pytest.approx(want_cos2.mean(), abs=1e-6)
    assert fid["cosine_min"] == pytest.approx(want_cos2.min(), abs=1e-6)  # the summary is the worst output's
    assert fid["cosine_mean"] == pytest.approx(want_cos2.mean(), abs=1e-6)
    assert fid["worst_output"] == "y2"
    assert fid["top1_agreement"] == pytest.approx(float((ra[1].argmax(1) == rb[1].argmax(1)).mean()))
    failed = r.report["gates"]["failed"]
    assert [(f["gate"], f["output"]) for f in failed] == [("min_cosine", "y2")]
    assert "on output 'y2'" in r.error_lines[-1]

    ok = run_cli("bench", a, b, "--calibration-data", tmp_path / "x.npz", "--min-cosine", "-1", "--json", *FAST_BENCH)
    assert ok.code == 0, ok.stderr


def test_r3_quantized_second_head_is_measured(tmp_path):
    """The case's model through int8: every head's figure is the one measured independently."""
    model = fm.TwoHeads().eval()
    src = _save_torch(model, tmp_path / "r3.pt")
    x = np.random.default_rng(0).standard_normal((64, 8)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    out = tmp_path / "r3.int8.onnx"
    r = run_cli("quantize", src, "--trust-pickle", "--calibration-data", tmp_path / "x.npz", "--min-cosine", "0.99",
                "-o", out, "--json", *FAST_BENCH)
    assert r.code in (0, 3), r.stderr
    with torch.no_grad():
        ref = [t.numpy() for t in model(torch.from_numpy(x))]
    got = _run(out, {"x": x})
    want = [_cosines(rf, g) for rf, g in zip(ref, got, strict=True)]
    fid = r.report["fidelity"]
    assert len(fid["outputs"]) == 2
    for entry, cos in zip(fid["outputs"], want, strict=True):
        assert entry["cosine_min"] == pytest.approx(cos.min(), abs=2e-3)
    worst = min(c.min() for c in want)
    assert fid["cosine_min"] == pytest.approx(worst, abs=2e-3)
    assert worst < 0.99  # head 2 is the one int8 hurts, and it is what the gate sees
    assert r.code == 3 and r.report["gates"]["failed"][0]["output"] == "output_1"


# ----------------------------------------------------------------------------- R4
def test_r4_padding_left_out_and_gate_passes(tmp_path):
    """A result that differs from the baseline only at padded positions has cosine 1 on the real tokens."""
    a = _token_encoder(tmp_path / "a.onnx")
    b = _token_encoder(tmp_path / "b.onnx", flip_padding=True)
    ids, mask = _padded_tokens()
    np.savez(tmp_path / "tok.npz", input_ids=ids, attention_mask=mask)
    ha, hb = (_run(p, {"input_ids": ids, "attention_mask": mask})[0] for p in (a, b))
    assert _cosines(ha, hb).min() < 0.5  # counted over every position, the padding dominates

    r = run_cli("bench", a, b, "--calibration-data", tmp_path / "tok.npz", "--min-cosine", "0.99", "--json",
                *FAST_BENCH)
    assert r.code == 0, r.stderr
    fid = r.report["fidelity"]
    assert fid["cosine_min"] == pytest.approx(1.0, abs=1e-6)
    assert fid["outputs"][0]["positions"] == "real tokens (attention_mask == 1)"
    assert "attention_mask" in fid["positions"]
    assert fid["max_abs_diff"] == pytest.approx(0.0, abs=1e-6)
    assert r.report["gates"]["passed"] is True


def test_r4_without_mask_input_every_position_counts(tmp_path):
    """The same pair whose mask input is not called a mask: nothing is left out, the gate judges all positions."""
    a = _token_encoder(tmp_path / "a.onnx", mask_name="segment")
    b = _token_encoder(tmp_path / "b.onnx", flip_padding=True, mask_name="segment")
    ids, mask = _padded_tokens()
    np.savez(tmp_path / "tok.npz", input_ids=ids, segment=mask)
    ha, hb = (_run(p, {"input_ids": ids, "segment": mask})[0] for p in (a, b))
    r = run_cli("bench", a, b, "--calibration-data", tmp_path / "tok.npz", "--min-cosine", "0.99", "--json",
                *FAST_BENCH)
    assert r.code == 3
    assert "positions" not in r.report["fidelity"]
    assert r.report["fidelity"]["cosine_min"] == pytest.approx(_cosines(ha, hb).min(), abs=1e-6)


def test_r4_quantized_encoder_gate_on_real_tokens(tmp_path):
    """An encoder-like model whose padded positions are fragile under int8 (as in a real sentence encoder)."""
    model = fm.PaddedEncoder().eval()
    src = _save_torch(model, tmp_path / "enc.pt")
    ids, mask = _padded_tokens(n=48, seq=16, vocab=30)
    np.savez(tmp_path / "enc.npz", input_ids=ids, attention_mask=mask)
    out = tmp_path / "enc.int8.onnx"
    r = run_cli("quantize", src, "--trust-pickle", "--calibration-data", tmp_path / "enc.npz", "--min-cosine", "0.98",
                "-o", out, "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    with torch.no_grad():
        ref = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    got = np.concatenate([_run(out, {"input_ids": ids[i:i + 1], "attention_mask": mask[i:i + 1]})[0]
                          for i in range(len(ids))])
    real = mask[..., None].astype(bool)
    masked = _cosines(np.where(real, ref, 0), np.where(real, got, 0))
    assert _cosines(ref, got).min() < 0.9  # padding counted: the gate would fail
    fid = _valid(r.report)["fidelity"]
    assert fid["cosine_min"] == pytest.approx(masked.min(), abs=2e-3)
    assert fid["outputs"][0]["positions"] == "real tokens (attention_mask == 1)"
    assert r.report["gates"]["passed"] is True and fid["collapsed"] is False


# ----------------------------------------------------------------------------- R5
def test_r5_collapse_is_one_loud_line_and_recorded(tmp_path):
    """bench: a result whose top-1 agreement with the baseline classifier is far below int8's."""
    rng = np.random.default_rng(0)
    a = _token_classifier(tmp_path / "a.onnx")
    b = _token_classifier(tmp_path / "b.onnx", bias=np.array([0.0, 1.5, 0.0, -1.5]))
    ids = rng.integers(0, 20, (64, 6)).astype(np.int64)
    np.savez(tmp_path / "ids.npz", input_ids=ids)
    la, lb = _run(a, {"input_ids": ids})[0], _run(b, {"input_ids": ids})[0]
    agree = float((la.argmax(1) == lb.argmax(1)).mean())
    assert agree < 0.95
    r = run_cli("bench", a, b, "--calibration-data", tmp_path / "ids.npz", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    fid = _valid(r.report)["fidelity"]
    assert fid["collapsed"] is True
    assert fid["top1_agreement"] == pytest.approx(agree)
    lines = [w for w in r.report["warnings"] if w.startswith("fidelity collapsed")]
    assert lines == [fid["warning"]] and "\n" not in lines[0]
    assert f"output 'logits' top-1 agreement {agree:.3f}" in lines[0]
    assert f"output 'pred' exact match {agree:.3f}" in lines[0]
    assert any(line == f"warning: {lines[0]}" for line in r.error_lines)


def test_r5_collapsed_pass_result_warns_with_cause(tmp_path):
    """A pass whose result collapsed (95% of the weights zeroed, no recovery) exits 0 only with the one line."""
    model = fm.Mlp().eval()
    src = _save_torch(model, tmp_path / "mlp.pt")
    x = np.random.default_rng(0).standard_normal((64, 16)).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    out = tmp_path / "mlp.pruned.onnx"
    r = run_cli("prune", src, "--trust-pickle", "--method", "unstructured", "--ratio", "0.95", "--calibration-data",
                tmp_path / "x.npz", "-o", out, "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    got = _run(out, {"x": x})[0]
    agree = float((ref.argmax(1) == got.argmax(1)).mean())
    cos = _cosines(ref, got)
    assert agree < 0.95
    fid = r.report["fidelity"]
    assert fid["collapsed"] is True
    line = fid["warning"]
    assert line in r.report["warnings"] and f"warning: {line}" in r.error_lines
    assert f"top-1 agreement {agree:.3f}, cosine mean {cos.mean():.3f} (min {cos.min():.3f})" in line
    assert "likely cause:" in line and "x.npz" in line


def test_r5_good_result_is_not_flagged(tmp_path):
    a = _token_classifier(tmp_path / "a.onnx")
    ids = np.random.default_rng(0).integers(0, 20, (16, 6)).astype(np.int64)
    np.savez(tmp_path / "ids.npz", input_ids=ids)
    r = run_cli("bench", a, a, "--calibration-data", tmp_path / "ids.npz", "--json", *FAST_BENCH)
    assert r.code == 0
    assert r.report["fidelity"]["collapsed"] is False
    assert not [w for w in r.report["warnings"] if "collapsed" in w]


def test_r5_collapse_rules_per_output_kind():
    from compressor.fidelity import collapse_figures, compare_outputs

    rng = np.random.default_rng(0)
    logits = rng.standard_normal((200, 10)).astype(np.float32)
    logits[np.arange(200), rng.integers(0, 10, 200)] += 8.0  # confident decisions
    one_turned = logits.copy()
    top = one_turned[0].argmax()
    others = np.arange(10) != top
    one_turned[0, others] *= -2.0  # one sample's logits turn, its class stays
    fid = compare_outputs([logits], [one_turned])
    assert fid["cosine_min"] < 0.9 and fid["top1_agreement"] == 1.0
    assert collapse_figures(fid) is None  # a classifier is judged on its decisions and mean cosine
    hidden = rng.standard_normal((200, 4, 4)).astype(np.float32)  # not [samples, classes]: judged by cosine_min
    turned = hidden.copy()
    turned[0] = -turned[0]
    fid = compare_outputs([hidden], [turned], names=["h"])
    assert collapse_figures(fid) == "output 'h' cosine min -1.000 (mean 0.990) on 200 samples"


# ----------------------------------------------------------------------------- R9
def test_r9_export_parity_on_real_samples_stops_data_dependent_branch(tmp_path):
    src = _save_torch(fm.Branchy(), tmp_path / "r9.pt")
    rng = np.random.default_rng(0)
    x = np.clip(rng.standard_normal((64, 16)) * 0.5, -2.5, 2.5).astype(np.float32)
    x[32:] *= 3.0
    x[32:, 0] = 5.0  # the second half takes the other branch; the export example (samples 0-1) does not
    np.savez(tmp_path / "x.npz", x=x)
    r = run_cli("quantize", src, "--trust-pickle", "--calibration-data", tmp_path / "x.npz", "-o",
                tmp_path / "r9.onnx", "--json", *FAST_BENCH)
    assert r.code == 1
    msg = r.report["error"]["message"]
    assert r.report["error"]["kind"] == "export"
    assert "data-dependent control flow" in msg and "on 32 of 64 samples" in msg
    assert len(r.error_lines) == 1 and "Traceback" not in r.stderr
    assert not (tmp_path / "r9.onnx").exists()


def test_r9_export_checked_on_every_sample(tmp_path):
    src = _save_torch(fm.Branchy(), tmp_path / "r9.pt")
    x = np.clip(np.random.default_rng(0).standard_normal((40, 16)), -2.5, 2.5).astype(np.float32)
    np.savez(tmp_path / "x.npz", x=x)
    np.savez(tmp_path / "cal.npz", x=x[:24] * 0.5)
    r = run_cli("quantize", src, "--trust-pickle", "--eval-data", tmp_path / "x.npz", "--calibration-data",
                tmp_path / "cal.npz", "-o", tmp_path / "r9.onnx", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    ex = _valid(r.report)["export"]
    assert ex["checked_samples"] == 40 + 24
    assert ex["checked_on"] == [str(tmp_path / "x.npz"), str(tmp_path / "cal.npz")]


# ----------------------------------------------------------------------------- R17
@pytest.fixture(scope="module")
def mlp_onnx(tmp_path_factory):
    """fm.Mlp exported to ONNX once (TorchScript-based exporter, dynamic batch)."""
    import warnings

    path = tmp_path_factory.mktemp("mlp") / "mlp.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter is deprecated in torch 2.13
        torch.onnx.export(fm.Mlp().eval(), (torch.zeros(2, 16),), str(path), input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}}, dynamo=False)
    return path


def test_r17_one_npy_for_a_one_input_model(tmp_path):
    src = _save_torch(fm.Mlp(), tmp_path / "mlp.pt")
    x = np.random.default_rng(0).standard_normal((20, 16)).astype(np.float32)
    np.save(tmp_path / "samples.npy", x)
    r = run_cli("quantize", src, "--trust-pickle", "--calibration-data", tmp_path / "samples.npy", "-o",
                tmp_path / "m.onnx", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    assert r.report["fidelity"]["samples"] == 20
    assert r.report["fidelity"]["inputs"] == str(tmp_path / "samples.npy")
    assert r.report["input"]["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 16]}]


def test_r17_one_npy_for_a_two_input_model_is_refused(tmp_path):
    src = _token_encoder(tmp_path / "enc.onnx")
    np.save(tmp_path / "ids.npy", np.ones((4, 6), np.int64))
    r = run_cli("quantize", src, "--calibration-data", tmp_path / "ids.npy", "-o", tmp_path / "o.onnx")
    assert r.code == 2
    _no_work_done(r)
    assert "['attention_mask', 'input_ids']" in r.error_lines[0] or "attention_mask" in r.error_lines[0]


@pytest.mark.parametrize(("labels", "needle"), [
    (np.eye(4, dtype=np.float32)[np.arange(32) % 4], "labels.argmax(axis=1)"),
    ((np.arange(32) % 4).astype(np.float32), "labels.astype(numpy.int64)"),
    ((np.arange(32) % 4).reshape(32, 1), "of shape [32]"),
    (np.arange(32) % 6, "go up to 5 but the model's output has 4 classes"),
    (np.arange(32) % 4 - 1, "negative class ids"),
])
@pytest.mark.parametrize("fmt", ["torch", "onnx"])
def test_r17_labels_checked_before_any_work(tmp_path, mlp_onnx, labels, needle, fmt):
    x = np.random.default_rng(0).standard_normal((32, 16)).astype(np.float32)
    np.savez(tmp_path / "eval.npz", x=x, labels=labels)
    src = _save_torch(fm.Mlp(), tmp_path / "mlp.pt")
    args = ["--trust-pickle"]
    if fmt == "onnx":  # the same model as ONNX
        src, args = mlp_onnx, []
    r = run_cli("quantize", src, *args, "--eval-data", tmp_path / "eval.npz", "-o", tmp_path / "o.onnx")
    assert r.code == 2, r.stderr
    _no_work_done(r)
    assert needle in r.error_lines[0]


@pytest.mark.parametrize("fmt", ["torch", "onnx"])
def test_r17_float64_cast_the_same_for_every_format(tmp_path, mlp_onnx, fmt):
    x = np.random.default_rng(0).standard_normal((24, 16))  # numpy's default float64
    np.savez(tmp_path / "x64.npz", x=x, labels=np.arange(24) % 4)
    src = _save_torch(fm.Mlp(), tmp_path / "mlp.pt")
    args = ["--trust-pickle"]
    if fmt == "onnx":
        src, args = mlp_onnx, []
    r = run_cli("quantize", src, *args, "--eval-data", tmp_path / "x64.npz", "-o", tmp_path / "o.onnx", "--json",
                *FAST_BENCH)
    assert r.code == 0, r.stderr
    assert _valid(r.report)["input"]["data_casts"] == [{"data": str(tmp_path / "x64.npz"), "input": "x", "from": "float64",
                                                "to": "float32"}]
    assert r.report["input"]["inputs"][0]["dtype"] == "float32"
    assert any("float64 -> float32" in w for w in r.report["warnings"])
    with torch.no_grad():
        want = float((fm.Mlp().eval()(torch.from_numpy(x.astype(np.float32))).numpy().argmax(1) == np.arange(24) % 4)
                     .mean())
    assert r.report["accuracy"]["baseline"] == pytest.approx(want)


# ----------------------------------------------------------------------------- R18
@pytest.mark.parametrize(("flag", "value", "needle"), [
    ("--min-cosine", "2", "between -1 and 1"),
    ("--min-cosine", "-1.5", "between -1 and 1"),
    ("--max-size-ratio", "0", "greater than 0"),
    ("--max-size-ratio", "-1", "greater than 0"),
    ("--min-speedup", "0", "greater than 0"),
    ("--max-accuracy-drop", "101", "between 0 and 100"),
    ("--max-accuracy-drop", "-1", "between 0 and 100"),
    ("--min-cosine", "nan", "finite number"),
])
@pytest.mark.parametrize("command", ["quantize", "bench"])
def test_r18_gate_outside_its_domain_exits_2(tmp_path, flag, value, needle, command):
    a = _token_classifier(tmp_path / "a.onnx")
    extra = [a] if command == "bench" else ["-o", tmp_path / "o.onnx"]
    r = run_cli(command, a, *extra, flag, value, "--input-shape", "input_ids:1x6:int64")
    assert r.code == 2, r.stderr
    _no_work_done(r)
    assert flag in r.error_lines[0] and needle in r.error_lines[0]


def test_r18_gate_domain_in_a_recipe_names_the_field(tmp_path):
    a = _token_classifier(tmp_path / "a.onnx")
    (tmp_path / "r.toml").write_text(f'model = "{a.name}"\ninput_shape = ["input_ids:1x6:int64"]\n'
                                     '[[steps]]\npass = "quantize"\n[gates]\nmax_size_ratio = 0\n')
    r = run_cli("run", tmp_path / "r.toml")
    assert r.code == 2
    assert "max_size_ratio" in r.error_lines[0] and "greater than 0" in r.error_lines[0]


def test_r18_bench_gate_failure_claims_only_what_was_written(tmp_path):
    a = _token_classifier(tmp_path / "a.onnx")
    b = _token_classifier(tmp_path / "b.onnx", bias=np.zeros(4))  # one more initializer: larger
    common = ["--input-shape", "input_ids:1x6:int64", "--max-size-ratio", "0.5", *FAST_BENCH]
    r = run_cli("bench", a, b, *common)
    assert r.code == 3
    assert r.error_lines[-1].endswith("; no file was written")
    assert "written" not in r.error_lines[-1].replace("no file was written", "")
    rep = tmp_path / "rep.json"
    r = run_cli("bench", a, b, *common, "--report", rep)
    assert r.code == 3
    assert r.error_lines[-1].endswith(f"; the report {rep} was written")
    assert json.loads(rep.read_text())["gates"]["passed"] is False


def test_r18_pass_gate_failure_names_the_output_written(tmp_path):
    a = _token_classifier(tmp_path / "a.onnx")
    out = tmp_path / "o.onnx"
    r = run_cli("quantize", a, "--input-shape", "input_ids:1x6:int64", "--max-size-ratio", "0.01", "-o", out,
                *FAST_BENCH)
    assert r.code == 3
    assert f"the output model {out} was written" in r.stderr and out.exists()


# ----------------------------------------------------------------------------- R19
def test_r19_eval_data_without_labels(tmp_path):
    a = _token_classifier(tmp_path / "a.onnx")
    ids = np.random.default_rng(0).integers(0, 20, (24, 6)).astype(np.int64)
    np.savez(tmp_path / "held.npz", input_ids=ids)
    r = run_cli("quantize", a, "--eval-data", tmp_path / "held.npz", "-o", tmp_path / "o.onnx", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    assert _valid(r.report)["fidelity"]["inputs"] == str(tmp_path / "held.npz")
    assert r.report["fidelity"]["samples"] == 24
    assert "accuracy" not in r.report and "accuracy" not in r.report["result"]
    assert any("accuracy is not measured" in w for w in r.report["warnings"])
    gated = run_cli("quantize", a, "--eval-data", tmp_path / "held.npz", "--max-accuracy-drop", "1", "-o",
                    tmp_path / "o2.onnx")
    assert gated.code == 2
    _no_work_done(gated)
    assert "--max-accuracy-drop needs labels" in gated.error_lines[0]


# ----------------------------------------------------------------------------- R20
def test_r20_dynamic_sequence_from_data(tmp_path):
    a = _token_classifier(tmp_path / "a.onnx")
    ids = np.random.default_rng(0).integers(0, 20, (16, 10)).astype(np.int64)
    np.savez(tmp_path / "cal.npz", input_ids=ids)
    r = run_cli("quantize", a, "--calibration-data", tmp_path / "cal.npz", "-o", tmp_path / "o.onnx", "--json",
                *FAST_BENCH)
    assert r.code == 0, r.stderr
    assert r.report["benchmark"]["inputs"]["input_ids"]["shape"] == [1, 10]
    assert "default_seq_len" not in r.report["input"]


@pytest.mark.parametrize("command", ["quantize", "bench"])
def test_r20_dynamic_sequence_default_128_said(tmp_path, command):
    a = _token_encoder(tmp_path / "enc.onnx")
    extra = ["-o", tmp_path / "o.onnx"] if command == "quantize" else []
    r = run_cli(command, a, *extra, "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    assert _valid(r.report)["input"]["default_seq_len"] == 128
    assert r.report["benchmark"]["inputs"]["input_ids"]["shape"] == [1, 128]
    assert r.report["benchmark"]["inputs"]["attention_mask"]["shape"] == [1, 128]
    assert any("default sequence length 128" in w for w in r.report["warnings"])


# ----------------------------------------------------------------------------- R24
def test_r24_generated_ids_stay_in_the_gathered_table(tmp_path):
    a = _token_classifier(tmp_path / "a.onnx", vocab=20)
    r = run_cli("quantize", a, "--input-shape", "input_ids:1x6:int64", "-o", tmp_path / "o.onnx", "--json",
                *FAST_BENCH)
    assert r.code == 0, r.stderr
    rng = _valid(r.report)["input"]["generated_int_ranges"]["input_ids"]
    assert (rng["low"], rng["high"]) == (0, 20) and "embedding" in rng["bound_by"]


def test_r24_generated_indices_stay_in_gather_elements_axis(tmp_path):
    g = oh.make_graph([oh.make_node("GatherElements", ["x", "idx"], ["y"], axis=1, name="pick")], "ge",
                      [oh.make_tensor_value_info("x", T.FLOAT, ["batch", 8]),
                       oh.make_tensor_value_info("idx", T.INT64, ["batch", 5])],
                      [oh.make_tensor_value_info("y", T.FLOAT, ["batch", 5])])
    src = _save_onnx(g, tmp_path / "ge.onnx")
    r = run_cli("bench", src, "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    assert r.report["input"]["generated_int_ranges"]["idx"]["high"] == 8


def test_r24_unknown_range_asks_for_data(tmp_path):
    """Indices into a tensor whose size depends on the data (NonZero): no safe random values exist."""
    g = oh.make_graph([oh.make_node("Greater", ["x", "zero"], ["pos"]), oh.make_node("NonZero", ["pos"], ["nz"]),
                       oh.make_node("Cast", ["nz"], ["nzf"], to=T.FLOAT),
                       oh.make_node("GatherElements", ["nzf", "idx"], ["y"], axis=1, name="pick")], "nz",
                      [oh.make_tensor_value_info("x", T.FLOAT, [1, 8]),
                       oh.make_tensor_value_info("idx", T.INT64, [2, 3])],
                      [oh.make_tensor_value_info("y", T.FLOAT, [2, 3])],
                      [nh.from_array(np.array(0.0, np.float32), "zero")])
    src = _save_onnx(g, tmp_path / "nz.onnx")
    r = run_cli("bench", src)
    assert r.code == 2
    _no_work_done(r)
    assert "'idx'" in r.error_lines[0] and "--calibration-data" in r.error_lines[0] and "pick" in r.error_lines[0]


def test_r24_torch_ids_stay_in_the_embedding(tmp_path):
    src = _save_torch(fm.SmallVocab(), tmp_path / "emb.pt")
    r = run_cli("export", src, "--trust-pickle", "--input-shape", "ids:1x6:int64", "-o", tmp_path / "emb.onnx",
                "--json")
    assert r.code == 0, r.stderr
    assert r.report["input"]["generated_int_ranges"]["ids"]["high"] == 20


# ----------------------------------------------------------------------------- R26
def test_r26_integer_outputs_by_exact_match(tmp_path):
    rng = np.random.default_rng(0)
    a = _token_classifier(tmp_path / "a.onnx")
    b = _token_classifier(tmp_path / "b.onnx", bias=np.array([0.0, 0.4, 0.0, -0.4]))
    ids = rng.integers(0, 20, (64, 6)).astype(np.int64)
    np.savez(tmp_path / "ids.npz", input_ids=ids)
    pa, pb = _run(a, {"input_ids": ids})[1], _run(b, {"input_ids": ids})[1]
    want = float((pa == pb).mean())
    assert 0.0 < want < 1.0
    r = run_cli("bench", a, b, "--calibration-data", tmp_path / "ids.npz", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    fid = _valid(r.report)["fidelity"]
    pred = fid["outputs"][1]
    assert pred["name"] == "pred" and pred["kind"] == "integer"
    assert pred["exact_match"] == pytest.approx(want)
    assert "cosine_min" not in pred and "sqnr_db" not in pred
    assert fid["exact_match"] == pytest.approx(want)
    logits = fid["outputs"][0]  # the summary's cosine comes from the float output alone
    assert fid["cosine_min"] == logits["cosine_min"]


def test_r26_quantized_argmax_output(tmp_path):
    a = _token_classifier(tmp_path / "a.onnx")
    ids = np.random.default_rng(0).integers(0, 20, (32, 6)).astype(np.int64)
    np.savez(tmp_path / "ids.npz", input_ids=ids)
    out = tmp_path / "o.onnx"
    r = run_cli("quantize", a, "--calibration-data", tmp_path / "ids.npz", "-o", out, "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    want = float((_run(a, {"input_ids": ids})[1] == _run(out, {"input_ids": ids})[1]).mean())
    pred = r.report["fidelity"]["outputs"][1]
    assert pred["kind"] == "integer" and pred["exact_match"] == pytest.approx(want)


# ----------------------------------------------------------------------------- the pieces, directly
def test_compare_outputs_integer_only_has_no_cosine():
    from compressor.fidelity import compare_outputs

    a = np.array([0, 1, 2, 3], np.int64)
    fid = compare_outputs([a], [np.array([0, 1, 2, 0], np.int64)], names=["idx"])
    assert fid["cosine_min"] is None and fid["cosine_mean"] is None
    assert fid["exact_match"] == 0.75 and fid["worst_output"] == "idx"


def test_compare_outputs_mask_only_on_outputs_with_its_sequence_axis():
    from compressor.fidelity import compare_outputs

    mask = np.array([[1, 1, 0], [1, 0, 0]], bool)
    hidden = np.ones((2, 3, 4), np.float32)
    noisy = hidden.copy()
    noisy[~mask] = -1.0
    logits = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]], np.float32)  # [N, 3]: classes, not tokens
    fid = compare_outputs([hidden, logits], [noisy, logits[:, ::-1].copy()], names=["h", "cls"],
                          attention_mask=("attention_mask", mask), token_outputs={"h"})
    h, cls = fid["outputs"]
    assert h["cosine_min"] == pytest.approx(1.0) and h["positions"].startswith("real tokens")
    assert cls["positions"] == "all" and cls["cosine_min"] == pytest.approx(10 / 14)


def test_index_ranges_follow_value_preserving_ops():
    from compressor.artifact import IOSpec, TensorSpec
    from compressor.index_ranges import onnx_index_ranges

    g = oh.make_graph([oh.make_node("Cast", ["ids"], ["ids32"], to=T.INT32),
                       oh.make_node("Unsqueeze", ["ids32", "ax"], ["u"]),
                       oh.make_node("Gather", ["big", "u"], ["a"]), oh.make_node("Gather", ["small", "ids"], ["b"])],
                      "g", [oh.make_tensor_value_info("ids", T.INT64, ["batch", 4])],
                      [oh.make_tensor_value_info("a", T.FLOAT, None), oh.make_tensor_value_info("b", T.FLOAT, None)],
                      [nh.from_array(np.zeros((50, 2), np.float32), "big"),
                       nh.from_array(np.zeros((7, 2), np.float32), "small"),
                       nh.from_array(np.array([1], np.int64), "ax")])
    model = oh.make_model(g, opset_imports=OPSET)
    io = IOSpec((TensorSpec("ids", "int64", ("batch", 4)),))
    assert onnx_index_ranges(model, io)["ids"].high == 7


def test_r20_one_token_input_shape_sizes_the_others(tmp_path):
    """--input-shape for input_ids alone: attention_mask shares its 'sequence' axis, so it takes the same length."""
    a = _token_encoder(tmp_path / "enc.onnx")
    r = run_cli("bench", a, "--input-shape", "input_ids:1x64:int64", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    assert r.report["benchmark"]["inputs"]["attention_mask"]["shape"] == [1, 64]
    assert "default_seq_len" not in r.report["input"]
    assert not [w for w in r.report["warnings"] if "default sequence length" in w]

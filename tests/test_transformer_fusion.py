"""ONNX Runtime's transformer fusions as a dynamic int8 candidate (issue "Defaults measured on this machine").

A tiny BERT (transformers ``BertConfig``: hidden 32, 2 layers, 4 heads, random init, eager attention) exported
by ``torch.onnx.export`` (dynamo, as compressor exports): its attention mask is transformers 5's
``GatherND``/``And``/``Where`` graph, which ONNX Runtime's Attention fusion does not match until compressor
rewrites it to the classic form.
"""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest

from compressor.passes import kernel_formats as kf
from compressor.passes.transformer_fusion import fuse_transformer
from compressor.runtime import make_session
from tests.conftest import run_cli
from tests.test_report_gates import _validate

SEQ = 16
FAST = ["--runs", "6", "--warmup", "1", "--no-measure-memory", "--threads", "1"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    import torch
    from transformers import BertConfig, BertModel

    work = tmp_path_factory.mktemp("tiny_bert")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, attn_implementation="eager")
    bert = BertModel(cfg, add_pooling_layer=False).eval()

    class LastHidden(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    rng = np.random.default_rng(0)
    n = 16
    ids = rng.integers(1, 100, size=(n, SEQ)).astype(np.int64)
    lengths = rng.integers(3, SEQ + 1, size=n)
    mask = (np.arange(SEQ)[None, :] < lengths[:, None]).astype(np.int64)
    calib = work / "calib.npz"
    np.savez(calib, input_ids=ids, attention_mask=mask)
    src = work / "tiny_bert.onnx"
    batch, seq = torch.export.Dim("batch", min=1, max=64), torch.export.Dim("seq", min=2, max=64)
    torch.onnx.export(LastHidden(bert), (torch.from_numpy(ids[:2]), torch.from_numpy(mask[:2])), str(src),
                      input_names=["input_ids", "attention_mask"], output_names=["last_hidden_state"], dynamo=True,
                      dynamic_shapes={"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
                      opset_version=18, external_data=False)
    return src, calib, {"input_ids": ids, "attention_mask": mask}


def test_fusion_keeps_results_for_any_padding(tiny_bert, tmp_path):
    src, _, feeds = tiny_bert
    info = fuse_transformer(src, tmp_path / "fused.onnx", {k: v[:4] for k, v in feeds.items()}, tmp_path)
    assert info is not None
    assert info["fused_ops"]["Attention"] == 2 and info["fused_ops"]["SkipLayerNormalization"] == 4
    assert (info["num_heads"], info["hidden_size"]) == (4, 32)
    assert info["attention_mask"]["input"] == "attention_mask" and info["attention_mask"]["replaced"] == 2
    onnx.checker.check_model(str(tmp_path / "fused.onnx"), full_check=True)
    # the raw 2-D mask is kept: left padding and holes give the same results as the original graph
    ids = feeds["input_ids"][:4]
    left = feeds["attention_mask"][:4, ::-1].copy()
    holes = left.copy()
    holes[:, SEQ // 2] = 0
    for m in (feeds["attention_mask"][:4], left, holes):
        want = make_session(src).run(None, {"input_ids": ids, "attention_mask": m})[0]
        got = make_session(tmp_path / "fused.onnx").run(None, {"input_ids": ids, "attention_mask": m})[0]
        real = m.astype(bool)
        np.testing.assert_allclose(got[real], want[real], atol=1e-4)


def test_default_dynamic_int8_measures_the_fused_candidate(tiny_bert, tmp_path, monkeypatch):
    # held-out data but no calibration data: no SmoothQuant, whose Mul before Q/K/V blocks the Attention fusion
    monkeypatch.setenv("COMPRESSOR_CACHE_DIR", str(tmp_path / "cache"))
    src, calib, _ = tiny_bert
    out = tmp_path / "q.onnx"
    r = run_cli("quantize", src, "--eval-data", calib, "--batch-size", "4", *FAST, "-o", out, "--json")
    assert r.code == 0, r.stderr
    _validate(r.report)
    q = r.report["quantization"]
    cpu = r.report["benchmark"]["cpu"]
    names = [n + s for n in kf.dynamic_candidates(cpu["isa"], cpu["machine"])
             for s in ("", kf.FLAT_SUFFIX, kf.FUSION_SUFFIX)]
    rows = q["format_candidates"]
    assert [x["format"] for x in rows] == names
    chosen = [x["format"] for x in rows if x["chosen"]]
    assert q["format_selection"] == {"by": "measured", "batch_size": 4, "threads": 1,
                                     "cosine_tolerance": kf.COSINE_TOLERANCE, "chosen": chosen[0]}
    assert len(chosen) == 1 and chosen[0].split("+")[0] == q["kernel_format"]
    assert all(x["transformer_fusion"] == x["format"].endswith("+fusion") for x in rows)
    assert all(x["flat_layernorm"] == x["format"].endswith("+flat-layernorm") for x in rows)
    for x in rows:
        assert x["latency_ms_p50"] > 0 and 0.95 < x["cosine_min"] <= 1.0
    chosen = next(x["format"] for x in rows if x["chosen"])
    assert chosen == kf.pick(rows) and q["kernel_format"] == chosen.split("+")[0] and chosen in q["reason"]
    ops = collections.Counter(n.op_type for n in onnx.load(str(out)).graph.node)
    fused, flat = chosen.endswith(kf.FUSION_SUFFIX), chosen.endswith(kf.FLAT_SUFFIX)
    assert (ops["QAttention"] == 2) is fused and ("transformer_fusion" in q) is fused
    assert (q.get("flat_layernorm") == 4) is flat and (ops["SkipLayerNormalization"] == 0 or fused)
    # the output (checked with full_check by run_cli) runs in ONNX Runtime on another batch and length
    sess = make_session(out)
    sess.run(None, {"input_ids": np.ones((3, 7), np.int64), "attention_mask": np.ones((3, 7), np.int64)})
    # a second run reuses the measurement
    r2 = run_cli("quantize", src, "--eval-data", calib, "--batch-size", "4", *FAST, "-o", tmp_path / "q2.onnx", "--json")
    assert r2.code == 0, r2.stderr
    q2 = r2.report["quantization"]
    assert q2["format_selection"]["by"] == "cached" and q2["kernel_format"] == q["kernel_format"]
    assert [x["format"] for x in q2["format_candidates"] if x["chosen"]] == [chosen]


def test_smoothed_graph_is_measured_without_the_attention_fusion(tiny_bert, tmp_path, monkeypatch):
    # with calibration data SmoothQuant puts a Mul between LayerNorm and Q/K/V: ONNX Runtime fuses no Attention,
    # so no +fusion candidate (SkipLayerNormalization and BiasGelu alone are fused at load anyway)
    monkeypatch.setenv("COMPRESSOR_CACHE_DIR", str(tmp_path / "cache"))
    src, calib, _ = tiny_bert
    r = run_cli("quantize", src, "--calibration-data", calib, "--batch-size", "4", *FAST, "-o", tmp_path / "q.onnx",
                "--json")
    assert r.code == 0, r.stderr
    q = r.report["quantization"]
    assert "smoothquant(alpha=0.7)" in q["rewrites"]
    cpu = r.report["benchmark"]["cpu"]
    assert [x["format"] for x in q["format_candidates"]] == [
        n + s for n in kf.dynamic_candidates(cpu["isa"], cpu["machine"]) for s in ("", kf.FLAT_SUFFIX)]


def test_flat_layernorm_keeps_results_and_ort_leaves_it_unfused(tiny_bert, tmp_path):
    import onnxruntime as ort

    from compressor.passes.transformer_fusion import flatten_residual_layernorm

    src, _, feeds = tiny_bert
    model = onnx.load(str(src))
    assert flatten_residual_layernorm(model) == 4  # 2 layers x (attention output, MLP output)
    onnx.checker.check_model(model, full_check=True)
    flat = tmp_path / "flat.onnx"
    onnx.save(model, str(flat))
    f = {k: v[:4] for k, v in feeds.items()}
    np.testing.assert_allclose(make_session(flat).run(None, f)[0], make_session(src).run(None, f)[0], atol=1e-5)
    # what ONNX Runtime runs: no SkipLayerNormalization in the flattened graph, 4 in the original
    for path, want in ((src, 4), (flat, 0)):
        opts = ort.SessionOptions()
        opts.optimized_model_filepath = str(tmp_path / "optimized.onnx")
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        got = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
        assert got["SkipLayerNormalization"] == want


@pytest.mark.parametrize("fmt", ["dynamic-u8s8", "dynamic-u8u8"])
def test_explicit_dynamic_format_builds_one_unfused_model(tiny_bert, tmp_path, fmt):
    src, calib, _ = tiny_bert
    out = tmp_path / "q.onnx"
    r = run_cli("quantize", src, "--calibration-data", calib, "--format", fmt, *FAST, "-o", out, "--json")
    assert r.code == 0, r.stderr
    q = r.report["quantization"]
    assert q["kernel_format"] == fmt and q["format_selection"]["by"] == "user" and "format_candidates" not in q
    assert q["weight_type"] == kf.FORMATS[fmt].weight_type
    ops = collections.Counter(n.op_type for n in onnx.load(str(out)).graph.node)
    assert ops["QAttention"] == 0 and ops["MatMulInteger"] + ops["DynamicQuantizeMatMul"] > 0


def _masked_attention(causal: bool, seq: int = 6):
    """x [B, S, 4] float32, attention_mask [B, S] int64 -> softmax(x x^T * 0.5 + mask) x; mask causal or padding only."""
    from onnx import TensorProto, helper, numpy_helper

    keep = np.tril(np.ones((seq, seq), bool)) if causal else np.ones((seq, seq), bool)
    inits = [numpy_helper.from_array(np.array([1, 2], np.int64), "axes12"),
             numpy_helper.from_array(np.array([1], np.int64), "axis1"),
             numpy_helper.from_array(keep[None, None], "structure"),
             numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
             numpy_helper.from_array(np.array(np.finfo(np.float32).min, np.float32), "fill"),
             numpy_helper.from_array(np.array(0.5, np.float32), "scale")]
    nodes = [helper.make_node("Unsqueeze", ["attention_mask", "axes12"], ["m4"], name="m4"),
             helper.make_node("Cast", ["m4"], ["mb"], name="mb", to=TensorProto.BOOL),
             helper.make_node("And", ["mb", "structure"], ["both"], name="both"),
             helper.make_node("Where", ["both", "zero", "fill"], ["additive"], name="additive"),
             helper.make_node("Unsqueeze", ["x", "axis1"], ["xu"], name="xu"),
             helper.make_node("Transpose", ["xu"], ["xt"], name="xt", perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["xu", "xt"], ["qk"], name="qk"),
             helper.make_node("Mul", ["qk", "scale"], ["scaled"], name="scaled"),
             helper.make_node("Add", ["scaled", "additive"], ["scores"], name="scores"),
             helper.make_node("Softmax", ["scores"], ["p"], name="p", axis=-1),
             helper.make_node("MatMul", ["p", "xu"], ["y"], name="y")]
    graph = helper.make_graph(nodes, "masked_attention",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", seq, 4]),
                               helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["B", seq])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 1, seq, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize("causal", [False, True])
def test_mask_is_rewritten_only_when_it_is_the_padding_mask(tmp_path, causal):
    from compressor.passes.transformer_fusion import canonicalize_attention_mask

    model = _masked_attention(causal)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((3, 6, 4)).astype(np.float32),
             "attention_mask": np.array([[1] * 6, [1] * 4 + [0] * 2, [0] * 2 + [1] * 4], np.int64)}
    before = model.SerializeToString()
    info = canonicalize_attention_mask(model, feeds, tmp_path)
    if causal:  # a causal mask differs from the padding mask: left alone
        assert info is None and model.SerializeToString() == before
        return
    assert info == {"input": "attention_mask", "fill_value": float(np.finfo(np.float32).min), "replaced": 1}
    onnx.checker.check_model(model, full_check=True)
    path = tmp_path / "canonical.onnx"
    onnx.save(model, str(path))
    orig = tmp_path / "orig.onnx"
    orig.write_bytes(before)
    want = make_session(orig).run(None, feeds)[0]
    np.testing.assert_allclose(make_session(path).run(None, feeds)[0], want, atol=1e-6)

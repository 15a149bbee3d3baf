"""Int8 kernel formats chosen by measuring on this CPU (issue "Defaults measured on this machine")."""

from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from compressor.passes import kernel_formats as kf
from tests.conftest import FAST_BENCH, run_cli
from tests.test_report_gates import _validate

AVX2 = {"avx2": True, "avx512f": False, "avx512_vnni": False, "avx_vnni": False, "amx_int8": False}
AVX512_VNNI = {**AVX2, "avx512f": True, "avx512_vnni": True}
AVX_VNNI = {**AVX2, "avx_vnni": True}
ARM = {k: False for k in AVX2}


@pytest.mark.parametrize(("isa", "machine", "saturating"), [
    (AVX2, "x86_64", True), (AVX512_VNNI, "x86_64", False), (AVX_VNNI, "AMD64", False), (ARM, "aarch64", False),
    (ARM, "arm64", False),
])
def test_saturation_and_candidates_follow_the_cpu_flags(isa, machine, saturating):
    assert kf.saturates(isa, machine) is saturating
    static = kf.static_candidates(isa, machine)
    assert static[0] == "qdq-u8s8" and set(static) == {"qdq-u8s8", "qdq-s8s8", "qoperator-u8s8"}
    for name in static:
        fmt = kf.FORMATS[name]
        assert kf.reduce_range_for(fmt, isa, machine) is saturating  # s8 weights: 7 bits wherever 8 saturate
    dyn = kf.dynamic_candidates(isa, machine)
    assert dyn == (["dynamic-u8s8"] if machine == "x86_64" and not saturating or machine == "AMD64" and not saturating
                   else ["dynamic-u8s8", "dynamic-u8u8"])


def test_pick_keeps_the_fastest_within_tolerance_and_prefers_qdq_on_a_tie():
    rows = [
        {"format": "qdq-u8s8", "latency_ms_p50": 5.2, "cosine_min": 0.9990},
        {"format": "qdq-s8s8", "latency_ms_p50": 13.0, "cosine_min": 0.9994},
        {"format": "qoperator-u8s8", "latency_ms_p50": 5.1, "cosine_min": 0.9990},  # 2% faster: a tie
    ]
    assert kf.pick(rows) == "qdq-u8s8"
    rows[2]["latency_ms_p50"] = 4.0  # clearly faster
    assert kf.pick(rows) == "qoperator-u8s8"
    rows[2]["cosine_min"] = 0.95  # saturated (case R22): out, whatever its speed
    rows[0]["cosine_min"] = 0.96
    assert kf.pick(rows) == "qdq-s8s8"


def test_cache_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSOR_CACHE_DIR", str(tmp_path / "c"))
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model bytes")
    cpu = {"isa": AVX2, "machine": "x86_64", "cpu_model": "x", "onnxruntime": "1.32.0"}
    key = kf.cache_key(model, {"a": 1}, cpu)
    assert kf.cache_get(key) is None
    kf.cache_put(key, {"chosen": "qdq-u8s8", "candidates": []})
    assert kf.cache_get(key)["chosen"] == "qdq-u8s8"
    # another CPU, ORT version, setting or model is another key
    assert kf.cache_key(model, {"a": 1}, {**cpu, "isa": AVX512_VNNI}) != key
    assert kf.cache_key(model, {"a": 1}, {**cpu, "onnxruntime": "1.33.0"}) != key
    assert kf.cache_key(model, {"a": 2}, cpu) != key
    model.write_bytes(b"other bytes")
    assert kf.cache_key(model, {"a": 1}, cpu) != key
    (tmp_path / "c" / "kernel_formats.json").write_text("not json")
    assert kf.cache_get(key) is None  # a broken cache is a miss, not an error


def _act_zero_point_types(path):
    m = onnx.load(str(path))
    init = {t.name: t for t in m.graph.initializer}
    return collections.Counter(numpy_helper.to_array(init[n.input[2]]).dtype.name for n in m.graph.node
                               if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in init)


def test_default_static_int8_measures_the_formats(samples, tmp_path, monkeypatch):
    monkeypatch.setenv("COMPRESSOR_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "q.onnx"
    args = ["quantize", samples / "digits_cnn.pt", "--calibration-data", samples / "digits_calib.npz",
            "--eval-data", samples / "digits_eval.npz", *FAST_BENCH, "--json"]
    r = run_cli(*args, "-o", out)
    assert r.code == 0, r.stderr
    _validate(r.report)
    q = r.report["quantization"]
    rows = q["format_candidates"]
    assert [x["format"] for x in rows] == ["qdq-u8s8", "qdq-s8s8", "qoperator-u8s8"]
    assert q["format_selection"]["by"] == "measured" and sum(x["chosen"] for x in rows) == 1
    assert q["kernel_format"] == kf.pick(rows) == next(x["format"] for x in rows if x["chosen"])
    for x in rows:
        assert x["latency_ms_p50"] > 0 and 0.9 < x["cosine_min"] <= 1.0
    chosen = kf.FORMATS[q["kernel_format"]]
    assert q["activation_type"] == chosen.activation_type and q["weight_type"] == chosen.weight_type
    assert q["reduce_range"] == kf.saturates(r.report["benchmark"]["cpu"]["isa"], r.report["benchmark"]["cpu"]["machine"])
    assert "kernel format" in q["reason"] and q["kernel_format"] in q["reason"]
    ops = set(r.report["result"]["op_types"])
    assert ("QLinearConv" in ops) == (chosen.quant_format == "QOperator")
    # a second run on the same model, data and CPU reuses the measurement
    r2 = run_cli(*args, "-o", tmp_path / "q2.onnx")
    assert r2.code == 0, r2.stderr
    q2 = r2.report["quantization"]
    assert q2["format_selection"]["by"] == "cached" and q2["kernel_format"] == q["kernel_format"]
    assert "[cached]" in q2["reason"]


@pytest.mark.parametrize(("fmt", "zp_type", "op"), [("qdq-s8s8", "int8", "QuantizeLinear"),
                                                    ("qdq-u8s8", "uint8", "QuantizeLinear"),
                                                    ("qoperator-u8s8", "uint8", "QLinearConv")])
def test_explicit_format_builds_that_format(samples, tmp_path, fmt, zp_type, op):
    out = tmp_path / "q.onnx"
    r = run_cli("quantize", samples / "digits_cnn.pt", "--calibration-data", samples / "digits_calib.npz",
                "--format", fmt, *FAST_BENCH, "-o", out, "--json")
    assert r.code == 0, r.stderr
    q = r.report["quantization"]
    assert q["kernel_format"] == fmt and q["format_selection"]["by"] == "user" and "format_candidates" not in q
    assert op in r.report["result"]["op_types"]
    types = _act_zero_point_types(out)
    assert set(types) == {zp_type}, types


def test_format_flags_are_checked(samples, tmp_path):
    base = ["quantize", samples / "digits_cnn.pt", "--calibration-data", samples / "digits_calib.npz"]
    r = run_cli(*base, "--format", "qdq-u8s8", "--activation-type", "int8", "--dry-run")
    assert r.code == 2 and "--activation-type" in r.stderr and "--format" in r.stderr, r.stderr
    r = run_cli(*base, "--format", "dynamic-u8s8", "--mode", "static", "--dry-run")
    assert r.code == 2 and "dynamic format" in r.stderr, r.stderr
    r = run_cli(*base, "--format", "fastest", "--dry-run")
    assert r.code == 2 and "qdq-u8s8" in r.stderr, r.stderr
    r = run_cli(*base, "--format", "qdq-u8s8", "--precision", "fp16", "--dry-run")
    assert r.code == 2 and "--format" in r.stderr, r.stderr


def test_dynamic_u8u8_format_stores_uint8_weights(tmp_path):
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4)).eval()
    src = tmp_path / "mlp.onnx"
    torch.onnx.export(net, (torch.randn(1, 16),), str(src), input_names=["x"], dynamic_axes={"x": {0: "b"}},
                      dynamo=False)
    np.savez(tmp_path / "c.npz", x=np.random.default_rng(0).standard_normal((16, 16), dtype=np.float32))
    out = tmp_path / "q.onnx"
    r = run_cli("quantize", src, "--format", "dynamic-u8u8", "--calibration-data", tmp_path / "c.npz",
                *FAST_BENCH, "-o", out, "--json")
    assert r.code == 0, r.stderr
    q = r.report["quantization"]
    assert q["mode"] == "dynamic" and q["weight_type"] == "uint8"
    m = onnx.load(str(out))
    w = [t for t in m.graph.initializer if t.data_type == onnx.TensorProto.UINT8 and len(t.dims) == 2]
    assert w, "no uint8 weight matrix stored"

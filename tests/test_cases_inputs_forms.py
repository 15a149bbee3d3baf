"""Cases R6, R10, R15, R22, R25 (../shared/cases/README.md, Round 2): inputs recognised for what they are,
and graphs put into a form the runtime handles.

R6 old opsets, R10 fixed-shape ExportedPrograms, R15 training checkpoints and prefixed state_dicts,
R22 int8 settings that never saturate the CPU they run on, R25 Gemm with alpha/beta.
"""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import pytest
import torch
from onnx import helper, numpy_helper

from tests import zoo_graphs
from tests.conftest import FAST_BENCH, run_cli

# ----------------------------------------------------------------------------------------------- R6


def _cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
        torch.nn.Linear(16, 10),
    ).eval()


@pytest.fixture()
def cnn_opset11(tmp_path):
    """A CNN exported by the TorchScript-based exporter at opset 11, with calibration and held-out data."""
    path = tmp_path / "cnn11.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_cnn(), (torch.randn(2, 3, 16, 16),), str(path), opset_version=11, dynamo=False,
                          input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    assert next(o.version for o in onnx.load(str(path)).opset_import if o.domain == "") == 11
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "calib.npz", x=rng.standard_normal((32, 3, 16, 16)).astype(np.float32))
    np.savez(tmp_path / "held.npz", x=rng.standard_normal((16, 3, 16, 16)).astype(np.float32))
    return path


def test_r6_opset11_cnn_static_per_channel_is_upgraded(cnn_opset11, tmp_path):
    out = tmp_path / "q.onnx"
    r = run_cli("quantize", cnn_opset11, "-o", out, "--calibration-data", tmp_path / "calib.npz", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    q = r.report["quantization"]
    assert q["mode"] == "static" and q["per_channel"] is True
    assert q["opset_upgrade"]["from"] == 11 and q["opset_upgrade"]["to"] == 13
    assert q["opset_upgrade"]["max_abs_diff"] <= 1e-5
    assert any("opset 11" in w and "version converter" in w for w in r.report["warnings"])
    model = onnx.load(str(out))
    assert next(o.version for o in model.opset_import if o.domain == "") >= 13
    # per-channel weights: a DequantizeLinear with one scale per output channel of the first conv (8)
    inits = {i.name: i for i in model.graph.initializer}
    scales = [inits[n.input[1]] for n in model.graph.node
              if n.op_type == "DequantizeLinear" and n.input[0] in inits and len(inits[n.input[0]].dims) == 4]
    assert sorted(int(np.prod(s.dims)) for s in scales) == [8, 16]
    feeds = dict(np.load(tmp_path / "held.npz"))
    assert zoo_graphs.cosine_min(zoo_graphs.run(cnn_opset11, feeds)[0], zoo_graphs.run(out, feeds)[0]) >= 0.99


def test_r6_converter_failure_refuses_naming_the_opset(cnn_opset11, tmp_path, monkeypatch):
    from onnx import version_converter

    def broken(model, target):
        raise RuntimeError("No adapter for Foo")

    monkeypatch.setattr(version_converter, "convert_version", broken)
    out = tmp_path / "q.onnx"
    r = run_cli("quantize", cnn_opset11, "-o", out, "--calibration-data", tmp_path / "calib.npz", *FAST_BENCH)
    assert r.code == 2, r.stderr
    assert len(r.error_lines) == 1 and "opset 11" in r.stderr and "opset 13" in r.stderr and "re-export" in r.stderr
    assert not out.exists()


def test_r6_int4_keeps_old_opset_nodes_valid(tmp_path):
    """int4 with an embedding table needs opset 21 (ONNX Runtime declares it without converting nodes): the graph is
    converted first, so a ReduceMean with an ``axes`` attribute (opset 17) stays valid; without a table, no upgrade."""
    rng = np.random.default_rng(0)
    ids = helper.make_tensor_value_info("ids", onnx.TensorProto.INT64, ["N", 6])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 8])
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["e"], name="gather"),
         helper.make_node("ReduceMean", ["e"], ["m"], name="mean", axes=[1], keepdims=0),
         helper.make_node("MatMul", ["m", "W"], ["y"], name="matmul")],
        "g", [ids], [y],
        [numpy_helper.from_array(rng.standard_normal((20, 32)).astype(np.float32), "table"),
         numpy_helper.from_array((rng.standard_normal((32, 8)) / 6).astype(np.float32), "W")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    src = tmp_path / "gather_mean.onnx"
    onnx.save(model, str(src))
    np.savez(tmp_path / "ids.npz", ids=rng.integers(0, 20, size=(16, 6)).astype(np.int64))
    r = run_cli("quantize", src, "-o", tmp_path / "q.onnx", "--precision", "int4", "--calibration-data",
                tmp_path / "ids.npz", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    assert r.report["quantization"]["opset_upgrade"]["to"] == 21
    assert r.report["quantization"]["quantized_nodes"].get("Gather") == 1

    g = zoo_graphs.reduce_mean_gemm()  # no table: MatMul only, the opset stays 17
    src, calib, _ = g.save(tmp_path)
    r = run_cli("quantize", src, "-o", tmp_path / "q2.onnx", "--precision", "int4", "--calibration-data", calib,
                "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    assert "opset_upgrade" not in r.report["quantization"]
    assert next(o.version for o in onnx.load(str(tmp_path / "q2.onnx")).opset_import if o.domain == "") == 17


# ---------------------------------------------------------------------------------------------- R10


@pytest.fixture()
def fixed_pt2(tmp_path):
    """``torch.export.export(model, (randn(1,3,16,16),))`` without dynamic shapes: the batch is fixed at 1."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                            torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    path = tmp_path / "fixed.pt2"
    torch.export.save(torch.export.export(m, (torch.randn(1, 3, 16, 16),)), str(path))
    return path


@pytest.mark.parametrize("args", [
    ("quantize",),
    ("quantize", "--input-shape", "1,3,16,16"),
    ("quantize", "--mode", "static", "--calibration-data", "random"),
    ("quantize", "--precision", "int4"),
    ("prune", "--method", "unstructured", "--ratio", "0.5"),
    ("bench",),
], ids=["quantize", "input-shape", "static", "int4", "prune", "bench"])
def test_r10_fixed_batch_program_every_command(fixed_pt2, tmp_path, args):
    out = () if args[0] == "bench" else ("-o", tmp_path / "out.onnx")
    r = run_cli(args[0], fixed_pt2, *args[1:], *out, "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    rep = r.report
    assert rep["benchmark"]["batch_size"] == 1 and rep["benchmark"]["batch_axis"] == "fixed by the model"
    assert any("fixes its batch axis at 1" in w for w in rep["warnings"])
    if out:
        model = onnx.load(str(out[1]))
        assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1


def test_r10_fixed_batch_export_and_refusals(fixed_pt2, tmp_path):
    r = run_cli("export", fixed_pt2, "-o", tmp_path / "e.onnx", "--json")
    assert r.code == 0, r.stderr
    assert r.report["export"]["max_abs_diff"] < 1e-4
    for bad in (("--input-shape", "2,3,16,16"), ("--batch-size", "4")):
        r = run_cli("quantize", fixed_pt2, "-o", tmp_path / "q.onnx", *bad, *FAST_BENCH)
        assert r.code == 2 and len(r.error_lines) == 1, r.stderr
        assert "fixes its batch axis at 1" in r.stderr
        assert not (tmp_path / "q.onnx").exists()


def test_r10_fixed_batch_onnx_static_calibration(tmp_path):
    """The same kind in ONNX: a graph with batch fixed at 1 is calibrated one sample at a time."""
    g = zoo_graphs.gemm_clip_gemm()
    for v in [*g.model.graph.input, *g.model.graph.output]:
        v.type.tensor_type.shape.dim[0].dim_value = 1
    src, calib, held = g.save(tmp_path)
    for mode in (("--mode", "static"), ("--mode", "static", "--calibration-method", "entropy"), ("--mode", "dynamic")):
        r = run_cli("quantize", src, "-o", tmp_path / "q.onnx", "--calibration-data", calib, *mode, "--json",
                    *FAST_BENCH)
        assert r.code == 0, r.stderr
        assert r.report["benchmark"]["batch_size"] == 1
        feeds = dict(np.load(held))
        ref = np.concatenate([zoo_graphs.run(src, {"x": feeds["x"][i:i + 1]})[0] for i in range(16)])
        got = np.concatenate([zoo_graphs.run(tmp_path / "q.onnx", {"x": feeds["x"][i:i + 1]})[0] for i in range(16)])
        # entropy calibration clips this graph's ranges (cosine 0.89 with a dynamic batch too): not a batch matter
        assert zoo_graphs.cosine_min(ref, got) >= (0.85 if "entropy" in mode else 0.99)


# ---------------------------------------------------------------------------------------------- R15

MODEL_CLASS = "tests.case_models:MeanFlatten"


def _checkpoints() -> dict[str, object]:
    from tests.case_models import MeanFlatten

    torch.manual_seed(0)
    model = MeanFlatten()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 8, 8)).sum().backward()
    opt.step()
    sd = model.state_dict()
    dp = torch.nn.DataParallel(model).state_dict()  # keys "module.conv.weight", ...
    compiled = torch.compile(model).state_dict()  # keys "_orig_mod.conv.weight", ... (compiles lazily)
    return {
        "lightning": ({"epoch": 3, "global_step": 30, "state_dict": sd, "optimizer_states": [opt.state_dict()]},
                      "state_dict", []),
        "tutorial": ({"epoch": 3, "model_state_dict": sd, "optimizer_state_dict": opt.state_dict(), "loss": 0.5},
                     "model_state_dict", []),
        "dataparallel": (dp, None, ["module."]),
        "compiled": (compiled, None, ["_orig_mod."]),
        "ddp_checkpoint_of_compiled": ({"epoch": 1, "model": {f"module.{k}": v for k, v in compiled.items()},
                                        "optimizer": opt.state_dict()}, "model", ["module.", "_orig_mod."]),
    }, sd


@pytest.mark.parametrize("form", ["lightning", "tutorial", "dataparallel", "compiled", "ddp_checkpoint_of_compiled"])
def test_r15_checkpoints_as_people_save_them(form, tmp_path):
    forms, sd = _checkpoints()
    obj, key, prefixes = forms[form]
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)
    r = run_cli("export", path, "--model-class", MODEL_CLASS, "--input-shape", "1,3,8,8", "-o", tmp_path / "m.onnx",
                "--json")
    assert r.code == 0, r.stderr
    ck = r.report["input"]["checkpoint"]
    assert ck.get("weights_key") == key and ck.get("stripped_prefixes", []) == prefixes
    if key:
        assert set(ck["ignored_keys"]) == set(obj) - {key}
        assert any(f"under '{key}'" in w for w in r.report["warnings"])
    if prefixes:
        assert any("removed the key prefix" in w for w in r.report["warnings"])
    # the weights really are the checkpoint's: the exported model reproduces the original
    from tests.case_models import MeanFlatten

    ref = MeanFlatten()
    ref.load_state_dict(sd)
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(zoo_graphs.run(tmp_path / "m.onnx", {"x": x})[0],
                               ref.eval()(torch.from_numpy(x)).detach().numpy(), atol=1e-5)


def test_r15_errors_list_a_handful_of_keys(tmp_path):
    big = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(30)])
    path = tmp_path / "other.pt"
    torch.save({"epoch": 1, "state_dict": {f"module.{k}": v for k, v in big.state_dict().items()}}, path)
    r = run_cli("export", path, "--model-class", MODEL_CLASS, "--input-shape", "1,3,8,8", "-o", tmp_path / "m.onnx")
    assert r.code == 2 and len(r.error_lines) == 1, r.stderr
    line = r.error_lines[0]
    assert len(line) < 500 and "4 missing key(s)" in line and "60 unexpected key(s)" in line and "55 more" in line

    torch.save({"epoch": 1, "optimizer": {"lr": 0.1}, "metrics": {"acc": torch.tensor(0.9)}}, path)
    r = run_cli("export", path, "--model-class", MODEL_CLASS, "--input-shape", "1,3,8,8", "-o", tmp_path / "m.onnx")
    assert r.code == 2 and len(r.error_lines) == 1, r.stderr
    assert "epoch, optimizer, metrics" in r.stderr and "state_dict, model_state_dict" in r.stderr

    torch.save({"epoch": 1, "state_dict": big.state_dict()}, path)
    r = run_cli("export", path, "--input-shape", "1,3,8,8", "-o", tmp_path / "m.onnx")
    assert r.code == 2 and "under 'state_dict'" in r.stderr and "--model-class" in r.stderr


def test_r15_strip_prefixes_only_where_the_keys_then_fit():
    from compressor.loaders.torch_pickle import strip_prefixes

    sd = {"model.fc.weight": torch.zeros(2, 2), "model.fc.bias": torch.zeros(2)}
    out, removed = strip_prefixes(sd, {"fc.weight", "fc.bias"})
    assert list(out) == ["fc.weight", "fc.bias"] and removed == ["model."]
    out, removed = strip_prefixes(sd, {"model.fc.weight", "model.fc.bias"})  # the class itself has a "model"
    assert list(out) == list(sd) and removed == []
    out, removed = strip_prefixes({"module._orig_mod.a": torch.zeros(1)}, {"a"})
    assert list(out) == ["a"] and removed == ["module.", "_orig_mod."]


# ---------------------------------------------------------------------------------------------- R22

AVX2 = {"avx2": True}
AVX512 = {"avx2": True, "avx512f": True, "avx512bw": True}
AVX512_VNNI = {**AVX512, "avx512_vnni": True}
AVX_VNNI = {"avx2": True, "avx_vnni": True}
ARM = {}
ARM_DOT = {"asimddp": True}
ARM_I8MM = {"asimddp": True, "i8mm": True}


@pytest.mark.parametrize(("machine", "isa", "act", "wt", "sym", "risk"), [
    ("x86_64", AVX2, "uint8", "int8", True, True),     # dynamic u8 x s8
    ("x86_64", AVX2, "int8", "int8", True, True),      # static S8S8: run as u8 x s8 on x86
    ("x86_64", AVX2, "uint8", "uint8", False, False),  # U8U8 widens to 16 bits first
    ("AMD64", AVX512, "int8", "int8", True, True),     # AVX-512 without VNNI: still VPMADDUBSW
    ("x86_64", AVX512_VNNI, "int8", "int8", True, False),
    ("x86_64", AVX512_VNNI, "uint8", "int8", True, False),
    ("x86_64", AVX_VNNI, "int8", "int8", True, False),
    ("x86_64", {"amx_int8": True}, "uint8", "int8", True, False),
    ("aarch64", ARM, "uint8", "int8", True, False),
    ("aarch64", ARM, "int8", "int8", True, False),     # symmetric weights stop at -127
    ("aarch64", ARM, "int8", "int8", False, True),     # -128 x -128 pairs possible
    ("aarch64", ARM_DOT, "int8", "int8", False, False),
    ("arm64", ARM_I8MM, "int8", "int8", False, False),
    ("riscv64", {}, "uint8", "int8", True, False),
])
def test_r22_saturation_risk_is_a_function_of_the_cpu_flags(machine, isa, act, wt, sym, risk):
    from compressor.runtime import int8_saturation_risk

    got = int8_saturation_risk(machine, isa, activation_type=act, weight_type=wt, weight_symmetric=sym)
    assert (got is not None) == risk, got


@pytest.mark.parametrize(("isa", "reduce_range"), [(AVX2, True), (AVX512, True), (AVX512_VNNI, False),
                                                   (AVX_VNNI, False)])
def test_r22_static_and_dynamic_defaults_per_cpu(monkeypatch, isa, reduce_range):
    from compressor.passes import quantize as qmod
    from compressor.passes.configs import QuantizeConfig

    monkeypatch.setattr(qmod, "cpu_info", lambda: {"machine": "x86_64", "isa": isa})
    for has_conv in (True, False):  # static S8S8 (CNN with data) and dynamic U8S8
        s = qmod.choose_settings(QuantizeConfig(), has_conv=has_conv, has_calibration=True)
        assert s["mode"] == ("static" if has_conv else "dynamic")
        assert s["reduce_range"] is reduce_range and (s["saturation_risk"] is not None) == reduce_range
        # the reason says what was done, and why
        assert ("7-bit" in s["reason"]) == reduce_range
        assert ("fast and accurate" in s["reason"]) == (not reduce_range)
    s = qmod.choose_settings(QuantizeConfig(mode="static", reduce_range=False), has_conv=True, has_calibration=True)
    assert s["reduce_range"] is False and ("saturation risk" in s["reason"]) == reduce_range
    s = qmod.choose_settings(QuantizeConfig(mode="static", activation_type="uint8", weight_type="uint8"),
                             has_conv=True, has_calibration=True)
    assert s["reduce_range"] is False and s["saturation_risk"] is None  # U8U8 cannot saturate


def test_r22_cpuinfo_flags_of_x86_and_arm():
    from compressor.runtime import cpuinfo_flags

    x86 = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw\nmodel name\t: X\n"
    arm = "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd asimddp i8mm\nCPU implementer\t: 0x41\n"
    assert {"avx2", "avx512bw"} <= cpuinfo_flags(x86) and "avx512_vnni" not in cpuinfo_flags(x86)
    assert {"asimddp", "i8mm"} <= cpuinfo_flags(arm)


@pytest.mark.parametrize("graph", ["matmul_add", "gemm_clip_gemm", "reduce_mean_gemm"])
def test_r22_static_int8_on_avx2_never_saturates(monkeypatch, tmp_path, graph):
    """On a CPU without VNNI (faked: this machine has VNNI), static int8 stores 7-bit weights, so no pair of
    u8 x s8 products (VPMADDUBSW) can leave int16; fidelity holds on held-out samples."""
    from compressor.passes import quantize as qmod

    monkeypatch.setattr(qmod, "cpu_info", lambda: {"machine": "x86_64", "isa": AVX2})
    g = zoo_graphs.ZOO[graph]()
    src, calib, held = g.save(tmp_path)
    out = tmp_path / "q.onnx"
    r = run_cli("quantize", src, "-o", out, "--mode", "static", "--calibration-data", calib, "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    q = r.report["quantization"]
    assert q["reduce_range"] is True and "7-bit" in q["reason"] and "VPMADDUBSW" in q["saturation_risk"]
    model = onnx.load(str(out))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weights = [inits[n.input[0]] for n in model.graph.node
               if n.op_type == "DequantizeLinear" and inits.get(n.input[0], np.zeros(0)).dtype == np.int8
               and inits[n.input[0]].ndim >= 2]
    assert weights
    for w in weights:  # the worst pair a u8 activation (<= 255) can form with these weights fits in int16
        assert 2 * 255 * int(np.abs(w.astype(np.int32)).max()) <= 32767
    feeds = dict(np.load(held))
    assert zoo_graphs.cosine_min(zoo_graphs.run(src, feeds)[0], zoo_graphs.run(out, feeds)[0]) >= 0.99


def test_r22_reduce_range_off_by_flag_warns_on_avx2(monkeypatch, tmp_path):
    from compressor.passes import quantize as qmod

    monkeypatch.setattr(qmod, "cpu_info", lambda: {"machine": "x86_64", "isa": AVX2})
    src, calib, _ = zoo_graphs.matmul_add().save(tmp_path)
    r = run_cli("quantize", src, "-o", tmp_path / "q.onnx", "--mode", "static", "--calibration-data", calib,
                "--no-reduce-range", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    assert r.report["quantization"]["reduce_range"] is False
    assert any("reduce_range off" in w and "saturate" in w for w in r.report["warnings"])


# ---------------------------------------------------------------------------------------------- R25


def test_r25_fold_gemm_alpha_beta_is_exact():
    from compressor.passes.rewrites import fold_gemm_alpha_beta

    g = zoo_graphs.gemm_alpha_beta(alpha=0.5, beta=2.0)
    feeds = g.make_data(1)
    ref = zoo_graphs.run(g.model, feeds)[0]
    m = onnx.ModelProto()
    m.CopyFrom(g.model)
    assert fold_gemm_alpha_beta(m) == 1
    onnx.checker.check_model(m, full_check=True)
    (node,) = m.graph.node
    assert {a.name for a in node.attribute} & {"alpha", "beta"} == set()
    np.testing.assert_array_equal(zoo_graphs.run(m, feeds)[0], ref)  # powers of two: bit for bit
    assert fold_gemm_alpha_beta(m) == 0


def test_r25_fold_with_shared_weight_transposes_and_computed_bias():
    """A weight shared with another Gemm gets its own scaled copy; a computed C is scaled by a Mul."""
    from compressor.passes.rewrites import fold_gemm_alpha_beta

    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 16])
    ys = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, ["N", 16]) for n in ("y1", "y2")]
    nodes = [helper.make_node("Relu", ["x"], ["c"], name="relu"),
             helper.make_node("Gemm", ["x", "W", "c"], ["y1"], name="g1", alpha=0.3, beta=1.7, transB=1),
             helper.make_node("Gemm", ["x", "W", "b"], ["y2"], name="g2")]
    inits = [numpy_helper.from_array(rng.standard_normal((16, 16)).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], ys, inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    feeds = {"x": rng.standard_normal((8, 16)).astype(np.float32)}
    ref = zoo_graphs.run(model, feeds)
    assert fold_gemm_alpha_beta(model) == 1
    onnx.checker.check_model(model, full_check=True)
    got = zoo_graphs.run(model, feeds)
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got[1], ref[1])  # the other user of W is untouched
    assert len(model.graph.initializer) == 4  # W, b, W scaled for g1, beta


@pytest.mark.parametrize("mode", [("--mode", "dynamic"), ("--mode", "static"), ("--precision", "int4")],
                         ids=["dynamic", "static", "int4"])
def test_r25_gemm_alpha_beta_quantizes_in_every_precision(mode, tmp_path):
    g = zoo_graphs.gemm_alpha_beta()
    src, calib, held = g.save(tmp_path)
    out = tmp_path / "q.onnx"
    r = run_cli("quantize", src, "-o", out, "--calibration-data", calib, *mode, "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    q = r.report["quantization"]
    assert q["rewrites"].get("gemm_alpha_beta") == 1
    assert sum(q["quantized_nodes"].values()) == 1
    feeds = dict(np.load(held))
    cos = zoo_graphs.cosine_min(zoo_graphs.run(src, feeds)[0], zoo_graphs.run(out, feeds)[0])
    assert cos >= (0.99 if mode[0] == "--mode" else 0.95), cos


def test_r22_static_fidelity_is_checked_on_held_out_samples(tmp_path):
    src, calib, _ = zoo_graphs.matmul_add().save(tmp_path)
    r = run_cli("quantize", src, "-o", tmp_path / "q.onnx", "--mode", "static", "--calibration-data", calib, "--json",
                *FAST_BENCH)
    assert r.code == 0, r.stderr
    q = r.report["quantization"]
    held = q["held_out_fidelity"]
    assert q["calibration_samples"] == 52 and held["samples"] == 12 and "not calibrated on" in held["inputs"]
    x = np.load(calib)["x"][52:]
    assert held["cosine_min"] == pytest.approx(
        zoo_graphs.cosine_min(zoo_graphs.run(src, {"x": x})[0], zoo_graphs.run(tmp_path / "q.onnx", {"x": x})[0]),
        abs=1e-6)
    r = run_cli("quantize", src, "-o", tmp_path / "q.onnx", "--mode", "static", "--calibration-data", calib,
                "--calibration-samples", "40", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    assert r.report["quantization"]["held_out_fidelity"]["samples"] == 24

    # samples beyond the calibrated range: the held-out check says so in one warning
    data = np.random.default_rng(0).standard_normal((40, 32)).astype(np.float32)
    data[32:] *= 20.0
    np.savez(tmp_path / "shifted.npz", x=data)
    r = run_cli("quantize", src, "-o", tmp_path / "q.onnx", "--mode", "static", "--calibration-data",
                tmp_path / "shifted.npz", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    assert r.report["quantization"]["held_out_fidelity"]["cosine_min"] < 0.98
    assert sum("held-out samples" in w for w in r.report["warnings"]) == 1


@pytest.mark.parametrize("method", ["entropy", "percentile"])
def test_r22_histogram_calibration_with_an_uneven_sample_count(tmp_path, method):
    """50 samples (not a multiple of 16): ONNX Runtime's histogram calibrators fail on a shorter last batch."""
    src, _, _ = zoo_graphs.gemm_clip_gemm().save(tmp_path)
    np.savez(tmp_path / "c50.npz", x=np.random.default_rng(0).standard_normal((50, 32)).astype(np.float32))
    r = run_cli("quantize", src, "-o", tmp_path / "q.onnx", "--mode", "static", "--calibration-data",
                tmp_path / "c50.npz", "--calibration-method", method, "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    assert r.report["quantization"]["calibration_samples"] == 40


def test_r25_gemm_trans_a_becomes_a_transpose_and_quantizes(tmp_path):
    """The same kind: a Gemm with transA=1 was left float by dynamic and int4 ("no Gemm with constant weights")."""
    from compressor.passes.rewrites import gemm_trans_a_to_transpose

    rng = np.random.default_rng(0)
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 32, 8])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [8, 16])
    nodes = [helper.make_node("ReduceSum", ["x", "axis0"], ["a"], name="sum", keepdims=0),  # [32, 8]
             helper.make_node("Gemm", ["a", "W", "b"], ["y"], name="gemm", transA=1, alpha=0.5)]
    inits = [numpy_helper.from_array((rng.standard_normal((32, 16)) / 6).astype(np.float32), "W"),
             numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b"),
             numpy_helper.from_array(np.array([0], dtype=np.int64), "axis0")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    feeds = {"x": rng.standard_normal((1, 32, 8)).astype(np.float32)}
    ref = zoo_graphs.run(model, feeds)[0]
    m = onnx.ModelProto()
    m.CopyFrom(model)
    assert gemm_trans_a_to_transpose(m) == 1
    onnx.checker.check_model(m, full_check=True)
    np.testing.assert_array_equal(zoo_graphs.run(m, feeds)[0], ref)

    src = tmp_path / "ta.onnx"
    onnx.save(model, str(src))
    np.savez(tmp_path / "c.npz", x=rng.standard_normal((16, 32, 8)).astype(np.float32))
    for mode in (("--mode", "dynamic"), ("--precision", "int4")):
        r = run_cli("quantize", src, "-o", tmp_path / "q.onnx", "--calibration-data", tmp_path / "c.npz", *mode,
                    "--json", *FAST_BENCH)
        assert r.code == 0, r.stderr
        q = r.report["quantization"]
        assert q["rewrites"]["gemm_trans_a"] == 1 and q["rewrites"]["gemm_alpha_beta"] == 1
        assert sum(q["quantized_nodes"].values()) == 1

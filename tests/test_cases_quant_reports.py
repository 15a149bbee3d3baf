"""Quantization cases about what is quantized and what the report says: R1, R7, R8, R11, R16, R21, R23
(../shared/cases/README.md, "Round 2"), on real ONNX Runtime, with small seeded models from
tests/quant_report_models.py."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from tests import quant_report_models as qm
from tests.conftest import assert_valid_onnx, run_cli

FAST = ["--runs", "4", "--warmup", "1", "--no-measure-memory"]


def _sess(model):
    """An ONNX Runtime CPU session on a path or on serialized model bytes."""
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), providers=["CPUExecutionProvider"])


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    return float(np.min((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def _lists(report):
    """The node lists of a report, which is first checked against the report schema."""
    import jsonschema

    from compressor.report import schema

    jsonschema.Draft202012Validator(schema()).validate(report)
    q = report["quantization"]
    return q["quantized_nodes"], q["unquantized_nodes"]


def _state_dict(cls, path):
    torch.manual_seed(0)
    model = cls().eval()
    torch.save(model.state_dict(), path)
    return model


# ---------------------------------------------------------------- R1: recurrent layers under dynamic int8


def test_r1_lstm_state_dict_is_quantized_dynamically(tmp_path):
    model = _state_dict(qm.LSTMLast, tmp_path / "lstm.pt")
    out = tmp_path / "lstm.onnx"
    r = run_cli("quantize", tmp_path / "lstm.pt", "--model-class", "tests.quant_report_models:LSTMLast",
                "--input-shape", "1,10,8", "-o", out, "--json", *FAST)
    assert r.code == 0, r.stderr
    assert _lists(r.report) == ({"LSTM": 2}, {})
    assert r.report["result"]["op_types"].get("DynamicQuantizeLSTM") == 2
    assert r.report["size_ratio"] < 0.6  # 8-bit W and R (85 kB -> 44 kB in the case)
    x = np.random.default_rng(0).standard_normal((16, 10, 8)).astype(np.float32)
    got = np.concatenate([_sess(out).run(None, {"x": x[i:i + 1]})[0] for i in range(16)])
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    assert _cosine(got, ref) >= 0.995


def test_r1_node_lists_name_every_weight_op_and_no_time_step_gather(tmp_path):
    _state_dict(qm.LSTMHead, tmp_path / "lstm.pt")
    r = run_cli("quantize", tmp_path / "lstm.pt", "--model-class", "tests.quant_report_models:LSTMHead",
                "--input-shape", "1,10,8", "-o", tmp_path / "lstm.onnx", "--json", *FAST)
    assert r.code == 0, r.stderr
    # the head's Gemm runs as MatMulInteger in the output graph: listed by that final type
    assert _lists(r.report) == ({"LSTM": 2, "MatMul": 1}, {})
    assert r.report["baseline"]["op_types"].get("Gather")  # the last-step Gather is there, and is no weight node
    _state_dict(qm.GRUHead, tmp_path / "gru.pt")
    r = run_cli("quantize", tmp_path / "gru.pt", "--model-class", "tests.quant_report_models:GRUHead",
                "--input-shape", "1,10,8", "-o", tmp_path / "gru.onnx", "--json", *FAST)
    assert r.code == 0, r.stderr
    assert _lists(r.report) == ({"MatMul": 1}, {"GRU": 2})  # ONNX Runtime has no quantized GRU: named, in float
    nodes = r.report["quantization"]["weight_nodes"]
    assert sorted((w["op_type"], w["quantized"]) for w in nodes) == [("GRU", False), ("GRU", False), ("MatMul", True)]


@pytest.mark.slow
def test_r1_recurrent_layers_listed_in_every_precision(tmp_path):
    torch.manual_seed(0)
    torch.save(qm.LSTMHead().eval(), tmp_path / "m.pt")
    expected = {("int8", "static"): ({"Gemm": 1}, {"LSTM": 2}), ("int4", None): ({"MatMul": 1}, {"LSTM": 2}),
                ("fp16", None): ({"Gemm": 1, "LSTM": 2}, {})}
    for (precision, mode), lists in expected.items():
        extra = ["--mode", mode, "--calibration-data", "random"] if mode else []
        r = run_cli("quantize", tmp_path / "m.pt", "--trust-pickle", "--input-shape", "1,10,8", "--precision", precision,
                    *extra, "-o", tmp_path / f"{precision}.onnx", "--json", *FAST)
        assert r.code == 0, (precision, r.stderr)
        assert _lists(r.report) == lists, precision


# ---------------------------------------------------------------- R7: already quantized inputs


@pytest.fixture(scope="module")
def quantized_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("r7")
    onnx.save(qm.mlp(), d / "mlp.onnx")
    made = {}
    for name, args in {"qdq": ["--mode", "static", "--calibration-data", "random"], "qoperator": ["--mode", "dynamic"],
                       "int4": ["--precision", "int4"]}.items():
        r = run_cli("quantize", d / "mlp.onnx", *args, "-o", d / f"{name}.onnx", *FAST)
        assert r.code == 0, r.stderr
        made[name] = d / f"{name}.onnx"
    onnx.save(qm.integer_weights(), d / "int_weights.onnx")
    made["integer weights"] = d / "int_weights.onnx"
    return made


@pytest.mark.parametrize("precision", ["static", "dynamic", "int4", "fp16"])
def test_r7_already_quantized_exits_2_for_every_precision(quantized_models, precision, tmp_path):
    args = {"static": ["--mode", "static", "--calibration-data", "random"], "dynamic": ["--mode", "dynamic"],
            "int4": ["--precision", "int4"], "fp16": ["--precision", "fp16"]}[precision]
    for form, path in quantized_models.items():
        out = tmp_path / f"{form}.onnx"
        r = run_cli("quantize", path, *args, "-o", out, *FAST)
        assert r.code == 2, (form, r.stderr)
        errors = [line for line in r.error_lines if line.startswith("error")]
        assert len(errors) == 1 and "already quantized" in errors[0], (form, r.stderr)
        assert "Traceback" not in r.stderr and not out.exists()


def test_r7_forms_are_recognised():
    from compressor.passes.quant_inventory import quantized_form

    assert quantized_form(qm.mlp()) is None
    assert quantized_form(qm.integer_weights()).startswith("integer weights (MatMul mm: int8")
    lstm = qm.onnx_lstm()
    lstm.graph.node[1].op_type = "DynamicQuantizeLSTM"
    assert "DynamicQuantizeLSTM" in quantized_form(lstm)


# ---------------------------------------------------------------- R8: float16 models


@pytest.mark.parametrize("keep_io_types", [False, True])
def test_r8_float16_model_is_upcast_and_quantized(tmp_path, keep_io_types):
    from onnxruntime.transformers.float16 import convert_float_to_float16

    path = tmp_path / "mlp16.onnx"
    onnx.save(convert_float_to_float16(qm.mlp(), keep_io_types=keep_io_types), path)
    io_type = onnx.TensorProto.FLOAT if keep_io_types else onnx.TensorProto.FLOAT16
    for precision in ("int8", "int4"):
        out = tmp_path / f"{precision}.onnx"
        r = run_cli("quantize", path, "--precision", precision, "-o", out, "--json", *FAST)
        assert r.code == 0, r.stderr
        assert _lists(r.report) == ({"MatMul": 3}, {})
        assert r.report["quantization"]["upcast_from_float16"] == 6  # 3 weights and 3 biases
        assert any("float16" in w and "upcast" in w for w in r.report["warnings"])
        m = onnx.load(str(out))  # the interface is kept
        assert m.graph.input[0].type.tensor_type.elem_type == io_type
        assert m.graph.output[0].type.tensor_type.elem_type == io_type
        assert r.report["fidelity"]["cosine_min"] > (0.99 if precision == "int8" else 0.9)
    r = run_cli("quantize", path, "--precision", "fp16", "-o", tmp_path / "fp16.onnx", *FAST)
    assert r.code == 2 and "already float16" in r.stderr and not (tmp_path / "fp16.onnx").exists()
    assert "no Conv, MatMul or Gemm" not in r.stderr


def test_r8_upcast_keeps_values_exactly():
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from compressor.passes.quant_inventory import float16_weight_nodes, upcast_float16

    half = convert_float_to_float16(qm.mlp(), keep_io_types=False)
    assert len(float16_weight_nodes(half)) == 3
    up = onnx.ModelProto()
    up.CopyFrom(half)
    assert upcast_float16(up) == 6 and float16_weight_nodes(up) == []
    onnx.checker.check_model(up, full_check=True)
    x = np.random.default_rng(0).standard_normal((8, 16)).astype(np.float16)
    ref = _sess(half.SerializeToString()).run(None, {"x": x})[0]
    got = _sess(up.SerializeToString()).run(None, {"x": x})[0]
    assert got.dtype == np.float16 and np.allclose(got, ref, atol=2e-2, rtol=1e-2)


# ---------------------------------------------------------------- R11: every output passes the full checker


def test_r11_fp16_output_with_float_inputs_is_sorted(tmp_path):
    onnx.save(qm.mlp(), tmp_path / "mlp.onnx")
    out = tmp_path / "fp16.onnx"
    r = run_cli("quantize", tmp_path / "mlp.onnx", "--precision", "fp16", "-o", out, *FAST)
    assert r.code == 0, r.stderr
    assert_valid_onnx(out)
    m = onnx.load(str(out))
    seen = {i.name for i in m.graph.input} | {i.name for i in m.graph.initializer}
    for n in m.graph.node:  # topological order: every input written before it is read
        assert all(i in seen for i in n.input if i), n.name
        seen.update(n.output)


@pytest.mark.parametrize("model", ["mlp", pytest.param("lstm", marks=pytest.mark.slow),
                                   pytest.param("cnn", marks=pytest.mark.slow)])
def test_r11_every_precision_and_pass_gives_valid_onnx(tmp_path, model):
    if model == "mlp":
        onnx.save(qm.mlp(), tmp_path / "m.onnx")
        src, shape = [tmp_path / "m.onnx"], []
    else:
        torch.manual_seed(0)
        torch.save((qm.LSTMHead() if model == "lstm" else qm.ConvHead()).eval(), tmp_path / "m.pt")
        src, shape = [tmp_path / "m.pt", "--trust-pickle"], ["--input-shape", "1,10,8" if model == "lstm" else "1,3,16,16"]
    runs = {"dynamic": ["quantize", "--mode", "dynamic"], "static": ["quantize", "--calibration-data", "random"],
            "int4": ["quantize", "--precision", "int4"], "fp16": ["quantize", "--precision", "fp16"]}
    if model != "lstm":
        runs["unstructured"] = ["prune", "--method", "unstructured", "--ratio", "0.5"]
    for name, (cmd, *args) in runs.items():
        out = tmp_path / f"{name}.onnx"
        r = run_cli(cmd, *src, *shape, *args, "-o", out, *FAST)  # run_cli applies the full checker after exit 0
        assert r.code == 0, (name, r.stderr)
        assert_valid_onnx(out)


# ---------------------------------------------------------------- R16: parameters and sparsity in every precision


def test_r16_parameters_are_logical_weights_in_every_precision(tmp_path):
    torch.manual_seed(0)
    model = qm.EmbedLSTM().eval()
    torch.save(model, tmp_path / "m.pt")
    in_torch = sum(p.numel() for p in model.parameters())  # 1600 + 6400 (LSTM W, R, two biases) + 330 = 8330
    expected = in_torch + 1  # the export adds one float scalar (the zero of the initial states)
    for precision, extra in (("int8", []), ("int4", []), ("fp16", []), ("int8", ["--mode", "static",
                                                                                 "--calibration-data", "random"])):
        r = run_cli("quantize", tmp_path / "m.pt", "--trust-pickle", "--input-shape", "ids:1x12:int64", "--precision",
                    precision, *extra, "-o", tmp_path / f"{precision}.onnx", "--json", *FAST)
        assert r.code == 0, (precision, r.stderr)
        assert r.report["baseline"]["parameters"] == expected
        assert r.report["result"]["parameters"] == expected, (precision, extra)


def test_r16_sparsity_is_measured_the_same_way_in_every_precision(tmp_path):
    model = qm.mlp(dims=(64, 64, 64, 8), sparse=True)  # half zeros; no other weight rounds to zero in 8 or 4 bits
    onnx.save(model, tmp_path / "m.onnx")
    from compressor.onnx_stats import graph_stats

    base = graph_stats(model)
    assert 0.45 < base["sparsity"] < 0.55
    for name, args in {"dynamic": ["--mode", "dynamic"], "static": ["--mode", "static", "--calibration-data", "random"],
                       "int4": ["--precision", "int4"], "int4-symmetric": ["--precision", "int4", "--scheme", "symmetric"],
                       "fp16": ["--precision", "fp16"]}.items():
        r = run_cli("quantize", tmp_path / "m.onnx", *args, "-o", tmp_path / f"{name}.onnx", "--json", *FAST)
        assert r.code == 0, (name, r.stderr)
        assert r.report["result"]["parameters"] == base["parameters"], name
        assert r.report["result"]["sparsity"] == pytest.approx(base["sparsity"], abs=1e-9), name


# ---------------------------------------------------------------- R21: dynamic int8 keeps convolutions in float


def test_r21_dynamic_keeps_convolutions_float_and_says_static_needs_data(tmp_path):
    torch.manual_seed(0)
    torch.save(qm.ConvHead().eval(), tmp_path / "cnn.pt")
    r = run_cli("quantize", tmp_path / "cnn.pt", "--trust-pickle", "--input-shape", "1,3,16,16", "-o",
                tmp_path / "q.onnx", "--json", *FAST)
    assert r.code == 0, r.stderr
    ops = r.report["result"]["op_types"]
    assert "ConvInteger" not in ops and ops["Conv"] == 2
    q = r.report["quantization"]
    assert _lists(r.report) == ({"MatMul": 1}, {"Conv": 2}) and len(q["convolutions_kept_float"]) == 2
    assert "int8 convolutions need static quantization, which needs --calibration-data" in q["reason"]
    assert any("--calibration-data" in w and "convolution" in w for w in r.report["warnings"])
    r = run_cli("quantize", tmp_path / "cnn.pt", "--trust-pickle", "--input-shape", "1,3,16,16", "--mode", "dynamic",
                "--op-types", "Conv", "-o", tmp_path / "forced.onnx", "--json", *FAST)
    assert r.code == 0 and r.report["result"]["op_types"].get("ConvInteger") == 2  # asked for by name


def test_r21_a_run_that_would_quantize_nothing_exits_2(tmp_path):
    torch.manual_seed(0)
    torch.save(qm.ConvOnly().eval(), tmp_path / "cnn.pt")
    r = run_cli("quantize", tmp_path / "cnn.pt", "--trust-pickle", "--input-shape", "1,3,16,16", "-o", tmp_path / "q.onnx")
    assert r.code == 2 and "--calibration-data" in r.stderr and not (tmp_path / "q.onnx").exists()
    # an ONNX input is refused before any work (no step runs)
    onnx_cnn = qm._model([onnx.helper.make_node("Conv", ["x", "k"], ["y"], name="conv")],
                         [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["N", 3, 8, 8])],
                         [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["N", 4, 6, 6])],
                         [onnx.numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "k")])
    onnx.save(onnx_cnn, tmp_path / "cnn.onnx")
    r = run_cli("quantize", tmp_path / "cnn.onnx", "-o", tmp_path / "q.onnx")
    assert r.code == 2 and "static int8 needs --calibration-data" in r.stderr and not r.progress_lines
    r = run_cli("quantize", tmp_path / "cnn.onnx", "--precision", "int4", "-o", tmp_path / "q.onnx")
    assert r.code == 2 and "would quantize no node" in r.stderr and "Conv" in r.stderr
    onnx.save(qm.mlp(), tmp_path / "mlp.onnx")
    r = run_cli("quantize", tmp_path / "mlp.onnx", "--op-types", "Gemm", "--exclude", "gemm*", "-o", tmp_path / "q.onnx")
    assert r.code == 2 and "would quantize no node" in r.stderr
    assert not any("quantiz" in line for line in r.progress_lines)


# ---------------------------------------------------------------- R23: node lists describe the output graph


@pytest.mark.parametrize("graph, expected", [
    ("lstm", {"LSTM": 1}), ("bidirectional_lstm", {"LSTM": 1}), ("lstm_matmul", {"LSTM": 1, "MatMul": 1}), ("attention_matmul", {"Attention": 1, "MatMul": 1}),
    ("embedding_matmul", {"Gather": 1, "MatMul": 1}),
])
def test_r23_onnx_graphs_quantized_dynamically_are_listed_by_final_type(tmp_path, graph, expected):
    model = {"lstm": qm.onnx_lstm, "lstm_matmul": lambda: qm.onnx_lstm(head=True),
             "bidirectional_lstm": lambda: qm.onnx_lstm(bidirectional=True), "attention_matmul": qm.ms_attention,
             "embedding_matmul": qm.embedding_matmul}[graph]()
    onnx.save(model, tmp_path / "m.onnx")
    r = run_cli("quantize", tmp_path / "m.onnx", "-o", tmp_path / "q.onnx", "--json", *FAST)
    assert r.code == 0, r.stderr
    assert _lists(r.report) == (expected, {})
    assert r.report["fidelity"]["cosine_min"] > 0.99
    stored = {w["op_type"]: w["stored_as"] for w in r.report["quantization"]["weight_nodes"]}
    assert set(stored.values()) <= {"int8", "uint8"}, stored  # e.g. the embedding table is int8 in the output


def test_r23_matmul_fused_into_gemm_is_listed_once(tmp_path):
    onnx.save(qm.mlp(matmul_add=True), tmp_path / "m.onnx")
    r = run_cli("quantize", tmp_path / "m.onnx", "--mode", "static", "--calibration-data", "random", "-o",
                tmp_path / "q.onnx", "--json", *FAST)
    assert r.code == 0, r.stderr
    quantized, unquantized = _lists(r.report)
    final = {op: n for op, n in r.report["result"]["op_types"].items() if op in ("Gemm", "MatMul")}
    assert quantized == final and sum(quantized.values()) == 3 and unquantized == {}


def test_r23_weight_nodes_inside_subgraphs_are_listed():
    from onnx import TensorProto, helper, numpy_helper

    from compressor.passes.quant_inventory import node_lists

    w = numpy_helper.from_array(np.ones((4, 4), np.float32), "w")
    branch = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y_then"], name="inner_mm")], "then", [],
                               [helper.make_tensor_value_info("y_then", TensorProto.FLOAT, None)])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["y_else"])], "else", [],
                              [helper.make_tensor_value_info("y_else", TensorProto.FLOAT, None)])
    g = helper.make_graph([helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=other)], "g",
                          [helper.make_tensor_value_info("c", TensorProto.BOOL, []),
                           helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    lists = node_lists(helper.make_model(g))
    assert lists["unquantized_nodes"] == {"MatMul": 1} and lists["weight_nodes"][0]["name"] == "inner_mm"


def test_r23_excluded_gemm_stays_float_under_dynamic_int8(tmp_path):
    """ONNX Runtime renames each Gemm to <name>_MatMul before matching --exclude: the exclusion must still hold."""
    onnx.save(qm.mlp(), tmp_path / "m.onnx")
    r = run_cli("quantize", tmp_path / "m.onnx", "--exclude", "gemm0", "-o", tmp_path / "q.onnx", "--json", *FAST)
    assert r.code == 0, r.stderr
    assert r.report["result"]["op_types"]["MatMulInteger"] == 2
    assert _lists(r.report) == ({"MatMul": 2}, {"MatMul": 1})
    left = [w["name"] for w in r.report["quantization"]["weight_nodes"] if not w["quantized"]]
    assert left == ["gemm0_MatMul"]
    r = run_cli("quantize", tmp_path / "m.onnx", "--op-types", "Gemm", "-o", tmp_path / "q2.onnx", "--json", *FAST)
    assert r.code == 0, r.stderr
    assert _lists(r.report) == ({"MatMul": 3}, {})


def test_r16_a_tied_table_kept_float_beside_its_int8_copy_counts_once(tmp_path):
    model = qm.tied_embedding()
    onnx.save(model, tmp_path / "m.onnx")
    r = run_cli("quantize", tmp_path / "m.onnx", "-o", tmp_path / "q.onnx", "--json", *FAST)
    assert r.code == 0, r.stderr
    assert r.report["quantization"]["tied_weights_kept_float"] == ["table"]
    out = onnx.load(str(tmp_path / "q.onnx"))
    stored = sorted(int(np.prod(i.dims)) for i in out.graph.initializer if np.prod(i.dims) == 128 * 16)
    assert stored == [2048, 2048]  # the float table and the int8 copy of the output layer: one logical weight
    assert r.report["baseline"]["parameters"] == r.report["result"]["parameters"] == 2048


def test_r21_weight_on_the_left_is_not_counted_as_quantizable(tmp_path):
    """MatMul(W, x): listed as a weight node, but ONNX Runtime's dynamic quantizer takes a constant B only."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32), "w")
    model = qm._model([helper.make_node("MatMul", ["w", "x"], ["y"], name="wx")],
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, "N"])],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, "N"])], [w])
    onnx.save(model, tmp_path / "wx.onnx")
    r = run_cli("quantize", tmp_path / "wx.onnx", "--input-shape", "x:4x1", "-o", tmp_path / "q.onnx")
    assert r.code == 2 and "would quantize no node" in r.stderr and "constant as first input" in r.stderr
    assert not (tmp_path / "q.onnx").exists()


def test_r1_a_recurrent_layer_the_runtime_cannot_quantize_is_named(tmp_path):
    """A lone ONNX RNN: ONNX Runtime has no quantized RNN, so nothing would be quantized: exit 2 naming it."""
    model = qm.onnx_lstm()
    rnn = model.graph.node[1]
    rnn.op_type = "RNN"
    inits = {i.name: i for i in model.graph.initializer}
    for name, shape in (("W", [1, 32, 8]), ("R", [1, 32, 32]), ("B", [1, 64])):
        inits[name].CopyFrom(onnx.numpy_helper.from_array(np.full(shape, 0.1, np.float32), name))
    onnx.save(model, tmp_path / "rnn.onnx")
    r = run_cli("quantize", tmp_path / "rnn.onnx", "-o", tmp_path / "q.onnx")
    assert r.code == 2 and "this model's weight nodes: RNN" in r.stderr and not (tmp_path / "q.onnx").exists()
    r = run_cli("quantize", tmp_path / "rnn.onnx", "--precision", "fp16", "-o", tmp_path / "q16.onnx", "--json", *FAST)
    assert r.code == 0, r.stderr
    assert _lists(r.report) == ({"RNN": 1}, {})

"""Fast unit tests: configs, input-shape parsing, format detection, CLI start-up."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from compressor.artifact import ModelFormat
from compressor.errors import EXIT_STEP_FAILED, EXIT_USAGE, UnknownFormatError, UsageError
from compressor.fidelity import compare_outputs
from compressor.inputs import parse_input_shapes
from compressor.loaders import detect_format
from compressor.passes import config_from_json, config_to_json, get_pass
from compressor.passes.configs import PruneConfig, QuantizeConfig


@pytest.mark.parametrize("cfg", [PruneConfig(), PruneConfig(method="unstructured", ratio=0.8),
                                 QuantizeConfig(), QuantizeConfig(scheme="asymmetric", per_channel=False)])
def test_config_json_round_trip(cfg):
    data = json.loads(json.dumps(config_to_json(cfg)))
    assert config_from_json(type(cfg), data) == cfg


def test_config_validation():
    with pytest.raises(UsageError, match="--ratio"):
        PruneConfig(ratio=1.5)
    with pytest.raises(UsageError, match="structured, unstructured"):
        PruneConfig(method="channel")
    with pytest.raises(UsageError, match="symmetric, asymmetric"):
        QuantizeConfig(scheme="affine")
    with pytest.raises(UsageError, match="valid settings"):
        config_from_json(PruneConfig, {"ratoi": 0.5})
    with pytest.raises(UsageError, match="prune, quantize"):
        get_pass("distill")


def test_parse_input_shapes():
    assert parse_input_shapes(["1,1,8,8"]) == [(None, (1, 1, 8, 8), "float32")]
    assert parse_input_shapes(["input_ids:8x128:int64,attention_mask:8x128:int64"]) == [
        ("input_ids", (8, 128), "int64"), ("attention_mask", (8, 128), "int64")]
    assert parse_input_shapes(["a:1x3", "b:2x4:int32"]) == [("a", (1, 3), "float32"), ("b", (2, 4), "int32")]
    for bad in (["1,0,8"], ["abc"], ["x:1x2:complex"], ["x:"], ["1,2", "3,4"]):
        with pytest.raises(UsageError):
            parse_input_shapes(bad)


def test_detect_format(tmp_path, samples):
    assert detect_format(samples / "digits_cnn.pt") is ModelFormat.TORCH_MODULE
    assert detect_format(samples / "digits_resnet.pt") is ModelFormat.TORCH_MODULE  # refined on load
    assert detect_format(samples / "digits_mlp.pt2") is ModelFormat.EXPORTED_PROGRAM
    junk = tmp_path / "m.onnx"
    junk.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(UnknownFormatError):
        detect_format(junk)
    with pytest.raises(UsageError):
        detect_format(tmp_path)


def test_compare_outputs_metrics():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((32, 10)).astype(np.float32)
    same = compare_outputs([a], [a.copy()])
    assert same["max_abs_diff"] == 0 and same["cosine_min"] == pytest.approx(1.0) and same["top1_agreement"] == 1.0
    assert same["sqnr_db"] is None  # no noise: infinite SQNR
    noisy = compare_outputs([a], [a + 0.1 * rng.standard_normal(a.shape).astype(np.float32)])
    assert 15 < noisy["sqnr_db"] < 25 and noisy["cosine_mean"] < 1.0
    assert compare_outputs([a], [-a])["cosine_min"] == pytest.approx(-1.0)


def test_exit_codes():
    assert UsageError.exit_code == EXIT_USAGE == 2
    assert EXIT_STEP_FAILED == 1


def test_cli_import_is_light():
    code = "import sys, compressor.cli; print(sorted(m for m in ('torch','onnx','onnxruntime','torch_pruning') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_help_lists_commands():
    out = subprocess.run([sys.executable, "-m", "compressor", "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("prune", "quantize", "export", "bench", "doctor"):
        assert cmd in out
    assert "Exit codes" in out


def test_large_models_use_external_data(tmp_path, monkeypatch):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from compressor import artifact
    from compressor.outputs import publish

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    monkeypatch.setattr(artifact, "EXTERNAL_DATA_BYTES", 1000)  # pretend 16 KB is "over 2 GB"
    work = tmp_path / "work"
    work.mkdir()
    artifact.save_onnx(model, work / "result.onnx")
    assert (work / "result.onnx.data").exists()
    final = tmp_path / "model.quantized.onnx"
    publish(work / "result.onnx", final)
    assert artifact.file_size_bytes(final) > 64 * 64 * 4
    sess = ort.InferenceSession(str(final), providers=["CPUExecutionProvider"])
    assert sess.run(None, {"x": np.ones((1, 64), np.float32)})[0].shape == (1, 64)
    assert onnx.load(str(final), load_external_data=False).graph.initializer[0].data_location == TensorProto.EXTERNAL


def test_export_interruption_is_found_down_the_exception_chain():
    # torch.export wraps a Ctrl-C raised inside it in its own error; the exporter fallback must not swallow it
    from compressor.export import _interruption

    def wrapped(inner):
        try:
            try:
                raise inner
            except BaseException as e:
                raise RuntimeError("Failed to export the model with torch.export") from e
        except RuntimeError as outer:
            return outer

    assert isinstance(_interruption(wrapped(KeyboardInterrupt())), KeyboardInterrupt)
    stop = _interruption(wrapped(SystemExit(143)))
    assert isinstance(stop, SystemExit) and stop.code == 143
    assert _interruption(wrapped(ValueError("unsupported op"))) is None

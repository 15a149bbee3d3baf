"""The CLI in pipelines and for people: JSON errors, progress on stderr, NO_COLOR, help."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys

import pytest

from tests.conftest import FAST_BENCH, ROOT, run_cli

ESCAPE = re.compile(rb"\x1b\[[0-9;?]*[a-zA-Z]")


@pytest.mark.parametrize("args", [
    ["prune", "missing.pt"], ["quantize", "missing.onnx"], ["export", "missing.pt"], ["bench", "missing.onnx"],
    ["run", "missing.toml"], ["prune", "--no-such-flag"], ["doctor", "--no-such-flag"], ["quantize", "sample_models/digits_cnn.pt", "--ratio", "x"],
])
def test_json_failure_is_one_json_object_with_the_exit_code(args):
    r = run_cli(*args, "--json")
    assert r.code == 2, r.stderr
    rep = json.loads(r.stdout)
    assert rep["error"]["exit_code"] == r.code and rep["error"]["kind"] in ("usage", "bad_setting")
    assert rep["error"]["message"] and rep["schema_version"].startswith("1.") and rep["command"].startswith("compressor")
    assert len(r.error_lines) == 1 and r.error_lines[0] == "error: " + rep["error"]["message"]


def test_json_failure_of_a_step_keeps_what_ran(tmp_path, monkeypatch):
    import numpy as np
    import onnx
    import onnxruntime.quantization
    from onnx import helper, numpy_helper

    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["batch", 4])
    c = numpy_helper.from_array(np.ones((4, 4), np.float32), "c")
    model = helper.make_model(helper.make_graph([helper.make_node("MatMul", ["x", "c"], ["y"])], "g", [x], [y], [c]),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(tmp_path / "add.onnx"))

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    # the step itself fails (a model that would quantize nothing is refused before any work, exit 2)
    monkeypatch.setattr(onnxruntime.quantization, "quantize_dynamic", boom)
    r = run_cli("quantize", tmp_path / "add.onnx", "--json", *FAST_BENCH)
    assert r.code == 1
    rep = json.loads(r.stdout)
    assert rep["error"] == {"exit_code": 1, "kind": "quantization", "message": rep["error"]["message"]}
    assert "failed: RuntimeError: boom" in rep["error"]["message"]
    assert rep["input"]["format"] == "onnx" and rep["recipe"]["steps"][0]["pass"] == "quantize"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["add.onnx"]


def test_recovery_progress_on_stderr_while_stdout_is_json(samples, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "compressor", "prune", str(samples / "digits_cnn.pt"), "--input-shape",
                           "1,1,8,8", "--recover", "--recover-steps", "40", "--calibration-data",
                           str(samples / "digits_calib.npz"), "-o", str(tmp_path / "p.onnx"), "--json", *FAST_BENCH],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["pruning"]["recovery"]["steps"] == 40
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("progress: ")]
    assert any(ln.startswith("progress: recovery (40 steps)") for ln in lines)
    assert any(re.match(r"progress: recovery: \d+/40, loss [0-9.e+-]+$", ln) for ln in lines)
    assert any(ln.startswith("progress: recovery: done in") for ln in lines)
    assert any(ln.startswith("progress: steps[0] prune of the original model: done in") for ln in lines)
    assert any(ln.startswith("progress: benchmark of 2 models") for ln in lines)
    quiet = run_cli("prune", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "-o", tmp_path / "q.onnx",
                    "--quiet", "--json", *FAST_BENCH)
    assert quiet.code == 0 and quiet.progress_lines == [] and json.loads(quiet.stdout)["result"]


def _on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    main, child = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "compressor", *args], stdin=child, stdout=child, stderr=child,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "120", **env})
    os.close(child)
    out = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(main)
    return proc.wait(timeout=300), out


def test_no_color_means_no_escape_sequences_on_a_terminal(samples):
    bench = ["bench", str(samples / "digits_cnn.pt"), "--input-shape", "1,1,8,8", *FAST_BENCH]
    for args in (bench, ["quantize", "--help"]):
        code, out = _on_a_terminal(args, {"NO_COLOR": "1"})
        assert code == 0 and b"latency" in out or b"Usage" in out
        assert ESCAPE.findall(out) == [], args
    code, out = _on_a_terminal([*bench, "--no-color"], {})
    assert code == 0 and ESCAPE.findall(out) == []
    code, out = _on_a_terminal(["quantize", "--help"], {})
    assert code == 0 and ESCAPE.findall(out)  # styles are on without NO_COLOR: the check above can fail


def test_quantize_help_has_groups_choices_examples_and_exit_codes(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    r = run_cli("quantize", "--help")
    assert r.code == 0
    text = r.stdout
    for panel in ("Input", "Data", "Pass settings", "Calibration (static int8)", "Benchmark", "Quality gates",
                  "Export", "Output and report"):
        assert panel in text, panel
    assert "int8|int4|fp16" in text and "auto|dynamic|static" in text
    assert "Examples:" in text and "$ compressor quantize" in text
    for code in ("0 success", "1 a step failed", "2 bad usage", "3 a quality gate failed", "130 interrupted",
                 "143 terminated"):
        assert code in text, code
    for bad in ("<list[str]>", "<int range>", "{MODEL}", "[[OTHER]]", "[[MODEL]]"):
        assert bad not in text
    assert text.count("<bool>") == 1  # only click's own --help; our flags show no type


def test_help_keeps_square_brackets(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert "[[steps]]" in run_cli("run", "--help").stdout
    assert "[0, 1]" in run_cli("quantize", "--help").stdout
    assert "[tool.compressor]" in run_cli("prune", "--help").stdout


def test_outputs_never_overwrite_other_inputs(samples, tmp_path):
    import shutil

    for name in ("calib.npz", "eval.npz"):
        shutil.copy(samples / ("digits_calib.npz" if name == "calib.npz" else "digits_eval.npz"), tmp_path / name)
    cnn = [samples / "digits_cnn.pt", "--input-shape", "1,1,8,8"]
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    r = run_cli("quantize", *cnn, "--calibration-data", tmp_path / "calib.npz", "-o", tmp_path / "calib.npz")
    assert r.code == 2 and "is the calibration data" in r.stderr
    r = run_cli("quantize", *cnn, "--eval-data", tmp_path / "eval.npz", "-o", tmp_path / "eval.npz")
    assert r.code == 2 and "is the evaluation data" in r.stderr
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'model = "{samples / "digits_cnn.pt"}"\ninput_shape = ["1,1,8,8"]\n[[steps]]\npass = "prune"\n')
    r = run_cli("run", recipe, "-o", recipe)
    assert r.code == 2 and "is the recipe" in r.stderr
    (tmp_path / "compressor.toml").write_text(f'model = "{samples / "digits_cnn.pt"}"\ninput_shape = ["1,1,8,8"]\n')
    r = run_cli("prune", "-o", "compressor.toml", cwd=tmp_path)
    assert r.code == 2 and "is the project config" in r.stderr
    assert all((tmp_path / n).read_bytes() == b for n, b in before.items())


def test_gate_failure_under_json_has_an_error_object(samples, tmp_path):
    r = run_cli("prune", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "-o", tmp_path / "p.onnx",
                "--max-size-ratio", "0.01", "--json", "--report", tmp_path / "r.json", *FAST_BENCH)
    assert r.code == 3
    rep = json.loads(r.stdout)
    assert rep["error"]["exit_code"] == 3 and rep["error"]["kind"] == "gate" and "max_size_ratio" in rep["error"]["message"]
    assert json.loads((tmp_path / "r.json").read_text())["error"] == rep["error"]
    assert (tmp_path / "p.onnx").exists()  # a failed gate still writes the outputs


def test_dry_run_checks_patterns_and_that_an_onnx_input_runs(samples, tmp_path):
    r = run_cli("prune", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "--exclude", "nomatch*", "--dry-run")
    assert r.code == 2 and "nomatch*" in r.stderr and len(r.error_lines) == 1
    onnx_model = tmp_path / "m.onnx"
    assert run_cli("export", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "-o", onnx_model).code == 0
    r = run_cli("quantize", onnx_model, "--exclude", "nomatch*", "--dry-run")
    assert r.code == 2 and "nomatch*" in r.stderr and len(r.error_lines) == 1
    import onnx

    broken = onnx.load(str(onnx_model))
    broken.graph.node[0].op_type = "NoSuchOp"
    broken.graph.node[0].domain = "com.example"
    broken.opset_import.append(onnx.helper.make_opsetid("com.example", 1))
    onnx.save(broken, str(tmp_path / "broken.onnx"))
    for extra in (["--dry-run"], []):
        r = run_cli("quantize", tmp_path / "broken.onnx", *extra, "--json", *FAST_BENCH)
        assert r.code == 1 and json.loads(r.stdout)["error"]["kind"] == "session", r.stderr
        assert "the input model" in r.stderr and len(r.error_lines) == 1, r.stderr

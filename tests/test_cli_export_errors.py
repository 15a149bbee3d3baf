"""compressor export on every input format, and the error paths (exit codes, one-line messages)."""

from __future__ import annotations

import hashlib
import json
import textwrap
import warnings

import numpy as np
import onnxruntime as ort
import pytest
import torch

from sample_models.digits_nets import DigitsResNet
from tests.conftest import FAST_BENCH, run_cli


def _torch_out(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def _ort_out(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]




@pytest.fixture(scope="module")
def eval_x(samples):
    return np.load(samples / "digits_eval.npz")["x"][:16]


def test_export_pickle_matches_torch(samples, tmp_path, eval_x):
    out = tmp_path / "cnn.onnx"
    r = run_cli("export", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "-o", out, "--json")
    assert r.code == 0, r.stderr
    assert r.report["export"]["max_abs_diff"] <= 1e-4
    model = torch.load(samples / "digits_cnn.pt", weights_only=False).eval()
    assert np.max(np.abs(_ort_out(out, eval_x) - _torch_out(model, eval_x))) <= 1e-4


def test_export_state_dict_matches_torch(samples, tmp_path, eval_x):
    out = tmp_path / "resnet.onnx"
    r = run_cli("export", samples / "digits_resnet.pt", "--model-class", "sample_models.digits_nets:DigitsResNet",
                "--calibration-data", samples / "digits_calib.npz", "-o", out, "--json")
    assert r.code == 0, r.stderr
    assert r.report["export"]["max_abs_diff"] <= 1e-4
    model = DigitsResNet()
    model.load_state_dict(torch.load(samples / "digits_resnet.pt", weights_only=True))
    assert np.max(np.abs(_ort_out(out, eval_x) - _torch_out(model.eval(), eval_x))) <= 1e-4


def test_export_exported_program_matches_torch(samples, tmp_path, eval_x):
    out = tmp_path / "mlp.onnx"
    r = run_cli("export", samples / "digits_mlp.pt2", "-o", out, "--json")
    assert r.code == 0, r.stderr
    assert r.report["input"]["format"] == "exported_program"
    assert r.report["export"]["max_abs_diff"] <= 1e-4
    ep = torch.export.load(str(samples / "digits_mlp.pt2"))
    assert np.max(np.abs(_ort_out(out, eval_x) - _torch_out(ep.module(), eval_x))) <= 1e-4


def test_export_and_quantize_torchscript(tmp_path, samples, eval_x):
    model = torch.load(samples / "digits_cnn.pt", weights_only=False).eval()
    ts = tmp_path / "cnn_ts.bin"  # the extension says nothing: the format is read from content
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(model, torch.zeros(2, 1, 8, 8)).save(str(ts))
    out = tmp_path / "ts.onnx"
    r = run_cli("export", ts, "--input-shape", "1,1,8,8", "-o", out, "--json")
    assert r.code == 0, r.stderr
    assert r.report["input"]["format"] == "torchscript"
    assert r.report["export"]["exporter"] == "torchscript"
    assert np.max(np.abs(_ort_out(out, eval_x) - _torch_out(model, eval_x))) <= 1e-4
    r = run_cli("prune", ts, "--method", "unstructured", "--ratio", "0.4", "--input-shape", "1,1,8,8",
                "-o", tmp_path / "ts.pruned.onnx", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    assert abs(r.report["result"]["sparsity"] - 0.4) <= 0.01


def test_export_dynamic_batch_from_batch1_shape(tmp_path):
    """Case E1: conv+BN+ReLU, global pool, Linear; exported from --input-shape 1,... it still takes batch 1, 3, 8."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)).eval()
    src = tmp_path / "e1.pt"
    torch.save(model, src)
    out = tmp_path / "e1.onnx"
    r = run_cli("export", src, "--input-shape", "1,3,16,16", "-o", out)
    assert r.code == 0, r.stderr
    rng = np.random.default_rng(0)
    for batch in (1, 3, 8):
        x = rng.standard_normal((batch, 3, 16, 16)).astype(np.float32)
        assert np.max(np.abs(_ort_out(out, x) - _torch_out(model, x))) <= 1e-4


# --------------------------------------------------------------------------------- errors


def test_text_file_named_model_pt(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_text("this is not a model\n")
    r = run_cli("prune", bad, "--ratio", "0.5", "--input-shape", "1,1,8,8")
    assert r.code == 2
    assert len(r.error_lines) == 1 and "not a model" in r.stderr and "Traceback" not in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt"]


def test_missing_file(tmp_path):
    r = run_cli("quantize", tmp_path / "nope.onnx")
    assert r.code == 2 and len(r.error_lines) == 1 and "not found" in r.stderr


def test_output_equal_to_input_leaves_input_intact(samples, tmp_path):
    src = tmp_path / "cnn.pt"
    src.write_bytes((samples / "digits_cnn.pt").read_bytes())
    before = hashlib.md5(src.read_bytes()).hexdigest()
    for cmd in (["prune", src, "--ratio", "0.5"], ["quantize", src]):
        r = run_cli(*cmd, "--input-shape", "1,1,8,8", "-o", src)
        assert r.code == 2 and len(r.error_lines) == 1 and "input" in r.stderr
        assert hashlib.md5(src.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.pt"]


CUSTOM = textwrap.dedent(
    """
    import torch

    class Scale(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.alpha = torch.nn.Parameter(torch.tensor(2.0))

        def forward(self, x):
            return x * self.alpha

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 8, 3, padding=1)
            self.scale = Scale()
            self.head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(8 * 64, 10))

        def forward(self, x):
            return self.head(torch.relu(self.scale(self.conv(x))))
    """
)


@pytest.fixture()
def custom_pickle(tmp_path):
    (tmp_path / "custom_mod.py").write_text(CUSTOM)
    code = ("import torch, custom_mod; torch.manual_seed(0); "
            "torch.save(custom_mod.Net().eval(), 'custom.pt'); torch.save(custom_mod.Net().state_dict(), 'sd.pt')")
    import subprocess
    import sys

    subprocess.run([sys.executable, "-c", code], cwd=tmp_path, check=True)
    return tmp_path


def test_pickle_with_foreign_class_needs_trust(custom_pickle):
    r = run_cli("prune", "custom.pt", "--ratio", "0.5", "--input-shape", "1,1,8,8", cwd=custom_pickle, subprocess_=True)
    assert r.code == 2 and len(r.error_lines) == 1
    assert "custom_mod.Net" in r.stderr and "custom_mod.Scale" in r.stderr and "--trust-pickle" in r.stderr
    r = run_cli("prune", "custom.pt", "--ratio", "0.5", "--input-shape", "1,1,8,8", "--trust-pickle", "--json",
                *FAST_BENCH, cwd=custom_pickle, subprocess_=True)
    assert r.code == 0, r.stderr
    assert r.report["result"]["parameters"] < r.report["baseline"]["parameters"]


def test_state_dict_errors(custom_pickle):
    r = run_cli("export", "sd.pt", "--input-shape", "1,1,8,8", cwd=custom_pickle, subprocess_=True)
    assert r.code == 2 and "--model-class" in r.stderr and len(r.error_lines) == 1
    r = run_cli("export", "sd.pt", "--input-shape", "1,1,8,8", "--model-class", "custom_mod:Nope", cwd=custom_pickle, subprocess_=True)
    assert r.code == 2 and "Nope" in r.stderr and len(r.error_lines) == 1
    r = run_cli("export", "sd.pt", "--input-shape", "1,1,8,8", "--model-class", "sample_models.digits_nets:DigitsMLP",
                cwd=custom_pickle, subprocess_=True)
    assert r.code == 2 and "does not fit" in r.stderr and len(r.error_lines) == 1
    r = run_cli("export", "sd.pt", "--input-shape", "1,1,8,8", "--model-class", "custom_mod:Net", "--model-kwargs",
                "{bad", cwd=custom_pickle, subprocess_=True)
    assert r.code == 2 and "--model-kwargs" in r.stderr
    r = run_cli("export", "sd.pt", "--input-shape", "1,1,8,8", "--model-class", "custom_mod:Net", cwd=custom_pickle, subprocess_=True)
    assert r.code == 0, r.stderr


def test_missing_input_shape_names_the_flags(samples, tmp_path):
    r = run_cli("prune", samples / "digits_cnn.pt", "-o", tmp_path / "o.onnx")
    assert r.code == 2 and "--input-shape" in r.stderr and "--calibration-data" in r.stderr and len(r.error_lines) == 1


def test_shapes_that_do_not_fit(samples, tmp_path):
    r = run_cli("prune", samples / "digits_cnn.pt", "--input-shape", "1,3,8", "-o", tmp_path / "o.onnx")
    assert r.code == 2 and len(r.error_lines) == 1 and "--input-shape" in r.stderr
    r = run_cli("export", samples / "digits_mlp.pt2", "--input-shape", "1,1,9,9", "-o", tmp_path / "o.onnx")
    assert r.code == 2 and len(r.error_lines) == 1
    r = run_cli("prune", samples / "digits_cnn.pt", "--input-shape", "1,1,8,x", "-o", tmp_path / "o.onnx")
    assert r.code == 2 and len(r.error_lines) == 1
    assert not (tmp_path / "o.onnx").exists()


def test_debug_shows_traceback(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_text("nope")
    r = run_cli("export", bad, "--input-shape", "1,1,8,8", "--debug")
    assert r.code == 2 and "Traceback" in r.stderr


def test_bench_single_model_and_report_file(samples, tmp_path):
    report_file = tmp_path / "bench.json"
    r = run_cli("bench", samples / "digits_cnn.pt", "--input-shape", "4,1,8,8", "--json", "--report", report_file,
                *FAST_BENCH)
    assert r.code == 0, r.stderr
    rep = r.report
    assert json.loads(report_file.read_text()) == rep
    assert rep["command"].startswith("compressor bench")
    assert rep["benchmark"]["batch_size"] == 4 and rep["baseline"]["latency_ms"]["runs"] == 20
    assert "result" not in rep and rep["baseline"]["parameters"] > 0


def test_report_paths_checked_before_work(samples, tmp_path):
    src = tmp_path / "cnn.pt"
    src.write_bytes((samples / "digits_cnn.pt").read_bytes())
    before = hashlib.md5(src.read_bytes()).hexdigest()
    cases = [["--report", src], ["--report", tmp_path / "out.onnx", "-o", tmp_path / "out.onnx"],
             ["--report", tmp_path / "missing" / "r.json"], ["--markdown", tmp_path]]
    for extra in cases:
        r = run_cli("prune", src, "--input-shape", "1,1,8,8", *extra)
        assert r.code == 2 and len(r.error_lines) == 1, (extra, r.stderr)
    assert hashlib.md5(src.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.pt"]


def test_bad_data_files_are_usage_errors(samples, tmp_path):
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    text = tmp_path / "text.npz"
    text.write_text("x,y\n1,2\n")
    nan = tmp_path / "nan.npz"
    np.savez(nan, x=np.full((4, 1, 8, 8), np.nan, np.float32), labels=np.zeros(4, np.int64))
    for flag, path in (("--eval-data", empty), ("--calibration-data", text), ("--eval-data", nan)):
        r = run_cli("quantize", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", flag, path, "-o", tmp_path / "q.onnx")
        assert r.code == 2 and len(r.error_lines) == 1 and str(path.name) in r.stderr, r.stderr
    assert not (tmp_path / "q.onnx").exists()


def test_usage_errors_are_one_line():
    for args in (["prune", "m.pt", "--ratio", "abc"], ["prune", "--bogus"], ["frob"], ["bench", "m.onnx", "--threads", "-1"]):
        r = run_cli(*args)
        assert r.code == 2 and len(r.error_lines) == 1 and r.error_lines[0].startswith("error: "), (args, r.stderr)
    r = run_cli("--version")
    assert r.code == 0 and r.stdout.startswith("compressor ")


def test_default_output_keeps_dotted_names(samples, tmp_path):
    src = tmp_path / "mlp.v1.pt2"
    src.write_bytes((samples / "digits_mlp.pt2").read_bytes())
    r = run_cli("prune", src, "--method", "unstructured", "--ratio", "0.3", *FAST_BENCH)
    assert r.code == 0, r.stderr
    assert (tmp_path / "mlp.v1.pruned.onnx").exists()
    assert r.stderr.strip().splitlines()[-1] == f"wrote {tmp_path / 'mlp.v1.pruned.onnx'}"


def test_unwritable_report_folder_is_refused_up_front(samples, tmp_path):
    r = run_cli("prune", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "-o", tmp_path / "o.onnx",
                "--report", "/proc/r.json")
    assert r.code == 2 and "cannot write" in r.stderr and not (tmp_path / "o.onnx").exists()


def test_sigterm_cleans_up(samples, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    proc = subprocess.Popen([sys.executable, "-m", "compressor", "prune", str(samples / "digits_cnn.pt"), "--input-shape",
                             "1,1,8,8", "-o", str(tmp_path / "o.onnx"), "--min-time", "60", "--no-measure-memory"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".compressor-*/02-export/exported.onnx")):
        time.sleep(0.2)
    assert list(tmp_path.glob(".compressor-*")), "the run never reached its scratch folder"
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert list(tmp_path.iterdir()) == []  # scratch folder removed, no output written


def test_interrupt_once_the_output_is_in_place_lets_the_run_finish(samples, tmp_path):
    # once the output model is renamed into place the run no longer takes Ctrl-C: it finishes with its normal
    # exit code instead of "interrupted" (130) with the output left behind
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    out = tmp_path / "o.onnx"
    proc = subprocess.Popen([sys.executable, "-m", "compressor", "prune", str(samples / "digits_cnn.pt"), "--input-shape",
                             "1,1,8,8", "-o", str(out), "--no-measure-memory", "--json", *FAST_BENCH],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 120
    while time.time() < deadline and not out.exists() and proc.poll() is None:
        time.sleep(0.005)
    assert out.exists(), "the run never wrote its output"
    proc.send_signal(signal.SIGINT)
    stdout, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert b"interrupted" not in err and b'"output"' in stdout
    assert [p.name for p in tmp_path.iterdir()] == ["o.onnx"]

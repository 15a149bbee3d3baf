"""Passes that compose: recipes, chains measured against one baseline, the project config, the pass contract."""

from __future__ import annotations

import ast
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tests.conftest import FAST_BENCH, ROOT, run_cli
from tests.test_report_gates import _validate

RESNET = ["--model-class", "sample_models.digits_nets:DigitsResNet", "--input-shape", "1,1,8,8"]


def _chain_recipe(samples: Path, path: Path, **extra: str) -> Path:
    lines = [
        f'model = "{samples / "digits_resnet.pt"}"',
        'model_class = "sample_models.digits_nets:DigitsResNet"',
        'input_shape = ["1,1,8,8"]',
        f'calibration_data = "{samples / "digits_calib.npz"}"',
        f'eval_data = "{samples / "digits_eval.npz"}"',
        *[f"{k} = {v}" for k, v in extra.items()],
        "",
        "[[steps]]", 'pass = "prune"', "ratio = 0.5", "recover = true",
        "",
        "[[steps]]", 'pass = "quantize"', 'mode = "static"',
        "",
        "[benchmark]", "runs = 20", "warmup = 2", "measure_memory = false", "batch_size = 32",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_prune_recover_then_static_int8_chain(samples, tmp_path):
    recipe = _chain_recipe(samples, tmp_path / "chain.toml")
    out = tmp_path / "chain.onnx"
    r = run_cli("run", recipe, "-o", out, "--json")
    assert r.code == 0, r.stderr
    rep = r.report
    _validate(rep)
    acc = rep["accuracy"]
    assert acc["baseline"] - acc["result"] <= 0.015, acc  # top-1 within 1.5 points of fp32
    assert acc["before_recovery"] < acc["after_recovery"]
    # int8 weights of the half-width model are 1/16 of the fp32 bytes; the QDQ graph's own bytes (scales,
    # zero points, Q/DQ nodes) add about 0.07 of this 190 kB model, so the file is at most 0.15 of the baseline
    assert rep["size_ratio"] <= 0.15
    assert rep["result"]["parameters"] < 0.3 * rep["baseline"]["parameters"]
    names = [(s["name"], s["step"], s["inserted"]) for s in rep["steps"]]
    assert names == [("export", None, True), ("prune", 0, False), ("export", None, True), ("quantize", 1, False)]
    measured = [s for s in rep["steps"] if "measured" in s]
    assert [s["name"] for s in measured] == ["prune", "quantize"]
    assert rep["benchmark"]["models"] == 3 and rep["benchmark"]["interleaved"]  # one interleaved benchmark
    for s in measured:
        m = s["measured"]
        assert set(m["latency_ms"]) >= {"p50", "p90", "mean"} and m["latency_ms"]["runs"] == 20
        assert m["speedup_ci95"][0] <= m["speedup"] <= m["speedup_ci95"][1]
        assert 0 < m["size_ratio"] < 1 and "cosine_min" in m["fidelity"] and "accuracy" in m
    assert measured[1]["measured"]["size_ratio"] < measured[0]["measured"]["size_ratio"]
    assert measured[1]["measured"]["macs"] == measured[0]["measured"]["macs"] < rep["baseline"]["macs"]
    assert rep["macs_ratio"] == rep["result"]["macs"] / rep["baseline"]["macs"]
    assert rep["result"]["path"] == str(out) and rep["speedup"] == measured[-1]["measured"]["speedup"]
    assert rep["pruning"]["method"] == "structured" and rep["quantization"]["mode"] == "static"
    assert [s["pass"] for s in rep["settings"]["chain"]] == ["prune", "quantize"]
    assert "QuantizeLinear" in rep["result"]["op_types"]
    onnx.checker.check_model(str(out), full_check=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["chain.onnx", "chain.toml"]


def test_save_recipe_then_run_is_byte_identical(samples, tmp_path):
    a, b, recipe = tmp_path / "a.onnx", tmp_path / "b.onnx", tmp_path / "r.toml"
    r1 = run_cli("prune", samples / "digits_resnet.pt", *RESNET, "--ratio", "0.5", "--criterion", "l2",
                 "-o", a, "--save-recipe", recipe, "--json", *FAST_BENCH)
    assert r1.code == 0, r1.stderr
    text = recipe.read_text()
    assert 'pass = "prune"' in text and "ratio = 0.5" in text and 'criterion = "l2"' in text
    assert str(tmp_path) not in text  # paths are written relative to the recipe's folder
    r2 = run_cli("run", recipe, "-o", b, "--json")
    assert r2.code == 0, r2.stderr
    assert a.read_bytes() == b.read_bytes()
    assert r1.report["settings"] == r2.report["settings"]
    assert r1.report["sources"]["steps[0].ratio"] == "command line"
    assert r2.report["sources"]["steps[0].ratio"] == f"recipe {recipe}"


def test_project_config_gives_the_model(samples, tmp_path):
    shutil.copy(samples / "digits_cnn.pt", tmp_path / "model.pt")
    shutil.copy(samples / "digits_calib.npz", tmp_path / "calib.npz")
    (tmp_path / "compressor.toml").write_text(
        'model = "model.pt"\ncalibration_data = "calib.npz"\ninput_shape = ["1,1,8,8"]\n\n'
        "[benchmark]\nruns = 20\nwarmup = 2\nmeasure_memory = false\n\n[quantize]\nmode = \"static\"\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    r = run_cli("quantize", "--scheme", "asymmetric", "--json", cwd=tmp_path)
    assert r.code == 0, r.stderr
    rep = r.report
    assert rep["input"]["source"] == "project config compressor.toml"
    assert rep["sources"]["model"] == "project config compressor.toml"
    assert rep["sources"]["steps[0].scheme"] == "command line"
    assert rep["sources"]["steps[0].mode"] == "project config compressor.toml"
    q = rep["quantization"]
    assert q["mode"] == "static" and q["activation_scheme"] == "asymmetric" and q["weight_scheme_requested"] == "asymmetric"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "model.quantized.onnx"])
    # a flag overrides the project config
    r = run_cli("quantize", "--mode", "dynamic", "--json", "-o", "d.onnx", cwd=tmp_path)
    assert r.code == 0, r.stderr
    assert r.report["quantization"]["mode"] == "dynamic"


def test_pyproject_tool_section_and_bad_values_name_their_source(samples, tmp_path):
    shutil.copy(samples / "digits_cnn.pt", tmp_path / "model.pt")
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.compressor]\nmodel = "model.pt"\n'
                                             'input_shape = ["1,1,8,8"]\n\n[tool.compressor.prune]\nratio = 1.5\n')
    r = run_cli("prune", "--dry-run", cwd=tmp_path)
    assert r.code == 2 and len(r.error_lines) == 1
    assert "prune.ratio in pyproject.toml" in r.stderr
    r = run_cli("prune", "--ratio", "0.3", "--dry-run", cwd=tmp_path)  # the flag wins, and is valid
    assert r.code == 0, r.stderr
    assert "steps[0] prune" in r.stdout and "export (inserted)" in r.stdout and "nothing was done" in r.stdout
    r = run_cli("prune", "--ratio", "2", "--dry-run", cwd=tmp_path)
    assert r.code == 2 and "--ratio must be between 0 and 1" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "pyproject.toml"]


def test_recipe_errors_name_the_field(samples, tmp_path):
    recipe = _chain_recipe(samples, tmp_path / "r.toml")
    text = recipe.read_text()
    cases = {
        'mode = "static"': ('mode = "sometimes"', "steps[1].mode in"),
        "ratio = 0.5": ("ratio = 7", "steps[0].ratio in"),
        'pass = "quantize"': ('pass = "distill"', "valid passes: export, prune, quantize"),
        "recover = true": ("recover = true\nbogus = 1", "steps[0].bogus in"),
        "runs = 20": ('runs = "many"', "benchmark.runs in"),
    }
    for old, (new, expected) in cases.items():
        recipe.write_text(text.replace(old, new, 1))
        r = run_cli("run", recipe, "--dry-run")
        assert r.code == 2 and len(r.error_lines) == 1 and expected in r.stderr, (new, r.stderr)
    recipe.write_text("[[steps]\n")
    r = run_cli("run", recipe)
    assert r.code == 2 and "cannot parse recipe" in r.stderr and len(r.error_lines) == 1


def test_dry_run_plans_and_does_nothing(samples, tmp_path):
    recipe = _chain_recipe(samples, tmp_path / "r.toml")
    r = run_cli("run", recipe, "--dry-run", "--json")
    assert r.code == 0, r.stderr
    _validate(r.report)
    plan = r.report["plan"]
    assert [(p["pass"], p["inserted"]) for p in plan] == [("export", True), ("prune", False), ("export", True),
                                                         ("quantize", False)]
    assert r.report["dry_run"] is True and r.report["recipe"]["steps"][0]["ratio"] == 0.5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.toml"]
    # an ONNX input needs no baseline export; structured pruning after quantization cannot run
    onnx_model = tmp_path / "m.onnx"
    assert run_cli("export", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "-o", onnx_model).code == 0
    bad = tmp_path / "bad.toml"
    bad.write_text(f'model = "{onnx_model}"\n[[steps]]\npass = "quantize"\n[[steps]]\npass = "export"\n')
    r = run_cli("run", bad, "--dry-run")
    assert r.code == 2 and "steps[1] (export) needs a PyTorch model" in r.stderr


def test_deprecated_prune_batch_size_still_works(samples, tmp_path):
    r = run_cli("prune", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "--batch-size", "16", "--dry-run",
                "--json")
    assert r.code == 0, r.stderr
    assert "deprecated" in r.stderr and "--recover-batch-size" in r.stderr
    assert r.report["recipe"]["steps"][0]["recover_batch_size"] == 16


def test_library_reports_through_callbacks(samples, tmp_path):
    from compressor.pipeline import Callbacks, run_recipe
    from compressor.recipe import Layer, build_recipe

    warnings, events = [], []
    recipe = build_recipe([Layer("test", {
        "model": str(samples / "digits_cnn.pt"), "input_shape": ["1,1,8,8"], "output": str(tmp_path / "o.onnx"),
        "calibration_data": str(samples / "digits_calib.npz"),
        "steps": [{"pass": "prune", "ratio": 0.5, "recover": True, "recover_steps": 40}],
        "benchmark": {"runs": 20, "warmup": 2, "measure_memory": False}})])
    rep = run_recipe(recipe, command="test", callbacks=Callbacks(on_warning=warnings.append,
                                                                 on_progress=events.append))
    assert rep["warnings"] == warnings
    recovery = [e for e in events if e.task == "recovery"]
    assert recovery[0].done == 0 and recovery[-1].done == 40 and recovery[-1].total == 40
    assert "loss" in recovery[-1].info
    tasks = {e.task for e in events}
    assert {"export (inserted) of the original model", "steps[0] prune of the original model",
            "export (inserted) of the result of steps[0] (prune)"} <= tasks
    assert any(t.startswith("benchmark of 2 models at batch 1, interleaved") for t in tasks)


def test_recipe_round_trips_through_toml(samples, tmp_path):
    from compressor.recipe import build_recipe, recipe_layer

    recipe = build_recipe([recipe_layer(_chain_recipe(samples, tmp_path / "r.toml"))])
    again_path = tmp_path / "again.toml"
    again_path.write_text(recipe.to_toml(relative_to=tmp_path))
    again = build_recipe([recipe_layer(again_path)])
    assert again == recipe and again.to_json() == recipe.to_json()


def test_no_library_module_prints_or_imports_the_cli_stack():
    hits = []
    for path in (ROOT / "compressor").rglob("*.py"):
        if "cli" in path.relative_to(ROOT / "compressor").parts[:1]:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
                hits.append(f"{path.name}:{node.lineno} print")
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                hits += [f"{path.name}:{node.lineno} {m}" for m in mods if m.split(".")[0] in ("rich", "typer")]
    assert hits == []


def test_interrupt_between_steps_leaves_nothing(samples, tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'model = "{samples / "digits_cnn.pt"}"\ninput_shape = ["1,1,8,8"]\n'
                      f'calibration_data = "{samples / "digits_calib.npz"}"\n'
                      '[[steps]]\npass = "prune"\nratio = 0.5\nrecover = true\nrecover_steps = 100000\n'
                      '[[steps]]\npass = "quantize"\n')
    out = tmp_path / "o.onnx"
    proc = subprocess.Popen([sys.executable, "-m", "compressor", "run", str(recipe), "-o", str(out)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.glob(".compressor-*/01-prune")):
        time.sleep(0.2)
    assert list(tmp_path.glob(".compressor-*/01-prune")), "the run never reached the prune step"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.toml"]


def test_pruned_onnx_runs_in_onnx_runtime_at_several_batches(samples, tmp_path):
    shutil.copy(samples / "digits_cnn.pt", tmp_path / "cnn.pt")
    recipe = tmp_path / "r.toml"
    recipe.write_text('model = "cnn.pt"\ninput_shape = ["1,1,8,8"]\n'
                      '[[steps]]\npass = "prune"\nratio = 0.5\n[[steps]]\npass = "prune"\nratio = 0.5\n'
                      "[benchmark]\nruns = 20\nwarmup = 2\nmeasure_memory = false\n")
    r = run_cli("run", recipe, "--json")
    assert r.code == 0, r.stderr
    rep = r.report
    out = Path(rep["output"])
    assert out == tmp_path / "cnn.compressed.onnx"  # paths in a recipe are relative to its folder
    p0, p1 = (s["measured"]["parameters"] for s in rep["steps"] if "measured" in s)
    assert p1 < p0 < rep["baseline"]["parameters"]  # the second prune starts from the first one's model
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    for batch in (1, 5):
        assert sess.run(None, {name: np.zeros((batch, 1, 8, 8), np.float32)})[0].shape == (batch, 10)


@pytest.mark.parametrize("command", ["prune", "quantize", "export", "bench"])
def test_every_command_takes_save_recipe_and_dry_run(samples, tmp_path, command):
    saved = tmp_path / "r.toml"
    r = run_cli(command, samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "--save-recipe", saved, "--dry-run")
    assert r.code == 0, r.stderr
    assert saved.exists() and "nothing was done" in r.stdout


def test_dry_run_refuses_what_the_run_would_refuse(samples, tmp_path):
    cnn = [samples / "digits_cnn.pt", "--input-shape", "1,1,8,8"]
    cases = [
        (["prune", *cnn, "--criterion", "taylor"], "--criterion taylor needs --calibration-data"),
        (["prune", *cnn, "--recover"], "--recover needs inputs"),
        (["quantize", *cnn, "--mode", "static"], "static quantization needs calibration data"),
        (["quantize", *cnn, "--mode", "static", "--weight-type", "uint8", "--activation-type", "int8",
          "--calibration-data", samples / "digits_calib.npz"], "S8U8"),
        (["quantize", *cnn, "--max-accuracy-drop", "1"], "--max-accuracy-drop needs --eval-data"),
        (["quantize", *cnn, "--min-speedup", "-1"], "--min-speedup is a speedup and must be greater than 0"),
        (["bench", samples / "digits_cnn.pt"], "input"),
        (["prune", *cnn, "--batch-size", "8", "--recover-batch-size", "16"], "give --recover-batch-size only"),
        (["prune", samples / "digits_mlp.pt2"], "structured pruning needs the model's Python classes"),
    ]
    for args, expected in cases:
        r = run_cli(*args, "--dry-run")
        assert r.code == 2 and len(r.error_lines) == 1 and expected in r.stderr, (args, r.stderr)
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'model = "{samples / "digits_cnn.pt"}"\ninput_shape = ["1,1,8,8"]\n'
                      '[[steps]]\npass = "quantize"\n[[steps]]\npass = "prune"\n')
    r = run_cli("run", recipe, "--dry-run")
    assert r.code == 2 and "steps[1] (prune): structured pruning" in r.stderr and len(r.error_lines) == 1
    recipe.write_text(f'model = "{samples / "digits_cnn.pt"}"\n[[steps]]\npass = "prune"\nFLAGS = 1\n')
    r = run_cli("run", recipe, "--dry-run")
    assert r.code == 2 and "steps[0].FLAGS in" in r.stderr and "FLAGS" not in r.stderr.split("valid settings")[1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.toml"]


def test_a_recipe_ignores_the_project_config(samples, tmp_path):
    shutil.copy(samples / "digits_cnn.pt", tmp_path / "model.pt")
    (tmp_path / "compressor.toml").write_text('calibration_data = "nope.npz"\n[quantize]\nmode = "static"\n')
    (tmp_path / "r.toml").write_text('model = "model.pt"\ninput_shape = ["1,1,8,8"]\n[[steps]]\npass = "quantize"\n')
    r = run_cli("run", "r.toml", "--dry-run", "--json", cwd=tmp_path)
    assert r.code == 0, r.stderr
    assert "calibration_data" not in r.report["recipe"] and r.report["recipe"]["steps"][0]["mode"] == "auto"
    # the export command's recipe runs
    (tmp_path / "compressor.toml").unlink()
    r = run_cli("export", "model.pt", "--input-shape", "1,1,8,8", "--save-recipe", "e.toml", "-o", "e.onnx",
                cwd=tmp_path)
    assert r.code == 0, r.stderr
    r = run_cli("run", "e.toml", "--dry-run", "--json", cwd=tmp_path)
    assert r.code == 0 and [p["pass"] for p in r.report["plan"]] == ["export", "export"], r.stderr

"""compressor auto: a seeded Optuna search over prune/quantize recipes within an accuracy budget."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import SAMPLES, assert_valid_onnx, run_cli

pytest.importorskip("optuna")

CNN = SAMPLES / "digits_cnn.pt"
DATA = ["--eval-data", SAMPLES / "digits_eval.npz", "--calibration-data", SAMPLES / "digits_calib.npz"]
# short benchmarks and recoveries: the search is what is tested here, not the figures
FAST = ["--runs", "20", "--warmup", "2", "--threads", "1", "--bench-batch-size", "8", "--recover-steps", "10"]


def _validate(report: dict) -> None:
    import jsonschema

    from compressor.report import schema

    jsonschema.Draft202012Validator(schema()).validate(report)


def _auto(model: Path, out: Path, *more: str | Path, trials: int = 3, budget: str = "1.0"):
    return run_cli("auto", model, *DATA, "--max-accuracy-drop", budget, "--trials", str(trials), *FAST, "-o", out,
                   "--json", *more)


@pytest.fixture(scope="module")
def cnn_onnx(tmp_path_factory) -> Path:
    """The digits CNN as ONNX: a search over quantization settings only (no pruning, no export per run)."""
    path = tmp_path_factory.mktemp("auto") / "digits_cnn.onnx"
    r = run_cli("export", CNN, "--calibration-data", SAMPLES / "digits_calib.npz", "-o", path)
    assert r.code == 0, r.stderr
    return path


def test_stop_mid_run_leaves_best_model_report_and_study_and_resume_continues(tmp_path, monkeypatch, cnn_onnx):
    import compressor.auto as auto_mod
    from compressor.errors import STOP_REQUESTED

    evaluate = auto_mod._evaluate
    calls = []

    def stop_after_first(*a, **k):  # what the CLI's SIGINT handler does: record the stop; the search raises it
        res = evaluate(*a, **k)
        calls.append(1)
        if len(calls) == 1:
            STOP_REQUESTED.append(130)
        return res

    monkeypatch.setattr(auto_mod, "_evaluate", stop_after_first)
    out = tmp_path / "auto"
    r = _auto(cnn_onnx, out, trials=3)
    assert r.code == 130, r.stderr
    assert "interrupted" in r.stderr
    assert r.report["error"]["kind"] == "interrupted" and r.report["auto"]["interrupted"]  # --json: what was done
    rep = json.loads((out / "report.json").read_text())
    _validate(rep)
    assert rep["auto"]["interrupted"] and rep["auto"]["trials_done"] == 1
    assert rep["auto"]["chosen_trial"] == 0 and rep["accuracy"]["drop_points"] <= 1.0
    assert_valid_onnx(out / "model.onnx")
    assert len(json.loads((out / "pareto.json").read_text())["candidates"]) == 1
    assert (out / "study.db").is_file()

    monkeypatch.setattr(auto_mod, "_evaluate", evaluate)
    again = _auto(cnn_onnx, out, "--resume", trials=3)
    assert again.code == 0, again.stderr
    assert again.report["auto"]["resumed"]
    cands = json.loads((out / "pareto.json").read_text())["candidates"]
    assert len({json.dumps(c["params"], sort_keys=True) for c in cands}) == 3  # no setting tried twice
    _check_finished(again, out)


def _check_finished(r, out: Path) -> None:
    """A finished 3-trial search: the chosen model is valid and within budget; every trial is in pareto.json."""
    rep = r.report
    _validate(rep)
    auto = rep["auto"]
    assert auto["trials_done"] == 3 and auto["stopped_by"] == "trials" and not auto["interrupted"]
    chosen = auto["chosen"]
    assert chosen["valid"] and chosen["accuracy_drop_pct"] <= 1.0
    assert rep["accuracy"]["drop_points"] <= 1.0 and rep["gates"]["passed"]
    assert rep["output"] == str(out / "model.onnx") and chosen["model_path"] == str(out / "model.onnx")
    assert_valid_onnx(out / "model.onnx")
    import onnxruntime as ort

    ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    # the chosen settings are the recipe of the model
    assert [s["name"] for s in rep["steps"] if not s.get("inserted")] == [s["pass"] for s in chosen["settings"]["steps"]]
    # every trial is in pareto.json, with one baseline; the plot and the table exist
    pareto = json.loads((out / "pareto.json").read_text())
    cands = pareto["candidates"]
    assert len(cands) == 3 and len({c["trial"] for c in cands}) == 3 and cands[0]["trial"] == 0
    assert pareto["chosen"] == chosen["name"] and [c["trial"] for c in cands if c["chosen"]] == [auto["chosen_trial"]]
    assert rep["pareto"]["chosen"] == chosen["name"] and len(rep["pareto"]["candidates"]) == 3
    assert pareto["baseline"]["size_bytes"] == rep["baseline"]["size_bytes"] and pareto["baseline"]["node"]
    for c in cands:
        assert c["node"] and (c["valid"] or c["reason"])
        if c["valid"]:
            assert c["latency_ms_p50"] > 0 and c["speedup"] > 0 and c["accuracy_drop_pct"] <= 1.0
            lo, hi = c["latency_ms_ci95"]
            assert lo <= c["latency_ms_p50"] <= hi
    assert (out / "pareto.png").stat().st_size > 1000 and "chosen" in (out / "pareto.md").read_text()
    assert json.loads((out / "report.json").read_text())["auto"]["chosen_trial"] == auto["chosen_trial"]
    # the first trial is the default single command: static int8 with the measured kernel format
    first = next(c for c in cands if c["trial"] == 0)
    assert first["params"] == {"chain": "quantize", "precision": "int8-static", "calibration_method": "minmax",
                               "fallback": False}
    assert (out / "study.db").is_file()
    assert any(line.startswith("progress: trial ") for line in r.progress_lines)


@pytest.mark.parametrize("args, words", [
    (["--max-accuracy-drop", "1", "--objective", "speed"], "--objective"),
    (["--max-accuracy-drop", "1", "--time-budget", "ten minutes"], "--time-budget"),
    (["--max-accuracy-drop", "1", "--executor", "dask"], "--executor"),
    ([], "--max-accuracy-drop"),
    (["--max-accuracy-drop", "1", "--trials", "0"], "--trials"),
    (["--max-accuracy-drop", "1", "--resume"], "--resume"),
    (["--max-accuracy-drop", "150"], "max-accuracy-drop"),
])
def test_bad_flags_exit_2_with_one_line(tmp_path, args, words):
    r = run_cli("auto", CNN, *DATA, *args, "-o", tmp_path / "auto")
    assert r.code == 2, r.stderr
    assert len(r.error_lines) == 1 and words in r.error_lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "auto" / "model.onnx").exists()


def test_existing_study_needs_resume(tmp_path):
    out = tmp_path / "auto"
    out.mkdir()
    (out / "study.db").write_bytes(b"")
    r = run_cli("auto", CNN, *DATA, "--max-accuracy-drop", "1", "-o", out)
    assert r.code == 2 and "--resume" in r.error_lines[0]


def test_eval_data_without_labels_needs_min_cosine(tmp_path):
    import numpy as np

    ev = np.load(SAMPLES / "digits_eval.npz")
    np.savez(tmp_path / "x.npz", x=ev["x"][:64])
    r = run_cli("auto", CNN, "--eval-data", tmp_path / "x.npz", "--max-accuracy-drop", "1", "-o", tmp_path / "a")
    assert r.code == 2 and "labels" in r.error_lines[0]


def test_min_cosine_budget_without_labels_and_size_objective(tmp_path, cnn_onnx):
    import numpy as np

    ev = np.load(SAMPLES / "digits_eval.npz")
    np.savez(tmp_path / "inputs.npz", x=ev["x"][:128])
    out = tmp_path / "auto"
    r = run_cli("auto", cnn_onnx, "--eval-data", tmp_path / "inputs.npz", "--calibration-data",
                SAMPLES / "digits_calib.npz", "--min-cosine", "0.999", "--objective", "size", "--trials", "1", *FAST,
                "-o", out, "--json")
    assert r.code == 0, r.stderr
    rep = r.report
    _validate(rep)
    chosen = rep["auto"]["chosen"]
    assert chosen["accuracy_drop_pct"] is None and chosen["cosine_min"] >= 0.999
    assert rep["fidelity"]["cosine_min"] >= 0.999 and "accuracy" not in rep
    cands = json.loads((out / "pareto.json").read_text())["candidates"]
    assert len(cands) == 1
    for c in cands:  # a candidate under the cosine budget is invalid and was never benchmarked
        assert c["valid"] == (c["cosine_min"] is not None and c["cosine_min"] >= 0.999)
        assert (c["latency_ms_p50"] is not None) == c["valid"]
    assert chosen["size_bytes"] == min(c["size_bytes"] for c in cands if c["valid"])


def test_no_candidate_within_budget_exits_3_and_writes_no_model(tmp_path, cnn_onnx):
    out = tmp_path / "auto"
    out.mkdir()
    (out / "model.onnx").write_bytes(b"an earlier search's model")  # a new study replaces an old search's outputs
    r = run_cli("auto", cnn_onnx, *DATA, "--min-cosine", "1.0", "--trials", "1", *FAST, "-o", out, "--json")
    assert r.code == 3, r.stderr
    assert r.report["error"]["kind"] == "gate" and "no candidate" in r.error_lines[-1]
    assert "result" not in r.report and not (out / "model.onnx").exists()
    assert any("earlier search" in w for w in r.report["warnings"])
    cands = json.loads((out / "pareto.json").read_text())["candidates"]
    assert len(cands) == 1 and not cands[0]["valid"] and "cosine_min" in cands[0]["reason"]
    # a candidate rejected on the first samples is "stopped early", not Optuna's "pruned" (prune is a pass here)
    assert cands[0]["reason"].startswith("stopped early: ") and "stopped early: " in (out / "pareto.md").read_text()
    assert "pruned early" not in r.stderr + (out / "pareto.md").read_text()
    _validate(json.loads((out / "report.json").read_text()))


def test_prune_then_quantize_candidate_is_built_through_the_pipeline_without_a_baseline_export(tmp_path, cnn_onnx):
    """A prune -> quantize chain of the search goes through the orchestrator: prune (with recovery), the export it
    inserts, static int8; the input's own baseline export is skipped (the search exported it once)."""
    import dataclasses

    from compressor.auto import trial_steps
    from compressor.pipeline import build_candidate
    from compressor.recipe import Recipe

    params = {"chain": "prune+quantize", "prune_ratio": 0.5, "precision": "int8-static", "calibration_method": "minmax",
              "fallback": False}
    recipe = Recipe(model=CNN, calibration_data=SAMPLES / "digits_calib.npz", eval_data=SAMPLES / "digits_eval.npz")
    recipe = dataclasses.replace(recipe, steps=trial_steps(params, recover=True, seed=0, recover_steps=5))
    out = tmp_path / "c.onnx"
    res = build_candidate(recipe, out, baseline=cnn_onnx)
    assert [(s["name"], s["inserted"]) for s in res["steps"]] == [("prune", False), ("export", True),
                                                                  ("quantize", False)]
    assert "recovery" in res["sections"]["pruning"] and "quantization" in res["sections"]
    assert_valid_onnx(out)
    assert not list(tmp_path.glob(".compressor-*"))  # the scratch folder is gone


@pytest.mark.slow
def test_fallback_candidate_keeps_sensitive_layers_in_float_within_the_budget(tmp_path, cnn_onnx):
    """int8 static with the accuracy-aware fallback: the trial's budget (its recipe's gates) reaches the pass."""
    import dataclasses

    from compressor.auto import trial_steps
    from compressor.gates import Gates
    from compressor.pipeline import build_candidate
    from compressor.recipe import Recipe

    params = {"chain": "quantize", "precision": "int8-static", "calibration_method": "entropy", "fallback": True}
    recipe = Recipe(model=cnn_onnx, calibration_data=SAMPLES / "digits_calib.npz",
                    eval_data=SAMPLES / "digits_eval.npz", gates=Gates(max_accuracy_drop=0.0))
    recipe = dataclasses.replace(recipe, steps=trial_steps(params, recover=True, seed=0))
    res = build_candidate(recipe, tmp_path / "c.onnx")
    q = res["sections"]["quantization"]
    assert q["fallback"]["met"] and q["fallback_layers"]  # entropy costs accuracy here: some layer went back
    assert_valid_onnx(tmp_path / "c.onnx")


def test_search_space_and_recipes_are_valid_pass_configs():
    import optuna

    from compressor.auto import all_settings, defaults_to_try, describe, suggest, trial_steps

    space = all_settings(prunable=True, static=True)
    keys = {json.dumps(p, sort_keys=True) for p in space}
    assert len(keys) == len(space) == 49
    for p in space + defaults_to_try(prunable=True, static=True):
        steps = trial_steps(p, recover=True, seed=0)  # the pass configs validate every setting
        assert [s.pass_name for s in steps] == [n for n in ("prune", "quantize") if n in p["chain"]] and describe(p)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=optuna.samplers.NSGAIISampler(seed=0))
    for _ in range(40):  # the sampler only ever gives settings of the space
        t = study.ask()
        assert json.dumps(suggest(t, prunable=True, static=True), sort_keys=True) in keys
        study.tell(t, [1.0, 1.0])
    # without calibration data there is no static int8, and without Python classes no pruning
    assert len(all_settings(prunable=False, static=False)) == 3


@pytest.mark.slow
def test_acceptance_digits_batch32_within_ten_minutes(tmp_path):
    out = tmp_path / "auto"
    r = run_cli("auto", CNN, *DATA, "--max-accuracy-drop", "0.5", "--objective", "latency", "--bench-batch-size",
                "32", "-o", out, "--json", timeout=900)
    assert r.code == 0, r.stderr
    rep = r.report
    assert rep["auto"]["elapsed_s"] < 600 and rep["accuracy"]["drop_points"] <= 0.5
    assert rep["speedup"] > 1.0 and (out / "pareto.png").is_file()


@pytest.mark.slow
def test_ray_executor_tries_and_chooses_the_same_settings_as_local(tmp_path):
    pytest.importorskip("ray")
    reports = {}
    for executor in ("local", "ray"):
        r = run_cli("auto", CNN, *DATA, "--max-accuracy-drop", "1", "--trials", "4", "--workers", "2", "--seed", "3",
                    *FAST, "--executor", executor, "-o", tmp_path / executor, "--json", timeout=900)
        assert r.code == 0, r.stderr
        reports[executor] = r.report
    tried = {e: [c["params"] for c in json.loads((tmp_path / e / "pareto.json").read_text())["candidates"]]
             for e in reports}
    assert tried["local"] == tried["ray"]
    assert reports["local"]["auto"]["chosen"]["params"] == reports["ray"]["auto"]["chosen"]["params"]
    cands = json.loads((tmp_path / "ray" / "pareto.json").read_text())["candidates"]
    assert all(c["node"] for c in cands) and all(c.get("build_node") for c in cands)


def test_heavy_libraries_load_only_when_the_search_runs():
    import subprocess
    import sys

    code = ("import sys, compressor.cli, compressor.auto, compressor.pareto; "
            "print(sorted(m for m in ('torch', 'onnxruntime', 'optuna', 'ray', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_time_budget_parsing():
    from compressor.auto import parse_duration
    from compressor.errors import UsageError

    assert [parse_duration(t) for t in ("90", "90s", "10m", "1.5h")] == [90.0, 90.0, 600.0, 5400.0]
    for bad in ("", "0", "10x", "-5m", "m"):
        with pytest.raises(UsageError):
            parse_duration(bad)


@pytest.mark.slow
def test_sigint_mid_run_leaves_best_so_far_and_resume_finishes(tmp_path, cnn_onnx):
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import ROOT

    out = tmp_path / "auto"
    args = [sys.executable, "-m", "compressor", "auto", str(cnn_onnx), *map(str, DATA), "--max-accuracy-drop", "1",
            "--trials", "6", *FAST, "-o", str(out)]
    proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while not (out / "report.json").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    rep = json.loads((out / "report.json").read_text())
    assert rep["auto"]["interrupted"] and rep["auto"]["trials_done"] >= 1
    assert_valid_onnx(out / "model.onnx")
    assert (out / "study.db").is_file() and (out / "pareto.json").is_file()
    assert not list(out.glob(".compressor-*"))  # the scratch folder went with the interrupt
    again = run_cli("auto", cnn_onnx, *DATA, "--max-accuracy-drop", "1", "--trials", "6", *FAST, "-o", out,
                    "--resume", "--json")
    assert again.code == 0, again.stderr
    assert again.report["auto"]["trials_done"] == 6 or again.report["auto"]["stopped_by"] == "search space exhausted"


def _pin_speedup(monkeypatch, speedup: float, ci: tuple[float, float]) -> None:
    """Run the real interleaved benchmark, then pin the paired speedup the search sees to these figures."""
    import compressor.measure as measure_mod

    real = measure_mod.measure

    def pinned(ctx, recipe, base, candidates, **kw):
        out = real(ctx, recipe, base, candidates, **kw)
        for c in candidates:
            c["compare"].update(speedup=speedup, speedup_ci95=[ci[0], ci[1]])
        return out

    monkeypatch.setattr(measure_mod, "measure", pinned)


def test_candidate_slower_than_the_original_is_never_chosen(tmp_path, monkeypatch, cnn_onnx):
    """A speedup whose 95% CI lies wholly below 1.0 makes the candidate invalid; with none left: exit 3, no model."""
    _pin_speedup(monkeypatch, 0.93, (0.874, 0.994))
    out = tmp_path / "auto"
    r = _auto(cnn_onnx, out, "--objective", "latency", trials=1)
    assert r.code == 3, r.stderr
    assert "no candidate beat the original" in r.error_lines[-1] and "--bench-batch-size" in r.error_lines[-1]
    assert "result" not in r.report and not (out / "model.onnx").exists()
    cand = json.loads((out / "pareto.json").read_text())["candidates"][0]
    assert not cand["valid"] and cand["reason"] == "slower than the original (speedup 0.93, 95% CI [0.874, 0.994])"
    assert cand["speedup"] == 0.93  # measured, so the table shows why
    _validate(json.loads((out / "report.json").read_text()))


def test_candidate_whose_speedup_interval_holds_one_is_chosen_with_a_warning(tmp_path, monkeypatch, cnn_onnx):
    _pin_speedup(monkeypatch, 0.98, (0.93, 1.03))
    out = tmp_path / "auto"
    r = _auto(cnn_onnx, out, trials=1)
    assert r.code == 0, r.stderr
    assert r.report["auto"]["chosen"]["valid"]
    warned = [w for w in r.report["warnings"] if "may be no faster than the baseline" in w]
    assert len(warned) == 1 and "0.98" in warned[0] and warned[0] in r.stderr
    _validate(r.report)


def test_size_objective_rejects_a_candidate_not_smaller_than_the_original(tmp_path, monkeypatch, cnn_onnx):
    import compressor.artifact as artifact_mod

    real = artifact_mod.file_size_bytes
    monkeypatch.setattr(artifact_mod, "file_size_bytes",  # every candidate file counts as big as 1 GB
                        lambda p: 10**9 if Path(p).name.startswith("trial-") else real(p))
    out = tmp_path / "auto"
    r = _auto(cnn_onnx, out, "--objective", "size", trials=1)
    assert r.code == 3, r.stderr
    assert "no candidate beat the original" in r.error_lines[-1] and "smaller" in r.error_lines[-1]
    cand = json.loads((out / "pareto.json").read_text())["candidates"][0]
    assert not cand["valid"] and cand["reason"].startswith("not smaller than the original (1000000000 bytes")
    assert cand["latency_ms_p50"] is None  # rejected before the benchmark


def test_time_budget_spent_before_any_trial_says_so(tmp_path, cnn_onnx):
    out = tmp_path / "auto"
    r = _auto(cnn_onnx, out, "--time-budget", "1", trials=1)
    assert r.code == 3, r.stderr
    line = r.error_lines[-1]
    assert "no trial ran" in line and "--time-budget" in line and "baseline" in line and "took" in line
    auto = r.report["auto"]
    assert auto["stopped_by"] == "time budget" and auto["trials_this_session"] == 0 and auto["baseline_s"] > 0
    _validate(json.loads((out / "report.json").read_text()))


@pytest.mark.parametrize("call, code", [(1, 130), (2, 0)])
def test_ctrl_c_while_outputs_are_written(tmp_path, monkeypatch, cnn_onnx, call, code):
    """A real SIGINT while the Pareto files are written: after a trial (call 1) the outputs of that trial are
    finished first, then the run stops with 130 and says so in report.json; once the search is over (call 2: the
    final outputs) the run finishes with its normal code and report.json says it was not interrupted."""
    import os
    import signal

    import compressor.pareto as pareto_mod

    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the CLI installs its own handler
    real = pareto_mod.write_pareto
    calls = []

    def write_pareto(*a, **k):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), signal.SIGINT)  # delivered here, between two bytecodes: the user's Ctrl-C
        return real(*a, **k)

    monkeypatch.setattr(pareto_mod, "write_pareto", write_pareto)
    out = tmp_path / "auto"
    r = _auto(cnn_onnx, out, trials=1)
    assert r.code == code, r.stderr
    rep = json.loads((out / "report.json").read_text())
    _validate(rep)
    assert rep["auto"]["interrupted"] == (code == 130)
    assert rep["auto"]["stopped_by"] == ("interrupted" if code == 130 else "trials")
    assert rep["auto"]["trials_done"] == 1 and rep["auto"]["chosen_trial"] == 0
    assert_valid_onnx(out / "model.onnx")
    assert json.loads((out / "pareto.json").read_text())["chosen"] == rep["auto"]["chosen"]["name"]
    assert not list(out.glob(".compressor-*"))


def test_ctrl_c_before_any_trial_finished_still_writes_the_report(tmp_path, monkeypatch, cnn_onnx):
    import os
    import signal

    import compressor.auto as auto_mod

    def interrupted(*a, **k):
        os.kill(os.getpid(), signal.SIGINT)
        raise AssertionError("the SIGINT was not delivered")

    monkeypatch.setattr(auto_mod, "_evaluate", interrupted)
    out = tmp_path / "auto"
    r = _auto(cnn_onnx, out, trials=2)
    assert r.code == 130, r.stderr
    assert r.report["error"]["kind"] == "interrupted"
    rep = json.loads((out / "report.json").read_text())
    _validate(rep)
    assert rep["auto"]["interrupted"] and rep["auto"]["stopped_by"] == "interrupted"
    assert rep["auto"]["trials_done"] == 0 and rep["auto"]["chosen"] is None and "result" not in rep
    assert json.loads((out / "pareto.json").read_text())["candidates"] == []
    assert (out / "study.db").is_file() and not (out / "model.onnx").exists()
    assert not list(out.glob(".compressor-*"))


def test_scratch_folder_is_removed_even_when_ctrl_c_lands_during_its_removal(tmp_path, monkeypatch):
    import shutil

    import compressor.outputs as outputs_mod

    real = shutil.rmtree
    calls = []

    def rmtree(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(outputs_mod.shutil, "rmtree", rmtree)
    with pytest.raises(KeyboardInterrupt):
        with outputs_mod.scratch_dir(tmp_path / "model.onnx") as work:
            (work / "local").mkdir()
            (work / "local" / "x.onnx").write_bytes(b"x")
    assert not list(tmp_path.glob(".compressor-*"))


def test_ctrl_c_before_the_search_began_leaves_nothing(tmp_path, monkeypatch, cnn_onnx):
    """An interrupt while the study file is being created: no study, no empty output folder."""
    import os
    import signal

    import compressor.auto as auto_mod

    real = auto_mod._open_study

    def open_then_stop(*a, **k):
        real(*a, **k)  # the SQLite file now exists
        os.kill(os.getpid(), signal.SIGINT)
        raise AssertionError("the SIGINT was not delivered")

    monkeypatch.setattr(auto_mod, "_open_study", open_then_stop)
    out = tmp_path / "auto"
    r = _auto(cnn_onnx, out, trials=1)
    assert r.code == 130, r.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []

"""Sensitivity, accuracy-aware fallback, sweeps and the Pareto outputs (issue 13)."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from tests.conftest import FAST_BENCH, assert_valid_onnx, run_cli
from tests.test_report_gates import _validate

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def cnn(tmp_path_factory, samples) -> Path:
    """The digits CNN as fp32 ONNX (exported once): sensitivity and sweeps then skip the export."""
    path = tmp_path_factory.mktemp("cnn") / "cnn.onnx"
    r = run_cli("export", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "-o", path, "-q")
    assert r.code == 0, r.stderr
    return path


def _data(samples: Path) -> list:
    return ["--calibration-data", samples / "digits_calib.npz", "--eval-data", samples / "digits_eval.npz"]


# ----------------------------------------------------------------------------- Pareto front


def _point(name, lat, drop, *, valid=True, size=1000, cos=0.99):
    return {"name": name, "settings": {"steps": [{"pass": "quantize", "precision": "int8"}]}, "size_bytes": size,
            "latency_ms_p50": lat, "latency_ms_ci95": None if lat is None else [lat * 0.9, lat * 1.1],
            "speedup": None, "accuracy_drop_pct": drop, "cosine_min": cos, "valid": valid,
            "reason": None if valid else "over budget", "node": "here", "model_path": None}


def test_pareto_front_minimises_cost_and_drop():
    from compressor.pareto import accuracy_metric, best_valid, pareto_front

    pts = [_point("a", 1.0, 0.5), _point("b", 2.0, 0.2), _point("c", 2.5, 0.6),  # c: dominated by b
           _point("d", 0.5, 0.1, valid=False),  # invalid: never on the front, however good
           _point("e", 3.0, 0.0), _point("f", 1.0, 0.5), _point("g", None, None, valid=False)]
    assert pareto_front(pts, "latency") == [0, 5, 1, 4]  # by latency; equal points both kept
    assert best_valid(pts, "latency") == 0
    assert pareto_front(pts, "size") == [4]  # all sizes equal: the least drop dominates
    # without accuracy the front uses 1 - cosine_min for every candidate (never a mix of the two)
    nolab = [{**p, "accuracy_drop_pct": None, "cosine_min": c} for p, c in zip(pts[:3], (0.9, 0.95, 0.99), strict=True)]
    assert pareto_front(nolab, "latency") == [0, 1, 2]
    # the same accuracy drop everywhere (0 on a small eval set) tells nothing apart: the cosine does
    same = [{**p, "accuracy_drop_pct": 0.0} for p in nolab]
    assert accuracy_metric(same) == "1-cosine_min" and pareto_front(same, "latency") == [0, 1, 2]
    assert accuracy_metric(pts) == "accuracy_drop_pct"


def test_write_pareto_files(tmp_path):
    from compressor.pareto import write_pareto

    pts = [_point("a", 1.0, 0.5, size=4000), _point("b", 2.0, 0.2, size=1000), _point("c", 2.5, 0.6),
           _point("x", None, None, valid=False)]
    paths = write_pareto(tmp_path / "out", baseline={"size_bytes": 9000, "latency_ms_p50": 3.0, "accuracy": 0.99,
                                                     "node": "here"},
                         candidates=pts, chosen=0, objective="latency", title="t")
    doc = json.loads(paths["json"].read_text())
    assert doc["objective"] == "latency" and doc["accuracy_metric"] == "accuracy_drop_pct"
    assert [c["pareto"] for c in doc["candidates"]] == [True, True, False, False]
    assert [c["chosen"] for c in doc["candidates"]] == [True, False, False, False] and doc["chosen"] == "a"
    assert paths["png"].read_bytes()[:8] == PNG_MAGIC
    md = paths["md"].read_text()
    assert md.count("\n| ") == 1 + 4 and "no: over budget" in md  # header + one row per candidate
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["pareto.json", "pareto.md", "pareto.png"]


# ----------------------------------------------------------------------------- sensitivity and fallback


def test_sensitivity_ranks_every_conv_and_gemm(cnn, samples):
    r = run_cli("sensitivity", cnn, *_data(samples), "--json")
    assert r.code == 0, r.stderr
    _validate(r.report)
    rows = r.report["sensitivity"]
    graph = onnx.load(str(cnn)).graph
    assert sorted((x["layer"], x["op_type"]) for x in rows) == sorted(
        (n.name, n.op_type) for n in graph.node if n.op_type in ("Conv", "Gemm"))
    assert [x["rank"] for x in rows] == list(range(1, len(rows) + 1))
    errors = [x["error"] for x in rows]
    assert errors == sorted(errors, reverse=True) and all(e > 0 for e in errors)
    for x in rows:
        assert x["error"] == pytest.approx(1 - x["cosine_min"]) and x["accuracy_drop_pct"] is not None
    assert r.report["sensitivity_settings"]["accuracy_on"].endswith("digits_eval.npz")
    assert len([line for line in r.progress_lines if "alone" in line and "done" in line]) == len(rows)


def test_prune_sensitivity_ranks_conv_and_linear_modules(samples):
    r = run_cli("sensitivity", samples / "digits_cnn.pt", "--kind", "prune", "--ratio", "0.5", *_data(samples), "--json")
    assert r.code == 0, r.stderr
    _validate(r.report)
    rows = r.report["sensitivity"]
    assert sorted(x["layer"] for x in rows) == ["0", "12", "14", "3", "7"]  # 3 Conv2d, 2 Linear of the Sequential
    last = next(x for x in rows if x["layer"] == "14")  # the classifier: its outputs are the model's, never pruned
    assert last["rank"] is None and last["error"] is None and "model output" in last["note"]
    ranked = [x for x in rows if x["rank"] is not None]
    assert [x["rank"] for x in ranked] == [1, 2, 3, 4] and all(x["accuracy_drop_pct"] is not None for x in ranked)
    assert r.report["sensitivity_settings"] == {**r.report["sensitivity_settings"], "kind": "prune", "ratio": 0.5}
    bad = run_cli("sensitivity", samples / "digits_cnn.pt", "--kind", "prune", "--ratio", "1.5", *_data(samples))
    assert bad.code == 2 and "--ratio" in bad.error_lines[-1]


def test_fallback_returns_layers_to_float_in_sensitivity_order(cnn, samples, tmp_path):
    sens = run_cli("sensitivity", cnn, *_data(samples), "--json")
    assert sens.code == 0, sens.stderr
    order = [x["layer"] for x in sens.report["sensitivity"]]
    out = tmp_path / "fb.onnx"
    # a tight cosine budget that full int8 misses: layers go back to float until it holds
    md = tmp_path / "fb.md"
    r = run_cli("quantize", cnn, *_data(samples), "--fallback", "--min-cosine", "0.9999", "-o", out, "--json",
                "--markdown", md, *FAST_BENCH)
    assert r.code in (0, 3), r.stderr
    _validate(r.report)
    q = r.report["quantization"]
    fb, layers = q["fallback"], q["fallback_layers"]
    assert fb["full_int8"]["cosine_min"] < 0.9999 and layers
    assert [x["layer"] for x in fb["ranking"]] == order  # the ranking of `compressor sensitivity`
    if fb["reranked"] == 0:
        assert [x["layer"] for x in layers] == order[:len(layers)]
    else:  # re-ranked on the current model when one more layer stopped helping: the first still leads
        assert layers[0]["layer"] == order[0]
    assert all(x["reason"] and x["error"] > 0 for x in layers)
    float_names = {x["layer"] for x in layers}
    stored = {w["name"]: w["quantized"] for w in q["weight_nodes"]}
    assert all(not stored[n] for n in float_names) and any(stored.values())
    assert fb["met"] == (r.code == 0) == r.report["gates"]["passed"]
    if fb["met"]:
        assert r.report["fidelity"]["cosine_min"] >= 0.9999
    assert_valid_onnx(out)
    assert "Accuracy-aware fallback" in md.read_text() and layers[0]["layer"] in md.read_text()


def test_fallback_keeps_everything_int8_within_a_loose_budget_and_needs_one(cnn, samples, tmp_path):
    r = run_cli("quantize", cnn, *_data(samples), "--fallback", "--max-accuracy-drop", "5", "-o",
                tmp_path / "q.onnx", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    assert r.report["quantization"]["fallback_layers"] == [] and r.report["quantization"]["fallback"]["met"]
    bad = run_cli("quantize", cnn, *_data(samples), "--fallback", "-o", tmp_path / "q2.onnx")
    assert bad.code == 2 and "--max-accuracy-drop" in bad.error_lines[-1] and len(bad.error_lines) == 1
    assert not (tmp_path / "q2.onnx").exists()


# ----------------------------------------------------------------------------- sweep


def _quant_recipe(path: Path, model: Path, samples: Path, gates: str = "min_cosine = 0.9") -> Path:
    path.write_text("\n".join([
        f'model = "{model}"',
        f'calibration_data = "{samples / "digits_calib.npz"}"',
        f'eval_data = "{samples / "digits_eval.npz"}"',
        "", "[[steps]]", 'pass = "quantize"', 'mode = "static"', 'format = "qdq-u8s8"',
        'calibration_method = "percentile"',
        "", "[benchmark]", "runs = 20", "warmup = 2", "measure_memory = false",
        "", "[gates]", gates, ""]))
    return path


def test_sweep_3x2_grid_against_one_baseline(cnn, samples, tmp_path):
    recipe = _quant_recipe(tmp_path / "r.toml", cnn, samples)
    out = tmp_path / "sweep"
    r = run_cli("sweep", recipe, "--grid", "steps[0].percentile=99.9,99.99,99.999",
                "--grid", "steps[0].per_channel=true,false", "-o", out, "--json")
    assert r.code == 0, r.stderr
    rep = r.report
    _validate(rep)
    doc = json.loads((out / "pareto.json").read_text())
    assert len(doc["candidates"]) == 6 and isinstance(doc["baseline"], dict)
    assert doc["baseline"]["latency_ms_p50"] == rep["baseline"]["latency_ms"]["p50"]
    assert rep["benchmark"]["models"] == 7 and rep["benchmark"]["interleaved"]  # one benchmark, baseline once
    grids = {(c["grid"]["steps[0].percentile"], c["grid"]["steps[0].per_channel"]) for c in doc["candidates"]}
    assert grids == {(p, pc) for p in (99.9, 99.99, 99.999) for pc in (True, False)}
    for c in doc["candidates"]:
        step = c["settings"]["steps"][0]
        assert (step["percentile"], step["per_channel"]) == (c["grid"]["steps[0].percentile"],
                                                             c["grid"]["steps[0].per_channel"])
        assert c["valid"] == (c["cosine_min"] >= 0.9) and c["latency_ms_ci95"][0] <= c["latency_ms_p50"]
        assert Path(c["model_path"]) == out / "candidates" / f"{c['name']}.onnx"
        assert_valid_onnx(c["model_path"])
    chosen = [c for c in doc["candidates"] if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["valid"] and chosen[0]["pareto"] and doc["chosen"] == chosen[0]["name"]
    assert chosen[0]["latency_ms_p50"] == min(c["latency_ms_p50"] for c in doc["candidates"] if c["valid"])
    assert (out / "pareto.png").read_bytes()[:8] == PNG_MAGIC
    assert (out / "chosen.onnx").read_bytes() == Path(chosen[0]["model_path"]).read_bytes()
    assert (out / "pareto.md").read_text().count("\n| ") == 7
    assert len([line for line in r.progress_lines if line.startswith("progress: candidate ") and "done" in line]) == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.toml", "sweep"]  # no scratch left behind


def test_sweep_with_no_valid_candidate_exits_3(cnn, samples, tmp_path):
    recipe = _quant_recipe(tmp_path / "r.toml", cnn, samples, gates="min_cosine = 1.0")
    r = run_cli("sweep", recipe, "--grid", "steps[0].per_channel=true,false", "-o", tmp_path / "s")
    assert r.code == 3, r.stderr
    assert "no sweep candidate met the budget" in r.stderr
    doc = json.loads((tmp_path / "s" / "pareto.json").read_text())
    assert [c["valid"] for c in doc["candidates"]] == [False, False] and doc["chosen"] is None
    assert all("min_cosine" in c["reason"] for c in doc["candidates"])
    assert not (tmp_path / "s" / "chosen.onnx").exists()


def test_a_second_sweep_into_the_same_folder_leaves_no_stale_model(cnn, samples, tmp_path):
    recipe = _quant_recipe(tmp_path / "r.toml", cnn, samples)
    out = tmp_path / "s"
    r = run_cli("sweep", recipe, "--grid", "steps[0].per_channel=true,false", "-o", out)
    assert r.code == 0, r.stderr
    assert len(list((out / "candidates").glob("*.onnx"))) == 2
    r = run_cli("sweep", recipe, "--grid", "steps[0].per_channel=false", "-o", out)
    assert r.code == 0, r.stderr
    doc = json.loads((out / "pareto.json").read_text())
    assert sorted(p.name for p in (out / "candidates").iterdir()) == [f"{c['name']}.onnx" for c in doc["candidates"]]
    (out / "notes.txt").write_text("mine")
    r = run_cli("sweep", recipe, "--grid", "steps[0].per_channel=true", "-o", out)
    assert r.code == 2 and "holds files a sweep did not write (notes.txt)" in r.stderr, r.stderr
    assert (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(("grid", "says"), [
    ("steps[5].ratio=0.3", "steps[5].ratio: the recipe has 1 step"),
    ("steps[0].ratio=0.3", "quantize has no setting 'ratio'"),
    ("steps[0].precision=int3", "steps[0].precision 'int3' is unknown"),
    ("steps[0].percentile=99,50", "steps[0].percentile must be in (90, 100]"),
    ("ratio=0.3", "is not of the form steps[i].field=v1,v2"),
])
def test_sweep_bad_grid_exits_2_before_any_work(cnn, samples, tmp_path, grid, says):
    recipe = _quant_recipe(tmp_path / "r.toml", cnn, samples)
    r = run_cli("sweep", recipe, "--grid", grid, "-o", tmp_path / "s")
    assert r.code == 2, r.stderr
    assert len(r.error_lines) == 1 and says in r.error_lines[0], r.error_lines
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_sweep_prune_ratio_by_precision_on_the_pytorch_cnn(samples, tmp_path):
    """The issue's example: 3 prune ratios x 2 precisions of the digits CNN, 6 candidates, one baseline."""
    recipe = tmp_path / "r.toml"
    recipe.write_text("\n".join([
        f'model = "{samples / "digits_cnn.pt"}"', 'input_shape = ["1,1,8,8"]',
        f'calibration_data = "{samples / "digits_calib.npz"}"', f'eval_data = "{samples / "digits_eval.npz"}"',
        "", "[[steps]]", 'pass = "prune"', "ratio = 0.5", "recover = true", "recover_steps = 100",
        "", "[[steps]]", 'pass = "quantize"',
        "", "[benchmark]", "runs = 20", "warmup = 2", "measure_memory = false", "batch_size = 32",
        "", "[gates]", "max_accuracy_drop = 3.0", ""]))
    out = tmp_path / "sweep"
    r = run_cli("sweep", recipe, "--grid", "steps[0].ratio=0.3,0.5,0.7", "--grid", "steps[1].precision=int8,int4",
                "-o", out, "--json")
    assert r.code in (0, 3), r.stderr
    _validate(r.report)
    doc = json.loads((out / "pareto.json").read_text())
    assert len(doc["candidates"]) == 6 and r.report["benchmark"]["models"] == 7
    assert (out / "pareto.png").read_bytes()[:8] == PNG_MAGIC
    assert (r.code == 0) == any(c["valid"] for c in doc["candidates"])
    # each prune ratio is pruned, recovered and exported once, then shared by its two precisions
    reused = [line for line in r.progress_lines if "reused" in line]
    assert len([line for line in reused if "prune" in line and "export" not in line]) == 3
    assert len([line for line in reused if line.startswith("progress: export")]) == 3

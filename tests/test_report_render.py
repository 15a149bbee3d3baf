"""The people-facing renderings of a report: the rich table and the Markdown (sizes, what the baseline measured)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from compressor.cli.table import render_table
from compressor.report import _fmt_bytes, render_markdown

LONG = "some/deeply/nested/folder/with/a/long/name/" + "x" * 60 + "/model_checkpoint_final.pt"


def _model(path, size_bytes, **extra):
    return {"path": path, "size_bytes": size_bytes, "parameters": 28106, "sparsity": 0.0, "op_types": {"Conv": 3},
            "latency_ms": {"p50": 0.013, "p90": 0.014, "p99": 0.02, "mean": 0.014, "std": 0.001, "runs": 20}, **extra}


def _report(input_path, input_format, *, note=True, steps=()):
    base = _model(input_path, 117_350)
    if note:
        base["note"] = "size, parameters and latency of the fp32 ONNX export of the input"
    return {"command": f"compressor prune {input_path}", "input": {"path": input_path, "format": input_format},
            "baseline": base, "result": _model("out/model.pruned.onnx", 3 * 1024**2 + 1024**2 // 2),
            "size_ratio": 0.29, "speedup": 1.3, "speedup_ci95": [1.2, 1.4], "steps": list(steps), "warnings": []}


@pytest.mark.parametrize(("n", "text"), [(None, "-"), (0, "0 B"), (1023, "1023 B"), (1024, "1.0 KiB"),
                                         (117_350, "114.6 KiB"), (1536 * 1024, "1.5 MiB"), (5 * 1024**3, "5.0 GiB"),
                                         (3 * 1024**4, "3072.0 GiB")])
def test_sizes_use_binary_prefixes(n, text):
    assert _fmt_bytes(n) == text


def _table_text(report, width):
    buf = io.StringIO()
    Console(file=buf, width=width, color_system=None).print(render_table(report))
    return buf.getvalue()


def test_table_names_the_export_a_pytorch_baseline_measured():
    text = _table_text(_report("sample_models/digits_cnn.pt", "torch_module_pickle"), 200)
    row = next(line for line in text.splitlines() if line.startswith("│ model"))
    assert "fp32 ONNX export of sample_models/digits_cnn.pt" in row and "out/model.pruned.onnx" in row
    assert "114.6 KiB" in text and "3.5 MiB" in text and "KB" not in text and "MB" not in text


def test_table_shows_an_onnx_baseline_by_its_path():
    text = _table_text(_report("model.onnx", "onnx", note=False), 200)
    assert "export of" not in text and "model.onnx" in text


def test_bench_with_a_pytorch_second_model_names_its_export():
    report = _report("a.onnx", "onnx", note=False, steps=[{"name": "export", "of": "b.pt"}])
    report["result"]["path"] = "b.pt"
    md = render_markdown(report)
    assert "| model | `a.onnx` | fp32 ONNX export of `b.pt` |" in md


def test_table_never_cuts_paths():
    """Long paths fold onto more lines at any width; nothing is cut with an ellipsis."""
    report = _report(LONG, "torch_module_pickle")
    for width in (80, 300):
        text = _table_text(report, width)
        assert "…" not in text
        joined = "".join(line.strip("│ ").replace(" │ ", "") for line in text.splitlines())
        assert all(part in joined for part in LONG.split("/")), text


def test_markdown_sizes_and_baseline():
    md = render_markdown(_report("sample_models/digits_cnn.pt", "torch_module_pickle"))
    lines = md.splitlines()
    assert "| model | fp32 ONNX export of `sample_models/digits_cnn.pt` | `out/model.pruned.onnx` |" in lines
    assert "| size | 114.6 KiB | 3.5 MiB |" in lines


def test_table_shows_accuracy_before_and_after_recovery():
    report = _report("sample_models/digits_cnn.pt", "torch_module_pickle")
    report["accuracy"] = {"metric": "top1", "eval_data": "eval.npz", "baseline": 0.9911, "result": 0.9778,
                          "before_recovery": 0.1733, "after_recovery": 0.9778}
    text = _table_text(report, 200)
    assert "recovery: top-1 accuracy 0.1733 right after pruning, 0.9778 after recovery (eval.npz)" in text

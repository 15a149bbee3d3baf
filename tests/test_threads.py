"""Honest threads: the count actually used, --threads auto, and the 1-thread check of a multi-thread benchmark."""

from __future__ import annotations

import json

import pytest

from compressor import threads as th
from compressor.benchmark import BenchmarkSettings, LatencyStats
from compressor.context import RunContext
from compressor.measure import _warn_threads
from tests.conftest import run_cli
from tests.test_report_gates import _validate

RESNET = ["--model-class", "sample_models.digits_nets:DigitsResNet", "--input-shape", "1,1,8,8"]


def _stats(p50: float, n: int = 12) -> LatencyStats:
    return LatencyStats.from_samples([p50 * (1 + 0.001 * (i % 3)) for i in range(n)])


def test_candidate_counts_and_resolution():
    assert th.candidate_counts(1) == [1]
    assert th.candidate_counts(2) == [1, 2]
    assert th.candidate_counts(6) == [1, 2, 4, 6]
    assert th.candidate_counts(8) == [1, 2, 4, 8]
    assert th.resolve_threads(3) == 3
    assert th.resolve_threads(0) == th.physical_cores() == th.resolve_threads("auto") >= 1


def test_one_thread_check_flags_oversubscription(monkeypatch):
    """The issue's figures: fp32 2.15 ms at 1 thread vs 6.2 ms at 2; the pruned model 0.8 ms at either."""
    import compressor.benchmark as bm

    def fake(paths, feeds, settings=None, *, threads=None):
        assert threads == [1, 1]
        return {"latency": [_stats(2.15), _stats(0.80)], "block_ids": __import__("numpy").zeros(12, dtype=int)}

    monkeypatch.setattr(bm, "benchmark_detailed", fake)
    at_two = [_stats(6.2), _stats(0.886)]
    check = th.one_thread_check(["a", "b"], {}, BenchmarkSettings(runs=20), [2, 2], at_two, [(7.0, (3.0, 10.5))])
    assert check["baseline_slower_with_threads"] and check["speedup_differs"]
    assert check["speedup"][0] == pytest.approx(2.15 / 0.80, rel=0.01)
    # a large difference inside a wide interval is not flagged: the interval already says it is uncertain
    check = th.one_thread_check(["a", "b"], {}, BenchmarkSettings(runs=20), [2, 2], [_stats(2.0), _stats(0.6)],
                                [(3.4, (2.0, 4.0))])
    assert not check["speedup_differs"]
    # the same models scaling alike: nothing to flag
    check = th.one_thread_check(["a", "b"], {}, BenchmarkSettings(runs=20), [2, 2], [_stats(1.3), _stats(0.5)],
                                [(2.6, (2.5, 2.7))])
    assert not check["baseline_slower_with_threads"] and not check["speedup_differs"]


def test_warning_names_oversubscription_and_the_one_thread_figure():
    warnings: list[str] = []
    ctx = RunContext(io=None, data=None, workdir=None, on_warning=warnings.append)
    check = {"latency_ms_p50": [2.15, 0.8], "speedup": [2.69], "speedup_ci95": [[2.6, 2.8]],
             "baseline_slower_with_threads": True, "speedup_differs": True}
    _warn_threads(ctx, 2, [_stats(6.2), _stats(0.886)], [(7.0, (3.0, 10.5))], check)
    assert len(warnings) == 1
    w = warnings[0]
    assert "thread oversubscription" in w and "2 threads" in w and "2.69x" in w and "7.00x" in w and "--threads 1" in w
    warnings.clear()
    _warn_threads(ctx, 2, [_stats(1.3), _stats(0.5)], [(2.6, (2.5, 2.7))],
                  {**check, "baseline_slower_with_threads": False, "speedup_differs": True})
    assert len(warnings) == 1 and "depends on the thread count" in warnings[0]
    warnings.clear()
    _warn_threads(ctx, 2, [_stats(1.3), _stats(0.5)], [(2.6, (2.5, 2.7))],
                  {**check, "baseline_slower_with_threads": False, "speedup_differs": False})
    assert warnings == []


@pytest.mark.skipif(th.physical_cores() < 2, reason="needs at least 2 physical cores")
def test_multi_thread_benchmark_is_checked_at_one_thread(samples, tmp_path):
    out = tmp_path / "p.onnx"
    r = run_cli("prune", samples / "digits_resnet.pt", *RESNET, "--ratio", "0.5", "--bench-batch-size", "64",
                "--threads", "2", "--runs", "24", "--warmup", "2", "--no-measure-memory", "-o", out, "--json")
    assert r.code == 0, r.stderr
    rep = r.report
    _validate(rep)
    b = rep["benchmark"]
    assert b["threads"] == 2 and b["threads_per_model"] == [2, 2] and b["settings"]["threads"] == 2
    one = b["one_thread"]
    assert len(one["latency_ms_p50"]) == 2 and len(one["speedup"]) == 1
    lo, hi = rep["speedup_ci95"]
    assert one["speedup_differs"] == (abs(rep["speedup"] - one["speedup"][0]) > 0.2 * one["speedup"][0]
                                      and not lo <= one["speedup"][0] <= hi)
    warned = any("thread" in line and "1 thread" in line for line in r.error_lines)
    assert warned == (one["speedup_differs"] or one["baseline_slower_with_threads"])
    # one thread asked for: nothing to check
    r = run_cli("prune", samples / "digits_resnet.pt", *RESNET, "--ratio", "0.5", "--threads", "1", "--runs", "8",
                "--warmup", "1", "--no-measure-memory", "-o", tmp_path / "q.onnx", "--json")
    assert r.code == 0 and r.report["benchmark"]["threads"] == 1 and "one_thread" not in r.report["benchmark"]


def test_threads_auto_gives_each_model_its_fastest_count(samples, tmp_path):
    r = run_cli("prune", samples / "digits_resnet.pt", *RESNET, "--ratio", "0.5", "--threads", "auto",
                "--runs", "16", "--warmup", "2", "--no-measure-memory", "-o", tmp_path / "p.onnx", "--json")
    assert r.code == 0, r.stderr
    _validate(r.report)
    b = r.report["benchmark"]
    table = b["threads_auto"]["latency_ms_p50"]
    assert sorted(map(int, table)) == th.candidate_counts(th.physical_cores())
    for i, used in enumerate(b["threads_per_model"]):
        assert used == int(min(table, key=lambda c, i=i: table[c][i]))
    assert b["threads"] == b["threads_per_model"][0] == r.report["baseline"]["threads"]
    assert r.report["result"]["threads"] == b["threads_per_model"][1]
    assert b["settings"]["threads"] == "auto" and "one_thread" not in b


def test_threads_value_is_checked(samples, tmp_path):
    r = run_cli("bench", samples / "digits_cnn.pt", "--threads", "two")
    assert r.code == 2 and r.error_lines == ["error: --threads must be a whole number >= 0 or 'auto', got 'two'"]
    recipe = tmp_path / "r.toml"
    recipe.write_text(f'model = "{samples / "digits_cnn.pt"}"\ninput_shape = ["1,1,8,8"]\n[[steps]]\npass = "prune"\nratio = 0.5\n'
                      '[benchmark]\nthreads = "many"\n')
    r = run_cli("run", recipe, "--dry-run")
    assert r.code == 2 and "benchmark.threads" in r.stderr and "'auto'" in r.stderr, r.stderr
    recipe.write_text(recipe.read_text().replace('"many"', '"auto"'))
    r = run_cli("run", recipe, "--dry-run", "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)


def test_physical_cores_counts_cores_not_hyperthreads(tmp_path, monkeypatch):
    """Two logical CPUs that share one core count once (Linux topology files)."""
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    real = th.Path

    def fake_path(p):
        p = str(p)
        if p.startswith("/sys/devices/system/cpu/cpu"):
            cpu = int(p.split("/cpu")[-1].split("/")[0].removeprefix("u"))
            d = tmp_path / f"cpu{cpu}"
            d.mkdir(exist_ok=True)
            (d / "core_cpus_list").write_text(f"{cpu - cpu % 2}-{cpu - cpu % 2 + 1}\n")
            return d
        return real(p)

    monkeypatch.setattr(th, "Path", fake_path)
    assert th.physical_cores() == 2

"""Measurement of a baseline and its candidates: size, parameters, fidelity, accuracy, interleaved latency.

Every candidate of a run (each step's ONNX model) is measured against the one baseline in
the same interleaved benchmark, so that their latencies and speedups are comparable.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from compressor.artifact import file_size_bytes
from compressor.benchmark import benchmark_detailed, median_ci95, paired_speedup, session_peak_rss_bytes
from compressor.context import RunContext
from compressor.errors import UsageError
from compressor.fidelity import (
    attention_mask_of,
    compare_outputs,
    is_classifier_output,
    output_names,
    pooled_fidelity,
    pooling_mask_of,
    run_onnx,
    sequence_outputs,
    top1_accuracy,
)
from compressor.inputs import fixed_batch_size
from compressor.runtime import cpu_info
from compressor.threads import best_threads, one_thread_check, physical_cores, resolve_threads


def model_entry(onnx_path: Path, shown_path: Path) -> dict[str, Any]:
    """Static figures of one ONNX model.

    Returns:
        ``path`` (as shown), ``size_bytes`` (external data included), ``parameters``, ``sparsity``, ``op_types``.
    """
    import onnx

    from compressor.onnx_stats import graph_stats

    # graph only: weights are read one at a time (a model over 2 GB is never held whole)
    stats = graph_stats(onnx.load_model(str(onnx_path), load_external_data=False), base_dir=str(Path(onnx_path).parent))
    return {
        "path": str(shown_path),
        "size_bytes": file_size_bytes(onnx_path),
        "parameters": stats["parameters"],
        "sparsity": stats["sparsity"],
        "op_types": stats["op_types"],
    }


def bench_feeds(ctx: RunContext, recipe: Any, batch_size: int | None = None) -> tuple[dict[str, Any], int]:
    """One benchmark batch and its size.

    The size is ``batch_size``, else the recipe's, else the ``input_shape`` batch, else a fixed graph
    batch, else 1. Samples repeat when the data has fewer than the batch.
    """
    import numpy as np

    from compressor.inputs import fixed_batch_size, shape_batch_size

    io, data = ctx.io, ctx.data
    batch = fixed_batch_size(io) or batch_size or recipe.batch_size or shape_batch_size(recipe.parsed_input_shapes)
    if batch is None:
        first = io.inputs[0].shape[0] if io.inputs and io.inputs[0].shape else None
        batch = first if isinstance(first, int) and first > 0 else 1
    if data.num_samples >= batch:
        return data.batch(0, batch), batch
    reps = -(-batch // data.num_samples)
    return {k: np.concatenate([v] * reps)[:batch] for k, v in data.arrays.items()}, batch


def measure(ctx: RunContext, recipe: Any, baseline: dict[str, Any], candidates: list[dict[str, Any]],
            *, against: str) -> dict[str, Any]:
    """Measure the baseline and every candidate; fill their entries in place.

    Args:
        ctx: Run context (inputs, data, eval data).
        recipe: The :class:`~compressor.recipe.Recipe` (benchmark settings, eval data, sweeps).
        baseline: ``{"onnx": Path, "entry": dict}``: the baseline's ONNX file and its report entry.
        candidates: Same form, one per step to measure; each ``entry`` (the baseline's too) gets ``latency_ms``
            (with ``p50_ci95``, the 95% bootstrap CI of the median),
            ``session_load_ms``, ``accuracy`` and the comparison fields ``size_ratio``, ``speedup``,
            ``speedup_ci95``, ``fidelity`` (per output and worst over outputs, padding left out where the
            data has an attention mask; see :func:`~compressor.fidelity.compare_outputs`), and
            ``accuracy_drop_points`` with labelled eval data.
        against: What the baseline is, for ``fidelity.against``.

    Returns:
        ``{"benchmark": ..., "accuracy": ... (with labelled eval data), "sweep": ... (with sweeps)}``; the
        sweep compares the baseline with the last candidate.

    Raises:
        UsageError: ``eval_data`` on a model that is not a classifier.
    """
    models = [baseline, *candidates]
    paths = [m["onnx"] for m in models]
    outs = [run_onnx(p, ctx.data) for p in paths]
    if candidates and ctx.data.source == "random":
        ctx.warn("fidelity was measured on random inputs, which can misstate it badly; pass --calibration-data or "
                 "--eval-data with real samples")
    names = output_names(paths[0])
    mask = attention_mask_of(ctx.data)
    tokens = sequence_outputs(paths[0], mask[0]) if mask is not None else None
    pool_mask = pooling_mask_of(ctx.data)
    pool_tokens = sequence_outputs(paths[0], "attention_mask") if pool_mask is not None else None
    for i, c in enumerate(candidates, 1):
        fid = compare_outputs(outs[0], outs[i], names=names, attention_mask=mask, token_outputs=tokens)
        if pool_mask is not None:
            pooled = pooled_fidelity(outs[0], outs[i], names=names, mask=pool_mask, token_outputs=pool_tokens)
            if pooled:
                fid["outputs"] += pooled
                fid["pooled_cosine_min"] = min(p["cosine_min"] for p in pooled)
                fid["pooled_cosine_mean"] = min(p["cosine_mean"] for p in pooled)
        c["compare"]["fidelity"] = {**fid, "inputs": ctx.data.source, "against": against}
    out: dict[str, Any] = {}
    unlabelled = ctx.eval_data is not None and ctx.eval_data.labels is None and recipe.eval_data is None
    if unlabelled and recipe.eval_source is not None and is_classifier_output(outs[0][0], names[0]):
        ctx.warn(f"{recipe.eval_source} has no labels: fidelity runs on its inputs, accuracy of this classifier is "
                 f"not measured ({recipe.how_to_label()} to measure it)")
    if recipe.eval_source is not None and ctx.eval_data is not None and ctx.eval_data.labels is not None:
        ev = ctx.eval_data
        accs = []
        for p in paths:
            logits = run_onnx(p, ev)[0]
            if not is_classifier_output(logits, names[0]):
                raise UsageError(f"--eval-data needs a classifier ([samples, classes] output); {p.name} gives "
                                 f"{list(logits.shape)}")
            accs.append(top1_accuracy(logits, ev.labels))
        for m, acc in zip(models, accs, strict=True):
            m["entry"]["accuracy"] = acc
        for i, c in enumerate(candidates, 1):
            c["compare"]["accuracy_drop_points"] = 100.0 * (accs[0] - accs[i])
        out["accuracy"] = {"metric": "top1", "eval_data": str(recipe.eval_source), "samples": int(ev.labels.shape[0]),
                           "baseline": accs[0]}
        if candidates:
            out["accuracy"].update(result=accs[-1], drop_points=100.0 * (accs[0] - accs[-1]))
    feeds, batch = bench_feeds(ctx, recipe)
    auto = recipe.bench.threads == "auto"
    if auto:
        task = f"choosing each model's thread count at batch {batch}"
        ctx.progress(task, 0, 1)
        used, thread_table = best_threads(paths, feeds, recipe.bench)
        ctx.progress(task, 1, 1)
    else:
        used = [resolve_threads(recipe.bench.threads)] * len(paths)
        if used[0] > physical_cores():
            ctx.warn(f"--threads {used[0]} is more than this machine's {physical_cores()} physical cores: ONNX Runtime's "
                     "threads then compete for cores, and latencies say more about the machine than the model")
    task = f"benchmark of {len(paths)} model{'s' if len(paths) > 1 else ''} at batch {batch}" + (
        ", interleaved" if len(paths) > 1 else "")
    ctx.progress(task, 0, 1)
    det = benchmark_detailed(paths, feeds, recipe.bench, threads=used)
    ctx.progress(task, 1, 1)
    stats = det["latency"]
    for i, m in enumerate(models):
        m["entry"]["latency_ms"] = {**stats[i].to_json(),
                                    "p50_ci95": list(median_ci95(stats[i].samples_ms, block_ids=det["block_ids"]))}
        m["entry"]["session_load_ms"] = det["session_load_ms"][i]
        m["entry"]["threads"] = used[i]
        if recipe.bench.measure_memory:
            m["entry"]["session_peak_rss_bytes"] = session_peak_rss_bytes(paths[i], feeds, threads=used[i])
    speedups = []
    for i, c in enumerate(candidates, 1):
        c["compare"]["size_ratio"] = c["entry"]["size_bytes"] / baseline["entry"]["size_bytes"]
        sp, ci = paired_speedup(stats[0].samples_ms, stats[i].samples_ms, block_ids=det["block_ids"])
        c["compare"]["speedup"], c["compare"]["speedup_ci95"] = sp, list(ci)
        speedups.append((sp, ci))
    out["benchmark"] = {
        "threads": used[0],
        "threads_per_model": used,
        "batch_size": batch,
        "inputs": {k: {"shape": list(v.shape), "dtype": v.dtype.name} for k, v in feeds.items()},
        "interleaved": len(paths) > 1,
        "batch_axis": "fixed by the model" if fixed_batch_size(ctx.io) else "dynamic",
        "models": len(paths),
        "warmup_runs": det["warmup_runs"],
        "blocks": det["blocks"],
        "settings": recipe.bench.to_json(),
        "cpu": cpu_info(),
    }
    if auto:
        out["benchmark"]["threads_auto"] = {"latency_ms_p50": thread_table}
    elif used[0] > 1:
        task = f"checking the benchmark at 1 thread (it ran at {used[0]})"
        ctx.progress(task, 0, 1)
        check = one_thread_check(paths, feeds, recipe.bench, used, stats, speedups)
        ctx.progress(task, 1, 1)
        out["benchmark"]["one_thread"] = check
        _warn_threads(ctx, used[0], stats, speedups, check)
    if recipe.batch_sizes or recipe.seq_lens:
        out["sweep"] = sweep(ctx, recipe, [paths[0]] + ([paths[-1]] if candidates else []),
                             [used[0]] + ([used[-1]] if candidates else []))
    return out


def _warn_threads(ctx: RunContext, n: int, stats: list[Any], speedups: list[Any], check: dict[str, Any]) -> None:
    """One warning when the benchmark at ``n`` threads misleads.

    That is when the baseline is slower than at 1 thread, or the result's speedup differs from its 1-thread
    speedup by more than 20%.
    """
    one = check["latency_ms_p50"]
    at_one = ""
    if speedups:
        sp, (lo, hi) = check["speedup"][-1], check["speedup_ci95"][-1]
        at_one = f"at 1 thread the speedup is {sp:.2f}x [95% CI {lo:.2f}, {hi:.2f}], not {speedups[-1][0]:.2f}x"
    if check["baseline_slower_with_threads"]:
        ctx.warn(f"thread oversubscription: at {n} threads ONNX Runtime ran the baseline slower than at 1 thread "
                 f"(p50 {stats[0].p50:.3g} ms vs {one[0]:.3g} ms)" + (f"; {at_one}" if at_one else "")
                 + "; use --threads 1, or --threads auto to give each model its best count")
    elif check["speedup_differs"]:
        ctx.warn(f"the speedup depends on the thread count on this machine: {at_one} (at {n} threads); "
                 "use --threads 1 for a 1-thread deployment, or --threads auto to give each model its best count")


def _with_seq_len(feeds: dict[str, Any], io: Any, seq_len: int) -> dict[str, Any]:
    """Token inputs (integer, rank >= 2) cut or padded (with 0: padding id / masked) to ``seq_len`` on axis 1.

    Raises:
        UsageError: No token input, or a token input whose axis 1 is fixed in the graph.
    """
    import numpy as np

    out = dict(feeds)
    touched = False
    for spec in io.inputs:
        arr = feeds[spec.name]
        if arr.dtype.kind not in "iu" or arr.ndim < 2:
            continue
        if isinstance(spec.shape[1], int) and spec.shape[1] > 0 and spec.shape[1] != seq_len:
            raise UsageError(f"input '{spec.name}' has a fixed sequence length {spec.shape[1]}; --seq-lens cannot change it")
        if arr.shape[1] >= seq_len:
            out[spec.name] = np.ascontiguousarray(arr[:, :seq_len])
        else:
            pad = [(0, 0)] * arr.ndim
            pad[1] = (0, seq_len - arr.shape[1])
            out[spec.name] = np.pad(arr, pad)
        touched = True
    if not touched:
        raise UsageError("--seq-lens needs token inputs (integer arrays with a sequence axis 1); this model has none")
    return out


def sweep(ctx: RunContext, recipe: Any, paths: list[Path], threads: list[int] | None = None) -> list[dict[str, Any]]:
    """Latency (and speedup of ``paths[1]`` over ``paths[0]``) for each batch size x sequence length.

    Each model runs at its count of ``threads`` (default: the benchmark setting, resolved).
    """
    if threads is None:
        threads = [resolve_threads(recipe.bench.threads)] * len(paths)
    rows = []
    for b in recipe.batch_sizes or [None]:
        for seq in recipe.seq_lens or [None]:
            feeds, batch = bench_feeds(ctx, dataclasses.replace(recipe, batch_size=None) if b else recipe, b)
            if seq is not None:
                feeds = _with_seq_len(feeds, ctx.io, seq)
            det = benchmark_detailed(paths, feeds, recipe.bench, threads=threads)
            stats = det["latency"]
            row: dict[str, Any] = {"batch_size": batch, "baseline_latency_ms": stats[0].to_json()}
            if seq is not None:
                row["seq_len"] = seq
            if len(stats) == 2:
                sp, ci = paired_speedup(stats[0].samples_ms, stats[1].samples_ms, block_ids=det["block_ids"])
                row.update(result_latency_ms=stats[1].to_json(), speedup=sp, speedup_ci95=list(ci))
            rows.append(row)
    return rows

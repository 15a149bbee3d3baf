"""Library entry points behind the CLI commands: compress (prune / quantize), export, bench.

Each returns the report dict; the CLI renders it and maps errors to exit codes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compressor.artifact import ModelFormat, file_size_bytes
from compressor.benchmark import benchmark_detailed, paired_speedup, session_peak_rss_bytes
from compressor.context import RunContext
from compressor.errors import UsageError
from compressor.fidelity import compare_outputs, is_classifier_output, run_onnx, top1_accuracy
from compressor.loaders import LoadOptions, load_model
from compressor.pipeline import (
    RunOptions,
    bench_feeds,
    check_output,
    default_output,
    export_baseline,
    make_context,
    publish,
    scratch_dir,
)
from compressor.report import new_report
from compressor.runtime import cpu_info


def _model_entry(path: Path, onnx_path: Path, shown_path: Path) -> dict[str, Any]:
    import onnx

    from compressor.onnx_stats import graph_stats

    stats = graph_stats(onnx.load_model(str(onnx_path)))
    return {
        "path": str(shown_path),
        "size_bytes": file_size_bytes(onnx_path),
        "parameters": stats["parameters"],
        "sparsity": stats["sparsity"],
        "op_types": stats["op_types"],
    }


def _measure(ctx: RunContext, options: RunOptions, report: dict[str, Any], baseline: Path, result: Path | None) -> None:
    """Fidelity, accuracy and interleaved latency of baseline (and result) into ``report``."""
    paths = [baseline] + ([result] if result is not None else [])
    outs = [run_onnx(p, ctx.data) for p in paths]
    keys = ["baseline", "result"][: len(paths)]
    if result is not None and ctx.data.source == "random":
        ctx.warn("fidelity was measured on random inputs, which can misstate it badly; pass --calibration-data or "
                 "--eval-data with real samples")
    if result is not None:
        report["fidelity"] = {**compare_outputs(outs[0], outs[1]), "inputs": ctx.data.source,
                              "against": "baseline fp32 ONNX (checked against the original PyTorch model)"
                              if ctx.artifact.format.is_torch else "baseline ONNX"}
    if options.eval_data is not None:
        from compressor.inputs import check_data_fits, load_npz

        ev = check_data_fits(ctx.io, load_npz(options.eval_data, want_labels=True))
        accs = []
        for key, p in zip(keys, paths, strict=True):
            logits = run_onnx(p, ev)[0]
            if not is_classifier_output(logits):
                raise UsageError(f"--eval-data needs a classifier ([samples, classes] output); {p.name} gives {list(logits.shape)}")
            acc = top1_accuracy(logits, ev.labels)
            report[key]["accuracy"] = acc
            accs.append(acc)
        report["accuracy"] = {"metric": "top1", "eval_data": str(options.eval_data), "samples": int(ev.labels.shape[0]),
                              "baseline": accs[0]}
        if len(accs) == 2:
            report["accuracy"].update(result=accs[1], drop_points=100.0 * (accs[0] - accs[1]))
    feeds, batch = bench_feeds(ctx.io, ctx.data, options)
    det = benchmark_detailed(paths, feeds, options.bench)
    stats = det["latency"]
    for i, (key, s) in enumerate(zip(keys, stats, strict=True)):
        report[key]["latency_ms"] = s.to_json()
        report[key]["session_load_ms"] = det["session_load_ms"][i]
        if options.bench.measure_memory:
            report[key]["session_peak_rss_bytes"] = session_peak_rss_bytes(paths[i], feeds, threads=options.bench.threads)
    if result is not None:
        report["size_ratio"] = report["result"]["size_bytes"] / report["baseline"]["size_bytes"]
        report["speedup"], ci = paired_speedup(stats[0].samples_ms, stats[1].samples_ms, block_ids=det["block_ids"])
        report["speedup_ci95"] = list(ci)
    report["benchmark"] = {
        "batch_size": batch,
        "inputs": {k: {"shape": list(v.shape), "dtype": v.dtype.name} for k, v in feeds.items()},
        "interleaved": len(paths) > 1,
        "warmup_runs": det["warmup_runs"],
        "blocks": det["blocks"],
        "settings": options.bench.to_json(),
        "cpu": cpu_info(),
    }
    if options.batch_sizes or options.seq_lens:
        report["sweep"] = _sweep(ctx, options, paths)


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


def _sweep(ctx: RunContext, options: RunOptions, paths: list[Path]) -> list[dict[str, Any]]:
    """Latency (and speedup) for each ``--batch-sizes`` x ``--seq-lens`` combination."""
    import dataclasses

    rows = []
    for b in options.batch_sizes or [None]:
        for seq in options.seq_lens or [None]:
            feeds, batch = bench_feeds(ctx.io, ctx.data, dataclasses.replace(options, batch_size=b))
            if seq is not None:
                feeds = _with_seq_len(feeds, ctx.io, seq)
            det = benchmark_detailed(paths, feeds, options.bench)
            stats = det["latency"]
            row: dict[str, Any] = {"batch_size": batch, "baseline_latency_ms": stats[0].to_json()}
            if seq is not None:
                row["seq_len"] = seq
            if len(stats) == 2:
                sp, ci = paired_speedup(stats[0].samples_ms, stats[1].samples_ms, block_ids=det["block_ids"])
                row.update(result_latency_ms=stats[1].to_json(), speedup=sp, speedup_ci95=list(ci))
            rows.append(row)
    return rows


def compress(
    model_path: Path,
    pass_name: str,
    config: Any,
    *,
    output: Path | None,
    options: RunOptions,
    load_options: LoadOptions,
    command: str,
) -> dict[str, Any]:
    """Run one pass end to end and write the result ONNX file.

    Args:
        model_path: Input model (any supported format).
        pass_name: Registered pass name (``"prune"`` or ``"quantize"``).
        config: The pass's config object.
        output: Result path; default ``<stem>.pruned.onnx`` / ``<stem>.quantized.onnx`` beside the input.
        options: Inputs and measurement settings.
        load_options: Pickle trust and state_dict class.
        command: The command line, stored in the report.

    Returns:
        The report dict (see :mod:`compressor.report`).

    Raises:
        CompressorError: Any failure; nothing is written at ``output`` then.
    """
    from compressor.passes import config_to_json, get_pass

    spec = get_pass(pass_name)
    options.gates.check_usable(has_eval_data=options.eval_data is not None, compares=True)
    if options.save_torch is not None and pass_name != "prune":
        raise UsageError("--save-torch applies to prune (quantized models are ONNX only)")
    model_path = Path(model_path)
    artifact = load_model(model_path, load_options)
    out = Path(output) if output else default_output(model_path, "pruned" if pass_name == "prune" else "quantized")
    check_output(model_path, out)
    report = new_report(command)
    with scratch_dir(out) as work:
        ctx = make_context(artifact, options, work)
        report["input"] = {"path": str(model_path), "format": artifact.format.value,
                           "size_bytes": file_size_bytes(model_path), "inputs": [s.to_json() for s in ctx.io.inputs]}
        baseline = export_baseline(ctx)
        outcome = spec.load_runner()(ctx, config)
        report["settings"] = {"pass": pass_name, **config_to_json(config)}
        report["baseline"] = _model_entry(baseline, baseline, model_path)
        report["result"] = _model_entry(outcome.path, outcome.path, out)
        if artifact.format is not ModelFormat.ONNX:
            report["baseline"]["note"] = "size, parameters and latency of the fp32 ONNX export of the input"
        _measure(ctx, options, report, baseline, outcome.path)
        report["pruning" if pass_name == "prune" else "quantization"] = outcome.details
        if "macs_before" in outcome.details:
            report["baseline"]["macs"] = outcome.details["macs_before"]
            report["result"]["macs"] = outcome.details["macs_after"]
            report["macs_ratio"] = outcome.details["macs_after"] / max(outcome.details["macs_before"], 1)
        if "accuracy" in report:
            for key in ("accuracy_before_recovery", "accuracy_after_recovery"):
                if key in outcome.details:
                    report["accuracy"][key.removeprefix("accuracy_")] = outcome.details[key]
        fid = report["fidelity"]
        if pass_name == "prune" and (fid.get("top1_agreement", 1.0) < 0.9 or fid["cosine_mean"] < 0.9):
            agree = f"top-1 agreement {fid['top1_agreement']:.2f}, " if "top1_agreement" in fid else ""
            advice = ("use --recover with --calibration-data, or a lower --ratio" if options.eval_data
                      else "measure accuracy with --eval-data; --recover with --calibration-data or a lower --ratio help")
            ctx.warn(f"the pruned model's outputs moved far from the original ({agree}cosine {fid['cosine_mean']:.2f}"
                     f"{', on random inputs' if ctx.data.source == 'random' else ''}); {advice}")
        if report["speedup_ci95"][1] < 1.0:
            ctx.warn(f"the result is slower than the baseline on this CPU (speedup {report['speedup']:.2f}, 95% CI "
                     f"[{report['speedup_ci95'][0]:.2f}, {report['speedup_ci95'][1]:.2f}]) at batch "
                     f"{report['benchmark']['batch_size']}; see the op types in the report")
        exports = [s for s in ctx.steps if s["name"] == "export"]
        if exports:
            report["export"] = exports[0]
        report["steps"] = ctx.steps
        if options.gates.any:
            report["gates"] = options.gates.evaluate(report)
        if options.save_torch is not None:
            report["torch_output"] = save_torch_model(ctx, options.save_torch)
        publish(outcome.path, out)
    report["output"] = str(out)
    report["warnings"] = ctx.warnings
    return report


def save_torch_model(ctx: RunContext, path: Path) -> dict[str, Any]:
    """Write the pruned PyTorch model for users who keep training, and check that it loads back.

    ``.pt2``: a ``torch.export`` ExportedProgram with a dynamic batch axis (loads anywhere);
    anything else: a full-module pickle (``torch.save``), plain ``weight`` tensors, no masks.

    Raises:
        UsageError: The pass produced no PyTorch model (ONNX input).
        StepFailedError: The saved file does not load back or gives other outputs.
    """
    import os
    import tempfile

    import numpy as np
    import torch

    from compressor.errors import StepFailedError
    from compressor.export import torch_forward

    model = ctx.torch_result
    if model is None:
        raise UsageError("--save-torch needs a PyTorch input model; this run produced only ONNX")
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    feeds = ctx.data.batch(0, 2)
    try:
        if path.suffix == ".pt2":
            args = tuple(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in ctx.io.input_names)
            batch = torch.export.Dim("batch", min=1, max=1 << 20)
            ep = torch.export.export(model, args, dynamic_shapes=tuple({0: batch} for _ in args))
            torch.export.save(ep, tmp)
            loaded = torch.export.load(tmp)
            kind = "exported_program"
        else:
            torch.save(model, tmp)
            loaded = torch.load(tmp, weights_only=False)
            kind = "torch_module_pickle"
        a = torch_forward(model, feeds, ctx.io)[0]
        b = torch_forward(loaded, feeds, ctx.io)[0]
        if not np.allclose(a, b, atol=1e-5, rtol=1e-4):
            raise StepFailedError(f"the saved PyTorch model {path} does not reproduce the pruned model's outputs")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return {"path": str(path), "format": kind}


def export_model(
    model_path: Path, *, output: Path | None, options: RunOptions, load_options: LoadOptions, command: str
) -> dict[str, Any]:
    """Export a PyTorch model to ONNX, checked against PyTorch (``compressor export``).

    Raises:
        UsageError: The input is already ONNX or bad; ExportError: both exporters failed.
    """
    model_path = Path(model_path)
    artifact = load_model(model_path, load_options)
    if artifact.format is ModelFormat.ONNX:
        raise UsageError(f"{model_path} is already ONNX; export takes a PyTorch model")
    out = Path(output) if output else model_path.with_suffix(".onnx")
    check_output(model_path, out)
    report = new_report(command)
    with scratch_dir(out) as work:
        ctx = make_context(artifact, options, work)
        baseline = export_baseline(ctx)
        report["input"] = {"path": str(model_path), "format": artifact.format.value,
                           "size_bytes": file_size_bytes(model_path), "inputs": [s.to_json() for s in ctx.io.inputs]}
        report["export"] = ctx.steps[0]
        report["result"] = _model_entry(baseline, baseline, out)
        publish(baseline, out)
    report["output"] = str(out)
    report["warnings"] = ctx.warnings
    return report


def bench_model(
    model_path: Path,
    *,
    options: RunOptions,
    load_options: LoadOptions,
    command: str,
    other_path: Path | None = None,
) -> dict[str, Any]:
    """Benchmark one model, or compare two on the same inputs (``compressor bench A [B]``).

    PyTorch inputs are exported first. With two models, A is the baseline and B the result:
    the report gets fidelity, ``size_ratio``, ``speedup`` and ``speedup_ci95`` as for a pass.

    Raises:
        UsageError: Bad inputs, or B's inputs differ from A's.
    """
    model_path = Path(model_path)
    options.gates.check_usable(has_eval_data=options.eval_data is not None, compares=other_path is not None)
    artifact = load_model(model_path, load_options)
    other = load_model(Path(other_path), load_options) if other_path is not None else None
    report = new_report(command)
    with scratch_dir(None) as work:
        ctx = make_context(artifact, options, work)
        baseline = export_baseline(ctx)
        report["input"] = {"path": str(model_path), "format": artifact.format.value,
                           "size_bytes": file_size_bytes(model_path), "inputs": [s.to_json() for s in ctx.io.inputs]}
        report["baseline"] = _model_entry(baseline, baseline, model_path)
        second = None
        if other is not None:
            second = _as_onnx(other, ctx, work)
            report["result"] = _model_entry(second, second, Path(other_path))
        _measure(ctx, options, report, baseline, second)
        report["steps"] = ctx.steps
        if options.gates.any:
            report["gates"] = options.gates.evaluate(report)
    report["warnings"] = ctx.warnings
    return report


def _as_onnx(artifact: Any, ctx: RunContext, work: Path) -> Path:
    """The second model of ``bench A B`` as ONNX with the same inputs as A."""
    from compressor.export import export_to_onnx

    if artifact.format is ModelFormat.ONNX:
        names = [s.name for s in artifact.io.inputs]
        if sorted(names) != sorted(ctx.io.input_names):
            raise UsageError(f"{artifact.path} has inputs {names} but {ctx.artifact.path} has {ctx.io.input_names}; "
                             "bench compares models with the same inputs")
        return artifact.path
    path = work / "second.onnx"
    res = export_to_onnx(artifact.loaded, ctx.io, path, check_data=ctx.data, opset=ctx.export.opset,
                         atol=ctx.export.atol, rtol=ctx.export.rtol, exporter=ctx.export.exporter)
    ctx.steps.append({"name": "export", "of": str(artifact.path), **res.to_json()})
    return path

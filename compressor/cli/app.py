"""Typer app: ``compressor prune | quantize | export | bench``.

Exit codes: 0 success; 1 a step failed (export, parity, quantization, session); 2 bad usage
or bad input; 3 a quality gate failed. Heavy libraries load inside the commands.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import traceback
from pathlib import Path
from typing import Annotated, Any, Callable, Optional

import typer

from compressor.errors import EXIT_STEP_FAILED, CompressorError, UsageError

_JSON_FD: int | None = None  # the real stdout while --json sends library chatter to stderr

EPILOG = "Exit codes: 0 success, 1 a step failed (export, parity, quantization, session), 2 bad usage or input, 3 a quality gate failed."

app = typer.Typer(
    name="compressor",
    help="Prune or quantize a deep-learning model for CPU, export it to ONNX, and measure size, latency and fidelity.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

# ----------------------------------------------------------------------------- shared options
ModelArg = Annotated[Path, typer.Argument(metavar="MODEL", help="Model file: ONNX, .pt2 ExportedProgram, TorchScript, torch.save module or state_dict (format read from content).", show_default=False)]
OutputOpt = Annotated[Optional[Path], typer.Option("-o", "--output", help="Output ONNX file (default: <stem>.pruned.onnx / <stem>.quantized.onnx beside the input).")]
InputShapeOpt = Annotated[Optional[list[str]], typer.Option("--input-shape", help="Input shape: 1,1,8,8 (one float32 input) or name:1x128:int64 (repeat or comma-separate for several).")]
CalibOpt = Annotated[Optional[Path], typer.Option("--calibration-data", help=".npz of inputs keyed by input name (samples first), a folder of <name>.npy, or 'random' (warned opt-in).")]
EvalOpt = Annotated[Optional[Path], typer.Option("--eval-data", help=".npz of inputs plus 'labels': report top-1 accuracy of baseline and result.")]
ModelClassOpt = Annotated[Optional[str], typer.Option("--model-class", help="package.module:ClassName to load a state_dict into (current folder is importable).")]
ModelKwargsOpt = Annotated[Optional[str], typer.Option("--model-kwargs", help="JSON object of constructor arguments for --model-class.")]
TrustOpt = Annotated[bool, typer.Option("--trust-pickle", help="Allow pickles that need classes outside torch.nn (runs code from the file).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the JSON report to stdout and nothing else.")]
ReportOpt = Annotated[Optional[Path], typer.Option("--report", help="Write the JSON report to this file.")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]
OpsetOpt = Annotated[int, typer.Option("--opset", min=13, max=23, help="ONNX opset version for export (the dynamo exporter needs 18 or later).")]
AtolOpt = Annotated[float, typer.Option("--atol", min=0.0, help="Export parity check: pass when |onnx - torch| <= atol + rtol * |torch|.")]
RtolOpt = Annotated[float, typer.Option("--rtol", min=0.0, help="Relative tolerance of the export parity check.")]
ExporterOpt = Annotated[str, typer.Option("--exporter", help="auto (dynamo, then TorchScript-based), dynamo or torchscript.")]
BatchOpt = Annotated[Optional[int], typer.Option("--batch-size", "--bench-batch-size", min=1, help="Benchmark batch size (default: from --input-shape or the graph, else 1).")]
ThreadsOpt = Annotated[int, typer.Option("--threads", min=0, help="ONNX Runtime intra-op threads (0 = its default).")]
RunsOpt = Annotated[Optional[int], typer.Option("--runs", min=1, help="Timed rounds (default: at least 20 rounds and 3 s).")]
WarmupOpt = Annotated[int, typer.Option("--warmup", min=0, help="Fewest untimed warm-up runs per model (warm-up continues until timings settle, bounded).")]
MemoryOpt = Annotated[bool, typer.Option("--measure-memory/--no-measure-memory", help="Measure each session's peak resident memory (in a child process, about 1 s per model).")]
MinTimeOpt = Annotated[float, typer.Option("--min-time", min=0.0, help="Least total timed seconds when --runs is not given.")]
InterThreadsOpt = Annotated[int, typer.Option("--inter-threads", min=0, help="ONNX Runtime inter-op threads (0 = its default).")]
BatchSizesOpt = Annotated[Optional[str], typer.Option("--batch-sizes", help="Also time a sweep of batch sizes, e.g. 1,8,32.")]
SeqLensOpt = Annotated[Optional[str], typer.Option("--seq-lens", help="Also time a sweep of sequence lengths of token inputs (axis 1), e.g. 64,128.")]
MaxAccDropOpt = Annotated[Optional[float], typer.Option("--max-accuracy-drop", help="Gate: largest top-1 accuracy drop in percentage points (needs --eval-data).")]
MinSpeedupOpt = Annotated[Optional[float], typer.Option("--min-speedup", help="Gate: least speedup, judged on the lower bound of its 95% confidence interval.")]
MaxSizeRatioOpt = Annotated[Optional[float], typer.Option("--max-size-ratio", help="Gate: largest result/baseline size ratio.")]
MinCosineOpt = Annotated[Optional[float], typer.Option("--min-cosine", help="Gate: least cosine similarity of any sample's output (fidelity.cosine_min).")]
MarkdownOpt = Annotated[Optional[Path], typer.Option("--markdown", help="Write a GitHub-flavoured Markdown summary (for PR comments / CI step summaries).")]


def _command_line() -> str:
    return "compressor " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)


def _err_plain(msg: str) -> None:
    print(msg, file=sys.stderr)


def _run(debug: bool, fn: Callable[[], int | None], *, json_out: bool = False) -> None:
    """Run a command body, mapping errors to one stderr line and an exit code.

    Library warnings are hidden unless ``--debug``. With ``--json``, everything the libraries
    print (Python or C level) is sent to stderr so that stdout carries the JSON alone.
    """
    import warnings

    if not debug:
        import logging

        warnings.filterwarnings("ignore")
        logging.getLogger().setLevel(logging.ERROR)  # ONNX Runtime's quantization tool logs advice on the root logger
        logging.getLogger("onnxruntime").setLevel(logging.ERROR)
    global _JSON_FD
    if json_out and _JSON_FD is None:
        sys.stdout.flush()
        _JSON_FD = os.dup(1)
        os.dup2(2, 1)
    try:
        code = fn() or 0
    except CompressorError as e:
        if debug:
            traceback.print_exc()
        _err(str(e))
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt:
        _err("interrupted")
        raise typer.Exit(130) from None
    except SystemExit as e:  # SIGTERM: scratch folders were removed on the way out
        if e.code == 143:
            _err("terminated")
        raise
    except Exception as e:  # a bug or an unexpected library failure: still one line
        if debug:
            traceback.print_exc()
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        _err(f"unexpected {type(e).__name__}: {first}" + ("" if debug else "; rerun with --debug for the traceback"))
        raise typer.Exit(EXIT_STEP_FAILED) from None
    raise typer.Exit(code)


def _load_options(model_class: str | None, model_kwargs: str | None, trust_pickle: bool):
    from compressor.loaders import LoadOptions

    kwargs: dict[str, Any] = {}
    if model_kwargs:
        try:
            kwargs = json.loads(model_kwargs)
        except json.JSONDecodeError as e:
            raise UsageError(f"--model-kwargs is not valid JSON ({e.msg}); write e.g. '{{\"width\": 32}}'") from e
        if not isinstance(kwargs, dict):
            raise UsageError("--model-kwargs must be a JSON object, e.g. '{\"width\": 32}'")
    return LoadOptions(trust_pickle=trust_pickle, model_class=model_class, model_kwargs=kwargs)


def _int_list(text: str | None, flag: str, example: str) -> list[int]:
    if not text:
        return []
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = [0]
    if any(v < 1 for v in values):
        raise UsageError(f"{flag} must be positive integers separated by commas, e.g. {example}; got '{text}'")
    return values


def _run_options(p: dict[str, Any]):
    """RunOptions from a command's parameters (``dict(locals())``); absent flags take their defaults."""
    from compressor.benchmark import BenchmarkSettings
    from compressor.context import ExportSettings
    from compressor.gates import Gates
    from compressor.inputs import parse_input_shapes
    from compressor.pipeline import RunOptions

    exporter = p.get("exporter", "auto")
    if exporter not in ("auto", "dynamo", "torchscript"):
        raise UsageError(f"--exporter '{exporter}' is unknown; use auto, dynamo or torchscript")
    sizes = _int_list(p.get("batch_sizes"), "--batch-sizes", "1,8,32")
    seq_lens = _int_list(p.get("seq_lens"), "--seq-lens", "64,128")
    gates = Gates(max_accuracy_drop=p.get("max_accuracy_drop"), min_speedup=p.get("min_speedup"),
                  max_size_ratio=p.get("max_size_ratio"), min_cosine=p.get("min_cosine"))
    return RunOptions(
        batch_sizes=sizes,
        seq_lens=seq_lens,
        gates=gates,
        input_shapes=parse_input_shapes(p.get("input_shape") or []),
        calibration_data=p.get("calibration_data"),
        eval_data=p.get("eval_data"),
        batch_size=p.get("batch_size"),
        export=ExportSettings(opset=p.get("opset", 18), atol=p.get("atol", 1e-4), rtol=p.get("rtol", 1e-3),
                              exporter=exporter),
        bench=BenchmarkSettings(runs=p.get("runs"), warmup=p.get("warmup", 10), threads=p.get("threads", 0),
                                inter_threads=p.get("inter_threads", 0), min_time_s=p.get("min_time", 3.0),
                                measure_memory=p.get("measure_memory", True)),
        quiet=False,
    )


def _read_layer_ratios(path: Path) -> tuple[tuple[str, float], ...]:
    """``{"layer glob": ratio}`` from a TOML or JSON file.

    Raises:
        UsageError: Missing file, bad syntax, or non-numeric ratios.
    """
    import tomllib

    if not path.is_file():
        raise UsageError(f"--layer-ratios file not found: {path}")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"cannot parse --layer-ratios {path}: {e}; write e.g. \"layer1.*\" = 0.3") from e
    if not isinstance(data, dict) or not all(isinstance(v, (int, float)) for v in data.values()):
        raise UsageError(f"--layer-ratios {path} must map layer-name globs to numbers, e.g. \"layer1.*\" = 0.3")
    return tuple((str(k), float(v)) for k, v in data.items())


def _print_layers(rep: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    layers = (rep.get("pruning") or {}).get("layers") or []
    t = Table(title="channels per layer", title_justify="left")
    for col in ("layer", "before", "after"):
        t.add_column(col, justify="left" if col == "layer" else "right")
    for la in layers:
        t.add_row(la["name"], str(la["channels_before"]), str(la["channels_after"]))
    Console(stderr=True).print(t)


def _check_side_files(model: Path, output: Path | None, report: Path | None, markdown: Path | None,
                      calibration_data: Path | None = None, eval_data: Path | None = None) -> None:
    from compressor.pipeline import check_side_files

    check_side_files({"--report": report, "--markdown": markdown},
                     {"input model": model, "output model": output, "calibration data": calibration_data,
                      "evaluation data": eval_data})


def _emit(report: dict[str, Any], json_out: bool, report_path: Path | None, markdown: Path | None = None) -> int:
    """Write/print the report; returns 3 when a quality gate failed, else 0."""
    from compressor.errors import EXIT_GATE_FAILED
    from compressor.gates import Gates
    from compressor.report import render_markdown, render_table, to_json, write_json_atomic, write_text_atomic

    if report_path is not None:
        write_json_atomic(report, report_path)
    if markdown is not None:
        write_text_atomic(render_markdown(report), markdown)
    code = 0
    gates = report.get("gates")
    if gates and not gates["passed"]:
        code = EXIT_GATE_FAILED
        _err(Gates.describe(gates["failed"]))
    if json_out:
        text = (to_json(report) + "\n").encode()
        if _JSON_FD is not None:
            sys.stdout.flush()
            os.write(_JSON_FD, text)
        else:
            sys.stdout.buffer.write(text)
            sys.stdout.flush()
        return code
    from rich.console import Console

    Console().print(render_table(report))
    if report.get("output"):
        _err_plain(f"wrote {report['output']}")
    return code


# ----------------------------------------------------------------------------- commands
@app.command(epilog=EPILOG)
def prune(
    model: ModelArg,
    ratio: Annotated[float, typer.Option("--ratio", help="Structured: fraction of channels removed per layer. Unstructured: target sparsity. In (0, 1).")] = 0.5,
    method: Annotated[str, typer.Option("--method", help="structured (remove channels, Torch-Pruning, L1 norm) or unstructured (zero weights, global L1 magnitude).")] = "structured",
    criterion: Annotated[str, typer.Option("--criterion", help="Importance: l1, l2, fpgm, bn-scale, taylor (needs --calibration-data) or random.")] = "l1",
    global_pruning: Annotated[bool, typer.Option("--global", help="Rank channels across layers instead of a uniform per-layer ratio.")] = False,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="Layer-name glob never pruned at its outputs (repeatable; each must match).")] = None,
    layer_ratios: Annotated[Optional[Path], typer.Option("--layer-ratios", help="TOML or JSON file: {\"layer glob\": ratio, ...} overriding --ratio.")] = None,
    round_to: Annotated[Optional[int], typer.Option("--round-to", min=1, help="Keep channel counts multiples of N.")] = None,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Iterative pruning in K steps.")] = 1,
    heads: Annotated[Optional[float], typer.Option("--heads", help="Fraction of attention heads to remove (transformers); --ratio then applies to MLP hidden units.")] = None,
    max_layer_ratio: Annotated[float, typer.Option("--max-layer-ratio", help="No layer loses more than this fraction of its channels.")] = 0.9,
    recover: Annotated[bool, typer.Option("--recover", help="Fine-tune the pruned model to match the original (knowledge distillation on --calibration-data).")] = False,
    recover_steps: Annotated[int, typer.Option("--recover-steps", min=1, help="Recovery optimiser steps.")] = 300,
    lr: Annotated[float, typer.Option("--lr", help="Recovery learning rate (Adam).")] = 1e-3,
    recover_batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Recovery batch size.")] = 64,
    seed: Annotated[int, typer.Option("--seed", help="Recovery seed.")] = 0,
    train_data: Annotated[Optional[Path], typer.Option("--train-data", help=".npz of inputs plus labels: adds the supervised loss to recovery.")] = None,
    save_torch: Annotated[Optional[Path], typer.Option("--save-torch", help="Also write the pruned PyTorch model: .pt2 (ExportedProgram) or a full-module pickle.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="Show per-layer channel counts.")] = False,
    output: OutputOpt = None,
    input_shape: InputShapeOpt = None,
    calibration_data: CalibOpt = None,
    eval_data: EvalOpt = None,
    model_class: ModelClassOpt = None,
    model_kwargs: ModelKwargsOpt = None,
    trust_pickle: TrustOpt = False,
    batch_size: Annotated[Optional[int], typer.Option("--bench-batch-size", min=1, help="Benchmark batch size (default: from --input-shape or the graph, else 1).")] = None,
    batch_sizes: BatchSizesOpt = None,
    seq_lens: SeqLensOpt = None,
    threads: ThreadsOpt = 0,
    inter_threads: InterThreadsOpt = 0,
    runs: RunsOpt = None,
    warmup: WarmupOpt = 10,
    min_time: MinTimeOpt = 3.0,
    measure_memory: MemoryOpt = True,
    max_accuracy_drop: MaxAccDropOpt = None,
    min_speedup: MinSpeedupOpt = None,
    max_size_ratio: MaxSizeRatioOpt = None,
    min_cosine: MinCosineOpt = None,
    markdown: MarkdownOpt = None,
    opset: OpsetOpt = 18,
    atol: AtolOpt = 1e-4,
    rtol: RtolOpt = 1e-3,
    exporter: ExporterOpt = "auto",
    json_out: JsonOpt = False,
    report: ReportOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Prune a model (structured by default), export it to ONNX and compare it with the original."""
    params = dict(locals())

    def body() -> int:
        from compressor.commands import compress
        from compressor.passes.configs import PruneConfig

        ratios = _read_layer_ratios(layer_ratios) if layer_ratios else ()
        config = PruneConfig(method=method, ratio=ratio, criterion=criterion, global_pruning=global_pruning,
                             exclude=tuple(exclude or ()), layer_ratios=ratios, round_to=round_to, steps=steps,
                             heads=heads, max_layer_ratio=max_layer_ratio, recover=recover,
                             recover_steps=recover_steps, lr=lr, batch_size=recover_batch_size, seed=seed)
        opts = _run_options(params)
        from compressor.pipeline import check_side_files, default_output

        out = output or default_output(model, "pruned")
        _check_side_files(model, out, report, markdown, calibration_data, eval_data)
        if save_torch is not None and save_torch.suffix not in (".pt2", ".pt", ".pth"):
            raise UsageError(f"--save-torch {save_torch}: use .pt2 (ExportedProgram) or .pt/.pth (full-module pickle)")
        if save_torch is not None:
            check_side_files({"--save-torch": save_torch}, {"input model": model, "output model": out,
                                                            "report": report, "markdown": markdown})
        opts.train_data = train_data
        opts.save_torch = save_torch
        rep = compress(model, "prune", config, output=out, options=opts,
                       load_options=_load_options(model_class, model_kwargs, trust_pickle), command=_command_line())
        if verbose and not json_out:
            _print_layers(rep)
        return _emit(rep, json_out, report, markdown)

    _run(debug, body, json_out=json_out)


@app.command(epilog=EPILOG)
def quantize(
    model: ModelArg,
    scheme: Annotated[Optional[str], typer.Option("--scheme", help="symmetric (int8 weights, zero point 0) or asymmetric (uint8 weights with zero points). Default: chosen for this CPU.")] = None,
    per_channel: Annotated[bool, typer.Option("--per-channel/--per-tensor", help="One scale per output channel (default) or one per tensor.")] = True,
    reduce_range: Annotated[Optional[bool], typer.Option("--reduce-range/--no-reduce-range", help="7-bit weights (default: on only for u8 x s8 on CPUs without VNNI).", show_default=False)] = None,
    mode: Annotated[str, typer.Option("--mode", help="auto (static QDQ for CNNs with --calibration-data, else dynamic), dynamic or static.")] = "auto",
    weight_scheme: Annotated[Optional[str], typer.Option("--weight-scheme", help="Override --scheme for weights.")] = None,
    activation_scheme: Annotated[Optional[str], typer.Option("--activation-scheme", help="Override --scheme for activations (static).")] = None,
    weight_type: Annotated[Optional[str], typer.Option("--weight-type", help="int8 or uint8 (default follows the weight scheme).")] = None,
    activation_type: Annotated[Optional[str], typer.Option("--activation-type", help="int8 or uint8 (static; default follows the activation scheme).")] = None,
    calibration_method: Annotated[str, typer.Option("--calibration-method", help="Static: minmax, entropy or percentile.")] = "minmax",
    percentile: Annotated[float, typer.Option("--percentile", help="Static, percentile calibration: percentile kept.")] = 99.999,
    calibration_samples: Annotated[Optional[int], typer.Option("--calibration-samples", help="Static: use at most N calibration samples.")] = None,
    precision: Annotated[str, typer.Option("--precision", help="int8; int4 (weight-only blockwise, MatMulNBits, embeddings too); fp16.")] = "int8",
    block_size: Annotated[int, typer.Option("--block-size", help="int4 block size (power of two >= 16).")] = 16,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="Node-name glob to keep in float (repeatable; each must match).")] = None,
    op_types: Annotated[Optional[str], typer.Option("--op-types", help="Quantize only these op types, comma-separated (e.g. MatMul,Gather).")] = None,
    keep_io_types: Annotated[bool, typer.Option("--keep-io-types/--fp16-io", help="fp16: keep float32 inputs and outputs (default).")] = True,
    rewrites: Annotated[bool, typer.Option("--rewrites/--no-rewrites", help="Result-preserving graph rewrites: softmax NaN guard, GELU fusion; static QDQ also ReduceMean->GlobalAveragePool and float outputs from the last Gemm/MatMul.")] = True,
    smooth: Annotated[bool, typer.Option("--smooth/--no-smooth", help="Dynamic int8 with --calibration-data: SmoothQuant activation smoothing.")] = True,
    smooth_alpha: Annotated[float, typer.Option("--smooth-alpha", help="SmoothQuant migration strength in [0, 1].")] = 0.7,
    output: OutputOpt = None,
    input_shape: InputShapeOpt = None,
    calibration_data: CalibOpt = None,
    eval_data: EvalOpt = None,
    model_class: ModelClassOpt = None,
    model_kwargs: ModelKwargsOpt = None,
    trust_pickle: TrustOpt = False,
    batch_size: BatchOpt = None,
    batch_sizes: BatchSizesOpt = None,
    seq_lens: SeqLensOpt = None,
    threads: ThreadsOpt = 0,
    inter_threads: InterThreadsOpt = 0,
    runs: RunsOpt = None,
    warmup: WarmupOpt = 10,
    min_time: MinTimeOpt = 3.0,
    measure_memory: MemoryOpt = True,
    max_accuracy_drop: MaxAccDropOpt = None,
    min_speedup: MinSpeedupOpt = None,
    max_size_ratio: MaxSizeRatioOpt = None,
    min_cosine: MinCosineOpt = None,
    markdown: MarkdownOpt = None,
    opset: OpsetOpt = 18,
    atol: AtolOpt = 1e-4,
    rtol: RtolOpt = 1e-3,
    exporter: ExporterOpt = "auto",
    json_out: JsonOpt = False,
    report: ReportOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Quantize a model to int8 with ONNX Runtime, dynamic or static QDQ (PyTorch inputs are exported first)."""
    params = dict(locals())

    def body() -> int:
        from compressor.commands import compress
        from compressor.passes.configs import QuantizeConfig

        config = QuantizeConfig(mode=mode, scheme=scheme, weight_scheme=weight_scheme, activation_scheme=activation_scheme,
                                weight_type=weight_type, activation_type=activation_type, per_channel=per_channel,
                                reduce_range=reduce_range, calibration_method=calibration_method, percentile=percentile,
                                calibration_samples=calibration_samples, precision=precision, block_size=block_size,
                                exclude=tuple(exclude or ()),
                                op_types=tuple(o.strip() for o in (op_types or "").split(",") if o.strip()),
                                keep_io_types=keep_io_types, rewrites=rewrites, smooth=smooth,
                                smooth_alpha=smooth_alpha)
        opts = _run_options(params)
        from compressor.pipeline import default_output

        out = output or default_output(model, "quantized")
        _check_side_files(model, out, report, markdown, calibration_data, eval_data)
        rep = compress(model, "quantize", config, output=out, options=opts,
                       load_options=_load_options(model_class, model_kwargs, trust_pickle), command=_command_line())
        return _emit(rep, json_out, report, markdown)

    _run(debug, body, json_out=json_out)


@app.command(epilog=EPILOG)
def export(
    model: ModelArg,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", help="Output ONNX file (default: the input's name with .onnx).")] = None,
    input_shape: InputShapeOpt = None,
    calibration_data: CalibOpt = None,
    model_class: ModelClassOpt = None,
    model_kwargs: ModelKwargsOpt = None,
    trust_pickle: TrustOpt = False,
    opset: OpsetOpt = 18,
    atol: AtolOpt = 1e-4,
    rtol: RtolOpt = 1e-3,
    exporter: ExporterOpt = "auto",
    json_out: JsonOpt = False,
    report: ReportOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Export a PyTorch model to ONNX (dynamic batch axis) and check it against PyTorch."""
    params = dict(locals())

    def body() -> int:
        from compressor.commands import export_model

        opts = _run_options(params)
        _check_side_files(model, output or model.with_suffix(".onnx"), report, None, calibration_data)
        rep = export_model(model, output=output, options=opts,
                           load_options=_load_options(model_class, model_kwargs, trust_pickle), command=_command_line())
        if report is not None or json_out:
            _emit(rep, json_out, report)
        if not json_out:
            ex = rep["export"]
            print(f"wrote {rep['output']} ({ex['exporter']} exporter, max abs diff vs PyTorch {ex['max_abs_diff']:.3g})")
        return 0

    _run(debug, body, json_out=json_out)


@app.command(epilog=EPILOG)
def bench(
    model: ModelArg,
    other: Annotated[Optional[Path], typer.Argument(metavar="[OTHER]", help="Optional second model: compare it with MODEL (speedup with 95% CI, fidelity, gates).", show_default=False)] = None,
    input_shape: InputShapeOpt = None,
    calibration_data: CalibOpt = None,
    eval_data: EvalOpt = None,
    model_class: ModelClassOpt = None,
    model_kwargs: ModelKwargsOpt = None,
    trust_pickle: TrustOpt = False,
    batch_size: BatchOpt = None,
    batch_sizes: BatchSizesOpt = None,
    seq_lens: SeqLensOpt = None,
    threads: ThreadsOpt = 0,
    inter_threads: InterThreadsOpt = 0,
    runs: RunsOpt = None,
    warmup: WarmupOpt = 10,
    min_time: MinTimeOpt = 3.0,
    measure_memory: MemoryOpt = True,
    max_accuracy_drop: MaxAccDropOpt = None,
    min_speedup: MinSpeedupOpt = None,
    max_size_ratio: MaxSizeRatioOpt = None,
    min_cosine: MinCosineOpt = None,
    markdown: MarkdownOpt = None,
    opset: OpsetOpt = 18,
    atol: AtolOpt = 1e-4,
    rtol: RtolOpt = 1e-3,
    exporter: ExporterOpt = "auto",
    json_out: JsonOpt = False,
    report: ReportOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Measure one model's size and ONNX Runtime CPU latency, or compare two models on the same inputs."""
    params = dict(locals())

    def body() -> int:
        from compressor.commands import bench_model

        opts = _run_options(params)
        _check_side_files(model, other, report, markdown, calibration_data, eval_data)
        rep = bench_model(model, options=opts, load_options=_load_options(model_class, model_kwargs, trust_pickle),
                          command=_command_line(), other_path=other)
        return _emit(rep, json_out, report, markdown)

    _run(debug, body, json_out=json_out)


def _version(value: bool) -> None:
    if value:
        from compressor import __version__

        print(f"compressor {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Prune or quantize a deep-learning model for CPU, export it to ONNX, and measure size, latency and fidelity."""


def main() -> None:
    """Console-script entry point: usage errors are one line on stderr with exit code 2."""
    try:  # Typer 0.22+ vendors click as typer._click; older releases use click itself
        from typer._click import exceptions as cx
    except ImportError:  # pragma: no cover
        from click import exceptions as cx

    import signal

    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C so scratch folders and temp files are removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    def _past_the_point_of_no_return() -> None:
        # the output is being put in place: an interrupt now would leave it behind with exit 130 and
        # "interrupted"; finish instead (the report is written in well under a second)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    from compressor.pipeline import ON_PUBLISH

    ON_PUBLISH.append(_past_the_point_of_no_return)
    try:
        code = app(standalone_mode=False)
    except cx.UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError" and e.ctx is not None:
            print(e.ctx.get_help())
            sys.exit(0)
        cmd = e.ctx.command_path if e.ctx is not None else "compressor"
        _err(f"{e.format_message().rstrip('.')}; see '{cmd} --help'")
        sys.exit(2)
    except KeyboardInterrupt:
        _err("interrupted")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


@app.command(epilog=EPILOG)
def doctor(json_out: JsonOpt = False, debug: DebugOpt = False) -> None:
    """Show this CPU's instruction sets, ONNX Runtime version and providers, and the quantization defaults they imply."""

    def body() -> int:
        from compressor.passes.configs import QuantizeConfig
        from compressor.passes.quantize import choose_settings
        from compressor.report import new_report
        from compressor.runtime import cpu_info, has_vnni

        info = cpu_info()
        rep = new_report(_command_line())
        rep["cpu"] = info
        rep["vnni"] = has_vnni()
        rep["defaults"] = {
            "transformer (MatMul) graph": choose_settings(QuantizeConfig(), has_conv=False, has_calibration=False),
            "CNN with calibration data": choose_settings(QuantizeConfig(), has_conv=True, has_calibration=True),
        }
        rep["warnings"] = []
        if json_out:
            _emit(rep, True, None)
            return 0
        print(f"CPU:          {info['cpu_model']} ({info['machine']}, {info['logical_cores']} logical cores)")
        print("ISA:          " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in info["isa"].items()))
        print(f"VNNI:         {'yes: u8 x s8 int8 kernels run without 16-bit saturation' if rep['vnni'] else 'no: reduce_range is used for u8 x s8 (7-bit weights)'}")
        print(f"ONNX Runtime: {info['onnxruntime']}; providers: {', '.join(info['providers'])}")
        for name, s in rep["defaults"].items():
            print(f"default for a {name}: {s['mode']}, weights {s['weight_type']} {s['weight_scheme']}, "
                  f"activations {s['activation_type']} {s['activation_scheme']}, reduce_range={s['reduce_range']}")
        return 0

    _run(debug, body, json_out=json_out)

"""Typer app: ``compressor prune | quantize | run | export | bench | doctor``.

Commands only build a recipe (project config, recipe file, flags given on the command line),
call the orchestrator in :mod:`compressor.pipeline`, and render its report, warnings and
progress. Exit codes: 0 success; 1 a step failed (export, parity, quantization, session); 2 bad
usage or bad input; 3 a quality gate failed; 130 interrupted; 143 terminated. Heavy libraries
load inside the commands.
"""

from __future__ import annotations

import contextlib
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

EPILOG = ("Exit codes: 0 success, 1 a step failed (export, parity, quantization, session), 2 bad usage or input, "
          "3 a quality gate failed, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).")

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
ModelArg = Annotated[Optional[Path], typer.Argument(metavar="[MODEL]", help="Model file: ONNX, .pt2 ExportedProgram, TorchScript, torch.save module or state_dict (format read from content). Default: `model` in compressor.toml / [tool.compressor].", show_default=False)]
OutputOpt = Annotated[Optional[Path], typer.Option("-o", "--output", help="Output ONNX file (default beside the input: <stem>.pruned.onnx for prune, <stem>.quantized.onnx for quantize, <stem>.compressed.onnx for a recipe of several steps).")]
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
SaveRecipeOpt = Annotated[Optional[Path], typer.Option("--save-recipe", help="Write the recipe equivalent to this command line (TOML, for `compressor run`), then run.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Validate the settings and print the plan of steps; do no work.")]
MarkdownOpt = Annotated[Optional[Path], typer.Option("--markdown", help="Write a GitHub-flavoured Markdown summary (for PR comments / CI step summaries).")]


_ARGV: list[str] = []


def _command_line() -> str:
    return "compressor " + " ".join(shlex.quote(a) for a in (_ARGV or sys.argv[1:]))


def _err(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)


def _err_plain(msg: str) -> None:
    print(msg, file=sys.stderr)


@contextlib.contextmanager
def _quiet_libraries(debug: bool):
    """Hide library warnings and log advice for the length of a command (restored after it)."""
    import logging
    import warnings

    if debug:
        yield
        return
    loggers = [logging.getLogger(), logging.getLogger("onnxruntime")]  # ORT's quantization tool logs on the root logger
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


@contextlib.contextmanager
def _json_stdout(json_out: bool):
    """With ``--json``, send what libraries print (Python or C level) to stderr; stdout carries the JSON alone.

    The real stdout is kept in ``_JSON_FD`` for the report and restored after the command.
    """
    global _JSON_FD
    if not json_out or _JSON_FD is not None:
        yield
        return
    sys.stdout.flush()
    _JSON_FD = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        sys.stdout.flush()
        os.dup2(_JSON_FD, 1)
        os.close(_JSON_FD)
        _JSON_FD = None


def _run(debug: bool, fn: Callable[[], int | None], *, json_out: bool = False) -> None:
    """Run a command body, mapping errors to one stderr line and an exit code.

    Library warnings are hidden unless ``--debug``; with ``--json`` stdout carries the JSON alone.
    """
    try:
        with _quiet_libraries(debug), _json_stdout(json_out):
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


def _model_kwargs(text: str) -> dict[str, Any]:
    try:
        kwargs = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"--model-kwargs is not valid JSON ({e.msg}); write e.g. '{{\"width\": 32}}'") from e
    if not isinstance(kwargs, dict):
        raise UsageError("--model-kwargs must be a JSON object, e.g. '{\"width\": 32}'")
    return kwargs


#: Command parameter -> (recipe section or None for top level, recipe key, converter of the flag's value).
_TOP = {"model": "model", "output": "output", "input_shape": "input_shape", "calibration_data": "calibration_data",
        "eval_data": "eval_data", "train_data": "train_data", "model_class": "model_class",
        "model_kwargs": "model_kwargs", "trust_pickle": "trust_pickle", "save_torch": "save_torch"}
_TABLES = {
    "export": {"opset": "opset", "atol": "atol", "rtol": "rtol", "exporter": "exporter"},
    "benchmark": {"batch_size": "batch_size", "batch_sizes": "batch_sizes", "seq_lens": "seq_lens",
                  "threads": "threads", "inter_threads": "inter_threads", "runs": "runs", "warmup": "warmup",
                  "min_time": "min_time_s", "measure_memory": "measure_memory"},
    "gates": {"max_accuracy_drop": "max_accuracy_drop", "min_speedup": "min_speedup",
              "max_size_ratio": "max_size_ratio", "min_cosine": "min_cosine"},
}
_CONVERT: dict[str, Callable[[Any], Any]] = {
    "model_kwargs": _model_kwargs,
    "batch_sizes": lambda v: _int_list(v, "--batch-sizes", "1,8,32"),
    "seq_lens": lambda v: _int_list(v, "--seq-lens", "64,128"),
    "layer_ratios": lambda v: dict(_read_layer_ratios(v)),
    "op_types": lambda v: [o.strip() for o in v.split(",") if o.strip()],
    "input_shape": list,
    "exclude": list,
}


def _given(tctx: typer.Context, name: str) -> bool:
    """True when the parameter was given on the command line (or its environment variable), not defaulted."""
    from typer._click.core import ParameterSource

    try:
        return tctx.get_parameter_source(name) in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    except Exception:  # pragma: no cover - a parameter click does not know
        return False


def _cli_layer(tctx: typer.Context, params: dict[str, Any], pass_name: str | None, also_given: frozenset[str]):
    """The command line as a recipe layer: only the flags actually given, with the flag names for messages."""
    from compressor.passes import get_pass
    from compressor.recipe import COMMAND_LINE, Layer

    flags = {p.name: next((o for o in p.opts if o.startswith("--")), p.opts[0]) if p.opts else p.name
             for p in tctx.command.params}
    flags["model"] = "MODEL"
    data: dict[str, Any] = {}
    names: dict[str, str] = {}

    def put(section: str | None, key: str, param: str) -> None:
        value = params[param]
        value = _CONVERT[key](value) if key in _CONVERT and value is not None else value
        if section is None:
            data[key] = value
            names[key] = flags.get(param, param)
        else:
            data.setdefault(section, {})[key] = value
            names[f"{section}.{key}"] = flags.get(param, param)

    for param, key in _TOP.items():
        if param in params and params[param] is not None and (param == "model" or _given(tctx, param)):
            put(None, key, param)
    for section, table in _TABLES.items():
        for param, key in table.items():
            if param in params and _given(tctx, param):
                put(section, key, param)
    if pass_name is not None:
        import dataclasses

        step: dict[str, Any] = {"pass": pass_name}
        for f in dataclasses.fields(get_pass(pass_name).config_cls):
            if f.name in params and (_given(tctx, f.name) or f.name in also_given):
                value = params[f.name]
                step[f.name] = _CONVERT[f.name](value) if f.name in _CONVERT and value is not None else value
                names[f"steps[0].{f.name}"] = flags.get(f.name, f.name)
        data["steps"] = [step]
    notes = []
    if params.get("deprecated_batch_size") is not None:
        notes.append("prune --batch-size is deprecated (it is the recovery batch size); use --recover-batch-size")
    return Layer(COMMAND_LINE, data, names=names, warnings=notes)


def _recipe(tctx: typer.Context, params: dict[str, Any], *, pass_name: str | None = None,
            recipe_file: Path | None = None, also_given: frozenset[str] = frozenset()):
    """The run's recipe: project config, then the recipe file (``run``), then the flags given."""
    from compressor.recipe import build_recipe, project_layer, recipe_layer

    if recipe_file is not None:  # a recipe holds every setting of its run: the project config does not apply
        layers = [recipe_layer(recipe_file)]
    else:
        layers = [layer for layer in (project_layer(),) if layer is not None]
    layers.append(_cli_layer(tctx, params, pass_name, also_given))
    return build_recipe(layers)


class _Renderer:
    """Warnings as ``warning: ...`` lines and progress bars (rich, only on a terminal), all on stderr."""

    def __init__(self) -> None:
        self._progress: Any = None
        self._tasks: dict[str, Any] = {}

    def warning(self, message: str) -> None:
        if self._progress is not None:
            self._progress.console.print(f"warning: {message}", markup=False, highlight=False)
        else:
            print(f"warning: {message}", file=sys.stderr)

    def progress(self, event: Any) -> None:
        if not sys.stderr.isatty() or event.total is None:
            return
        if self._progress is None:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                                      TimeElapsedColumn(), console=Console(stderr=True), transient=True)
            self._progress.start()
        info = " ".join(f"{k} {v:.4g}" for k, v in event.info.items())
        if event.task not in self._tasks:
            self._tasks[event.task] = self._progress.add_task(event.task, total=event.total, info=info)
        self._progress.update(self._tasks[event.task], completed=event.done, info=info)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def callbacks(self, on_publish: Callable[[], None] | None = None) -> Any:
        from compressor.pipeline import Callbacks

        return Callbacks(on_warning=self.warning, on_progress=self.progress, on_publish=on_publish or _shield_signals)


def _shield_signals() -> None:
    """Stop taking Ctrl-C/SIGTERM: the output is being put in place.

    An interrupt now would leave it behind with exit 130; finish instead (the report is written in well
    under a second). ``main`` restores the handlers when the command ends.
    """
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _start(tctx: typer.Context, params: dict[str, Any], *, pass_name: str | None = None,
           recipe_file: Path | None = None, default_suffix: str | None = None,
           also_given: frozenset[str] = frozenset()):
    """Build the recipe, check every file it writes, handle ``--save-recipe`` and ``--dry-run``.

    Returns:
        ``(recipe, output path, done)``; ``done`` is True after a dry run (nothing more to do).
    """
    import dataclasses

    from compressor.pipeline import check_side_files, default_output

    recipe = _recipe(tctx, params, pass_name=pass_name, recipe_file=recipe_file, also_given=also_given)
    if recipe.model is None:
        raise UsageError("no model given: pass MODEL, or set model = \"...\" in compressor.toml (or "
                         "[tool.compressor] in pyproject.toml)")
    out = recipe.output
    if out is None and default_suffix is not None:
        suffix = default_suffix
        if len(recipe.steps) == 1 and default_suffix == "auto":
            from compressor.passes import get_pass

            suffix = get_pass(recipe.steps[0].pass_name).output_suffix
        elif default_suffix == "auto":
            suffix = "compressed"
        out = default_output(recipe.model, suffix)
        recipe = dataclasses.replace(recipe, output=None)
    save = params.get("save_recipe")
    report, markdown = params.get("report"), params.get("markdown")
    check_side_files({"--report": report, "--markdown": markdown, "--save-recipe": save},
                     {"input model": recipe.model, "output model": out, "calibration data": recipe.calibration_data,
                      "evaluation data": recipe.eval_data, "--save-torch file": recipe.save_torch})
    if recipe.save_torch is not None:
        if recipe.save_torch.suffix not in (".pt2", ".pt", ".pth"):
            raise UsageError(f"--save-torch {recipe.save_torch}: use .pt2 (ExportedProgram) or .pt/.pth "
                             "(full-module pickle)")
        check_side_files({"--save-torch": recipe.save_torch}, {"input model": recipe.model, "output model": out,
                                                               "report": report, "markdown": markdown})
    if save is not None:
        from compressor.recipe import Step, write_recipe_atomic

        saved = recipe
        if tctx.command.name == "export":  # `compressor run` of it exports (and measures the export)
            saved = dataclasses.replace(recipe, steps=(Step("export", recipe.export),))
        write_recipe_atomic(saved, save)
    if params.get("dry_run"):
        _dry_run(recipe, out, params.get("json_out", False), saved_to=save, measures=tctx.command.name != "export")
        return recipe, out, True
    return recipe, out, False


def _dry_run(recipe: Any, out: Path | None, json_out: bool, *, saved_to: Path | None, measures: bool) -> None:
    """Validate everything the run would check before its first step, and print the plan."""
    from compressor.pipeline import check_output, dry_run

    renderer = _Renderer()
    rep = dry_run(recipe, command=_command_line(), callbacks=renderer.callbacks())
    if out is not None:
        check_output(recipe.model, out)
        rep["output"] = str(out)
    if json_out:
        _emit(rep, True, None)
        return
    m = rep["model"]
    print(f"model:  {m['path']} ({m['format']}; from {m['source']})")
    plan = rep["plan"] or ([{"pass": "export", "step": None, "of": "original model"}] if m["format"] != "onnx" else [])
    for i, p in enumerate(plan, 1):
        name = f"steps[{p['step']}] {p['pass']}" if p["step"] is not None else f"{p['pass']} (inserted)"
        print(f"step {i}: {name} of the {p['of']}")
    if measures:
        print("then:   measure the baseline" + (" and each step in one interleaved benchmark" if rep["plan"] else ""))
    if out is not None:
        print(f"output: {out}")
    print("dry run: nothing was done" + (f" but writing the recipe {saved_to}" if saved_to else ""))


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


def _emit(report: dict[str, Any], json_out: bool, report_path: Path | None, markdown: Path | None = None) -> int:
    """Write/print the report; returns 3 when a quality gate failed, else 0."""
    from compressor.cli.table import render_table
    from compressor.errors import EXIT_GATE_FAILED
    from compressor.gates import Gates
    from compressor.report import render_markdown, to_json, write_json_atomic, write_text_atomic

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
    tctx: typer.Context,
    model: ModelArg = None,
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
    recover_batch_size: Annotated[int, typer.Option("--recover-batch-size", min=1, help="Recovery batch size.")] = 64,
    deprecated_batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, hidden=True, help="Deprecated spelling of --recover-batch-size.")] = None,
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
    save_recipe: SaveRecipeOpt = None,
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
    report: ReportOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Prune a model (structured by default), export it to ONNX and compare it with the original."""
    params = dict(locals())

    def body() -> int:
        given: frozenset[str] = frozenset()
        if deprecated_batch_size is not None:
            if _given(tctx, "recover_batch_size"):
                raise UsageError("give --recover-batch-size only (--batch-size is its deprecated spelling)")
            params["recover_batch_size"] = deprecated_batch_size
            given = frozenset({"recover_batch_size"})
        return _compress(tctx, params, "prune", also_given=given,
                         after=_print_layers if verbose and not json_out else None)

    _run(debug, body, json_out=json_out)


@app.command(epilog=EPILOG)
def quantize(
    tctx: typer.Context,
    model: ModelArg = None,
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
    save_recipe: SaveRecipeOpt = None,
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
    report: ReportOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Quantize a model with ONNX Runtime: int8 (dynamic or static QDQ), int4 weight-only or fp16 (PyTorch inputs are exported first)."""
    params = dict(locals())
    _run(debug, lambda: _compress(tctx, params, "quantize"), json_out=json_out)


def _compress(tctx: typer.Context, params: dict[str, Any], pass_name: str | None, *,
              recipe_file: Path | None = None, also_given: frozenset[str] = frozenset(),
              after: Callable[[dict[str, Any]], None] | None = None) -> int:
    """The body of prune, quantize and run: recipe -> orchestrator -> rendered report."""
    recipe, out, done = _start(tctx, params, pass_name=pass_name, recipe_file=recipe_file, default_suffix="auto",
                               also_given=also_given)
    if done:
        return 0
    import dataclasses

    from compressor.pipeline import run_recipe

    renderer = _Renderer()
    try:
        rep = run_recipe(dataclasses.replace(recipe, output=out), command=_command_line(),
                         callbacks=renderer.callbacks())
    finally:
        renderer.close()
    if after is not None:
        after(rep)
    return _emit(rep, params.get("json_out", False), params.get("report"), params.get("markdown"))


@app.command(epilog=EPILOG)
def run(
    tctx: typer.Context,
    recipe_file: Annotated[Path, typer.Argument(metavar="RECIPE", help="Recipe file (TOML): model, data, [[steps]] (prune, quantize, export), [benchmark], [gates].", show_default=False)],
    output: OutputOpt = None,
    markdown: MarkdownOpt = None,
    save_recipe: SaveRecipeOpt = None,
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
    report: ReportOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Run a recipe: its steps in order (e.g. prune, then quantize), each measured against one baseline."""
    params = dict(locals())
    _run(debug, lambda: _compress(tctx, params, None, recipe_file=recipe_file), json_out=json_out)


@app.command(epilog=EPILOG)
def export(
    tctx: typer.Context,
    model: ModelArg = None,
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
    save_recipe: SaveRecipeOpt = None,
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
    report: ReportOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Export a PyTorch model to ONNX (dynamic batch axis) and check it against PyTorch."""
    params = dict(locals())

    def body() -> int:
        recipe, out, done = _start(tctx, params)
        if done:
            return 0
        import dataclasses

        from compressor.pipeline import export_only

        renderer = _Renderer()
        try:
            rep = export_only(dataclasses.replace(recipe, output=out), command=_command_line(),
                              callbacks=renderer.callbacks())
        finally:
            renderer.close()
        if report is not None or json_out:
            _emit(rep, json_out, report)
        if not json_out:
            ex = rep["export"]
            print(f"wrote {rep['output']} ({ex['exporter']} exporter, max abs diff vs PyTorch {ex['max_abs_diff']:.3g})")
        return 0

    _run(debug, body, json_out=json_out)


@app.command(epilog=EPILOG)
def bench(
    tctx: typer.Context,
    model: ModelArg = None,
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
    save_recipe: SaveRecipeOpt = None,
    dry_run: DryRunOpt = False,
    json_out: JsonOpt = False,
    report: ReportOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Measure one model's size and ONNX Runtime CPU latency, or compare two models on the same inputs."""
    params = dict(locals())

    def body() -> int:
        recipe, _, done = _start(tctx, params)
        if done:
            return 0
        from compressor.pipeline import bench_models, check_side_files

        if other is not None:
            check_side_files({"--report": report, "--markdown": markdown}, {"second model": other})
        renderer = _Renderer()
        try:
            rep = bench_models(recipe, command=_command_line(), other=other, callbacks=renderer.callbacks())
        finally:
            renderer.close()
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


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: usage errors are one line on stderr with exit code 2.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``); tests run the CLI in process with them.

    Raises:
        SystemExit: Always, with the exit code.
    """
    global _ARGV
    _ARGV = list(sys.argv[1:] if argv is None else argv)
    try:  # Typer 0.22+ vendors click as typer._click; older releases use click itself
        from typer._click import exceptions as cx
    except ImportError:  # pragma: no cover
        from click import exceptions as cx

    import signal

    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C so scratch folders and temp files are removed
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        _main(cx, _ARGV)
    finally:  # in-process callers (tests) get their handlers back
        signal.signal(signal.SIGINT, handlers[0])
        signal.signal(signal.SIGTERM, handlers[1])


def _main(cx: Any, argv: list[str]) -> None:
    try:
        code = app(args=argv, prog_name="compressor", standalone_mode=False)
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

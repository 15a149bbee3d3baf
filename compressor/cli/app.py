"""Typer app: ``compressor prune | quantize | run | export | bench | sensitivity | sweep | auto | doctor``.

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


def _examples(*lines: str) -> str:
    """An epilog: examples (one paragraph each), then the exit codes."""
    return "\n\n".join(["Examples:", *(f"  $ {line}" for line in lines), EPILOG])


EXAMPLES = {
    "prune": _examples(
        "compressor prune model.pt --ratio 0.5 --input-shape 1,3,224,224",
        "compressor prune model.pt --ratio 0.5 --recover --calibration-data calib.npz --eval-data eval.npz",
        "compressor prune model.onnx --method unstructured --ratio 0.8 --json > report.json"),
    "quantize": _examples(
        "compressor quantize model.onnx    (dynamic int8 for transformers)",
        "compressor quantize cnn.pt --input-shape 1,3,224,224 --calibration-data calib.npz    (static QDQ int8)",
        "compressor quantize model.onnx --precision int4 --max-size-ratio 0.3 --min-cosine 0.98"),
    "run": _examples("compressor run chain.toml", "compressor run chain.toml --dry-run",
                     "compressor prune model.pt --ratio 0.5 --save-recipe chain.toml    (then edit and run it)"),
    "export": _examples("compressor export model.pt --input-shape 1,3,224,224",
                        "compressor export model.pt --calibration-data calib.npz -o model.onnx --opset 17"),
    "bench": _examples("compressor bench model.onnx",
                       "compressor bench model.onnx model.quantized.onnx --batch-sizes 1,8,32 --markdown bench.md"),
    "doctor": _examples("compressor doctor", "compressor doctor --json"),
    "auto": _examples(
        "compressor auto model.pt --eval-data eval.npz --calibration-data calib.npz --max-accuracy-drop 1.0",
        "compressor auto model.onnx --eval-data inputs.npz --min-cosine 0.99 --objective size --trials 30 -o best/",
        "compressor auto model.pt --eval-data eval.npz --max-accuracy-drop 1 -o best/ --resume    (continue a study)",
        "RAY_ADDRESS=auto compressor auto model.pt --eval-data eval.npz --max-accuracy-drop 1 --executor ray "
        "--workers 8"),
}

app = typer.Typer(
    name="compressor",
    help="Prune or quantize a deep-learning model for CPU, export it to ONNX, and measure size, latency and fidelity.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# ----------------------------------------------------------------------------- shared options
ModelArg = Annotated[Optional[Path], typer.Argument(metavar="MODEL", help="Model file: ONNX, .pt2 ExportedProgram, TorchScript, torch.save module or state_dict, safetensors state_dict (format read from content); or a Hugging Face model folder (config.json; never downloads). Default: `model` in compressor.toml or \\[tool.compressor] of pyproject.toml.", show_default=False)]
OutputOpt = Annotated[Optional[Path], typer.Option("-o", "--output", rich_help_panel="Output and report", metavar="PATH", help="Output ONNX file (default beside the input: <stem>.pruned.onnx for prune, <stem>.quantized.onnx for quantize, <stem>.compressed.onnx for a recipe of several steps).")]
InputShapeOpt = Annotated[Optional[list[str]], typer.Option("--input-shape", rich_help_panel="Input", metavar="SHAPE", help="Input shape: 1,1,8,8 (one float32 input) or name:1x128:int64 (repeat or comma-separate for several).")]
CalibOpt = Annotated[Optional[Path], typer.Option("--calibration-data", rich_help_panel="Data", metavar="PATH", help=".npz of inputs keyed by input name (samples first), a folder of <name>.npy, or 'random' (warned opt-in).")]
EvalOpt = Annotated[Optional[Path], typer.Option("--eval-data", rich_help_panel="Data", metavar="PATH", help=".npz of inputs plus 'labels': report top-1 accuracy of baseline and result.")]
CalibTextOpt = Annotated[Optional[Path], typer.Option("--calibration-text", rich_help_panel="Data", metavar="FILE", help="Calibration text: one example per line, or JSON Lines with a 'text' field; tokenized with the model folder's tokenizer or --tokenizer.")]
EvalTextOpt = Annotated[Optional[Path], typer.Option("--eval-text", rich_help_panel="Data", metavar="FILE", help="Held-out text: one example per line, or JSON Lines with 'text' and 'label' (integer class id) for accuracy.")]
CalibImagesOpt = Annotated[Optional[Path], typer.Option("--calibration-images", rich_help_panel="Data", metavar="DIR", help="Folder of calibration images (.png .jpg .jpeg .bmp .webp), decoded with Pillow.")]
EvalImagesOpt = Annotated[Optional[Path], typer.Option("--eval-images", rich_help_panel="Data", metavar="DIR", help="Folder of held-out images; class subfolders (sorted names = class ids, as torchvision's ImageFolder) give labels for accuracy.")]
TokenizerOpt = Annotated[Optional[Path], typer.Option("--tokenizer", rich_help_panel="Data", metavar="DIR", help="Tokenizer folder (tokenizer.json or vocab.txt) for text data when MODEL is not a Hugging Face folder.")]
MaxLengthOpt = Annotated[Optional[int], typer.Option("--max-length", rich_help_panel="Data", metavar="N", min=1, help="Text data: most tokens per example (longer ones are cut). Default 128.", show_default=False)]
ImageSizeOpt = Annotated[Optional[str], typer.Option("--image-size", rich_help_panel="Data", metavar="H[,W]", help="Image data without an image processor: resize to H x W (default: the model's fixed input size).")]
MeanOpt = Annotated[Optional[str], typer.Option("--mean", rich_help_panel="Data", metavar="R,G,B", help="Image data: per-channel mean on [0, 1] pixels (default ImageNet's 0.485,0.456,0.406).")]
StdOpt = Annotated[Optional[str], typer.Option("--std", rich_help_panel="Data", metavar="R,G,B", help="Image data: per-channel standard deviation (default ImageNet's 0.229,0.224,0.225).")]
ModelClassOpt = Annotated[Optional[str], typer.Option("--model-class", rich_help_panel="Input", metavar="MODULE:CLASS", help="package.module:ClassName to load a state_dict into (current folder is importable).")]
ModelKwargsOpt = Annotated[Optional[str], typer.Option("--model-kwargs", rich_help_panel="Input", metavar="JSON", help="JSON object of constructor arguments for --model-class.")]
TaskOpt = Annotated[Optional[str], typer.Option("--task", rich_help_panel="Input", metavar="TASK", help="Hugging Face folder: the head to export: feature-extraction, sequence-classification, token-classification, question-answering, fill-mask, image-classification (default: from config.json's architectures).")]
PoolingOpt = Annotated[Optional[str], typer.Option("--pooling", rich_help_panel="Input", metavar="mean|cls|max|none", help="Hugging Face text encoder: pool token embeddings into a sentence_embedding output (default: a sentence-transformers folder's own pooling and normalisation; none = token outputs only).")]
TrustOpt = Annotated[bool, typer.Option("--trust-pickle", rich_help_panel="Input", metavar="", help="Allow pickles that need classes outside torch.nn (runs code from the file).")]
JsonOpt = Annotated[bool, typer.Option("--json", rich_help_panel="Output and report", metavar="", help="Print the JSON report to stdout and nothing else.")]
ReportOpt = Annotated[Optional[Path], typer.Option("--report", rich_help_panel="Output and report", metavar="PATH", help="Write the JSON report to this file.")]
DebugOpt = Annotated[bool, typer.Option("--debug", rich_help_panel="Output and report", metavar="", help="Show tracebacks on errors.")]
OpsetOpt = Annotated[int, typer.Option("--opset", rich_help_panel="Export", metavar="N", min=13, max=23, help="ONNX opset version for export (the dynamo exporter needs 18 or later).")]
AtolOpt = Annotated[float, typer.Option("--atol", rich_help_panel="Export", metavar="FLOAT", min=0.0, help="Export parity check: pass when |onnx - torch| <= atol + rtol * |torch|.")]
RtolOpt = Annotated[float, typer.Option("--rtol", rich_help_panel="Export", metavar="FLOAT", min=0.0, help="Relative tolerance of the export parity check.")]
ExporterOpt = Annotated[str, typer.Option("--exporter", rich_help_panel="Export", metavar="auto|dynamo|torchscript", help="auto (dynamo, then TorchScript-based), dynamo or torchscript.")]
BatchOpt = Annotated[Optional[int], typer.Option("--batch-size", "--bench-batch-size", rich_help_panel="Benchmark", metavar="N", min=1, help="Benchmark batch size (default: from --input-shape or the graph, else 1).")]
ThreadsOpt = Annotated[str, typer.Option("--threads", rich_help_panel="Benchmark", metavar="N|auto", help="ONNX Runtime intra-op threads: N, 0 = its default (one per physical core), or auto = each model at its own fastest count. With more than 1 thread the benchmark is checked at 1 thread too, and a misleading figure is warned.")]
RunsOpt = Annotated[Optional[int], typer.Option("--runs", rich_help_panel="Benchmark", metavar="N", min=1, help="Timed rounds (default: at least 20 rounds and 3 s).")]
WarmupOpt = Annotated[int, typer.Option("--warmup", rich_help_panel="Benchmark", metavar="N", min=0, help="Fewest untimed warm-up runs per model (warm-up continues until timings settle, bounded).")]
MemoryOpt = Annotated[bool, typer.Option("--measure-memory/--no-measure-memory", rich_help_panel="Benchmark", metavar="", help="Measure each session's peak resident memory (in a child process, about 1 s per model).")]
MinTimeOpt = Annotated[float, typer.Option("--min-time", rich_help_panel="Benchmark", metavar="SECONDS", min=0.0, help="Least total timed seconds when --runs is not given.")]
InterThreadsOpt = Annotated[int, typer.Option("--inter-threads", rich_help_panel="Benchmark", metavar="N", min=0, help="ONNX Runtime inter-op threads (0 = its default).")]
BatchSizesOpt = Annotated[Optional[str], typer.Option("--batch-sizes", rich_help_panel="Benchmark", metavar="N,N,...", help="Also time a sweep of batch sizes, e.g. 1,8,32.")]
SeqLensOpt = Annotated[Optional[str], typer.Option("--seq-lens", rich_help_panel="Benchmark", metavar="N,N,...", help="Also time a sweep of sequence lengths of token inputs (axis 1), e.g. 64,128.")]
MaxAccDropOpt = Annotated[Optional[float], typer.Option("--max-accuracy-drop", rich_help_panel="Quality gates", metavar="POINTS", help="Gate: largest top-1 accuracy drop in percentage points (needs labelled eval data).")]
MinSpeedupOpt = Annotated[Optional[float], typer.Option("--min-speedup", rich_help_panel="Quality gates", metavar="X", help="Gate: least speedup, judged on the lower bound of its 95% confidence interval.")]
MaxSizeRatioOpt = Annotated[Optional[float], typer.Option("--max-size-ratio", rich_help_panel="Quality gates", metavar="R", help="Gate: largest result/baseline size ratio.")]
MinCosineOpt = Annotated[Optional[float], typer.Option("--min-cosine", rich_help_panel="Quality gates", metavar="C", help="Gate: least cosine similarity of any sample's output (fidelity.cosine_min).")]
SaveRecipeOpt = Annotated[Optional[Path], typer.Option("--save-recipe", rich_help_panel="Output and report", metavar="PATH", help="Write the recipe equivalent to this command line (TOML, for `compressor run`), then run.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", rich_help_panel="Output and report", metavar="", help="No progress on stderr (warnings and errors still show).")]
NoColorOpt = Annotated[bool, typer.Option("--no-color", rich_help_panel="Output and report", metavar="", help="No colours or styles in the output (also when NO_COLOR is set).")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", rich_help_panel="Output and report", metavar="", help="Load the model and data, check everything the run would check before its first step, print the plan; do no work (a --save-recipe file is still written).")]
MarkdownOpt = Annotated[Optional[Path], typer.Option("--markdown", rich_help_panel="Output and report", metavar="PATH", help="Write a GitHub-flavoured Markdown summary (for PR comments / CI step summaries).")]


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


#: Rendering choices of the running command (set by :func:`_run` from its flags).
_OPTS: dict[str, Any] = {}

_KINDS = [  # most specific first
    ("UnknownFormatError", "unknown_format"), ("UntrustedPickleError", "untrusted_pickle"),
    ("UnsupportedModelError", "unsupported_model"), ("FieldError", "bad_setting"), ("UsageError", "usage"),
    ("ExportError", "export"), ("ParityError", "parity"), ("QuantizationError", "quantization"),
    ("PruningError", "pruning"), ("SessionError", "session"), ("StepFailedError", "step_failed"),
]


def _kind(e: BaseException) -> str:
    names = {c.__name__ for c in type(e).__mro__}
    return next((kind for name, kind in _KINDS if name in names), "internal")


def _no_color() -> bool:
    return bool(_OPTS.get("no_color")) or bool(os.environ.get("NO_COLOR"))


def _console(*, stderr: bool = False) -> Any:
    """A rich console: no styles at all with ``--no-color`` / ``NO_COLOR``; full width (nothing cut) when piped."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    kwargs: dict[str, Any] = {"file": stream}
    if _no_color():
        kwargs.update(color_system=None, no_color=True)
    if not stream.isatty():
        kwargs["width"] = 400
    return Console(**kwargs)


def _fail(e: BaseException | None, code: int, kind: str, message: str, json_out: bool) -> None:
    """One ``error:`` line on stderr; with ``--json`` also one JSON object on stdout (what was measured included)."""
    _err(message)
    if not json_out:
        return
    from compressor.report import new_report, to_json

    partial = dict(getattr(e, "report", None) or {})
    rep = {**new_report(_command_line()), **{k: v for k, v in partial.items() if k not in ("error",)}}
    rep["error"] = {"exit_code": code, "kind": kind, "message": message}
    rep.setdefault("warnings", list(_OPTS.get("warnings", [])))
    sys.stdout.write(to_json(rep) + "\n")
    sys.stdout.flush()


def _run(debug: bool, fn: Callable[[], int | None], *, json_out: bool = False, params: dict[str, Any] | None = None
         ) -> None:
    """Run a command body, mapping errors to one stderr line and an exit code.

    Library warnings are hidden unless ``--debug``; with ``--json`` stdout carries the JSON alone: the report,
    or on failure ``{"schema_version", "command", "error": {"exit_code", "kind", "message"}, ...}``.
    """
    _OPTS.clear()
    _OPTS.update(quiet=bool((params or {}).get("quiet")), no_color=bool((params or {}).get("no_color")), warnings=[])
    try:
        with _quiet_libraries(debug), _json_stdout(json_out):
            code = fn() or 0
    except CompressorError as e:
        if debug:
            traceback.print_exc()
        _fail(e, e.exit_code, _kind(e), str(e), json_out)
        raise typer.Exit(e.exit_code) from None
    except KeyboardInterrupt as e:
        _fail(e, 130, "interrupted", "interrupted", json_out)
        raise typer.Exit(130) from None
    except SystemExit as e:  # SIGTERM: scratch folders were removed on the way out
        if e.code == 143:
            _fail(e, 143, "terminated", "terminated", json_out)
        raise
    except Exception as e:  # a bug or an unexpected library failure: still one line
        if debug:
            traceback.print_exc()
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        msg = f"unexpected {type(e).__name__}: {first}" + ("" if debug else "; rerun with --debug for the traceback")
        _fail(e, EXIT_STEP_FAILED, "internal", msg, json_out)
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


def _threads(text: str) -> int | str:
    text = str(text).strip().lower()
    if text == "auto":
        return "auto"
    if not text.isdigit():
        raise UsageError(f"--threads must be a whole number >= 0 or 'auto', got '{text}'")
    return int(text)


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
        "model_kwargs": "model_kwargs", "trust_pickle": "trust_pickle", "save_torch": "save_torch",
        "calibration_text": "calibration_text", "eval_text": "eval_text", "calibration_images": "calibration_images",
        "eval_images": "eval_images", "tokenizer": "tokenizer", "max_length": "max_length",
        "image_size": "image_size", "mean": "mean", "std": "std", "task": "task", "pooling": "pooling"}
_TABLES = {
    "export": {"opset": "opset", "atol": "atol", "rtol": "rtol", "exporter": "exporter"},
    "benchmark": {"batch_size": "batch_size", "batch_sizes": "batch_sizes", "seq_lens": "seq_lens",
                  "threads": "threads", "inter_threads": "inter_threads", "runs": "runs", "warmup": "warmup",
                  "min_time": "min_time_s", "measure_memory": "measure_memory"},
    "gates": {"max_accuracy_drop": "max_accuracy_drop", "min_speedup": "min_speedup",
              "max_size_ratio": "max_size_ratio", "min_cosine": "min_cosine"},
}
_CONVERT: dict[str, Callable[[Any], Any]] = {
    "threads": _threads,
    "model_kwargs": _model_kwargs,
    "batch_sizes": lambda v: _int_list(v, "--batch-sizes", "1,8,32"),
    "seq_lens": lambda v: _int_list(v, "--seq-lens", "64,128"),
    "layer_ratios": lambda v: dict(_read_layer_ratios(v)),
    "op_types": lambda v: [o.strip() for o in v.split(",") if o.strip()],
    "input_shape": list,
    "exclude": list,
    "image_size": lambda v: _number_list(v, "--image-size", "224 or 224,224", int),
    "mean": lambda v: _number_list(v, "--mean", "0.485,0.456,0.406", float),
    "std": lambda v: _number_list(v, "--std", "0.229,0.224,0.225", float),
}


def _number_list(text: str, flag: str, example: str, kind: type) -> list[Any]:
    """Comma-separated numbers of a flag.

    Raises:
        UsageError: A value that is not a number of ``kind``.
    """
    try:
        return [kind(v) for v in text.split(",")]
    except ValueError:
        raise UsageError(f"{flag} must be {'whole ' if kind is int else ''}numbers separated by commas, e.g. "
                         f"{example}; got '{text}'") from None


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
    """Warnings as ``warning: ...`` lines, and progress, all on stderr.

    Progress: rich bars on a terminal; otherwise one ``progress: ...`` line when a step starts and ends (and
    every tenth of a long step, such as recovery); nothing with ``--quiet``. Never on stdout.
    """

    def __init__(self) -> None:
        import time

        self._clock = time.perf_counter
        self._bar: Any = None
        self._tasks: dict[str, Any] = {}
        self._started: dict[str, float] = {}
        self._last_tenth: dict[str, int] = {}

    def warning(self, message: str) -> None:
        _OPTS.setdefault("warnings", []).append(message)
        if self._bar is not None:
            self._bar.console.print(f"warning: {message}", markup=False, highlight=False)
        else:
            print(f"warning: {message}", file=sys.stderr)

    def progress(self, event: Any) -> None:
        if _OPTS.get("quiet"):
            return
        if sys.stderr.isatty() and not _no_color():  # a live bar needs cursor control codes
            self._draw(event)
            return
        first = event.task not in self._started
        if first:
            self._started[event.task] = self._clock()
        info = "".join(f", {k} {v:.4g}" for k, v in event.info.items())
        if event.total is not None and event.done >= event.total and event.done > 0:
            took = self._clock() - self._started.pop(event.task, self._clock())
            self._last_tenth.pop(event.task, None)
            print(f"progress: {event.task}: done in {took:.1f} s{info}", file=sys.stderr, flush=True)
        elif first:
            total = f" ({event.total} steps)" if event.total and event.total > 1 else ""
            print(f"progress: {event.task}{total} ...", file=sys.stderr, flush=True)
        elif event.total:
            tenth = 10 * event.done // event.total
            if tenth > self._last_tenth.get(event.task, 0):
                self._last_tenth[event.task] = tenth
                print(f"progress: {event.task}: {event.done}/{event.total}{info}", file=sys.stderr, flush=True)

    def _draw(self, event: Any) -> None:
        if self._bar is None:
            from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self._bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                 console=_console(stderr=True), transient=True)
            self._bar.start()
        info = " ".join(f"{k} {v:.4g}" for k, v in event.info.items())
        if event.task not in self._tasks:
            self._tasks[event.task] = self._bar.add_task(event.task, total=event.total, info=info)
        task = self._tasks[event.task]
        self._bar.update(task, total=event.total, completed=event.done, info=info)
        if event.total is not None and event.done >= event.total and event.done > 0:
            self._bar.remove_task(task)
            del self._tasks[event.task]

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def callbacks(self, on_publish: Callable[[], None] | None = None) -> Any:
        from compressor.pipeline import Callbacks

        return Callbacks(on_warning=self.warning, on_progress=self.progress, on_publish=on_publish or _shield_signals)


def _rendered(fn: Callable[..., dict[str, Any]], recipe: Any, **kwargs: Any) -> dict[str, Any]:
    """Call a pipeline entry point with this command line and callbacks that render on stderr."""
    renderer = _Renderer()
    try:
        return fn(recipe, command=_command_line(), callbacks=renderer.callbacks(), **kwargs)
    finally:
        renderer.close()


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

    from compressor.outputs import check_output, check_side_files, default_output

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
    from compressor.recipe import project_layer

    project = project_layer() if recipe_file is None else None
    inputs = {"calibration data": recipe.calibration_data, "evaluation data": recipe.eval_data,
              "training data": recipe.train_data, "calibration text": recipe.calibration_text,
              "evaluation text": recipe.eval_text, "recipe": recipe_file,
              "project config": project.file if project is not None else None}
    if out is not None:
        check_output(recipe.model, out, others=inputs)
    check_side_files({"--report": report, "--markdown": markdown, "--save-recipe": save},
                     {"input model": recipe.model, "output model": out, "--save-torch file": recipe.save_torch,
                      **inputs})
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
    from compressor.outputs import check_output
    from compressor.pipeline import dry_run

    rep = _rendered(dry_run, recipe)
    if out is not None:
        check_output(recipe.model, out)
        from compressor.outputs import FOLDER_MODEL_FILE, folder_files, is_folder_output, output_model_path

        rep["output"] = str(output_model_path(recipe.model, out))
        if is_folder_output(recipe.model, out):  # what the run would write
            rep["output_folder"] = {"path": str(out),
                                    "files": [FOLDER_MODEL_FILE, *map(str, folder_files(recipe.model))]}
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
        print(f"output: {out}" + (f" (a folder: {', '.join(rep['output_folder']['files'])})"
                                  if "output_folder" in rep else ""))
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
    from rich.table import Table

    layers = (rep.get("pruning") or {}).get("layers") or []
    t = Table(title="channels per layer", title_justify="left")
    for col in ("layer", "before", "after"):
        t.add_column(col, justify="left" if col == "layer" else "right")
    for la in layers:
        t.add_row(la["name"], str(la["channels_before"]), str(la["channels_after"]))
    _console(stderr=True).print(t)


def _emit(report: dict[str, Any], json_out: bool, report_path: Path | None, markdown: Path | None = None) -> int:
    """Write/print the report; returns 3 when a quality gate failed, else 0."""
    from compressor.cli.table import render_table
    from compressor.errors import EXIT_GATE_FAILED
    from compressor.gates import Gates
    from compressor.report import render_markdown, to_json, write_json_atomic, write_text_atomic

    code = 0
    gates = report.get("gates")
    if gates and not gates["passed"]:
        code = EXIT_GATE_FAILED
        written = [f"the output model {report['output']}"] if report.get("output") else []
        written += [f"the report {report_path}"] if report_path is not None else []
        written += [f"the Markdown summary {markdown}"] if markdown is not None else []
        report["error"] = {"exit_code": code, "kind": "gate", "message": Gates.describe(gates["failed"],
                                                                                      written=written)}
        _err(report["error"]["message"])
    if report_path is not None:
        write_json_atomic(report, report_path)
    if markdown is not None:
        write_text_atomic(render_markdown(report), markdown)
    if json_out:
        text = (to_json(report) + "\n").encode()
        if _JSON_FD is not None:
            sys.stdout.flush()
            os.write(_JSON_FD, text)
        else:
            sys.stdout.buffer.write(text)
            sys.stdout.flush()
        return code
    _console().print(render_table(report))
    if report.get("output"):
        _err_plain(f"wrote {report['output']}")
    return code


# ----------------------------------------------------------------------------- commands
@app.command(epilog=EXAMPLES["prune"])
def prune(
    tctx: typer.Context,
    model: ModelArg = None,
    input_shape: InputShapeOpt = None,
    model_class: ModelClassOpt = None,
    model_kwargs: ModelKwargsOpt = None,
    trust_pickle: TrustOpt = False,
    task: TaskOpt = None,
    pooling: PoolingOpt = None,
    train_data: Annotated[Optional[Path], typer.Option("--train-data", rich_help_panel="Data", metavar="PATH", help=".npz of inputs plus labels: adds the supervised loss to recovery.")] = None,
    calibration_data: CalibOpt = None,
    eval_data: EvalOpt = None,
    calibration_text: CalibTextOpt = None,
    eval_text: EvalTextOpt = None,
    calibration_images: CalibImagesOpt = None,
    eval_images: EvalImagesOpt = None,
    tokenizer: TokenizerOpt = None,
    max_length: MaxLengthOpt = None,
    image_size: ImageSizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    ratio: Annotated[float, typer.Option("--ratio", rich_help_panel="Pass settings", metavar="FLOAT", help="Structured: fraction of channels removed per layer. Unstructured: target sparsity. In (0, 1).")] = 0.5,
    method: Annotated[str, typer.Option("--method", rich_help_panel="Pass settings", metavar="structured|unstructured", help="structured (remove channels, Torch-Pruning, L1 norm) or unstructured (zero weights, global L1 magnitude).")] = "structured",
    criterion: Annotated[str, typer.Option("--criterion", rich_help_panel="Pass settings", metavar="l1|l2|fpgm|bn-scale|taylor|random", help="Importance: l1, l2, fpgm, bn-scale, taylor (needs --calibration-data) or random.")] = "l1",
    global_pruning: Annotated[bool, typer.Option("--global", rich_help_panel="Pass settings", metavar="", help="Rank channels across layers instead of a uniform per-layer ratio.")] = False,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", rich_help_panel="Pass settings", metavar="GLOB", help="Layer-name glob never pruned at its outputs (repeatable; each must match).")] = None,
    layer_ratios: Annotated[Optional[Path], typer.Option("--layer-ratios", rich_help_panel="Pass settings", metavar="PATH", help="TOML or JSON file: {\"layer glob\": ratio, ...} overriding --ratio.")] = None,
    round_to: Annotated[Optional[int], typer.Option("--round-to", rich_help_panel="Pass settings", metavar="N", min=1, help="Keep channel counts multiples of N.")] = None,
    steps: Annotated[int, typer.Option("--steps", rich_help_panel="Pass settings", metavar="K", min=1, help="Iterative pruning in K steps.")] = 1,
    heads: Annotated[Optional[float], typer.Option("--heads", rich_help_panel="Pass settings", metavar="FLOAT", help="Fraction of attention heads to remove (transformers); --ratio then applies to MLP hidden units.")] = None,
    max_layer_ratio: Annotated[float, typer.Option("--max-layer-ratio", rich_help_panel="Pass settings", metavar="FLOAT", help="No layer loses more than this fraction of its channels.")] = 0.9,
    recover: Annotated[bool, typer.Option("--recover", rich_help_panel="Pass settings", metavar="", help="Fine-tune the pruned model to match the original (knowledge distillation on --calibration-data).")] = False,
    recover_steps: Annotated[int, typer.Option("--recover-steps", rich_help_panel="Pass settings", metavar="N", min=1, help="Recovery optimiser steps.")] = 300,
    lr: Annotated[float, typer.Option("--lr", rich_help_panel="Pass settings", metavar="FLOAT", help="Recovery learning rate (Adam).")] = 1e-3,
    recover_batch_size: Annotated[int, typer.Option("--recover-batch-size", rich_help_panel="Pass settings", metavar="N", min=1, help="Recovery batch size.")] = 64,
    deprecated_batch_size: Annotated[Optional[int], typer.Option("--batch-size", rich_help_panel="Pass settings", metavar="N", min=1, hidden=True, help="Deprecated spelling of --recover-batch-size.")] = None,
    seed: Annotated[int, typer.Option("--seed", rich_help_panel="Pass settings", metavar="N", help="Recovery seed.")] = 0,
    batch_size: Annotated[Optional[int], typer.Option("--bench-batch-size", rich_help_panel="Benchmark", metavar="N", min=1, help="Benchmark batch size (default: from --input-shape or the graph, else 1).")] = None,
    batch_sizes: BatchSizesOpt = None,
    seq_lens: SeqLensOpt = None,
    threads: ThreadsOpt = "0",
    inter_threads: InterThreadsOpt = 0,
    runs: RunsOpt = None,
    warmup: WarmupOpt = 10,
    min_time: MinTimeOpt = 3.0,
    measure_memory: MemoryOpt = True,
    max_accuracy_drop: MaxAccDropOpt = None,
    min_speedup: MinSpeedupOpt = None,
    max_size_ratio: MaxSizeRatioOpt = None,
    min_cosine: MinCosineOpt = None,
    opset: OpsetOpt = 18,
    atol: AtolOpt = 1e-4,
    rtol: RtolOpt = 1e-3,
    exporter: ExporterOpt = "auto",
    save_torch: Annotated[Optional[Path], typer.Option("--save-torch", rich_help_panel="Output and report", metavar="PATH", help="Also write the pruned PyTorch model: .pt2 (ExportedProgram) or a full-module pickle.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", rich_help_panel="Output and report", metavar="", help="Show per-layer channel counts.")] = False,
    output: OutputOpt = None,
    markdown: MarkdownOpt = None,
    save_recipe: SaveRecipeOpt = None,
    dry_run: DryRunOpt = False,
    quiet: QuietOpt = False,
    no_color: NoColorOpt = False,
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

    _run(debug, body, json_out=json_out, params=params)


@app.command(epilog=EXAMPLES["quantize"])
def quantize(
    tctx: typer.Context,
    model: ModelArg = None,
    input_shape: InputShapeOpt = None,
    model_class: ModelClassOpt = None,
    model_kwargs: ModelKwargsOpt = None,
    trust_pickle: TrustOpt = False,
    task: TaskOpt = None,
    pooling: PoolingOpt = None,
    calibration_data: CalibOpt = None,
    eval_data: EvalOpt = None,
    calibration_text: CalibTextOpt = None,
    eval_text: EvalTextOpt = None,
    calibration_images: CalibImagesOpt = None,
    eval_images: EvalImagesOpt = None,
    tokenizer: TokenizerOpt = None,
    max_length: MaxLengthOpt = None,
    image_size: ImageSizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    scheme: Annotated[Optional[str], typer.Option("--scheme", rich_help_panel="Pass settings", metavar="symmetric|asymmetric", help="symmetric (int8 weights, zero point 0) or asymmetric (uint8 weights with zero points). Default: chosen for this CPU.")] = None,
    per_channel: Annotated[bool, typer.Option("--per-channel/--per-tensor", rich_help_panel="Pass settings", metavar="", help="One scale per output channel (default) or one per tensor.")] = True,
    reduce_range: Annotated[Optional[bool], typer.Option("--reduce-range/--no-reduce-range", rich_help_panel="Pass settings", metavar="", help="7-bit weights (default: on only where 8-bit weights can saturate: int8 weights on x86 CPUs without VNNI).", show_default=False)] = None,
    mode: Annotated[str, typer.Option("--mode", rich_help_panel="Pass settings", metavar="auto|dynamic|static", help="auto (static QDQ for CNNs with --calibration-data, else dynamic), dynamic or static.")] = "auto",
    weight_scheme: Annotated[Optional[str], typer.Option("--weight-scheme", rich_help_panel="Pass settings", metavar="symmetric|asymmetric", help="Override --scheme for weights.")] = None,
    activation_scheme: Annotated[Optional[str], typer.Option("--activation-scheme", rich_help_panel="Pass settings", metavar="symmetric|asymmetric", help="Override --scheme for activations (static).")] = None,
    weight_type: Annotated[Optional[str], typer.Option("--weight-type", rich_help_panel="Pass settings", metavar="int8|uint8", help="int8 or uint8 (default follows the weight scheme).")] = None,
    activation_type: Annotated[Optional[str], typer.Option("--activation-type", rich_help_panel="Pass settings", metavar="int8|uint8", help="int8 or uint8 (static; default follows the activation scheme).")] = None,
    format: Annotated[str, typer.Option("--format", rich_help_panel="Pass settings", metavar="auto|qdq-u8s8|qdq-s8s8|qoperator-u8s8|qoperator-s8s8|dynamic-u8s8|dynamic-u8u8", help="int8 kernel format. auto (static): build every format valid for this CPU, time them against each other and keep the fastest within cosine 0.002 of the most accurate (cached per CPU, ONNX Runtime version and model).")] = "auto",
    precision: Annotated[str, typer.Option("--precision", rich_help_panel="Pass settings", metavar="int8|int4|fp16", help="int8; int4 (weight-only blockwise, MatMulNBits, embeddings too); fp16.")] = "int8",
    block_size: Annotated[int, typer.Option("--block-size", rich_help_panel="Pass settings", metavar="N", help="int4 block size (power of two >= 16).")] = 16,
    fallback: Annotated[bool, typer.Option("--fallback", rich_help_panel="Pass settings", metavar="", help="Accuracy-aware int8: return the most sensitive layers (Conv/Gemm/MatMul, ranked by `compressor sensitivity`) to float one at a time until --max-accuracy-drop / --min-cosine hold (NNCF / OpenVINO accuracy-aware quantization). The report lists them in quantization.fallback_layers.")] = False,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", rich_help_panel="Pass settings", metavar="GLOB", help="Node-name glob to keep in float (repeatable; each must match).")] = None,
    op_types: Annotated[Optional[str], typer.Option("--op-types", rich_help_panel="Pass settings", metavar="OP,OP,...", help="Quantize only these op types, comma-separated (e.g. MatMul,Gather).")] = None,
    keep_io_types: Annotated[bool, typer.Option("--keep-io-types/--fp16-io", rich_help_panel="Pass settings", metavar="", help="fp16: keep float32 inputs and outputs (default).")] = True,
    rewrites: Annotated[bool, typer.Option("--rewrites/--no-rewrites", rich_help_panel="Pass settings", metavar="", help="Result-preserving graph rewrites: softmax NaN guard, GELU fusion; static QDQ also ReduceMean->GlobalAveragePool and float outputs from the last Gemm/MatMul.")] = True,
    smooth: Annotated[bool, typer.Option("--smooth/--no-smooth", rich_help_panel="Pass settings", metavar="", help="Dynamic int8 with --calibration-data: SmoothQuant activation smoothing.")] = True,
    smooth_alpha: Annotated[float, typer.Option("--smooth-alpha", rich_help_panel="Pass settings", metavar="FLOAT", help="SmoothQuant migration strength in \\[0, 1].")] = 0.7,
    calibration_method: Annotated[str, typer.Option("--calibration-method", rich_help_panel="Calibration (static int8)", metavar="minmax|entropy|percentile", help="Static: minmax, entropy or percentile.")] = "minmax",
    percentile: Annotated[float, typer.Option("--percentile", rich_help_panel="Calibration (static int8)", metavar="FLOAT", help="Static, percentile calibration: percentile kept.")] = 99.999,
    calibration_samples: Annotated[Optional[int], typer.Option("--calibration-samples", rich_help_panel="Calibration (static int8)", metavar="N", help="Static: use at most N calibration samples.")] = None,
    batch_size: BatchOpt = None,
    batch_sizes: BatchSizesOpt = None,
    seq_lens: SeqLensOpt = None,
    threads: ThreadsOpt = "0",
    inter_threads: InterThreadsOpt = 0,
    runs: RunsOpt = None,
    warmup: WarmupOpt = 10,
    min_time: MinTimeOpt = 3.0,
    measure_memory: MemoryOpt = True,
    max_accuracy_drop: MaxAccDropOpt = None,
    min_speedup: MinSpeedupOpt = None,
    max_size_ratio: MaxSizeRatioOpt = None,
    min_cosine: MinCosineOpt = None,
    opset: OpsetOpt = 18,
    atol: AtolOpt = 1e-4,
    rtol: RtolOpt = 1e-3,
    exporter: ExporterOpt = "auto",
    output: OutputOpt = None,
    markdown: MarkdownOpt = None,
    save_recipe: SaveRecipeOpt = None,
    dry_run: DryRunOpt = False,
    quiet: QuietOpt = False,
    no_color: NoColorOpt = False,
    json_out: JsonOpt = False,
    report: ReportOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Quantize a model with ONNX Runtime: int8 (dynamic or static QDQ), int4 weight-only or fp16 (PyTorch inputs are exported first)."""
    params = dict(locals())
    _run(debug, lambda: _compress(tctx, params, "quantize"), json_out=json_out, params=params)


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

    rep = _rendered(run_recipe, dataclasses.replace(recipe, output=out))
    if after is not None:
        after(rep)
    return _emit(rep, params.get("json_out", False), params.get("report"), params.get("markdown"))


@app.command(epilog=EXAMPLES["run"])
def run(
    tctx: typer.Context,
    recipe_file: Annotated[Path, typer.Argument(metavar="RECIPE", help="Recipe file (TOML): model, data, \\[\\[steps]] (prune, quantize, export), \\[benchmark], \\[gates].", show_default=False)],
    output: OutputOpt = None,
    markdown: MarkdownOpt = None,
    save_recipe: SaveRecipeOpt = None,
    dry_run: DryRunOpt = False,
    quiet: QuietOpt = False,
    no_color: NoColorOpt = False,
    json_out: JsonOpt = False,
    report: ReportOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Run a recipe: its steps in order (e.g. prune, then quantize), each measured against one baseline."""
    params = dict(locals())
    _run(debug, lambda: _compress(tctx, params, None, recipe_file=recipe_file), json_out=json_out, params=params)


@app.command(epilog=EXAMPLES["export"])
def export(
    tctx: typer.Context,
    model: ModelArg = None,
    input_shape: InputShapeOpt = None,
    model_class: ModelClassOpt = None,
    model_kwargs: ModelKwargsOpt = None,
    trust_pickle: TrustOpt = False,
    task: TaskOpt = None,
    pooling: PoolingOpt = None,
    calibration_data: CalibOpt = None,
    calibration_text: CalibTextOpt = None,
    calibration_images: CalibImagesOpt = None,
    tokenizer: TokenizerOpt = None,
    max_length: MaxLengthOpt = None,
    image_size: ImageSizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    opset: OpsetOpt = 18,
    atol: AtolOpt = 1e-4,
    rtol: RtolOpt = 1e-3,
    exporter: ExporterOpt = "auto",
    output: Annotated[Optional[Path], typer.Option("-o", "--output", rich_help_panel="Output and report", metavar="PATH", help="Output ONNX file (default: the input's name with .onnx).")] = None,
    save_recipe: SaveRecipeOpt = None,
    dry_run: DryRunOpt = False,
    quiet: QuietOpt = False,
    no_color: NoColorOpt = False,
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

        rep = _rendered(export_only, dataclasses.replace(recipe, output=out))
        if report is not None or json_out:
            _emit(rep, json_out, report)
        if not json_out:
            ex = rep["export"]
            print(f"wrote {rep['output']} ({ex['exporter']} exporter, max abs diff vs PyTorch {ex['max_abs_diff']:.3g})")
        return 0

    _run(debug, body, json_out=json_out, params=params)


@app.command(epilog=EXAMPLES["bench"])
def bench(
    tctx: typer.Context,
    model: ModelArg = None,
    other: Annotated[Optional[Path], typer.Argument(metavar="[OTHER]", help="Optional second model: compare it with MODEL (speedup with 95% CI, fidelity, gates).", show_default=False)] = None,
    input_shape: InputShapeOpt = None,
    model_class: ModelClassOpt = None,
    model_kwargs: ModelKwargsOpt = None,
    trust_pickle: TrustOpt = False,
    task: TaskOpt = None,
    pooling: PoolingOpt = None,
    calibration_data: CalibOpt = None,
    eval_data: EvalOpt = None,
    calibration_text: CalibTextOpt = None,
    eval_text: EvalTextOpt = None,
    calibration_images: CalibImagesOpt = None,
    eval_images: EvalImagesOpt = None,
    tokenizer: TokenizerOpt = None,
    max_length: MaxLengthOpt = None,
    image_size: ImageSizeOpt = None,
    mean: MeanOpt = None,
    std: StdOpt = None,
    batch_size: BatchOpt = None,
    batch_sizes: BatchSizesOpt = None,
    seq_lens: SeqLensOpt = None,
    threads: ThreadsOpt = "0",
    inter_threads: InterThreadsOpt = 0,
    runs: RunsOpt = None,
    warmup: WarmupOpt = 10,
    min_time: MinTimeOpt = 3.0,
    measure_memory: MemoryOpt = True,
    max_accuracy_drop: MaxAccDropOpt = None,
    min_speedup: MinSpeedupOpt = None,
    max_size_ratio: MaxSizeRatioOpt = None,
    min_cosine: MinCosineOpt = None,
    opset: OpsetOpt = 18,
    atol: AtolOpt = 1e-4,
    rtol: RtolOpt = 1e-3,
    exporter: ExporterOpt = "auto",
    markdown: MarkdownOpt = None,
    save_recipe: SaveRecipeOpt = None,
    dry_run: DryRunOpt = False,
    quiet: QuietOpt = False,
    no_color: NoColorOpt = False,
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
        from compressor.outputs import check_side_files
        from compressor.pipeline import bench_models

        if other is not None:
            check_side_files({"--report": report, "--markdown": markdown}, {"second model": other})
        rep = _rendered(bench_models, recipe, other=other)
        return _emit(rep, json_out, report, markdown)

    _run(debug, body, json_out=json_out, params=params)


def _write_report(rep: dict[str, Any], json_out: bool, report_path: Path | None) -> None:
    """``--report FILE`` and ``--json`` of commands with their own human rendering (sensitivity, sweep)."""
    from compressor.report import to_json, write_json_atomic

    if report_path is not None:
        write_json_atomic(rep, report_path)
    if json_out:
        text = (to_json(rep) + "\n").encode()
        if _JSON_FD is not None:
            sys.stdout.flush()
            os.write(_JSON_FD, text)
        else:
            sys.stdout.buffer.write(text)
            sys.stdout.flush()


@app.command(epilog=_examples(
    "compressor sensitivity model.onnx --calibration-data calib.npz --eval-data eval.npz",
    "compressor sensitivity model.pt --kind prune --ratio 0.5 --calibration-data calib.npz --json"))
def sensitivity(
    tctx: typer.Context,
    model: ModelArg = None,
    input_shape: InputShapeOpt = None,
    model_class: ModelClassOpt = None,
    model_kwargs: ModelKwargsOpt = None,
    trust_pickle: TrustOpt = False,
    calibration_data: CalibOpt = None,
    eval_data: EvalOpt = None,
    kind: Annotated[str, typer.Option("--kind", rich_help_panel="Pass settings", metavar="quantize|prune", help="quantize: each layer int8 alone (the quantize pass's settings); prune: each layer's output channels pruned alone at --ratio (structured, L1).")] = "quantize",
    ratio: Annotated[float, typer.Option("--ratio", rich_help_panel="Pass settings", metavar="FLOAT", help="--kind prune: fraction of the layer's output channels removed, in (0, 1).")] = 0.5,
    mode: Annotated[str, typer.Option("--mode", rich_help_panel="Pass settings", metavar="auto|dynamic|static", help="int8 mode, as in quantize: auto (static QDQ for CNNs with --calibration-data, else dynamic), dynamic or static.")] = "auto",
    calibration_method: Annotated[str, typer.Option("--calibration-method", rich_help_panel="Pass settings", metavar="minmax|entropy|percentile", help="Static: minmax, entropy or percentile.")] = "minmax",
    format: Annotated[str, typer.Option("--format", rich_help_panel="Pass settings", metavar="auto|qdq-u8s8|...", help="int8 kernel format, as in quantize (auto: measured once on the whole model).")] = "auto",
    op_types: Annotated[Optional[str], typer.Option("--op-types", rich_help_panel="Pass settings", metavar="OP,OP,...", help="Quantize only these op types, as in quantize (e.g. Conv to measure dynamic ConvInteger).")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", rich_help_panel="Pass settings", metavar="GLOB", help="Node-name glob kept in float in every trial (repeatable; each must match).")] = None,
    opset: OpsetOpt = 18,
    atol: AtolOpt = 1e-4,
    rtol: RtolOpt = 1e-3,
    exporter: ExporterOpt = "auto",
    quiet: QuietOpt = False,
    no_color: NoColorOpt = False,
    json_out: JsonOpt = False,
    report: ReportOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Rank layers by the output error when only that layer is quantized to int8 (or pruned): 1 - cosine_min, and the accuracy drop with labelled --eval-data."""
    params = dict(locals())

    def body() -> int:
        from compressor.outputs import check_side_files
        from compressor.passes.configs import PruneConfig
        from compressor.pipeline import run_sensitivity

        if kind not in ("quantize", "prune"):
            raise UsageError(f"--kind '{kind}' is unknown; use quantize or prune")
        if kind == "prune":
            PruneConfig(ratio=ratio)  # validates --ratio
        recipe = _recipe(tctx, params, pass_name="quantize")
        if recipe.model is None:
            raise UsageError("no model given: pass MODEL, or set model = \"...\" in compressor.toml")
        check_side_files({"--report": report}, {"input model": recipe.model, "calibration data": recipe.calibration_data,
                                                 "evaluation data": recipe.eval_data})
        rep = _rendered(run_sensitivity, recipe, kind=kind, ratio=ratio)
        _write_report(rep, json_out, report)
        if not json_out:
            from rich.table import Table

            acc = "accuracy_on" in rep["sensitivity_settings"]
            what = "int8 alone" if kind == "quantize" else f"pruned alone (ratio {ratio:g})"
            table = Table(title=f"layer sensitivity: each layer {what}, on {rep['sensitivity_settings']['measured_on']}")
            for col in ["rank", "layer", "op type", "error (1 - cos_min)", "cos_min"] + (["acc. drop (points)"] if acc else []):
                table.add_column(col, justify="right" if col not in ("layer", "op type") else "left")
            for r in rep["sensitivity"]:
                row = [str(r["rank"] or "-"), r["layer"], r["op_type"],
                       "-" if r["error"] is None else f"{r['error']:.3g}",
                       "-" if r["cosine_min"] is None else f"{r['cosine_min']:.5f}"]
                if acc:
                    row.append("-" if r["accuracy_drop_pct"] is None else f"{r['accuracy_drop_pct']:.2f}")
                table.add_row(*row)
            _console().print(table)
            for r in rep["sensitivity"]:
                if r.get("note"):
                    _err_plain(f"{r['layer']}: not measured: {r['note']}")
        return 0

    _run(debug, body, json_out=json_out, params=params)


@app.command(epilog=_examples(
    "compressor sweep recipe.toml --grid 'steps[0].ratio=0.3,0.5,0.7' --grid 'steps[1].precision=int8,int4' -o sweep/",
    "compressor sweep recipe.toml --grid 'steps[0].calibration_method=minmax,entropy' --objective size --min-cosine 0.99"))
def sweep(
    tctx: typer.Context,
    recipe_file: Annotated[Path, typer.Argument(metavar="RECIPE", help="Recipe file (TOML) whose steps the grids change; see `compressor run`.", show_default=False)],
    grid: Annotated[Optional[list[str]], typer.Option("--grid", rich_help_panel="Sweep", metavar="steps[i].field=V,V,...", help="One setting of one step and its values, e.g. 'steps[0].ratio=0.3,0.5,0.7' (repeat: every combination is built).")] = None,
    output: Annotated[Optional[Path], typer.Option("-o", "--output", rich_help_panel="Output and report", metavar="DIR", help="Output folder: candidates/<name>.onnx, chosen.onnx, pareto.json, pareto.png, pareto.md (default: <recipe stem>.sweep beside the recipe).")] = None,
    objective: Annotated[str, typer.Option("--objective", rich_help_panel="Sweep", metavar="latency|size", help="The chosen candidate is the valid one with the least latency p50 (or file size).")] = "latency",
    batch_size: BatchOpt = None,
    threads: ThreadsOpt = "0",
    runs: RunsOpt = None,
    warmup: WarmupOpt = 10,
    min_time: MinTimeOpt = 3.0,
    measure_memory: MemoryOpt = True,
    max_accuracy_drop: MaxAccDropOpt = None,
    min_speedup: MinSpeedupOpt = None,
    max_size_ratio: MaxSizeRatioOpt = None,
    min_cosine: MinCosineOpt = None,
    quiet: QuietOpt = False,
    no_color: NoColorOpt = False,
    json_out: JsonOpt = False,
    report: ReportOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Build every combination of --grid values of a recipe, measure all against one baseline, and draw the Pareto front; the budget is the recipe's gates plus the ones given here."""
    params = dict(locals())

    def body() -> int:
        from compressor.errors import EXIT_GATE_FAILED
        from compressor.outputs import check_side_files
        from compressor.recipe import recipe_layer
        from compressor.sweep import parse_grid, run_sweep

        axes = parse_grid(list(grid or []))
        layer = recipe_layer(recipe_file)
        cli = _cli_layer(tctx, {k: v for k, v in params.items() if k != "output"}, None, frozenset())
        out = output if output is not None else recipe_file.with_name(f"{recipe_file.stem}.sweep")
        check_side_files({"--report": report}, {"recipe": recipe_file})
        renderer = _Renderer()
        try:
            rep = run_sweep(layer, axes, out_dir=out, objective=objective, command=_command_line(), others=[cli],
                            callbacks=renderer.callbacks())
        finally:
            renderer.close()
        par = rep["pareto"]
        valid = [c for c in par["candidates"] if c["valid"]]
        code = 0 if valid else EXIT_GATE_FAILED
        if not valid:
            rep["error"] = {"exit_code": code, "kind": "gate", "message": f"no sweep candidate met the budget (of "
                            f"{len(par['candidates'])}); every candidate and pareto.json/png/md were written to {out}"}
            _err(rep["error"]["message"])
        _write_report(rep, json_out, report)
        if not json_out:
            from rich.table import Table

            table = Table(title=f"sweep: {len(par['candidates'])} candidates against one baseline "
                                f"(objective {objective})")
            for col in ("name", "size", "p50 ms", "speedup", "acc. drop", "cos_min", "valid", "front", "chosen"):
                table.add_column(col)
            from compressor.report import _fmt_bytes

            def f(x: Any, spec: str) -> str:
                return "-" if x is None else format(x, spec)

            for c in par["candidates"]:
                table.add_row(c["name"], _fmt_bytes(c["size_bytes"]), f(c["latency_ms_p50"], ".3f"),
                              f(c["speedup"], ".2f"), f(c["accuracy_drop_pct"], ".2f"), f(c["cosine_min"], ".4f"),
                              "yes" if c["valid"] else "no", "yes" if c["pareto"] else "", "*" if c["chosen"] else "")
            _console().print(table)
            for path in par["files"].values():
                _err_plain(f"wrote {path}")
            if rep.get("output"):
                _err_plain(f"chosen: {par['chosen']} ({rep['output']})")
        return code

    _run(debug, body, json_out=json_out, params=params)


@app.command(epilog=EXAMPLES["auto"])
def auto(
    tctx: typer.Context,
    model: ModelArg = None,
    eval_data: EvalOpt = None,
    calibration_data: CalibOpt = None,
    input_shape: InputShapeOpt = None,
    model_class: ModelClassOpt = None,
    model_kwargs: ModelKwargsOpt = None,
    trust_pickle: TrustOpt = False,
    max_accuracy_drop: Annotated[Optional[float], typer.Option("--max-accuracy-drop", rich_help_panel="Search", metavar="POINTS", help="Budget: largest top-1 accuracy drop in percentage points on --eval-data (needs labels).")] = None,
    min_cosine: Annotated[Optional[float], typer.Option("--min-cosine", rich_help_panel="Search", metavar="C", help="Budget without labels: least per-sample output cosine to the baseline on --eval-data.")] = None,
    objective: Annotated[str, typer.Option("--objective", rich_help_panel="Search", metavar="latency|size", help="Minimize latency (p50 at the benchmark batch, paired against the baseline) or file size.")] = "latency",
    time_budget: Annotated[str, typer.Option("--time-budget", rich_help_panel="Search", metavar="DURATION", help="Start no wave of trials that could end after this (longest wave so far + 5 s): 90s, 10m, 1h.")] = "10m",
    trials: Annotated[int, typer.Option("--trials", rich_help_panel="Search", metavar="N", min=1, help="Candidates to evaluate (distinct settings, counted over every session of the study).")] = 20,
    seed: Annotated[int, typer.Option("--seed", rich_help_panel="Search", metavar="N", help="Seed of the sampler (Optuna NSGA-II) and of recovery training.")] = 0,
    study: Annotated[Optional[Path], typer.Option("--study", rich_help_panel="Search", metavar="PATH", help="Optuna study file (SQLite; default DIR/study.db).")] = None,
    resume: Annotated[bool, typer.Option("--resume", rich_help_panel="Search", metavar="", help="Continue the study in --study (same model, data, budget and seed) up to --trials.")] = False,
    executor: Annotated[str, typer.Option("--executor", rich_help_panel="Search", metavar="local|ray", help="Build candidates in this process (local) or as Ray tasks (ray: RAY_ADDRESS or a local Ray); benchmarks always run here.")] = "local",
    workers: Annotated[int, typer.Option("--workers", rich_help_panel="Search", metavar="N", min=1, help="Candidates asked and built together per wave (parallel with --executor ray); the same N tries the same settings on either executor.")] = 1,
    recover_steps: Annotated[int, typer.Option("--recover-steps", rich_help_panel="Search", metavar="N", min=1, help="Recovery (distillation) steps after each structured pruning (needs --calibration-data).")] = 300,
    batch_size: BatchOpt = None,
    threads: ThreadsOpt = "0",
    inter_threads: InterThreadsOpt = 0,
    runs: RunsOpt = None,
    warmup: WarmupOpt = 10,
    min_time: MinTimeOpt = 3.0,
    measure_memory: MemoryOpt = False,
    opset: OpsetOpt = 18,
    atol: AtolOpt = 1e-4,
    rtol: RtolOpt = 1e-3,
    exporter: ExporterOpt = "auto",
    out_dir: Annotated[Optional[Path], typer.Option("-o", "--output", rich_help_panel="Output and report", metavar="DIR", help="Output folder: model.onnx (best so far), report.json, pareto.json/png/md, study.db (default: <stem>.auto beside the input).")] = None,
    quiet: QuietOpt = False,
    no_color: NoColorOpt = False,
    json_out: JsonOpt = False,
    report: ReportOpt = None,
    debug: DebugOpt = False,
) -> None:
    """Search prune/quantize settings for the fastest (or smallest) model within an accuracy budget (Optuna; Pareto plot)."""
    params = dict(locals())

    def body() -> int:
        from compressor.auto import AutoSettings, parse_duration
        from compressor.outputs import check_side_files

        settings = AutoSettings(out_dir=Path("."), objective=objective, max_accuracy_drop=max_accuracy_drop,
                                min_cosine=min_cosine, time_budget_s=parse_duration(time_budget), trials=trials,
                                seed=seed, study_path=study, resume=resume, executor=executor, workers=workers,
                                recover_steps=recover_steps)
        recipe = _recipe(tctx, params)
        if recipe.model is None:
            raise UsageError("no model given: pass MODEL, or set model = \"...\" in compressor.toml")
        import dataclasses

        folder = out_dir or recipe.model.with_name(f"{recipe.model.stem}.auto")
        settings = dataclasses.replace(settings, out_dir=folder)
        check_side_files({"--report": report}, {"input model": recipe.model, "evaluation data": recipe.eval_data,
                                                "calibration data": recipe.calibration_data})
        from compressor.auto import run_auto

        rep = _rendered(run_auto, recipe, settings=settings)
        info = rep["auto"]
        if rep.get("result") is None:
            from compressor.auto import no_valid_message
            from compressor.errors import EXIT_GATE_FAILED
            from compressor.report import write_json_atomic

            msg = no_valid_message(rep, has_calibration=bool(recipe.calibration_data))
            rep["error"] = {"exit_code": EXIT_GATE_FAILED, "kind": "gate", "message": msg}
            if report is not None:
                write_json_atomic(rep, report)
            _fail(None, EXIT_GATE_FAILED, "gate", msg, False)
            if json_out:
                _emit(rep, True, None)
            return EXIT_GATE_FAILED
        code = _emit(rep, json_out, report)
        if not json_out:
            c = info["chosen"]
            _err_plain(f"chose trial {info['chosen_trial']} ({c['name']}) of {info['trials_done']}; Pareto front in "
                       f"{info['pareto'].get('png')}, {info['pareto'].get('md')}; study {info['study']}")
        return code

    _run(debug, body, json_out=json_out, params=params)


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
    restore_color = None
    if os.environ.get("NO_COLOR") or "--no-color" in _ARGV:  # help too: no colours or styles at all
        import typer.rich_utils

        restore_color, typer.rich_utils.COLOR_SYSTEM = typer.rich_utils.COLOR_SYSTEM, None
    try:  # Typer 0.22+ vendors click as typer._click; older releases use click itself
        from typer._click import exceptions as cx
    except ImportError:  # pragma: no cover
        from click import exceptions as cx

    import signal

    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C so scratch folders and temp files are removed
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    from compressor.errors import DEFERRING, STOP_REQUESTED

    def on_term(*_: Any) -> None:
        STOP_REQUESTED.append(143)
        if not DEFERRING:  # inside errors.stop_deferred(): raised at the end of the block
            sys.exit(143)

    def on_int(*_: Any) -> None:
        STOP_REQUESTED.append(130)
        if not DEFERRING:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    if handlers[0] is signal.default_int_handler:
        signal.signal(signal.SIGINT, on_int)
    try:
        STOP_REQUESTED.clear()
        _main(cx, _ARGV)
    finally:  # in-process callers (tests) get their handlers and help colours back
        if argv is not None:
            # the console script keeps them until the process is gone: a Ctrl-C that lands while the interpreter
            # shuts down (seconds with torch loaded) after a shielded publish must not turn the exit code into 130
            signal.signal(signal.SIGINT, handlers[0])
            signal.signal(signal.SIGTERM, handlers[1])
        if restore_color is not None:
            import typer.rich_utils

            typer.rich_utils.COLOR_SYSTEM = restore_color


def _main(cx: Any, argv: list[str]) -> None:
    try:
        code = app(args=argv, prog_name="compressor", standalone_mode=False)
    except cx.UsageError as e:
        if type(e).__name__ == "NoArgsIsHelpError" and e.ctx is not None:
            print(e.ctx.get_help())
            sys.exit(0)
        cmd = e.ctx.command_path if e.ctx is not None else "compressor"
        _fail(e, 2, "usage", f"{e.format_message().rstrip('.')}; see '{cmd} --help'", "--json" in argv)
        sys.exit(2)
    except KeyboardInterrupt:
        _err("interrupted")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


@app.command(epilog=EXAMPLES["doctor"])
def doctor(
    probe: Annotated[bool, typer.Option("--probe/--no-probe", metavar="", help="Measure the int8 kernel formats on a small probe CNN (a few seconds the first time, then cached).")] = True,
    json_out: JsonOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Show this CPU's instruction sets, ONNX Runtime version and providers, the int8 kernel formats measured here, and the quantization defaults they imply."""

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
        if probe:
            import tempfile

            from compressor.passes.kernel_formats import probe_formats

            with tempfile.TemporaryDirectory(prefix="compressor-probe-") as d:
                q = probe_formats(Path(d))
            rep["kernel_formats"] = {"probe": "3 x Conv 3x3 (32 channels) + Relu, Gemm; x [1, 8, 32, 32]",
                                     "chosen": q.get("kernel_format"), "selection": q.get("format_selection"),
                                     "candidates": q.get("format_candidates", [])}
        if json_out:
            _emit(rep, True, None)
            return 0
        print(f"CPU:          {info['cpu_model']} ({info['machine']}, {info['logical_cores']} logical cores)")
        print("ISA:          " + ", ".join(f"{k}={'yes' if v else 'no'}" for k, v in info["isa"].items()))
        print(f"VNNI:         {'yes: u8 x s8 int8 kernels run without 16-bit saturation' if rep['vnni'] else 'no: reduce_range (7-bit weights) is used for int8 weights (u8 x s8 and s8 x s8 kernels)'}")
        print(f"ONNX Runtime: {info['onnxruntime']}; providers: {', '.join(info['providers'])}")
        for name, s in rep["defaults"].items():
            print(f"default for a {name}: {s['mode']}, weights {s['weight_type']} {s['weight_scheme']}, "
                  f"activations {s['activation_type']} {s['activation_scheme']}, reduce_range={s['reduce_range']}"
                  + ("; int8 kernel format measured per model (--format auto)" if s["mode"] == "static" else ""))
        kfm = rep.get("kernel_formats")
        if kfm:
            sel = kfm["selection"] or {}
            print(f"static int8 kernel formats measured on a probe CNN ({kfm['probe']}; batch 1, 1 thread"
                  f"{', cached' if sel.get('by') == 'cached' else ''}):")
            for c in kfm["candidates"]:
                if c.get("latency_ms_p50") is None:
                    print(f"  {c['format']:<16} not built: {c.get('error', '')}")
                    continue
                print(f"  {c['format']:<16} p50 {c['latency_ms_p50']:.3f} ms  speedup {c['speedup']:.2f}x  "
                      f"cosine min {c['cosine_min']:.4f}{'  <- chosen' if c.get('chosen') else ''}")
        return 0

    _run(debug, body, json_out=json_out)

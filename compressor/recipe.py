"""Recipes: every setting of a run in one typed object, from flags, a project config and TOML files.

A recipe names the model, its inputs and data, the steps (each a registered pass with its
config), and the export, benchmark and gate settings. It is assembled from layers, lowest
first: the built-in defaults, the project config (``compressor.toml`` in the working folder,
or ``[tool.compressor]`` in ``pyproject.toml``), a recipe file (``compressor run FILE``), and the
flags given on the command line. The recipe remembers where each setting came from; the
report shows it, and a bad value is named as the user wrote it: the flag (``--ratio``) or the
file field (``steps[1].ratio in recipe.toml``).

Recipe file (TOML)::

    recipe_version = 1
    model = "model.pt"                       # paths are relative to the file's folder
    calibration_data = "calib.npz"
    eval_data = "eval.npz"

    [[steps]]
    pass = "prune"
    ratio = 0.5
    recover = true

    [[steps]]
    pass = "quantize"
    mode = "static"

    [benchmark]
    batch_size = 32

    [gates]
    max_accuracy_drop = 1.0

A project config has the same top-level keys and tables (no ``steps``), plus one table per
pass (``[prune]``, ``[quantize]``) whose fields are the defaults of that pass's steps.
(Pattern after ruff and pytest reading ``pyproject.toml``; Olive's workflow configs.)
"""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compressor.benchmark import BenchmarkSettings
from compressor.errors import FieldError, UsageError
from compressor.gates import Gates
from compressor.passes.configs import ExportConfig

RECIPE_VERSION = 1
PROJECT_FILE = "compressor.toml"
DEFAULT = "default"
COMMAND_LINE = "command line"

#: Top-level keys of a recipe with the type of their value (paths are strings in TOML).
TOP_LEVEL: dict[str, Any] = {
    "recipe_version": int,
    "model": Path,
    "output": Path,
    "input_shape": tuple[str, ...],
    "calibration_data": Path,
    "eval_data": Path,
    "calibration_text": Path,
    "eval_text": Path,
    "calibration_images": Path,
    "eval_images": Path,
    "tokenizer": Path,
    "max_length": int,
    "image_size": tuple[int, ...],
    "mean": tuple[float, ...],
    "std": tuple[float, ...],
    "train_data": Path,
    "model_class": str,
    "model_kwargs": dict,
    "trust_pickle": bool,
    "save_torch": Path,
    "task": str,
    "pooling": str,
}
PATH_KEYS = tuple(k for k, t in TOP_LEVEL.items() if t is Path)
#: ``[benchmark]`` keys beside :class:`~compressor.benchmark.BenchmarkSettings`' fields.
BENCH_EXTRA: dict[str, Any] = {"batch_size": int | None, "batch_sizes": tuple[int, ...], "seq_lens": tuple[int, ...]}
TABLES = {"export": ExportConfig, "benchmark": BenchmarkSettings, "gates": Gates}
#: Flags of top-level keys and table fields, for messages about values given on the command line.
FLAGS = {"model": "MODEL", "output": "-o/--output", "min_time_s": "--min-time", "batch_size": "--batch-size",
         "recover_batch_size": "--recover-batch-size", "global_pruning": "--global"}


@dataclass(frozen=True)
class Step:
    """One step of a recipe: a registered pass and its validated config.

    Attributes:
        pass_name: Registered pass name (``"prune"``, ``"quantize"``, ``"export"``).
        config: The pass's frozen config object.
    """

    pass_name: str
    config: Any

    def to_json(self) -> dict[str, Any]:
        """``{"pass": name, **config fields}`` (JSON-ready)."""
        from compressor.passes import config_to_json

        return {"pass": self.pass_name, **config_to_json(self.config)}


@dataclass(frozen=True)
class Recipe:
    """Everything one run needs, validated.

    Attributes:
        model: Input model path (None: not given anywhere).
        output: Output ONNX path (None: the command's default beside the input).
        input_shape: ``--input-shape`` values, unparsed (e.g. ``("1,1,8,8",)``).
        calibration_data: ``.npz`` / folder of calibration inputs, or ``random``.
        eval_data: ``.npz`` of held-out inputs plus ``labels``.
        calibration_text: Text file (one example per line, or JSON Lines with ``text``) of calibration samples.
        eval_text: Text file of held-out samples (JSON Lines with ``label`` for accuracy).
        calibration_images: Folder of calibration images.
        eval_images: Folder of held-out images (class subfolders give labels, as torchvision's ImageFolder).
        tokenizer: Tokenizer folder for text data when the model is not a Hugging Face folder.
        max_length: Most tokens per text example (None: 128).
        image_size: ``(H,)`` or ``(H, W)`` images are resized to (None: the model's fixed size).
        mean: Per-channel mean of image normalisation on [0, 1] pixels (empty: ImageNet's).
        std: Per-channel standard deviation (empty: ImageNet's).
        train_data: ``.npz`` of inputs plus ``labels`` for pruning recovery.
        model_class: ``package.module:Class`` to load a state_dict into.
        model_kwargs: Constructor arguments of ``model_class``.
        trust_pickle: Allow pickles that need classes outside ``torch.nn``.
        save_torch: Also write the final PyTorch model here (``.pt2`` or ``.pt``).
        task: Hugging Face folders: the head to export (``feature-extraction``, ``sequence-classification``, ...);
            None for the one the folder's ``architectures`` names.
        pooling: Hugging Face folders: ``mean``, ``cls``, ``max`` or ``none``; None for a sentence-transformers
            folder's own pooling (none for other folders).
        steps: The passes to apply, in order.
        export: Settings of every export step the pipeline inserts (and of the baseline export).
        bench: Benchmark settings.
        batch_size: Benchmark batch size (None: from ``input_shape`` or the graph, else 1).
        batch_sizes: Also time this sweep of batch sizes.
        seq_lens: Also time this sweep of sequence lengths (token inputs' axis 1).
        gates: Quality gates.
        sources: Dotted setting name -> where its value came from (``"command line"``,
            ``"project config compressor.toml"``, ``"recipe r.toml"``); settings absent here are defaults.
        warnings: Things to tell the user about the settings themselves (deprecated names).
        import_dir: Folder that ``model_class`` is imported from besides the working folder: the folder of
            the file that named it (a recipe runs the same from any working folder).
    """

    model: Path | None = None
    output: Path | None = None
    input_shape: tuple[str, ...] = ()
    calibration_data: Path | None = None
    eval_data: Path | None = None
    calibration_text: Path | None = None
    eval_text: Path | None = None
    calibration_images: Path | None = None
    eval_images: Path | None = None
    tokenizer: Path | None = None
    max_length: int | None = None
    image_size: tuple[int, ...] = ()
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    train_data: Path | None = None
    model_class: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    trust_pickle: bool = False
    save_torch: Path | None = None
    task: str | None = None
    pooling: str | None = None
    steps: tuple[Step, ...] = ()
    export: ExportConfig = field(default_factory=ExportConfig)
    bench: BenchmarkSettings = field(default_factory=BenchmarkSettings)
    batch_size: int | None = None
    batch_sizes: tuple[int, ...] = ()
    seq_lens: tuple[int, ...] = ()
    gates: Gates = field(default_factory=Gates)
    sources: dict[str, str] = field(default_factory=dict, compare=False)
    warnings: tuple[str, ...] = field(default=(), compare=False)
    import_dir: Path | None = field(default=None, compare=False)

    @property
    def parsed_input_shapes(self) -> list[tuple[str | None, tuple[int, ...], str]]:
        """``input_shape`` parsed: ``(name or None, shape, dtype)`` per input."""
        from compressor.inputs import parse_input_shapes

        return parse_input_shapes(list(self.input_shape))

    @property
    def calibration_source(self) -> Path | None:
        """The calibration data, whichever form it was given in (``.npz``, text file or image folder), or None."""
        return self.calibration_data or self.calibration_text or self.calibration_images

    @property
    def eval_source(self) -> Path | None:
        """The evaluation data, whichever form it was given in (``.npz``, text file or image folder), or None."""
        return self.eval_data or self.eval_text or self.eval_images

    def how_to_label(self) -> str:
        """How to give labels in the form the evaluation data came in (for messages)."""
        if self.eval_text is not None:
            return "write JSON Lines with a 'label' (integer class id) on every line"
        if self.eval_images is not None:
            return "put the images in one subfolder per class (sorted names give the class ids)"
        return "add a 'labels' array (integer class ids)"

    def to_json(self) -> dict[str, Any]:
        """The recipe as a JSON-ready dict in the layout of a recipe file (None values left out)."""
        out: dict[str, Any] = {"recipe_version": RECIPE_VERSION}
        for key in TOP_LEVEL:
            if key == "recipe_version":
                continue
            value = getattr(self, key)
            if value in (None, (), {}) or (key == "trust_pickle" and not value):
                continue
            out[key] = str(value) if isinstance(value, Path) else (list(value) if isinstance(value, tuple) else value)
        out["steps"] = [s.to_json() for s in self.steps]
        out["export"] = dataclasses.asdict(self.export)
        bench = {"batch_size": self.batch_size, "batch_sizes": list(self.batch_sizes), "seq_lens": list(self.seq_lens),
                 **self.bench.to_json()}
        out["benchmark"] = {k: v for k, v in bench.items() if v not in (None, [])}
        gates = {k: v for k, v in dataclasses.asdict(self.gates).items() if v is not None}
        if gates:
            out["gates"] = gates
        return _strip_none(out)

    def to_toml(self, relative_to: Path | None = None) -> str:
        """The recipe as TOML text; paths are written relative to ``relative_to`` (the recipe's folder)."""
        import tomli_w

        data = self.to_json()
        if relative_to is not None:
            for key in PATH_KEYS:
                if key in data and not (key == "calibration_data" and data[key] == "random"):
                    data[key] = os.path.relpath(Path(data[key]).absolute(), Path(relative_to).absolute())
        header = "# compressor recipe: run it with `compressor run FILE`; paths are relative to this file's folder\n"
        return header + tomli_w.dumps(data)

    def source(self, key: str) -> str:
        """Where the setting ``key`` (dotted, e.g. ``"steps[0].ratio"``) came from."""
        return self.sources.get(key, DEFAULT)


def _strip_none(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _strip_none(v) for k, v in x.items() if v is not None}
    if isinstance(x, list):
        return [_strip_none(v) for v in x]
    return x


@dataclass
class Layer:
    """One source of settings, in the recipe-file layout.

    Attributes:
        label: Where it came from, e.g. ``"command line"`` or ``"recipe r.toml"``.
        data: Settings (top-level keys, ``export``/``benchmark``/``gates`` tables, ``steps``; a
            project config may have one table per pass with step defaults).
        base_dir: Folder that relative paths in ``data`` are relative to (None: the working folder).
        file: The file it was read from (None for the command line).
        names: Optional dotted key -> the name to use in messages (e.g. a flag) for this layer.
        warnings: Warnings about this layer's settings (e.g. a deprecated flag).
    """

    label: str
    data: dict[str, Any]
    base_dir: Path | None = None
    file: Path | None = None
    names: dict[str, str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def name_of(self, key: str) -> str:
        """How a user would call setting ``key`` of this layer in a message."""
        if key in self.names:
            return self.names[key]
        if self.file is None:
            last = key.rsplit(".", 1)[-1]
            return FLAGS.get(last, "--" + last.replace("_", "-"))
        return f"{key} in {self.file}"


def read_toml(path: Path, what: str) -> dict[str, Any]:
    """Parse a TOML file.

    Raises:
        UsageError: Missing or unreadable file, or bad TOML (with the line).
    """
    import tomllib

    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{what} {path} not found" + ("; give a file" if path.is_dir() else ""))
    try:
        return tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"cannot parse {what} {path}: {e}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {what} {path}: {e}") from e


def recipe_layer(path: Path) -> Layer:
    """The layer of a recipe file.

    Raises:
        UsageError: The file is missing, not TOML, or of a newer recipe version.
    """
    path = Path(path)
    data = read_toml(path, "recipe")
    version = data.get("recipe_version", RECIPE_VERSION)
    if version != RECIPE_VERSION:
        raise UsageError(f"{path} is recipe_version {version}; this compressor reads version {RECIPE_VERSION}")
    if not data.get("steps"):
        raise UsageError(f"recipe {path} has no [[steps]]; add e.g. [[steps]] pass = \"quantize\" (a recipe saved by "
                         "bench holds only the model, data and benchmark settings: run it with `compressor bench`)")
    return Layer(f"recipe {path}", data, base_dir=path.parent, file=path)


def project_layer(folder: Path | None = None) -> Layer | None:
    """The project config of ``folder`` (default: the working folder), or None when there is none.

    ``compressor.toml`` wins over ``[tool.compressor]`` in ``pyproject.toml``.

    Raises:
        UsageError: The config is not valid TOML, or has ``steps`` (a recipe's job).
    """
    folder = Path(folder) if folder is not None else Path(".")
    own = folder / PROJECT_FILE
    if own.is_file():
        data, label, file = read_toml(own, "project config"), f"project config {own}", own
    else:
        py = folder / "pyproject.toml"
        if not py.is_file():
            return None
        data = read_toml(py, "pyproject.toml").get("tool", {}).get("compressor")
        if data is None:
            return None
        label, file = f"project config {py} [tool.compressor]", py
    if not isinstance(data, dict):
        raise UsageError(f"{label} must be a table of settings")
    if "steps" in data:
        raise UsageError(f"{label} has steps; a project config gives defaults (e.g. a [quantize] table), "
                         "steps go in a recipe run with `compressor run FILE`")
    return Layer(label, data, base_dir=folder, file=file)


def _pass_specs() -> dict[str, Any]:
    from compressor.passes import _registry

    return _registry()


def _type_ok(value: Any, annotation: Any) -> bool:
    """Whether a TOML value fits a config field's annotation (ints are accepted for floats)."""
    if annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is Path:
        return isinstance(value, (str, Path))
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, (list, tuple)):
            return isinstance(value, dict) and args and typing.get_origin(args[0]) is tuple  # {glob: ratio} tables
        item = args[0] if args else Any
        return all(_type_ok(v, item) for v in value)
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    if isinstance(annotation, type):
        return isinstance(value, annotation)
    return True


def _type_name(annotation: Any) -> str:
    """A type annotation in words, for messages (``float | None`` -> ``number``)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        names = [_type_name(a) for a in typing.get_args(annotation) if a is not type(None)]
        return " or ".join(dict.fromkeys(names))
    if origin is tuple:
        args = typing.get_args(annotation)
        item = args[0] if args else Any
        if typing.get_origin(item) is tuple:
            return "table of name = number"
        return f"list of {_type_name(item)}s"
    if origin is dict or annotation is dict:
        return "table"
    return {bool: "true or false", int: "whole number", float: "number", str: "string", Path: "path (string)"}.get(
        annotation, str(annotation))


def _check(key: str, value: Any, annotation: Any, layer: Layer) -> None:
    if not _type_ok(value, annotation):
        raise UsageError(f"{layer.name_of(key)} must be a {_type_name(annotation)}, got {value!r}")


def _hints(cls: type) -> dict[str, Any]:
    """Field name -> type of a config dataclass (class variables left out)."""
    import sys

    module = sys.modules[cls.__module__]
    hints = typing.get_type_hints(cls, vars(module))
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def build_recipe(layers: list[Layer]) -> Recipe:
    """Merge layers (lowest first) into one validated :class:`Recipe`.

    Top-level values and table fields: the highest layer that sets them wins. Steps: those of
    the highest layer that has ``steps``; each step's fields default to the project config's
    table of that pass, then to the pass's own defaults.

    Raises:
        UsageError: Unknown keys, values of the wrong type, an unknown pass, or a value its
            config refuses; the message names the flag or the file field the value came from.
    """
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    origin: dict[str, Layer] = {}
    tables: dict[str, dict[str, Any]] = {t: {} for t in TABLES}
    pass_defaults: dict[str, dict[str, Any]] = {}
    steps_layer: Layer | None = None
    specs = _pass_specs()
    bench_fields = {**_hints(BenchmarkSettings), **BENCH_EXTRA}
    for layer in layers:
        for key, value in layer.data.items():
            if key == "steps":
                if not isinstance(value, list) or not all(isinstance(s, dict) for s in value):
                    raise UsageError(f"{layer.name_of('steps')} must be an array of tables ([[steps]])")
                steps_layer = layer
                sources["steps"] = layer.label
            elif key in TABLES:
                if not isinstance(value, dict):
                    raise UsageError(f"{layer.name_of(key)} must be a table ([{key}])")
                hints = bench_fields if key == "benchmark" else _hints(TABLES[key])
                for k, v in value.items():
                    dotted = f"{key}.{k}"
                    if k not in hints:
                        raise UsageError(f"{layer.name_of(dotted)} is not a setting; valid [{key}] settings: "
                                         f"{', '.join(sorted(hints))}")
                    _check(dotted, v, hints[k], layer)
                    tables[key][k] = v
                    sources[dotted], origin[dotted] = layer.label, layer
            elif key in specs and layer.file is not None and "steps" not in layer.data:
                if not isinstance(value, dict):
                    raise UsageError(f"{layer.name_of(key)} must be a table ([{key}]) of {key} settings")
                pass_defaults.setdefault(key, {})
                hints = _hints(specs[key].config_cls)
                for k, v in value.items():
                    if k not in hints:
                        raise UsageError(f"{layer.name_of(f'{key}.{k}')} is not a setting of {key}; valid settings: "
                                         f"{', '.join(sorted(hints))}")
                    _check(f"{key}.{k}", v, hints[k], layer)
                    pass_defaults[key][k] = (v, layer, f"{key}.{k}")
            elif key in TOP_LEVEL:
                _check(key, value, TOP_LEVEL[key], layer)
                if key in PATH_KEYS and value is not None:
                    if key == "model":
                        _refuse_hub_id(layer, value)
                    value = _resolve(layer.base_dir, value)
                values[key] = value
                sources[key], origin[key] = layer.label, layer
            else:
                project = "steps" not in layer.data and layer.file is not None
                keys = [*TOP_LEVEL, *TABLES] + ([*specs] if project else ["steps"])
                valid = sorted({k for k in keys if not (project and k == "recipe_version")})
                raise UsageError(f"{layer.name_of(key)} is not a setting; valid keys: {', '.join(valid)}")

    notes = [w for layer in layers for w in layer.warnings]
    steps: list[Step] = []
    raw_steps = steps_layer.data["steps"] if steps_layer is not None else []
    for i, raw in enumerate(raw_steps):
        raw = dict(raw)
        name = raw.pop("pass", None)
        if name is None:
            where = steps_layer.name_of(f"steps[{i}]") if steps_layer.file else "the command"
            raise UsageError(f"{where} has no pass; add e.g. pass = \"quantize\" (valid passes: "
                             f"{', '.join(sorted(specs))})")
        if name not in specs:
            where = steps_layer.name_of(f"steps[{i}].pass") if steps_layer.file else "the command"
            raise UsageError(f"{where}: unknown pass {name!r}; valid passes: {', '.join(sorted(specs))}")
        spec = specs[name]
        if name == "prune" and "batch_size" in raw and "recover_batch_size" not in raw:
            raw["recover_batch_size"] = raw.pop("batch_size")  # the name before recipes existed
            notes.append(f"{steps_layer.name_of(f'steps[{i}].batch_size')}: batch_size of prune is deprecated "
                         "(it is the recovery batch size); write recover_batch_size")
        hints = _hints(spec.config_cls)
        fields: dict[str, Any] = {}
        field_layer: dict[str, tuple[Layer, str]] = {}
        for k, (v, layer, dotted) in pass_defaults.get(name, {}).items():
            fields[k], field_layer[k] = v, (layer, dotted)
        for k, v in raw.items():
            fields[k], field_layer[k] = v, (steps_layer, f"steps[{i}].{k}")
        if name == "export":
            fields = {**tables["export"], **fields}
        for k, v in fields.items():
            layer, dotted = field_layer.get(k, (origin.get(f"export.{k}"), f"export.{k}"))
            if k not in hints:
                raise UsageError(f"{layer.name_of(dotted)} is not a setting of {name}; valid settings: "
                                 f"{', '.join(sorted(hints))}")
            _check(dotted, v, hints[k], layer)
            sources[f"steps[{i}].{k}"] = layer.label
        try:
            config = spec.config_cls(**fields)
        except FieldError as e:
            layer, dotted = field_layer.get(e.field, (None, ""))
            if layer is not None and layer.file is not None:
                raise e.named(layer.name_of(dotted)) from None
            raise
        steps.append(Step(name, config))

    def table(name: str, cls: type) -> Any:
        try:
            return cls(**{k: v for k, v in tables[name].items() if k not in BENCH_EXTRA or name != "benchmark"})
        except FieldError as e:
            layer = origin.get(f"{name}.{e.field}")
            if layer is not None and layer.file is not None:
                raise e.named(layer.name_of(f"{name}.{e.field}")) from None
            raise

    export = table("export", ExportConfig)
    bench = table("benchmark", BenchmarkSettings)
    gates = table("gates", Gates)
    b = tables["benchmark"]
    for key in ("batch_size",):
        if b.get(key) is not None and b[key] < 1:
            raise UsageError(f"{origin[f'benchmark.{key}'].name_of(f'benchmark.{key}')} must be at least 1")
    for key in ("batch_sizes", "seq_lens"):
        if any(v < 1 for v in b.get(key, ())):
            raise UsageError(f"{origin[f'benchmark.{key}'].name_of(f'benchmark.{key}')} must be positive integers")
    _check_data_settings(values, origin, layers, sources)
    recipe = Recipe(
        model=values.get("model"),
        output=values.get("output"),
        input_shape=tuple(values.get("input_shape", ())),
        calibration_data=values.get("calibration_data"),
        eval_data=values.get("eval_data"),
        calibration_text=values.get("calibration_text"),
        eval_text=values.get("eval_text"),
        calibration_images=values.get("calibration_images"),
        eval_images=values.get("eval_images"),
        tokenizer=values.get("tokenizer"),
        max_length=values.get("max_length"),
        image_size=tuple(values.get("image_size", ())),
        mean=tuple(float(v) for v in values.get("mean", ())),
        std=tuple(float(v) for v in values.get("std", ())),
        train_data=values.get("train_data"),
        model_class=values.get("model_class"),
        model_kwargs=dict(values.get("model_kwargs") or {}),
        trust_pickle=bool(values.get("trust_pickle", False)),
        save_torch=values.get("save_torch"),
        task=values.get("task"),
        pooling=values.get("pooling"),
        steps=tuple(steps),
        export=export,
        bench=bench,
        batch_size=b.get("batch_size"),
        batch_sizes=tuple(b.get("batch_sizes", ())),
        seq_lens=tuple(b.get("seq_lens", ())),
        gates=gates,
        sources=sources,
        warnings=tuple(notes),
        import_dir=origin["model_class"].base_dir if "model_class" in origin else None,
    )
    try:
        recipe.parsed_input_shapes  # noqa: B018  (validates)
    except UsageError as e:
        layer = origin.get("input_shape")
        if layer is not None and layer.file is not None:
            raise UsageError(f"{layer.name_of('input_shape')}: {e}") from None
        raise
    return recipe


def _refuse_hub_id(layer: Layer, value: Any) -> None:
    """Refuse a model that is not on disk but reads like a hub id (``bert-base-uncased``, ``org/name``).

    compressor never downloads, so the message says so, naming the value as written.

    Raises:
        UsageError: The never-downloads message of :func:`compressor.hf.hub_id_error`.
    """
    from compressor.hf import hub_id_error, looks_like_hub_id

    if _resolve(layer.base_dir, value).exists() or Path(value).exists() or not looks_like_hub_id(str(value)):
        return
    error = hub_id_error(str(value))
    if layer.file is not None:
        raise UsageError(f"{layer.name_of('model')}: {error}")
    raise error


#: The keys that each give one kind of data, in every form it can take.
DATA_FORMS = {"calibration": ("calibration_data", "calibration_text", "calibration_images"),
              "evaluation": ("eval_data", "eval_text", "eval_images")}


def _check_data_settings(values: dict[str, Any], origin: dict[str, Layer], layers: list[Layer],
                         sources: dict[str, str]) -> None:
    """One form per kind of data, and sane text and image settings.

    A kind of data given in one form by a layer (the command line) replaces another form of it from a lower
    layer (the project config): that one is dropped from ``values`` and ``sources``.

    Raises:
        UsageError: Calibration (or evaluation) data given in two forms by one layer, naming both as written; a
            ``max_length`` under 1; an ``image_size`` that is not 1 or 2 positive sizes; an empty ``mean`` /
            ``std`` list.
    """
    def name(key: str) -> str:
        return origin[key].name_of(key)

    for kind, keys in DATA_FORMS.items():
        given = [k for k in keys if values.get(k) is not None]
        if len(given) > 1:
            rank = {k: next(i for i, layer in enumerate(layers) if layer is origin[k]) for k in given}
            for k in [k for k in given if rank[k] < max(rank.values())]:
                values.pop(k)
                sources.pop(k, None)
                given.remove(k)
        if len(given) > 1:
            raise UsageError(f"{name(given[0])} and {name(given[1])} both give {kind} data; give one of them")
    if values.get("max_length") is not None and values["max_length"] < 1:
        raise UsageError(f"{name('max_length')} must be at least 1, got {values['max_length']}")
    size = values.get("image_size")
    if size is not None and (len(size) not in (1, 2) or any(v < 1 for v in size)):
        raise UsageError(f"{name('image_size')} must be H or H,W with positive sizes (e.g. 224 or 224,224), got "
                         f"{','.join(map(str, size)) or 'nothing'}")
    for key in ("mean", "std"):
        if values.get(key) is not None and not values[key]:
            raise UsageError(f"{name(key)} needs 1 value or one per channel, e.g. 0.485,0.456,0.406")


def _resolve(base: Path | None, value: Any) -> Path:
    """A path from a file layer, relative to the file's folder (``random`` calibration stays as it is)."""
    p = Path(value)
    if base is None or p.is_absolute() or str(value) == "random":
        return p
    return Path(os.path.normpath(base / p))


def write_recipe_atomic(recipe: Recipe, path: Path) -> None:
    """Write ``recipe`` as TOML to ``path`` via a temp file and a rename."""
    from compressor.report import write_text_atomic

    write_text_atomic(recipe.to_toml(relative_to=Path(path).parent), Path(path))

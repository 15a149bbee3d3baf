"""The orchestrator every command runs: prepare -> apply steps -> measure -> report.

``load -> baseline (the input's fp32 ONNX) -> step 1 -> [export] -> step 2 -> ... -> measure every
step against the baseline in one interleaved benchmark -> verify -> publish -> Report``.

Passes take and return artifacts (:mod:`compressor.passes`); where a pass gives a PyTorch model,
the orchestrator inserts the export step, a visible step with its own report entry. It never
asks which pass it is running. Intermediate files live in a scratch folder beside the output;
the result is moved into place only after it loaded and ran in ONNX Runtime (verify, then write),
and that final publish is the only part shielded from Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from compressor.artifact import IOSpec, ModelArtifact, ModelFormat, file_size_bytes
from compressor.context import Progress, RunContext
from compressor.errors import StepFailedError, UsageError
from compressor.inputs import (
    DEFAULT_SEQ_LEN,
    SampleData,
    apply_shapes_to_spec,
    check_data_fits,
    default_token_dims,
    fixed_batch_size,
    load_npz,
    random_data,
    shape_batch_size,
    torch_io_spec,
)
from compressor.outputs import (
    check_output,
    default_output,
    is_folder_output,
    output_model_path,
    publish,
    publish_folder,
    scratch_dir,
)
from compressor.passes import ONNX, TORCH, PassSpec, config_to_json, get_pass
from compressor.recipe import Recipe

FIDELITY_MAX_SAMPLES = 512
RANDOM_SAMPLES = 64


@dataclass(frozen=True)
class Callbacks:
    """Where a run reports as it goes (the CLI renders both on stderr).

    Attributes:
        on_warning: Called with each warning.
        on_progress: Called with :class:`~compressor.context.Progress` events of long steps.
        on_publish: Called once, just before the outputs are put in place (the only shielded part).
    """

    on_warning: Callable[[str], None] | None = None
    on_progress: Callable[[Progress], None] | None = None
    on_publish: Callable[[], None] | None = None


def _shield(callbacks: Callbacks) -> None:
    """Tell the caller that the output is about to be put in place.

    The CLI stops taking Ctrl-C/SIGTERM there, so a run whose output exists finishes its report and
    exits with its normal code.
    """
    if callbacks.on_publish is not None:
        callbacks.on_publish()


@dataclass(frozen=True)
class PlannedStep:
    """One step the orchestrator will run.

    Attributes:
        spec: The registered pass.
        config: Its config.
        index: Position in the recipe's ``steps`` (None for a step the pipeline inserted).
        of: What it works on, for the report (e.g. ``"original model"``, ``"result of steps[0] (prune)"``).
    """

    spec: PassSpec
    config: Any
    index: int | None
    of: str

    @property
    def inserted(self) -> bool:
        """True for an export step the pipeline added where the model's form changes."""
        return self.index is None

    def describe(self) -> str:
        """One line for ``--dry-run``."""
        name = f"steps[{self.index}] {self.spec.name}" if self.index is not None else f"{self.spec.name} (inserted)"
        return f"{name} of the {self.of}"


def input_form(path: Path) -> str:
    """``"onnx"`` or ``"torch"`` from the model file's content (cheap: no model is loaded).

    Raises:
        UsageError: Missing or unreadable file; UnknownFormatError: not a model.
    """
    from compressor.loaders import detect_format

    return ONNX if detect_format(path) is ModelFormat.ONNX else TORCH


def plan(recipe: Recipe, form: str) -> list[PlannedStep]:
    """The steps to run for an input of form ``form``.

    The baseline export, the recipe's steps, and an export after each step that leaves a PyTorch
    model (to measure it, and to reach ONNX at the end).

    Raises:
        UsageError: No steps, or a step that needs a PyTorch model where only ONNX exists.
    """
    if not recipe.steps:
        raise UsageError(f"the recipe has no steps ({recipe.source('steps')}); add e.g. [[steps]] pass = \"quantize\"")
    export = get_pass("export")
    out: list[PlannedStep] = []
    if form == TORCH:
        out.append(PlannedStep(export, recipe.export, None, "original model"))
    has_torch = form == TORCH
    for i, step in enumerate(recipe.steps):
        spec = get_pass(step.pass_name)
        if TORCH not in spec.accepts or not has_torch:
            if ONNX not in spec.accepts:
                raise UsageError(f"steps[{i}] ({spec.name}) needs a PyTorch model, but the model is ONNX at that step; "
                                 "put it before the steps that give ONNX, or start from a PyTorch model")
            has_torch = False
        what = "original model" if i == 0 else f"result of steps[{i - 1}] ({recipe.steps[i - 1].pass_name})"
        out.append(PlannedStep(spec, step.config, i, what))
        if spec.output_form == ONNX:
            has_torch = False  # an export step's result is ONNX: later steps take that
        elif has_torch:  # a PyTorch result: export it to measure it and to go on in ONNX where needed
            out.append(PlannedStep(export, recipe.export, None, f"result of steps[{i}] ({spec.name})"))
    return out


def check_steps(steps: list[PlannedStep], artifact: ModelArtifact, ctx: RunContext) -> None:
    """Run every step's up-front check (data it needs, forms it can take) before any work.

    Raises:
        UsageError: The first step whose settings this run cannot satisfy, named ``steps[i] (pass)``.
    """
    form = TORCH if artifact.format.is_torch else ONNX
    classes = artifact.format.has_python_classes
    several = len([p for p in steps if not p.inserted]) > 1
    for i, planned in enumerate(p for p in steps if not p.inserted):
        check = planned.spec.load_check()
        if check is not None:
            try:
                check(planned.config, ctx, form=form, has_python_classes=classes, artifact=artifact if i == 0 else None)
            except UsageError as e:
                if several:
                    raise type(e)(f"steps[{planned.index}] ({planned.spec.name}): {e}") from None
                raise
        if planned.spec.output_form == ONNX or TORCH not in planned.spec.accepts or form == ONNX:
            form, classes = ONNX, False  # from here on the model exists only as ONNX


def dry_run(recipe: Recipe, *, command: str, callbacks: Callbacks = Callbacks()) -> dict[str, Any]:
    """Validate a recipe as far as it can be without running a step, and describe the plan.

    Loads the model and the data, resolves the inputs, checks that the data fits, runs each
    step's up-front check and the gates' requirements. Writes nothing.

    Returns:
        A report with ``dry_run``, ``model``, ``plan`` (the steps, inserted exports included),
        ``recipe``, ``sources`` and ``warnings``.

    Raises:
        UsageError: Anything the real run would refuse before its first step.
    """
    from compressor.report import new_report

    recipe.gates.check_usable(has_eval_data=recipe.eval_source is not None, compares=bool(recipe.steps))
    artifact = _load(recipe)
    steps = plan(recipe, TORCH if artifact.format.is_torch else ONNX) if recipe.steps else []
    with scratch_dir(None) as work:
        ctx = make_context(artifact, recipe, work, callbacks)
        check_steps(steps, artifact, ctx)
        check_input_runs(artifact, ctx)
        check_labels_fit(artifact, ctx)
    report = new_report(command)
    report.update(dry_run=True, model={"path": str(recipe.model), "format": artifact.format.value,
                                       "inputs": [s.to_json() for s in ctx.io.inputs],
                                       "source": recipe.source("model")},
                  plan=[{"pass": p.spec.name, "step": p.index, "inserted": p.inserted, "of": p.of} for p in steps],
                  recipe=recipe.to_json(), sources=dict(recipe.sources), warnings=ctx.warnings)
    return report


def resolve_io(artifact: ModelArtifact, recipe: Recipe, data: SampleData | None) -> IOSpec:
    """Input spec from the file, ``input_shape`` or the data (in that order).

    Raises:
        UsageError: No source gives the inputs, or the given shapes contradict the file.
    """
    if artifact.io is not None:
        return apply_shapes_to_spec(artifact.io, recipe.parsed_input_shapes)
    return torch_io_spec(artifact.loaded, recipe.parsed_input_shapes, data)


def prepare_data(io: IOSpec, recipe: Recipe, calib: SampleData | None, evald: SampleData | None, *,
                 artifact: ModelArtifact | None = None, notes: dict[str, Any] | None = None) -> SampleData:
    """The inputs that checks and fidelity run on: eval inputs, else calibration data, else seeded random.

    Held-out data first: static quantization sets its ranges from the calibration data (and recovery
    trains on it), so fidelity measured there is optimistic. Generated inputs take the shapes of
    ``input_shape``, else the graph's, with :data:`~compressor.inputs.DEFAULT_SEQ_LEN` for a token sequence
    axis no one fixes; integer inputs that index a tensor stay within the indexed axis
    (:mod:`compressor.index_ranges`).

    Args:
        io: The resolved input spec.
        recipe: The run's recipe (``input_shape``).
        calib: Calibration data, or None.
        evald: Evaluation data, or None.
        artifact: The loaded model, to read the ranges of integer inputs from (generated inputs only).
        notes: Filled with ``default_seq_len`` and ``generated_int_ranges`` when those were used.

    Raises:
        UsageError: Data that does not fit; or, without data, an integer input that indexes an axis whose
            size the model does not fix (no safe random values: real data is needed).
    """
    for d in (evald, calib):
        if d is not None:
            d = check_data_fits(io, d)
            n = min(d.num_samples, FIDELITY_MAX_SAMPLES)
            return SampleData({k: v[:n] for k, v in d.arrays.items()}, None if d.labels is None else d.labels[:n],
                              d.source, d.casts)
    dims: dict[str, tuple[int, ...]] = {}
    known_axes: dict[str, int] = {}
    shapes = recipe.parsed_input_shapes
    if shapes:
        named = apply_shapes_to_spec(io, shapes) if io.inputs else io
        given = {n for n, _, _ in shapes} if all(n is not None for n, _, _ in shapes) else set(io.input_names)
        source = artifact.io if artifact is not None and artifact.io is not None else io  # axis names before shapes
        originals = {t.name: t for t in source.inputs}
        for spec in named.inputs:
            orig = originals.get(spec.name, spec)
            if spec.name not in given:
                continue  # not in --input-shape: an axis named like a given one takes its size below
            dims[spec.name] = spec.concrete_shape(batch_size=1)[1:]
            known_axes.update({d: size for d, size in zip(orig.shape[1:], dims[spec.name], strict=True)
                               if isinstance(d, str)})
    defaults, used_default = default_token_dims(io, dims, known_axes=known_axes)
    seq_len = DEFAULT_SEQ_LEN
    longest = artifact.details.get("max_sequence_length") if artifact is not None else None
    if used_default and longest and longest < DEFAULT_SEQ_LEN:  # e.g. a model with 64 position embeddings
        seq_len = int(longest)
        defaults = {k: tuple(seq_len if d == DEFAULT_SEQ_LEN else d for d in v) for k, v in defaults.items()}
    dims.update(defaults)
    if used_default and notes is not None:
        notes["default_seq_len"] = seq_len
    high = _int_input_ranges(artifact, io, dims, notes) if artifact is not None else None
    return random_data(io, num_samples=RANDOM_SAMPLES, dims=dims or None, int_high=high)


def _int_input_ranges(artifact: ModelArtifact, io: IOSpec, dims: dict[str, tuple[int, ...]] | None,
                      notes: dict[str, Any] | None) -> dict[str, int]:
    """Exclusive upper bounds of generated integer inputs, from what they index in the model.

    Raises:
        UsageError: An integer input indexes an axis whose size the model does not fix.
    """
    from compressor.artifact import TensorSpec
    from compressor.index_ranges import onnx_index_ranges, torch_index_high

    ints = [s for s in io.inputs if s.dtype.startswith(("int", "uint")) and "mask" not in s.name.lower()]
    if not ints:
        return {}
    ranges = {}
    known = artifact.details.get("index_high") or {}
    if artifact.format.is_torch and known:  # the loader knows what each input indexes (Hugging Face folders)
        from compressor.index_ranges import IndexRange

        ranges = {s.name: IndexRange(int(known[s.name]), f"the model's config ({s.name} < {known[s.name]})")
                  for s in ints if s.name in known}
    elif artifact.format.is_torch:
        r = torch_index_high(artifact.loaded)
        if r is not None:
            ranges = {s.name: r for s in ints}
    elif artifact.loaded is not None:
        sized = IOSpec(tuple(TensorSpec(s.name, s.dtype, (s.shape[0], *(dims or {}).get(s.name, s.shape[1:])))
                             for s in io.inputs), io.outputs)
        ranges = {k: v for k, v in onnx_index_ranges(artifact.loaded, sized).items()
                  if k in {s.name for s in ints}}
    for name, r in ranges.items():
        if r.high is None:
            raise UsageError(f"input '{name}' indexes a tensor in {r.where}, so random values could fall outside "
                             f"it; pass --calibration-data FILE.npz with real '{name}' values")
    high = {name: r.high for name, r in ranges.items() if r.high is not None}
    if notes is not None and high:
        notes["generated_int_ranges"] = {name: {"low": 0, "high": min(100, h), "bound_by": ranges[name].where}
                                         for name, h in high.items()}
    return high


def make_context(artifact: ModelArtifact, recipe: Recipe, workdir: Path, callbacks: Callbacks) -> RunContext:
    """Resolve inputs and data and build the :class:`RunContext` of a run.

    ``calibration_data = "random"`` (no such file) is an explicit opt-in to seeded random
    calibration inputs, with a warning. Data arrays are cast to the inputs' dtypes (float64 to float32,
    the same for every format) and each cast is noted in ``ctx.input_notes`` with a warning; evaluation
    labels are checked against the model's classes before any work.

    Raises:
        UsageError: Data files that are missing, malformed, or do not fit the model's inputs; labels that
            are not class ids of the model's output; ``--max-accuracy-drop`` with unlabelled eval data.
    """
    cal = recipe.calibration_data
    random_calib = cal is not None and str(cal) == "random" and not Path("random").exists()
    data_notes: dict[str, Any] = {}
    tokenizers: dict[Path, Any] = {}
    calib = load_npz(cal) if cal and not random_calib else _load_text_or_images(recipe, artifact, "calibration",
                                                                                   data_notes, tokenizers)
    evald = load_npz(recipe.eval_data) if recipe.eval_data else _load_text_or_images(recipe, artifact, "evaluation",
                                                                                      data_notes, tokenizers)
    if evald is not None and evald.labels is None and recipe.gates.max_accuracy_drop is not None:
        raise UsageError(f"--max-accuracy-drop needs labels, and {recipe.eval_source} has none; "
                         f"{recipe.how_to_label()} or drop the gate")
    io = resolve_io(artifact, recipe, calib or evald)
    if artifact.io is None and "text_data" in data_notes and not recipe.input_shape:
        io = _dynamic_sequence(io)
    _check_fixed_batch(io, recipe)
    notes: dict[str, Any] = dict(data_notes)
    data = prepare_data(io, recipe, calib, evald, artifact=artifact, notes=notes)
    ctx = RunContext(io=io, data=data, workdir=workdir, on_warning=callbacks.on_warning,
                     on_progress=callbacks.on_progress, input_notes=notes, budget=recipe.gates,
                     bench_batch_size=recipe.batch_size or shape_batch_size(recipe.parsed_input_shapes) or 1)
    for w in recipe.warnings:
        ctx.warn(w)
    for w in artifact.details.get("warnings", []):
        ctx.warn(w)
    fixed = fixed_batch_size(io)
    if fixed is not None and artifact.format is ModelFormat.EXPORTED_PROGRAM:
        ctx.warn(f"the program fixes its batch axis at {fixed} (torch.export without dynamic_shapes): every check and "
                 f"the benchmark run at batch {fixed}, and the ONNX output keeps that fixed batch")
    if "default_seq_len" in notes:
        seq_len = notes["default_seq_len"]
        filled = [s.name for s in io.inputs if len(s.shape) > 1 and not isinstance(s.shape[1], int)
                  and data.arrays[s.name].shape[1] == seq_len]
        longest = "" if seq_len == DEFAULT_SEQ_LEN else f" (the model's longest, under the default {DEFAULT_SEQ_LEN})"
        ctx.warn(f"no data or --input-shape gives the sequence length of {', '.join(filled)}: generated inputs use "
                 f"the default sequence length {seq_len}{longest}; set it with --input-shape "
                 f"{filled[0]}:1x{seq_len}:{next(s.dtype for s in io.inputs if s.name == filled[0])} "
                 "or give --calibration-data")
    if evald is not None:
        ctx.eval_data = check_data_fits(io, evald)
        if evald.labels is None and recipe.eval_data is not None:  # text / images: measure() warns for classifiers
            ctx.warn(f"{recipe.eval_source} has no labels: fidelity runs on its inputs, accuracy is not measured "
                     f"({recipe.how_to_label()} to measure it)")
    for kind, entry in data_notes.get("text_data", {}).items():
        if entry["truncated"]:
            ctx.warn(f"{entry['truncated']} of {entry['examples']} {kind} examples in {entry['path']} are longer than "
                     f"{entry['seq_len'] if entry['seq_len'] < entry['max_length'] else entry['max_length']} tokens "
                     "and were cut (--max-length, or the model's fixed sequence length)")
    _warn_unused_data_settings(ctx, recipe)
    if recipe.train_data is not None:
        ctx.train_data = check_data_fits(io, load_npz(recipe.train_data, want_labels=True))
    if calib is not None:
        ctx.calibration = check_data_fits(io, calib)
    elif random_calib:
        dims = {k: v.shape[1:] for k, v in data.arrays.items()}
        high = {k: v["high"] for k, v in notes.get("generated_int_ranges", {}).items()}
        if data.source != "random" and artifact is not None:  # real data gave the shapes: ranges from the model
            high = _int_input_ranges(artifact, io, dims, None)
        ctx.calibration = random_data(io, num_samples=RANDOM_SAMPLES, seed=1, dims=dims, int_high=high)
        ctx.warn("--calibration-data random: activation ranges come from random inputs, not real data; "
                 "expect worse accuracy than with real samples")
    _note_casts(ctx, [d for d in (ctx.eval_data, ctx.calibration, ctx.train_data) if d is not None])
    return ctx


def _load_text_or_images(recipe: Recipe, artifact: ModelArtifact, kind: str, notes: dict[str, Any],
                         tokenizers: dict[Path, Any]) -> SampleData | None:
    """Calibration or evaluation data given as a text file or an image folder, as the model's input arrays.

    Text is tokenized with the model folder's tokenizer (a Hugging Face folder) or ``tokenizer``; images are
    preprocessed with the folder's image processor, or resized and normalised (``image_size``, ``mean``,
    ``std``). What was done goes to ``notes["text_data"][kind]`` / ``notes["image_data"][kind]`` (the report's
    ``input``).

    Args:
        recipe: The run's recipe.
        artifact: The loaded model (its input spec, or the PyTorch module's ``forward``).
        kind: ``"calibration"`` or ``"evaluation"``.
        notes: Filled as above.
        tokenizers: Tokenizers already loaded, by folder (calibration and evaluation text share one).

    Returns:
        The data, or None when the recipe gives this kind of data in neither form.

    Raises:
        UsageError: No tokenizer for text data; bad files (see :mod:`compressor.text_data`,
            :mod:`compressor.image_data`).
    """
    text = recipe.calibration_text if kind == "calibration" else recipe.eval_text
    images = recipe.calibration_images if kind == "calibration" else recipe.eval_images
    if text is None and images is None:
        return None
    from compressor import hf

    shapes = recipe.parsed_input_shapes
    module = artifact.loaded if artifact.format.is_torch else None
    if artifact.io is not None:
        io = apply_shapes_to_spec(artifact.io, shapes)
    else:
        io = torch_io_spec(module, shapes, None) if shapes else None
    folder = hf.model_folder(recipe.model) if recipe.model is not None else None
    flag = "--calibration-text" if kind == "calibration" else "--eval-text"
    if text is not None:
        from compressor.text_data import DEFAULT_MAX_LENGTH, text_sample_data

        if recipe.tokenizer is not None:
            if not Path(recipe.tokenizer).is_dir():
                raise UsageError(f"--tokenizer {recipe.tokenizer} is not a folder; give the folder holding the "
                                 "tokenizer files (tokenizer.json or vocab.txt)")
            source = recipe.tokenizer
        elif folder is not None:
            source = folder
        else:
            raise UsageError(f"{flag} needs a tokenizer: {recipe.model} is not a Hugging Face folder, so pass "
                             "--tokenizer DIR (a folder with tokenizer.json or vocab.txt, e.g. written by "
                             "tokenizer.save_pretrained)")
        if source not in tokenizers:
            tokenizers[source] = hf.load_tokenizer(Path(source))
        config = hf.read_config(folder) if folder is not None else None
        label2id = (config or {}).get("label2id")
        label2id = {str(k): v for k, v in label2id.items() if isinstance(v, int)} if isinstance(label2id, dict) \
            else None
        max_length = recipe.max_length or DEFAULT_MAX_LENGTH
        longest = artifact.details.get("max_sequence_length") if artifact is not None else None
        if isinstance(longest, int) and max_length > longest:
            if recipe.max_length:
                raise UsageError(f"--max-length {recipe.max_length} is longer than the model accepts (its config's "
                                 f"max_position_embeddings is {longest}); use --max-length {longest} or less")
            max_length = longest  # the default 128 is cut to the model's limit, as generated inputs are
        data, entry = text_sample_data(Path(text), tokenizers[source], io=io, module=module,
                                       max_length=max_length, label2id=label2id)
        entry["tokenizer"] = str(source)
        notes.setdefault("text_data", {})[kind] = entry
        return data
    from compressor.image_data import image_sample_data

    processor = hf.load_image_processor(folder) if folder is not None else None
    data, entry = image_sample_data(Path(images), io=io, module=module, processor=processor,
                                    image_size=recipe.image_size or None, mean=recipe.mean or None,
                                    std=recipe.std or None)
    notes.setdefault("image_data", {})[kind] = entry
    return data


def _dynamic_sequence(io: IOSpec) -> IOSpec:
    """A PyTorch model's spec read from text data, with a dynamic ``sequence`` axis 1 on its token inputs.

    Text files are padded to their own longest example, so calibration and evaluation text differ in length;
    the export gives integer ``[batch, sequence]`` inputs a dynamic sequence axis anyway.
    """
    from compressor.artifact import TensorSpec

    return IOSpec(tuple(TensorSpec(s.name, s.dtype, (s.shape[0], "sequence")) if len(s.shape) == 2 and
                        not s.dtype.startswith(("float", "bool")) else s for s in io.inputs), io.outputs)


def _warn_unused_data_settings(ctx: RunContext, recipe: Recipe) -> None:
    """One warning for text or image settings that no data of the run uses."""
    texts = recipe.calibration_text is not None or recipe.eval_text is not None
    images = recipe.calibration_images is not None or recipe.eval_images is not None
    unused = [f"--{k.replace('_', '-')}" for k, v in (("tokenizer", recipe.tokenizer),
                                                                         ("max_length", recipe.max_length))
              if v is not None and not texts]
    unused += [f"--{k.replace('_', '-')}" for k, v in (("image_size", recipe.image_size), ("mean", recipe.mean),
                                                       ("std", recipe.std)) if v and not images]
    if unused:
        ctx.warn(f"{', '.join(unused)} {'is' if len(unused) == 1 else 'are'} unused: "
                 "these settings apply to --calibration-text/--eval-text (tokenizer, max length) and "
                 "--calibration-images/--eval-images (image size, mean, std)")


def _check_fixed_batch(io: IOSpec, recipe: Recipe) -> None:
    """Refuse, before any work, benchmark batch sizes that a model with a fixed batch axis cannot run (case R10).

    Raises:
        UsageError: ``batch_size`` or ``batch_sizes`` asks for another size than the model's fixed batch.
    """
    fixed = fixed_batch_size(io)
    if fixed is None:
        return
    asked = sorted({b for b in [recipe.batch_size, *(recipe.batch_sizes or [])] if b is not None and b != fixed})
    if asked:
        raise UsageError(f"the model fixes its batch axis at {fixed} (exported without a dynamic batch), so it cannot "
                         f"run at batch {', '.join(map(str, asked))}; drop --batch-size/--batch-sizes or re-export "
                         "with a dynamic batch axis")


def _note_casts(ctx: RunContext, datasets: list[SampleData]) -> None:
    """One warning per data file whose arrays were cast to the model's input dtypes, and the report note."""
    casts = []
    for d in datasets:
        if not d.casts or d.source == "random":
            continue
        casts += [{"data": d.source, "input": n, "from": a, "to": b} for n, a, b in d.casts]
        what = ", ".join(f"'{n}' {a} -> {b}" for n, a, b in d.casts)
        ctx.warn(f"{d.source}: cast {what} to fit the model's inputs (the same for every model format)")
    if casts:
        ctx.input_notes["data_casts"] = casts


def check_labels_fit(artifact: ModelArtifact, ctx: RunContext) -> None:
    """Before any work: evaluation labels must be class ids of the model's first output.

    The model is run on one evaluation sample (ONNX Runtime for ONNX, PyTorch otherwise) to learn its first
    output's shape; accuracy needs ``[samples, classes]`` float logits and labels below ``classes``.

    Raises:
        UsageError: The model is not a classifier, or a label has no class in its output.
    """
    import numpy as np

    from compressor.inputs import check_labels

    ev = ctx.eval_data
    if ev is None or ev.labels is None:
        return
    feeds = ev.batch(0, 1)
    if artifact.format.is_torch:
        from compressor.export import torch_forward

        first = torch_forward(artifact.loaded, feeds, ctx.io)[0]
    else:
        from compressor.runtime import make_session

        first = make_session(artifact.path).run(None, feeds)[0]
    first = np.asarray(first)
    from compressor.fidelity import EMBEDDING_OUTPUTS

    name = ctx.io.outputs[0].name if ctx.io.outputs else None
    if name in EMBEDDING_OUTPUTS:
        raise UsageError(f"labels in {ev.source} need a classifier, but the model's first output is '{name}', an "
                         "embedding; drop the labels to measure fidelity only")
    if first.ndim != 2 or first.shape[1] < 2 or first.dtype.kind != "f":
        raise UsageError(f"labels in {ev.source} need a classifier ([samples, classes] float output), but the model's "
                         f"first output is {first.dtype.name} {list(first.shape)}; drop 'labels' to measure fidelity "
                         "only")
    check_labels(ev.labels, samples=ev.num_samples, source=ev.source, classes=int(first.shape[1]))


def _load(recipe: Recipe) -> ModelArtifact:
    from compressor.loaders import LoadOptions, load_model

    if recipe.model is None:
        raise UsageError("no model given: pass MODEL, or set model = \"...\" in compressor.toml or the recipe")
    if recipe.import_dir is not None and recipe.model_class:
        import sys

        folder = str(Path(recipe.import_dir).resolve())
        added = folder not in sys.path
        if added:
            sys.path.insert(0, folder)
        try:
            return _load(dataclasses.replace(recipe, import_dir=None))
        finally:
            if added:
                sys.path.remove(folder)
    artifact = load_model(recipe.model, LoadOptions(trust_pickle=recipe.trust_pickle, model_class=recipe.model_class,
                                                    model_kwargs=dict(recipe.model_kwargs), task=recipe.task,
                                                    pooling=recipe.pooling))
    for key, flag in (("task", "--task"), ("pooling", "--pooling")):
        if getattr(recipe, key) is not None and artifact.format is not ModelFormat.HF_FOLDER:  # no silent no-op
            where = flag if recipe.source(key) in ("command line", "default") else f"{key} in {recipe.source(key)}"
            raise UsageError(f"{where} applies to Hugging Face model folders, and {recipe.model} is "
                             f"{artifact.format.value}; drop it")
    return artifact


def _input_entry(recipe: Recipe, artifact: ModelArtifact, ctx: RunContext) -> dict[str, Any]:
    entry = {"path": str(recipe.model), "format": artifact.format.value, "size_bytes": file_size_bytes(recipe.model),
             "inputs": [s.to_json() for s in ctx.io.inputs], "source": recipe.source("model"), **ctx.input_notes}
    if "checkpoint" in artifact.details:  # case R15: where the weights were found, prefixes removed
        entry["checkpoint"] = artifact.details["checkpoint"]
    if "hf" in artifact.details:  # a Hugging Face folder: the head, pooling and attention it was exported with
        entry["hf"] = artifact.details["hf"]
    return entry


def _step_dir(work: Path, n: int, name: str) -> Path:
    d = work / f"{n:02d}-{name}"
    d.mkdir()
    return d


def _run_step(planned: PlannedStep, artifact: ModelArtifact, ctx: RunContext, work: Path, n: int) -> Any:
    """Run one planned step in its own scratch sub-folder (its files never clash with another step's).

    The result's details get the step's peak resident memory (``peak_rss_bytes``, ``peak_rss_scope``).
    """
    from compressor.memory import PeakRss

    step_ctx = dataclasses.replace(ctx, workdir=_step_dir(work, n, planned.spec.name))  # shares warnings
    step_ctx.progress(planned.describe(), 0, None)
    with PeakRss() as peak:
        result = planned.spec.load_runner()(artifact, planned.config, step_ctx)
    step_ctx.progress(planned.describe(), 1, 1)
    result.details.update(peak.to_json())
    return result


def settings_block(recipe: Recipe) -> dict[str, Any]:
    """The report's ``settings``: the last step's pass and config (as in 1.0), plus ``chain``: every step's."""
    last = recipe.steps[-1].to_json()
    if last["pass"] == "prune":
        last["batch_size"] = last["recover_batch_size"]  # the 1.0 name of the field, kept for scripts
    return {**last, "chain": [s.to_json() for s in recipe.steps]}


def check_input_runs(artifact: ModelArtifact, ctx: RunContext) -> None:
    """An ONNX input must load and run in ONNX Runtime on the run's inputs before any pass touches it.

    (PyTorch inputs are checked by the export's parity check.)

    Raises:
        SessionError: The input model itself does not load or run, named as the input's fault.
        UsageError: It does not run on generated inputs that include integers (ids, indices) and no data was
            given: real data is asked for.
    """
    from compressor.errors import SessionError
    from compressor.runtime import make_session

    if artifact.format.is_torch:
        return
    try:
        sess = make_session(artifact.path)
        sess.run(None, ctx.data.batch(0, ctx.batch_size(min(2, ctx.data.num_samples))))
    except Exception as e:
        msg = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
        if ctx.data.source == "random" and any(v.dtype.kind in "iu" for v in ctx.data.arrays.values()):
            shapes = ", ".join(f"{k} {v.dtype.name}{list(v.shape[1:])}" for k, v in ctx.data.arrays.items())
            raise UsageError(f"the input model {artifact.path} does not run on generated inputs ({shapes}; {msg}); "
                             "pass --calibration-data FILE.npz with real samples (or --input-shape)") from e
        raise SessionError(f"the input model {artifact.path} does not run in ONNX Runtime ({msg}); no pass can "
                           "work on it: check that it runs with onnxruntime on its own") from e


@dataclass
class AppliedSteps:
    """What :func:`apply_steps` produced.

    Attributes:
        baseline_onnx: The baseline's ONNX file (the input itself, or its fp32 export).
        candidates: One per recipe step, in order: ``{"onnx": Path of its ONNX model (None while PyTorch),
            "entry": {}, "compare": {}, "step": its report entry, "spec": PassSpec, "details": dict}``.
        sections: Report sections of the passes (``pruning``, ``quantization``), the last of each.
        torch_model: The last PyTorch model (None once a step gave ONNX only).
    """

    baseline_onnx: Path | None
    candidates: list[dict[str, Any]]
    sections: dict[str, Any]
    torch_model: ModelArtifact | None


def apply_steps(steps: list[PlannedStep], artifact: ModelArtifact, ctx: RunContext, work: Path,
                entries: list[dict[str, Any]], *, baseline: ModelArtifact | None = None,
                cache: dict[Any, Any] | None = None) -> AppliedSteps:
    """Run the planned steps in order, each in its own scratch sub-folder of ``work``.

    Each step takes the PyTorch model where it accepts one and one exists, else the ONNX model; an
    inserted export after a step gives that step's ONNX form (it measures the step).

    Args:
        steps: From :func:`plan`.
        artifact: The loaded input model.
        ctx: The run's context.
        work: Scratch folder (step folders ``NN-name`` are made in it).
        entries: The report's ``steps`` list, appended to as steps finish (a failure's report shows those
            that ran).
        baseline: The fp32 ONNX export of a PyTorch input, already made (a sweep makes it once for every
            candidate): the plan's leading baseline export is skipped and this is used.
        cache: Results of earlier runs of the same input (a sweep passes one dict to every candidate): a step
            whose settings and those of every step before it match an earlier run's reuses that run's result
            (passes never change their input, so the result files stay valid while the scratch folder lives).

    Returns:
        An :class:`AppliedSteps`.

    Raises:
        CompressorError: The first step that fails.
    """
    baseline_onnx = artifact.path if not artifact.format.is_torch else None
    torch_model = artifact if artifact.format.is_torch else None
    onnx_model = artifact if not artifact.format.is_torch else None
    if baseline is not None and artifact.format.is_torch and steps and steps[0].inserted:
        baseline_onnx, onnx_model = baseline.path, baseline
    candidates: list[dict[str, Any]] = []
    sections: dict[str, Any] = {}
    for n, planned in enumerate(steps):
        if n == 0 and planned.inserted and baseline_onnx is not None:
            continue  # the baseline export exists already
        src = torch_model if TORCH in planned.spec.accepts and torch_model is not None else onnx_model
        key = tuple((p.spec.name, repr(sorted(config_to_json(p.config).items()))) for p in steps[:n + 1]) \
            if cache is not None else None
        if cache is not None and key in cache:
            result = cache[key]
            ctx.progress(f"{planned.describe()}: the same as an earlier candidate's, reused", 1, 1)
        else:
            result = _run_step(planned, src, ctx, work, n)
            if cache is not None:
                cache[key] = result
        entry = {"name": planned.spec.name, "step": planned.index, "inserted": planned.inserted,
                 "of": planned.of, **result.details, "settings": config_to_json(planned.config)}
        entries.append(entry)
        if planned.spec.report_key:
            sections[planned.spec.report_key] = result.details
        new = result.artifact
        if new.format.is_torch:
            torch_model = new
        else:
            onnx_model = new
            if not planned.inserted:  # a recipe step gave ONNX: from here on the model exists only as ONNX
                torch_model = None
        if planned.inserted and baseline_onnx is None:
            baseline_onnx = new.path
            entry["role"] = "baseline"
            continue
        if planned.inserted:  # the export of the previous step's PyTorch result: it measures that step
            candidates[-1]["onnx"] = new.path
            continue
        candidates.append({"onnx": new.path if not new.format.is_torch else None, "entry": {}, "compare": {},
                           "step": entry, "spec": planned.spec, "details": result.details})
    return AppliedSteps(baseline_onnx, candidates, sections, torch_model)


def build_candidate(recipe: Recipe, out: Path, *, baseline: Path | None = None, callbacks: Callbacks = Callbacks(),
                    work_root: Path | None = None, cache: dict[Any, Any] | None = None) -> dict[str, Any]:
    """Run a recipe's steps through the orchestrator and publish the result at ``out``; no benchmark.

    The search (``compressor auto``) builds each candidate with this, possibly in another process or on another
    machine, and measures it against its one baseline itself. The result is loaded, run in ONNX Runtime on the
    run's inputs and checked with the full ONNX checker before it appears at ``out``.

    Args:
        recipe: Model, data and steps (benchmark, gates and output settings are ignored).
        out: Where the candidate's ONNX file goes (its folder must exist).
        baseline: The fp32 ONNX export of a PyTorch input, made once by the caller: the plan's baseline export is
            skipped, and steps that need ONNX start from it (see :func:`apply_steps`).
        callbacks: Warning and progress callbacks.
        work_root: Folder that outlives this call (the caller's scratch folder); the steps' files go in a new
            sub-folder of it, so that ``cache`` entries stay valid for later candidates. None: a scratch
            folder beside ``out``, removed at the end.
        cache: Step results shared by candidates built in this process (see :func:`apply_steps`); needs
            ``work_root``.

    Returns:
        ``{"steps": [...step report entries...], "sections": {...}, "warnings": [...], "output": str(out)}``.

    Raises:
        CompressorError: A step failed or the result does not run.
    """
    import shutil

    import onnx

    from compressor.artifact import onnx_external_locations
    from compressor.errors import SessionError, stop_requested
    from compressor.runtime import make_session

    artifact = _load(recipe)
    steps = plan(recipe, TORCH if artifact.format.is_torch else ONNX)
    if cache is not None and work_root is None:
        raise ValueError("build_candidate: a cache needs a work_root that outlives the call")
    folder = (contextlib.nullcontext(Path(tempfile.mkdtemp(prefix="candidate-", dir=work_root)))
              if work_root is not None else scratch_dir(out))
    with folder as work:
        ctx = make_context(artifact, recipe, work, callbacks)
        base = ModelArtifact(Path(baseline), ModelFormat.ONNX, io=ctx.io) if baseline is not None else None
        check_steps(steps, artifact, ctx)
        entries: list[dict[str, Any]] = []
        applied = apply_steps(steps, artifact, ctx, work, entries, baseline=base, cache=cache)
        final = Path(applied.candidates[-1]["onnx"])
        try:
            onnx.checker.check_model(str(final), full_check=True)
            make_session(final).run(None, ctx.data.batch(0, ctx.batch_size(min(2, ctx.data.num_samples))))
        except Exception as e:
            stop = stop_requested()
            if stop is not None:
                raise stop from e
            raise SessionError(f"the candidate built by {len(recipe.steps)} step(s) does not pass the ONNX checker "
                               f"or does not run in ONNX Runtime ({str(e).strip().splitlines()[0][:200]})") from e
        if cache is not None:  # a later candidate may reuse this file: publish a copy
            copy = work / f"published-{final.name}"
            shutil.copyfile(final, copy)
            for data in onnx_external_locations(final):
                shutil.copyfile(final.parent / data, copy.parent / data)
            final = copy
        publish(final, out)
    return {"steps": entries, "sections": applied.sections, "warnings": list(ctx.warnings), "output": str(out)}


def run_recipe(recipe: Recipe, *, command: str, default_suffix: str = "compressed",
               callbacks: Callbacks = Callbacks()) -> dict[str, Any]:
    """Run a recipe end to end and publish its output model.

    Args:
        recipe: Model, data, steps, benchmark and gate settings.
        command: The command line, stored in the report.
        default_suffix: Output name when the recipe has none: ``<input stem>.<suffix>.onnx`` beside the input.
        callbacks: Warning and progress callbacks.

    Returns:
        The report dict (see :mod:`compressor.report`): ``baseline`` (the input's fp32 ONNX),
        ``result`` (the last step), ``steps`` (every step run, each measured one with its own
        figures from the same interleaved benchmark), plus fidelity, accuracy, speedup and gates
        of the result.

    Raises:
        CompressorError: Any failure; nothing is written at the output then.
    """
    from compressor.measure import measure, model_entry
    from compressor.report import new_report

    report = new_report(command)
    warnings: list[str] = []
    try:
        recipe.gates.check_usable(has_eval_data=recipe.eval_source is not None, compares=True)
        artifact = _load(recipe)
        steps = plan(recipe, TORCH if artifact.format.is_torch else ONNX)
        if recipe.save_torch is not None and not _ends_in_torch(steps):
            raise UsageError("--save-torch needs a PyTorch input and a last step that gives a PyTorch model (prune); "
                             "this run ends with an ONNX-only model")
        out = recipe.output or default_output(recipe.model, default_suffix)
        check_output(recipe.model, out, others=_data_files(recipe))
        with scratch_dir(out) as work:
            ctx = make_context(artifact, recipe, work, callbacks)
            warnings = ctx.warnings
            check_steps(steps, artifact, ctx)
            check_input_runs(artifact, ctx)
            check_labels_fit(artifact, ctx)
            report["input"] = _input_entry(recipe, artifact, ctx)
            report["sources"] = dict(recipe.sources)
            report["recipe"] = recipe.to_json()
            report["settings"] = settings_block(recipe)
            entries: list[dict[str, Any]] = []
            report["steps"] = entries  # filled as steps finish (a failure's report shows those that ran)
            applied = apply_steps(steps, artifact, ctx, work, entries)
            baseline_onnx, candidates, sections = applied.baseline_onnx, applied.candidates, applied.sections
            torch_model = applied.torch_model
            final = candidates[-1]
            base = {"onnx": baseline_onnx, "entry": model_entry(baseline_onnx, recipe.model)}
            if artifact.format.is_torch:
                base["entry"]["note"] = "size, parameters and latency of the fp32 ONNX export of the input"
            macs = None
            for c in candidates:
                shown = output_model_path(recipe.model, out) if c is final else f"steps[{c['step']['step']}] {c['spec'].name} (intermediate, not written)"
                c["entry"] = model_entry(c["onnx"], shown)
                macs = _macs(c, base, macs)
            against = ("baseline fp32 ONNX (checked against the original PyTorch model)" if artifact.format.is_torch
                       else "baseline ONNX")
            measured = measure(ctx, recipe, base, candidates, against=against)
            report["baseline"] = base["entry"]
            report["result"] = final["entry"]
            for i, c in enumerate(candidates):
                c["step"]["measured"] = {**c["entry"], **c["compare"]}
                _warn_if_far(ctx, c, recipe)
                if i and c["compare"]["speedup_ci95"][1] < candidates[i - 1]["compare"]["speedup_ci95"][0]:
                    prev = candidates[i - 1]
                    ctx.warn(f"steps[{c['step']['step']}] ({c['spec'].name}) made the model slower than "
                             f"steps[{prev['step']['step']}] ({prev['spec'].name}) left it: speedup "
                             f"{c['compare']['speedup']:.2f}x against {prev['compare']['speedup']:.2f}x at batch "
                             f"{measured['benchmark']['batch_size']}; see each step's figures in the report")
            report.update({k: final["compare"][k] for k in ("size_ratio", "speedup", "speedup_ci95", "fidelity")})
            if "macs" in final["entry"]:
                report["macs_ratio"] = final["entry"]["macs"] / max(base["entry"].get("macs", 0), 1)
            report.update(measured)
            report.update(sections)
            if "accuracy" in report:
                for c in candidates:
                    for key in ("accuracy_before_recovery", "accuracy_after_recovery"):
                        if key in c["details"]:
                            report["accuracy"][key.removeprefix("accuracy_")] = c["details"][key]
            if report["speedup_ci95"][1] < 1.0:
                ctx.warn(f"the result is slower than the baseline on this CPU (speedup {report['speedup']:.2f}, 95% CI "
                         f"[{report['speedup_ci95'][0]:.2f}, {report['speedup_ci95'][1]:.2f}]) at batch "
                         f"{report['benchmark']['batch_size']}; see the op types in the report")
            exports = [e for e in entries if e["name"] == "export"]
            if exports:
                report["export"] = exports[0]
            report["steps"] = entries
            if recipe.gates.any:
                report["gates"] = recipe.gates.evaluate(report)
            torch_tmp = _write_torch(torch_model, recipe.save_torch, ctx) if recipe.save_torch is not None else None
            try:
                _shield(callbacks)
                if torch_tmp is not None:
                    os.replace(torch_tmp, recipe.save_torch)
                    report["torch_output"] = {"path": str(recipe.save_torch), "format": torch_tmp.kind}
                _publish(final["onnx"], out, recipe, report)
            finally:
                if torch_tmp is not None:
                    Path(torch_tmp).unlink(missing_ok=True)
    except BaseException as e:  # the CLI shows what was measured before the failure (--json error object)
        report["warnings"] = warnings
        with contextlib.suppress(AttributeError, TypeError):
            e.report = report
        raise
    report["output"] = str(output_model_path(recipe.model, out))
    report["warnings"] = ctx.warnings
    return report


def _publish(tmp_model: Path, out: Path, recipe: Recipe, report: dict[str, Any]) -> None:
    """Put the verified model in place: the file ``out``, or a model folder.

    A Hugging Face input written as a folder gets ``out/model.onnx`` with the input folder's configuration and
    tokenizer files (``report["output_folder"]``).
    """
    if is_folder_output(recipe.model, out):
        files = publish_folder(tmp_model, out, recipe.model)
        report["output_folder"] = {"path": str(out), "files": files}
    else:
        publish(tmp_model, out)


def _data_files(recipe: Recipe) -> dict[str, Path | None]:
    """Input files besides the model that an output must never overwrite."""
    return {"calibration data": recipe.calibration_data, "evaluation data": recipe.eval_data,
            "training data": recipe.train_data, "calibration text": recipe.calibration_text,
            "evaluation text": recipe.eval_text}


def _ends_in_torch(steps: list[PlannedStep]) -> bool:
    """True when the last recipe step leaves a PyTorch model (the plan then ends with the export it inserted)."""
    return steps[-1].inserted


def _macs(candidate: dict[str, Any], base: dict[str, Any], previous: int | None) -> int | None:
    """MACs per sample where a step counted them (structured pruning), carried to later steps.

    Quantization and unstructured pruning change the arithmetic's precision or zeros, not the count
    of multiply-accumulates of the dense graph, so a later step keeps the count the last one found.
    """
    d = candidate["details"]
    if "macs_before" in d:
        base["entry"].setdefault("macs", d["macs_before"])
        previous = d["macs_after"]
    if previous is not None:
        candidate["entry"]["macs"] = previous
    return previous


def _warn_if_far(ctx: RunContext, c: dict[str, Any], recipe: Recipe) -> None:
    """One loud line when a step's fidelity collapsed, with the figures, the likely cause and the pass's advice.

    Collapsed (see :func:`~compressor.fidelity.collapse_figures`): any float output's least per-sample cosine
    under 0.9, or top-1 agreement / exact-match rate under 0.95. The report's fidelity gets ``collapsed``
    (true) and ``warning`` (the line).
    """
    from compressor.fidelity import collapse_figures

    fid = c["compare"]["fidelity"]
    figures = collapse_figures(fid)
    fid["collapsed"] = figures is not None
    if figures is None:
        return
    cause = c["details"].get("cause_when_far") or c["spec"].cause_when_far or "the step changed what the model computes"
    advice = c["details"].get("advice_when_far") or c["spec"].advice_when_far or "measure accuracy with --eval-data"
    if recipe.eval_source is None:
        advice = "measure accuracy with --eval-data; " + advice
    where = f"steps[{c['step']['step']}] ({c['spec'].name})" if len(recipe.steps) > 1 else f"the {c['spec'].name} result"
    on = "random inputs (figures may mislead)" if ctx.data.source == "random" else ctx.data.source
    line = (f"fidelity collapsed: {where}'s outputs moved far from the original on {on}: {figures}; likely cause: "
            f"{cause}; {advice}")
    fid["warning"] = line
    ctx.warn(line)


class _TorchFile(str):
    kind: str


def _write_torch(model: ModelArtifact | None, path: Path, ctx: RunContext) -> _TorchFile:
    """Write the final PyTorch model to a temporary file beside ``path`` and check that it loads back.

    ``.pt2``: a ``torch.export`` ExportedProgram with a dynamic batch axis (loads anywhere);
    anything else: a full-module pickle (``torch.save``), plain ``weight`` tensors, no masks.

    Raises:
        UsageError: The run left no PyTorch model.
        StepFailedError: The saved file does not load back or gives other outputs.
    """
    import numpy as np
    import torch

    from compressor.export import torch_forward

    if model is None:
        raise UsageError("--save-torch needs a PyTorch input model; this run produced only ONNX")
    module = model.loaded
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    feeds = ctx.data.batch(0, 2)
    try:
        if path.suffix == ".pt2":
            args = tuple(torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in ctx.io.input_names)
            batch = torch.export.Dim("batch", min=1, max=1 << 20)
            ep = torch.export.export(module, args, dynamic_shapes=tuple({0: batch} for _ in args))
            torch.export.save(ep, tmp)
            loaded = torch.export.load(tmp)
            kind = "exported_program"
        else:
            torch.save(module, tmp)
            loaded = torch.load(tmp, weights_only=False)
            kind = "torch_module_pickle"
        a = torch_forward(module, feeds, ctx.io)
        b = torch_forward(loaded, feeds, ctx.io)  # every output, not the first alone
        if len(a) != len(b) or not all(x.shape == y.shape and np.allclose(x, y, atol=1e-5, rtol=1e-4)
                                       for x, y in zip(a, b, strict=False)):
            raise StepFailedError(f"the saved PyTorch model {path} does not reproduce the pruned model's outputs")
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    out = _TorchFile(tmp)
    out.kind = kind
    return out


def export_only(recipe: Recipe, *, command: str, callbacks: Callbacks = Callbacks()) -> dict[str, Any]:
    """Export a PyTorch model to ONNX, checked against PyTorch (``compressor export``); no benchmark.

    Raises:
        UsageError: The input is already ONNX or bad; ExportError: both exporters failed.
    """
    from compressor.measure import model_entry
    from compressor.report import new_report

    artifact = _load(recipe)
    if artifact.format is ModelFormat.ONNX:
        raise UsageError(f"{recipe.model} is already ONNX; export takes a PyTorch model")
    out = recipe.output or (recipe.model.with_name(recipe.model.name + ".onnx") if recipe.model.is_dir()
                            else recipe.model.with_suffix(".onnx"))
    check_output(recipe.model, out, others=_data_files(recipe))
    report = new_report(command)
    with scratch_dir(out) as work:
        ctx = make_context(artifact, recipe, work, callbacks)
        planned = PlannedStep(get_pass("export"), recipe.export, None, "original model")
        result = _run_step(planned, artifact, ctx, work, 0)
        report["input"] = _input_entry(recipe, artifact, ctx)
        report["sources"] = dict(recipe.sources)
        report["export"] = {"name": "export", "of": "original model", **result.details}
        report["steps"] = [report["export"]]
        report["result"] = model_entry(result.artifact.path, output_model_path(recipe.model, out))
        _shield(callbacks)
        _publish(result.artifact.path, out, recipe, report)
    report["output"] = str(output_model_path(recipe.model, out))
    report["warnings"] = ctx.warnings
    return report


def bench_models(recipe: Recipe, *, command: str, other: Path | None = None,
                 callbacks: Callbacks = Callbacks()) -> dict[str, Any]:
    """Benchmark one model, or compare two on the same inputs (``compressor bench A [B]``).

    PyTorch inputs are exported first. With two models, A is the baseline and B the result:
    the report gets fidelity, ``size_ratio``, ``speedup`` and ``speedup_ci95`` as for a pass.

    Raises:
        UsageError: Bad inputs, or B's inputs differ from A's.
    """
    from compressor.measure import measure, model_entry
    from compressor.report import new_report

    recipe.gates.check_usable(has_eval_data=recipe.eval_source is not None, compares=other is not None)
    artifact = _load(recipe)
    second = _load(dataclasses.replace(recipe, model=Path(other))) if other is not None else None
    report = new_report(command)
    export = PlannedStep(get_pass("export"), recipe.export, None, "original model")
    with scratch_dir(None) as work:
        ctx = make_context(artifact, recipe, work, callbacks)
        check_input_runs(artifact, ctx)
        check_labels_fit(artifact, ctx)
        report["input"] = _input_entry(recipe, artifact, ctx)
        steps: list[dict[str, Any]] = []
        paths = []
        for n, art in enumerate([a for a in (artifact, second) if a is not None]):
            if art.format.is_torch:
                res = _run_step(dataclasses.replace(export, of=str(art.path)), art, ctx, work, n)
                steps.append({"name": "export", "of": "original model" if n == 0 else str(art.path), **res.details})
                paths.append(res.artifact.path)
            else:
                if n == 1 and sorted(s.name for s in art.io.inputs) != sorted(ctx.io.input_names):
                    raise UsageError(f"{art.path} has inputs {[s.name for s in art.io.inputs]} but {artifact.path} "
                                     f"has {ctx.io.input_names}; bench compares models with the same inputs")
                paths.append(art.path)
        base = {"onnx": paths[0], "entry": model_entry(paths[0], recipe.model)}
        candidates = [{"onnx": paths[1], "entry": model_entry(paths[1], Path(other)), "compare": {}}] if other else []
        measured = measure(ctx, recipe, base, candidates,
                           against="baseline fp32 ONNX" if artifact.format.is_torch else "baseline ONNX")
        report["baseline"] = base["entry"]
        if candidates:
            from compressor.fidelity import collapse_figures

            report["result"] = candidates[0]["entry"]
            report.update(candidates[0]["compare"])
            figures = collapse_figures(report["fidelity"])
            report["fidelity"]["collapsed"] = figures is not None
            if figures is not None:
                report["fidelity"]["warning"] = f"fidelity collapsed: {other} is far from {recipe.model} on " \
                                                f"{ctx.data.source}: {figures}"
                ctx.warn(report["fidelity"]["warning"])
        report.update(measured)
        report["steps"] = steps
        if recipe.gates.any:
            report["gates"] = recipe.gates.evaluate(report)
    report["warnings"] = ctx.warnings
    return report




def run_sensitivity(recipe: Recipe, *, kind: str = "quantize", ratio: float = 0.5, command: str,
                    callbacks: Callbacks = Callbacks()) -> dict[str, Any]:
    """Per-layer sensitivity of a model (``compressor sensitivity``); writes nothing.

    ``kind="quantize"``: the model's fp32 ONNX (a PyTorch input is exported first), each layer int8 alone with
    the quantize settings of ``recipe.steps[0]``; ``kind="prune"``: the PyTorch model, each layer pruned alone
    at ``ratio``. See :func:`compressor.sensitivity.layer_sensitivity`.

    Returns:
        A report with ``input``, ``sensitivity`` (layers ranked, most sensitive first),
        ``sensitivity_settings`` (kind, ratio or quantize settings, the data measured on) and ``warnings``.

    Raises:
        UsageError: Bad input, settings the quantize pass refuses, or no layer to measure.
    """
    from compressor.passes.configs import QuantizeConfig
    from compressor.report import new_report
    from compressor.sensitivity import layer_sensitivity

    report = new_report(command)
    artifact = _load(recipe)
    config = recipe.steps[0].config if recipe.steps and recipe.steps[0].pass_name == "quantize" else QuantizeConfig()
    with scratch_dir(None) as work:
        ctx = make_context(artifact, recipe, work, callbacks)
        check_input_runs(artifact, ctx)
        check_labels_fit(artifact, ctx)
        report["input"] = _input_entry(recipe, artifact, ctx)
        model = artifact
        if kind == "quantize":
            from compressor.passes.quantize import check_quantize

            check_quantize(config, ctx, form=TORCH if artifact.format.is_torch else ONNX, has_python_classes=False,
                           artifact=artifact)
            if artifact.format.is_torch:
                planned = PlannedStep(get_pass("export"), recipe.export, None, "original model")
                model = _run_step(planned, artifact, ctx, work, 0).artifact
        rows = layer_sensitivity(model, ctx, kind=kind, config=config, ratio=ratio)
    settings: dict[str, Any] = {"kind": kind, "measured_on": ctx.data.source,
                                "error": "1 - cosine_min of the outputs against the float model's"}
    if ctx.eval_data is not None and ctx.eval_data.labels is not None:
        settings["accuracy_on"] = ctx.eval_data.source
    if kind == "prune":
        settings.update(ratio=ratio, method="structured", criterion="l1")
    else:
        settings["quantize"] = config_to_json(config)
    report.update(sensitivity_settings=settings, sensitivity=rows, warnings=ctx.warnings)
    return report

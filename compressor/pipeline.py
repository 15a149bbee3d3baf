"""The one pipeline every command runs.

``load -> [pass] -> export to ONNX -> verify -> benchmark baseline and result -> Report``.
Intermediate files live in a scratch folder beside the output; the result is moved into
place only after it loaded and ran in ONNX Runtime (verify, then write).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compressor.artifact import IOSpec, ModelArtifact, ModelFormat, onnx_external_locations
from compressor.benchmark import BenchmarkSettings
from compressor.context import ExportSettings, RunContext
from compressor.errors import UsageError
from compressor.gates import Gates
from compressor.inputs import (
    SampleData,
    apply_shapes_to_spec,
    check_data_fits,
    load_npz,
    random_data,
    shape_batch_size,
    torch_io_spec,
)

FIDELITY_MAX_SAMPLES = 512
RANDOM_SAMPLES = 64


@dataclass
class RunOptions:
    """Inputs and measurement settings shared by the commands.

    Attributes:
        input_shapes: Parsed ``--input-shape`` values.
        calibration_data: ``--calibration-data`` file or folder.
        eval_data: ``--eval-data`` file (inputs plus ``labels``).
        train_data: ``--train-data`` file (inputs plus ``labels``) for pruning recovery.
        save_torch: ``--save-torch`` path for the compressed PyTorch model.
        batch_size: Benchmark batch size (None: from ``--input-shape`` or the graph, else 1).
        export: Export settings.
        bench: Benchmark settings.
        batch_sizes: ``--batch-sizes`` sweep (empty: none).
        seq_lens: ``--seq-lens`` sweep of token inputs' axis 1 (empty: none).
        gates: Quality gates.
        quiet: Keep warnings off stderr (they still go to the report).
    """

    input_shapes: list[tuple[str | None, tuple[int, ...], str]] = field(default_factory=list)
    calibration_data: Path | None = None
    eval_data: Path | None = None
    train_data: Path | None = None
    save_torch: Path | None = None
    batch_size: int | None = None
    export: ExportSettings = field(default_factory=ExportSettings)
    bench: BenchmarkSettings = field(default_factory=BenchmarkSettings)
    batch_sizes: list[int] = field(default_factory=list)
    seq_lens: list[int] = field(default_factory=list)
    gates: Gates = field(default_factory=Gates)
    quiet: bool = False


def resolve_io(artifact: ModelArtifact, options: RunOptions, data: SampleData | None) -> IOSpec:
    """Input spec from the file, ``--input-shape`` or the data (in that order).

    Raises:
        UsageError: No source gives the inputs, or the given shapes contradict the file.
    """
    if artifact.io is not None:
        return apply_shapes_to_spec(artifact.io, options.input_shapes)
    return torch_io_spec(artifact.loaded, options.input_shapes, data)


def prepare_data(io: IOSpec, options: RunOptions, calib: SampleData | None, evald: SampleData | None) -> SampleData:
    """The inputs that checks and fidelity run on: eval inputs, else calibration data, else seeded random.

    Held-out data first: static quantization sets its ranges from the calibration data (and recovery
    trains on it), so fidelity measured there is optimistic.
    """
    for d in (evald, calib):
        if d is not None:
            d = check_data_fits(io, d)
            n = min(d.num_samples, FIDELITY_MAX_SAMPLES)
            return SampleData({k: v[:n] for k, v in d.arrays.items()}, None if d.labels is None else d.labels[:n], d.source)
    dims = None
    if options.input_shapes:
        named = apply_shapes_to_spec(io, options.input_shapes) if io.inputs else io
        dims = {s.name: s.concrete_shape(batch_size=1)[1:] for s in named.inputs}
    return random_data(io, num_samples=RANDOM_SAMPLES, dims=dims)


def bench_feeds(io: IOSpec, data: SampleData, options: RunOptions) -> tuple[dict[str, Any], int]:
    """One benchmark batch: ``--batch-size``, else the ``--input-shape`` batch, else a fixed graph batch, else 1."""
    batch = options.batch_size or shape_batch_size(options.input_shapes)
    if batch is None:
        first = io.inputs[0].shape[0] if io.inputs and io.inputs[0].shape else None
        batch = first if isinstance(first, int) and first > 0 else 1
    if data.num_samples >= batch:
        return data.batch(0, batch), batch
    reps = -(-batch // data.num_samples)
    import numpy as np

    return {k: np.concatenate([v] * reps)[:batch] for k, v in data.arrays.items()}, batch


@contextlib.contextmanager
def scratch_dir(near: Path | None):
    """A temporary folder in ``near``'s folder (same file system, so the final rename is atomic).

    ``near=None`` uses the system's temp folder (commands that publish no file).
    """
    if near is None:
        d = Path(tempfile.mkdtemp(prefix="compressor-"))
        try:
            yield d
        finally:
            shutil.rmtree(d, ignore_errors=True)
        return
    parent = near.parent if near.parent.exists() else Path(".")
    try:
        d = Path(tempfile.mkdtemp(prefix=".compressor-", dir=parent))
    except OSError as e:
        raise UsageError(f"cannot write in {parent}: {e.strerror}; choose another -o/--output") from e
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


# Called after a model is published: the command-line entry point stops taking Ctrl-C/SIGTERM there, so a run
# whose output exists finishes its report and exits with its normal code instead of "interrupted".
ON_PUBLISH: list = []


def publish(tmp_model: Path, final: Path) -> None:
    """Move a verified ONNX model (and its external data files) to ``final`` atomically per file."""
    for hook in ON_PUBLISH:
        hook()
    for loc in onnx_external_locations(tmp_model):
        os.replace(tmp_model.parent / loc, final.parent / loc)
    os.replace(tmp_model, final)


def default_output(input_path: Path, suffix: str) -> Path:
    """``<name without its last extension>.<suffix>.onnx`` next to the input (``m.v1.pt2`` -> ``m.v1.quantized.onnx``)."""
    return input_path.with_name(f"{input_path.stem}.{suffix}.onnx")


def _can_write_in(folder: Path) -> bool:
    """True when a file can really be created in ``folder`` (``os.access`` says yes to root everywhere)."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".compressor-probe-", dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(tmp)
    return True


def check_side_files(paths: dict[str, Path | None], protected: dict[str, Path | None]) -> None:
    """Refuse report files that would overwrite an input or the output, or land in a missing or read-only folder.

    Args:
        paths: Flag name -> file to write (``--report``, ``--markdown``), None when not given.
        protected: Description -> file that must not be overwritten.

    Raises:
        UsageError: A clash or an unwritable folder, before any work is done.
    """
    written: dict[Path, str] = {}
    for flag, path in paths.items():
        if path is None:
            continue
        path = Path(path)
        target = path.resolve()
        for what, other in protected.items():
            if other is not None and Path(other).resolve() == target:
                raise UsageError(f"{flag} {path} is the {what}; choose another file name")
        if target in written:
            raise UsageError(f"{flag} and {written[target]} name the same file {path}; choose two names")
        written[target] = flag
        if path.is_dir():
            raise UsageError(f"{flag} {path} is a folder; give a file name")
        parent = path.parent
        if not parent.exists():
            raise UsageError(f"{flag}: folder {parent} does not exist; create it or choose another path")
        if not _can_write_in(parent):
            raise UsageError(f"{flag}: cannot write in {parent}; choose another path")


def check_output(input_path: Path, output: Path) -> None:
    """Refuse an output that would overwrite the input or land in a missing folder.

    Raises:
        UsageError: Same path as the input, or the folder does not exist.
    """
    if output.resolve() == input_path.resolve() or (output.exists() and output.samefile(input_path)):
        raise UsageError(f"output {output} is the input file; choose another -o/--output (inputs are never overwritten)")
    if not output.parent.exists():
        raise UsageError(f"output folder {output.parent} does not exist; create it or choose another -o/--output")
    if not _can_write_in(output.parent):
        raise UsageError(f"cannot write in {output.parent}; choose another -o/--output")
    if output.is_dir():
        raise UsageError(f"output {output} is a folder; give a file name such as {output / 'model.onnx'}")


def make_context(artifact: ModelArtifact, options: RunOptions, workdir: Path) -> RunContext:
    """Resolve inputs and data and build the :class:`RunContext` for a command.

    ``--calibration-data random`` (no such file) is an explicit opt-in to seeded random
    calibration inputs, with a warning.
    """
    random_calib = options.calibration_data is not None and str(options.calibration_data) == "random" and not Path(
        "random"
    ).exists()
    calib = load_npz(options.calibration_data) if options.calibration_data and not random_calib else None
    evald = load_npz(options.eval_data, want_labels=True) if options.eval_data else None
    io = resolve_io(artifact, options, calib or evald)
    data = prepare_data(io, options, calib, evald)
    ctx = RunContext(artifact=artifact, io=io, data=data, workdir=workdir, export=options.export, quiet=options.quiet)
    for w in artifact.details.get("warnings", []):
        ctx.warn(w)
    if evald is not None:
        ctx.eval_data = check_data_fits(io, evald)
    if options.train_data is not None:
        ctx.train_data = check_data_fits(io, load_npz(options.train_data, want_labels=True))
    if calib is not None:
        ctx.calibration = check_data_fits(io, calib)
    elif random_calib:
        dims = {k: v.shape[1:] for k, v in data.arrays.items()}
        ctx.calibration = random_data(io, num_samples=RANDOM_SAMPLES, seed=1, dims=dims)
        ctx.warn("--calibration-data random: activation ranges come from random inputs, not real data; "
                 "expect worse accuracy than with real samples")
    return ctx


def export_baseline(ctx: RunContext) -> Path:
    """The fp32 ONNX baseline: the input itself for ONNX, else an export checked against PyTorch."""
    from compressor.export import export_to_onnx

    art = ctx.artifact
    if art.format is ModelFormat.ONNX:
        ctx.baseline_onnx = art.path
        return art.path
    path = ctx.workdir / "baseline.onnx"
    res = export_to_onnx(art.loaded, ctx.io, path, check_data=ctx.data, opset=ctx.export.opset,
                         atol=ctx.export.atol, rtol=ctx.export.rtol, exporter=ctx.export.exporter)
    ctx.steps.append({"name": "export", "of": "original model", **res.to_json()})
    if res.opset is not None and res.opset != ctx.export.opset:
        ctx.warn(f"asked for opset {ctx.export.opset} but the {res.exporter} exporter wrote opset {res.opset}")
    for a in res.attempts[:-1]:
        ctx.warn(f"exporter {a['exporter']} was not used: {a.get('error') or 'max abs diff %.3g' % a['max_abs_diff']}")
    ctx.baseline_onnx = path
    return path

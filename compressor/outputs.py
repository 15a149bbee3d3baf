"""Where outputs go: scratch folders beside them, checks before any work, and the atomic publish.

Intermediate files live in a scratch folder on the output's file system, so the final rename is
atomic; inputs are never overwritten; report and recipe files are checked before any work.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from compressor.artifact import onnx_external_locations
from compressor.errors import UsageError


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


def publish(tmp_model: Path, final: Path) -> None:
    """Move a verified ONNX model and its external data to ``final`` (data file ``<final name>.data``).

    The data file is renamed in the scratch folder first (and the model's ``location`` entries
    rewritten), so each output owns its data file: two outputs in one folder never share one.
    Both are then moved by ``os.replace`` on the same file system, data first and model last, so
    the model file never appears before its data; a data file left by an earlier single-file or
    external-data output of the same name is replaced or removed. Should the model's move fail,
    the new data file is removed again.
    """
    from compressor.external_data import data_file_name, rename_data

    tmp_model, final = Path(tmp_model), Path(final)
    moved = []
    try:
        for data in rename_data(tmp_model, final.name):
            dest = final.parent / data.name
            os.replace(data, dest)
            moved.append(dest)
        os.replace(tmp_model, final)
    except BaseException:
        for dest in moved:
            dest.unlink(missing_ok=True)
        raise
    stale = final.parent / data_file_name(final)
    if not moved and stale.is_file():  # the previous output of this name had external data; this one does not
        stale.unlink()


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


def check_output(input_path: Path, output: Path, *, others: dict[str, Path | None] | None = None) -> None:
    """Refuse an output that would overwrite the input (or another input file) or land in a missing folder.

    Args:
        input_path: The input model.
        output: The output model.
        others: Description -> other input files (data, recipe, project config) it must not overwrite.

    Raises:
        UsageError: Same file as an input, or the folder does not exist or cannot be written.
    """
    if output.resolve() == input_path.resolve() or (output.exists() and output.samefile(input_path)):
        raise UsageError(f"output {output} is the input file; choose another -o/--output (inputs are never overwritten)")
    for what, other in (others or {}).items():
        if other is not None and Path(other).exists() and (
                output.resolve() == Path(other).resolve() or (output.exists() and output.samefile(other))):
            raise UsageError(f"output {output} is the {what}; choose another -o/--output (inputs are never overwritten)")
    _check_data_file(input_path, output, others or {})
    if not output.parent.exists():
        raise UsageError(f"output folder {output.parent} does not exist; create it or choose another -o/--output")
    if not _can_write_in(output.parent):
        raise UsageError(f"cannot write in {output.parent}; choose another -o/--output")
    if output.is_dir():
        raise UsageError(f"output {output} is a folder; give a file name such as {output / 'model.onnx'}")


def _check_data_file(input_path: Path, output: Path, others: dict[str, Path | None]) -> None:
    """Refuse an output whose data file ``<output name>.data`` would overwrite the input or its external data.

    Raises:
        UsageError: The data file is the input model, one of the input's external data files, or another input.
    """
    from compressor.external_data import data_file_name

    data = output.parent / data_file_name(output)
    if not data.exists():
        return
    protected = {"input model": input_path, **{k: v for k, v in others.items() if v is not None}}
    protected.update({f"external data of {input_path.name}": input_path.parent / loc
                      for loc in onnx_external_locations(input_path)} if input_path.exists() else {})
    for what, other in protected.items():
        if Path(other).exists() and data.samefile(other):
            raise UsageError(f"output {output} would write its weights to {data}, which is the {what}; "
                             "choose another -o/--output (inputs are never overwritten)")

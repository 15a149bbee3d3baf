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
    """Move a verified ONNX model (and its external data files) to ``final`` atomically per file."""
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
    if not output.parent.exists():
        raise UsageError(f"output folder {output.parent} does not exist; create it or choose another -o/--output")
    if not _can_write_in(output.parent):
        raise UsageError(f"cannot write in {output.parent}; choose another -o/--output")
    if output.is_dir():
        raise UsageError(f"output {output} is a folder; give a file name such as {output / 'model.onnx'}")

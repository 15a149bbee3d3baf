"""Where outputs go: scratch folders beside them, checks before any work, and the atomic publish.

Intermediate files live in a scratch folder on the output's file system, so the final rename is
atomic; inputs are never overwritten; report and recipe files are checked before any work. When the
input is a Hugging Face folder and the output is a folder (``-o DIR``, no ``.onnx`` suffix), the result is a
drop-in folder: ``DIR/model.onnx`` plus the input folder's configuration, tokenizer and preprocessor files
(never its weights), built in a staging folder beside ``DIR`` and renamed into place.
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
        _remove_tree(d)


def _remove_tree(d: Path) -> None:
    """Remove a scratch folder; a Ctrl-C that lands during the removal lets it finish first, then goes on."""
    try:
        shutil.rmtree(d, ignore_errors=True)
    except BaseException:
        shutil.rmtree(d, ignore_errors=True)
        raise


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


#: The ONNX file's name inside an output folder (what optimum and ONNX Runtime users look for).
FOLDER_MODEL_FILE = "model.onnx"
#: Weights of a Hugging Face folder: never copied into an output folder (the ONNX holds the weights).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".onnx", ".data", ".ot",
                   ".gguf")
#: Index files of sharded weights, also left out.
WEIGHT_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json", "tf_model.h5.index.json",
                      "flax_model.msgpack.index.json")


def is_folder_output(input_path: Path | None, output: Path) -> bool:
    """True when the run writes a model folder.

    That is when the input is a Hugging Face folder and the output is a folder or a path without the ``.onnx``
    suffix.
    """
    from compressor.hf import model_folder

    if input_path is None or model_folder(Path(input_path)) is None:
        return False
    output = Path(output)
    return output.is_dir() or output.suffix.lower() != ".onnx"


def output_model_path(input_path: Path | None, output: Path) -> Path:
    """The ONNX file a run writes: ``output`` itself, or ``output/model.onnx`` for a folder output."""
    return Path(output) / FOLDER_MODEL_FILE if is_folder_output(input_path, output) else Path(output)


def folder_files(source: Path) -> list[Path]:
    """Files of a Hugging Face folder to copy beside the ONNX, relative to it, sorted.

    The folder's top-level files (``config.json``, tokenizer files such as ``tokenizer.json``,
    ``tokenizer_config.json``, ``vocab.txt``, ``merges.txt``, ``special_tokens_map.json``,
    ``preprocessor_config.json``, sentence-transformers' ``modules.json``, ``README.md``...) and the
    sentence-transformers module folders ``modules.json`` names (``1_Pooling``...), without weights
    (:data:`WEIGHT_SUFFIXES`, :data:`WEIGHT_INDEX_FILES`) or hidden files.
    """
    import json

    source = Path(source)
    roots = [source]
    try:
        modules = json.loads((source / "modules.json").read_text(encoding="utf-8"))
        roots += [source / str(m["path"]) for m in modules if isinstance(m, dict) and m.get("path")]
    except (OSError, ValueError, TypeError, KeyError):
        pass
    out = []
    for root in roots:
        if not root.is_dir() or source.resolve() not in [root.resolve(), *root.resolve().parents]:
            continue
        files = [root.glob("*")] if root == source else [root.rglob("*")]
        for f in (f for group in files for f in group):
            rel = f.relative_to(source)
            if (f.is_file() and not any(part.startswith(".") for part in rel.parts)
                    and f.suffix.lower() not in WEIGHT_SUFFIXES and f.name not in WEIGHT_INDEX_FILES):
                out.append(rel)
    return sorted(set(out))


def check_folder_output(input_path: Path, folder: Path) -> None:
    """Refuse an output folder that overlaps the input folder, is a file, or holds files the run would not write.

    A folder written by an earlier run of the same kind is replaced whole.

    Raises:
        UsageError: One of the above, or a parent folder that is missing or cannot be written.
    """
    folder, source = Path(folder), Path(input_path)
    a, b = folder.resolve(), source.resolve()
    if a == b or b in a.parents or a in b.parents:
        raise UsageError(f"output folder {folder} is, or overlaps, the input folder {source}; choose another "
                         "-o/--output (inputs are never overwritten)")
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"output {folder} is a file, and a Hugging Face input writes a folder there; give a folder "
                         f"name, or a file name ending in .onnx for the ONNX alone")
    if folder.is_dir():
        ours = {FOLDER_MODEL_FILE, f"{FOLDER_MODEL_FILE}.data"} | {p.parts[0] for p in folder_files(source)}
        foreign = sorted(p.name for p in folder.iterdir() if p.name not in ours)
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise UsageError(f"output folder {folder} already holds other files ({shown}); choose a new or empty "
                             "folder (an output folder is replaced whole)")
    if not folder.parent.exists():
        raise UsageError(f"output folder {folder.parent} does not exist; create it or choose another -o/--output")
    if not _can_write_in(folder.parent):
        raise UsageError(f"cannot write in {folder.parent}; choose another -o/--output")


def publish_folder(tmp_model: Path, folder: Path, source: Path) -> list[str]:
    """Publish a verified ONNX model as ``folder/model.onnx`` with the source folder's files beside it.

    Built in a staging folder beside ``folder`` (same file system): the model (and its external data) moved
    in with :func:`publish`, :func:`folder_files` copied, then the staging folder renamed to ``folder``. An
    existing ``folder`` (checked by :func:`check_folder_output`) is renamed aside first and removed after; if
    the final rename fails it is put back.

    Returns:
        The files written, relative to ``folder`` (``model.onnx`` first).
    """
    tmp_model, folder, source = Path(tmp_model), Path(folder), Path(source)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    old: Path | None = None
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(staging, 0o777 & ~mask)  # mkdtemp makes 0700 folders; the output is an ordinary folder
        publish(tmp_model, staging / FOLDER_MODEL_FILE)
        for rel in folder_files(source):
            (staging / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / rel, staging / rel)
        written = sorted(str(p.relative_to(staging)) for p in staging.rglob("*") if p.is_file())
        written.sort(key=lambda n: n != FOLDER_MODEL_FILE)
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old-", dir=folder.parent))
            os.replace(folder, old / folder.name)
        try:
            os.replace(staging, folder)
        except BaseException:
            if old is not None:
                os.replace(old / folder.name, folder)
            raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return written


def default_output(input_path: Path, suffix: str) -> Path:
    """``<name without its last extension>.<suffix>.onnx`` next to the input (``m.v1.pt2`` -> ``m.v1.quantized.onnx``).

    A Hugging Face folder's default output is the folder ``<folder name>.<suffix>`` beside it (``my-bert`` ->
    ``my-bert.quantized/``, holding ``model.onnx`` and the tokenizer files).
    """
    from compressor.hf import model_folder

    if model_folder(Path(input_path)) is not None:
        return Path(input_path).with_name(f"{Path(input_path).name}.{suffix}")
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
    if is_folder_output(input_path, output):  # a Hugging Face input written as a model folder
        check_folder_output(input_path, output)
        output = output / FOLDER_MODEL_FILE
        for what, other in (others or {}).items():
            if other is not None and Path(other).exists() and Path(output).resolve() == Path(other).resolve():
                raise UsageError(f"output {output} is the {what}; choose another -o/--output")
        return
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

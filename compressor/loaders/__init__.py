"""Load a model file whatever its format, detected from content, with safe pickle handling.

One loader per input kind, in one explicit, ordered registry (:data:`LOADERS`); each loader
sniffs its kind from the file's bytes, loads it, gives its IO spec and example inputs (see
:class:`~compressor.loaders.base.Loader`). A new input kind is one new module here plus one
entry in :data:`LOADERS` (and its :class:`~compressor.artifact.ModelFormat` member).

Formats: ONNX (with external data), ``torch.export`` ExportedProgram (``.pt2``),
TorchScript, a full-module pickle (``torch.save(model)``), a state_dict plus
``--model-class`` (pickled or safetensors), and a Hugging Face model folder (the only folder kind,
recognised by its ``config.json``; see :mod:`compressor.loaders.hf_folder`). Pickles are loaded with
``torch.load(weights_only=True)``: the ``torch.nn`` module classes a full-module pickle needs are allow-listed; any other class
needs ``trust_pickle=True`` (``--trust-pickle``).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from compressor.artifact import IOSpec, ModelArtifact, ModelFormat
from compressor.errors import UnknownFormatError, UsageError
from compressor.loaders.base import Loader, LoadOptions
from compressor.loaders.exported_program import ExportedProgramLoader
from compressor.loaders.hf_folder import HFFolderLoader
from compressor.loaders.onnx import OnnxLoader
from compressor.loaders.safetensors_file import SafetensorsLoader
from compressor.loaders.torch_pickle import TorchPickleLoader
from compressor.loaders.torchscript import TorchScriptLoader

if TYPE_CHECKING:
    from compressor.inputs import SampleData

__all__ = [
    "HEAD_BYTES",
    "LOADERS",
    "LoadOptions",
    "Loader",
    "detect_format",
    "example_inputs",
    "find_loader",
    "get_loader",
    "load_model",
    "registered_formats",
]

#: The registry: sniffed in this order, first match wins; the unknown-format error names them
#: in this order. ONNX is only tried on files that are not zip archives. Folders are offered to
#: :meth:`Loader.sniff_folder` (only the Hugging Face loader takes them).
LOADERS: list[Loader] = [OnnxLoader(), ExportedProgramLoader(), TorchScriptLoader(), TorchPickleLoader(),
                         SafetensorsLoader(), HFFolderLoader()]

#: Bytes of the file's start handed to every :meth:`Loader.sniff`.
HEAD_BYTES = 64

_ZIP_MAGIC = b"PK\x03\x04"


def registered_formats() -> list[ModelFormat]:
    """Every format some registered loader can return, in registry order."""
    return [fmt for loader in LOADERS for fmt in loader.formats]


def find_loader(path: Path) -> Loader:
    """The registered loader whose ``sniff`` (``sniff_folder`` for a folder) accepts the content (never its extension).

    Args:
        path: Model file, or a Hugging Face model folder.

    Raises:
        UsageError: The path does not exist (a name that reads like a hub id gets the never-downloads message),
            is a folder no loader takes, or cannot be read.
        UnknownFormatError: A damaged zip, or content no registered loader accepts.
    """
    path = Path(path)
    if not path.exists():
        from compressor.hf import hub_id_error, looks_like_hub_id

        if looks_like_hub_id(str(path)):
            raise hub_id_error(str(path))
        raise UsageError(f"model file not found: {path}")
    if path.is_dir():
        for loader in LOADERS:
            if loader.sniff_folder(path):
                return loader
        from compressor.hf import read_config

        if (path / "config.json").is_file():
            what = ("is not a JSON object" if read_config(path) is None
                    else "names neither 'architectures' nor 'model_type'")
            raise UsageError(f"{path} is a folder whose config.json {what}, so it is not a Hugging Face model "
                             "folder; fix config.json (save the model with save_pretrained) or pass a model file")
        raise UsageError(f"{path} is a folder; pass the model file inside it (or a Hugging Face model folder, "
                         "which has a config.json)")
    try:
        with open(path, "rb") as f:
            head = f.read(HEAD_BYTES)
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from e
    zip_names: tuple[str, ...] | None = None
    if head[:4] == _ZIP_MAGIC:
        try:
            with zipfile.ZipFile(path) as z:
                zip_names = tuple(z.namelist())
        except zipfile.BadZipFile as e:
            raise UnknownFormatError(f"{path} is a damaged zip archive ({e}); re-save the model") from e
    for loader in LOADERS:
        if loader.sniff(path, head, zip_names):
            return loader
    if zip_names is not None:
        raise UnknownFormatError(
            f"{path} is a zip archive but not a PyTorch file (torch.save, torch.export.save or TorchScript)"
        )
    kinds = [loader.description for loader in LOADERS if loader.takes_files]
    expected = kinds[0] if len(kinds) == 1 else f"{', '.join(kinds[:-1])}, or {kinds[-1]}"
    raise UnknownFormatError(f"{path} is not a model compressor can read: expected {expected}")


def detect_format(path: Path) -> ModelFormat:
    """Detect a model file's format from its bytes.

    Args:
        path: Model file.

    Returns:
        The :class:`ModelFormat`. A ``torch.save`` zip is reported as ``TORCH_MODULE``;
        :func:`load_model` refines it to ``STATE_DICT`` after unpickling.

    Raises:
        UsageError: The file does not exist or cannot be read.
        UnknownFormatError: The content is none of the supported formats.
    """
    return find_loader(path).formats[0]


def get_loader(fmt: ModelFormat) -> Loader:
    """The registered loader that produces ``fmt`` (e.g. to get an artifact's IO spec or example inputs).

    Raises:
        UnknownFormatError: No registered loader produces ``fmt``; the message lists those that do.
    """
    for loader in LOADERS:
        if fmt in loader.formats:
            return loader
    known = ", ".join(f.value for f in registered_formats())
    raise UnknownFormatError(f"no loader is registered for format '{fmt.value}'; registered formats: {known}")


def load_model(path: Path, options: LoadOptions | None = None) -> ModelArtifact:
    """Load a model file into memory with the loader that sniffs it.

    Args:
        path: Model file in any supported format.
        options: Pickle trust and state_dict class settings.

    Returns:
        A :class:`ModelArtifact` with ``loaded`` set to an ``onnx.ModelProto`` (ONNX; weights in
        external data files stay on disk and are read lazily), a
        ``torch.export.ExportedProgram`` or a ``torch.nn.Module`` in eval mode, and ``io``
        set when the format records its inputs (ONNX, ExportedProgram).

    Raises:
        UsageError: Missing file, unknown format, untrusted pickle classes, a state_dict
            without ``--model-class``, or a state_dict that does not fit the class.
    """
    options = options or LoadOptions()
    path = Path(path)
    return find_loader(path).load(path, options)


def example_inputs(artifact: ModelArtifact, io: IOSpec, *, num_samples: int, seed: int = 0,
                   dims: dict[str, tuple[int, ...]] | None = None) -> SampleData:
    """Example inputs for ``artifact`` from its format's loader (see :meth:`Loader.example_inputs`).

    Args:
        artifact: A loaded model.
        io: Its input spec (from the file, ``--input-shape`` or the data).
        num_samples: Samples on the first axis.
        seed: numpy seed.
        dims: Optional per-input shape (without the sample axis) overriding the spec.

    Raises:
        UsageError: A dynamic axis other than the batch that ``dims`` does not fix.
        UnknownFormatError: No registered loader produces ``artifact.format``.
    """
    return get_loader(artifact.format).example_inputs(artifact, io, num_samples=num_samples, seed=seed, dims=dims)

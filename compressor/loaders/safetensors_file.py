"""safetensors files as state_dicts (with ``--model-class``), next to the pickle formats.

Sniffed from the format's header: 8 bytes of little-endian header length, then that many bytes of JSON
object (``{"tensor name": {"dtype", "shape", "data_offsets"}, ...}``). Loaded with
``safetensors.torch.load_file``, which reads tensors only and never runs code, then into
``model_class(**model_kwargs)`` the same way as a pickled state_dict (prefixes of wrapped models removed,
missing and unexpected keys named). Source: the safetensors format specification (huggingface/safetensors).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, ClassVar

from compressor.artifact import ModelArtifact, ModelFormat
from compressor.errors import UnknownFormatError, UsageError
from compressor.loaders.base import Loader, LoadOptions

#: Largest header a safetensors file may declare (the format's own limit is 100 MB).
MAX_HEADER_BYTES = 100_000_000


class SafetensorsLoader(Loader):
    """A ``.safetensors`` file holding a state_dict."""

    formats: ClassVar[tuple[ModelFormat, ...]] = (ModelFormat.SAFETENSORS,)
    description: ClassVar[str] = "a safetensors state_dict"

    def sniff(self, path: Path, head_bytes: bytes, zip_names: tuple[str, ...] | None) -> bool:
        """True when the first 8 bytes give a header length that fits the file and the header starts with ``{``."""
        if zip_names is not None or len(head_bytes) < 10:
            return False
        (length,) = struct.unpack("<Q", head_bytes[:8])
        try:
            size = os.path.getsize(path)
        except OSError:
            return False
        return 2 <= length <= min(MAX_HEADER_BYTES, size - 8) and head_bytes[8:9] == b"{"

    def load(self, path: Path, options: LoadOptions) -> ModelArtifact:
        """Read the tensors with ``safetensors.torch.load_file`` and load them into ``--model-class``.

        Returns:
            An artifact with ``loaded`` a ``torch.nn.Module`` in eval mode, format ``SAFETENSORS``, and
            ``details`` with ``model_class``, ``model_kwargs`` (and ``checkpoint`` when prefixes were removed).

        Raises:
            UsageError: safetensors is not installed, no ``--model-class`` (a file inside a Hugging Face folder
                is pointed to its folder), or the state_dict does not fit the class.
            UnknownFormatError: The file is damaged.
        """
        try:
            from safetensors.torch import load_file
        except ImportError as e:
            raise UsageError(f"{path} is a safetensors file, and reading it needs safetensors: "
                             "pip install 'compressor[hf]'") from e
        from compressor.hf import is_hf_folder
        from compressor.loaders.torch_pickle import _load_state_dict

        if not options.model_class and is_hf_folder(Path(path).parent):
            raise UsageError(f"{path} holds the weights of the Hugging Face folder {Path(path).parent}; pass the "
                             "folder as MODEL (or --model-class package.module:ClassName for the file alone)")
        try:
            state: dict[str, Any] = load_file(os.fspath(path), device="cpu")
        except Exception as e:  # safetensors raises SafetensorError for damaged files
            raise UnknownFormatError(f"cannot read safetensors file {path}: {type(e).__name__}: {e}") from e
        if not state:
            raise UsageError(f"{path} holds no tensors")
        art = _load_state_dict(path, state, options, {})
        return ModelArtifact(path=path, format=ModelFormat.SAFETENSORS, loaded=art.loaded, details=art.details)

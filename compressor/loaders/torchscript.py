"""TorchScript archives (``torch.jit.save``).

Sniffed from the zip member names (a ``constants.pkl`` and a ``code/`` folder); the file
records no input shapes, so the IO spec comes from ``--input-shape`` or the data.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import ClassVar

from compressor.artifact import ModelArtifact, ModelFormat
from compressor.errors import UsageError
from compressor.loaders.base import Loader, LoadOptions


class TorchScriptLoader(Loader):
    """A ``torch.jit.ScriptModule`` saved with ``torch.jit.save``."""

    formats: ClassVar[tuple[ModelFormat, ...]] = (ModelFormat.TORCHSCRIPT,)
    description: ClassVar[str] = "TorchScript"

    def sniff(self, path: Path, head_bytes: bytes, zip_names: tuple[str, ...] | None) -> bool:
        """True for a zip holding ``*/constants.pkl`` and a ``*/code/`` member."""
        if zip_names is None:
            return False
        return any(n.endswith("/constants.pkl") for n in zip_names) and any("/code/" in n for n in zip_names)

    def load(self, path: Path, options: LoadOptions) -> ModelArtifact:
        """Load the module on CPU with ``torch.jit.load`` (its warnings silenced) and set eval mode.

        Returns:
            An artifact with ``loaded`` a ``torch.jit.ScriptModule`` and ``io`` None.

        Raises:
            UsageError: ``torch.jit.load`` failed.
        """
        import torch

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = torch.jit.load(os.fspath(path), map_location="cpu")
        except Exception as e:
            raise UsageError(f"cannot load TorchScript {path}: {type(e).__name__}: {e}") from e
        module.eval()
        return ModelArtifact(path=path, format=ModelFormat.TORCHSCRIPT, loaded=module)

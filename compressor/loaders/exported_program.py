"""``torch.export`` ExportedProgram archives (``torch.export.save``, usually ``.pt2``).

Sniffed from the zip member names (``archive_format``, ``models/model.json`` or a
``serialized_exported_program`` member); the IO spec comes from the program's user-input
placeholders.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, ClassVar

from compressor.artifact import IOSpec, ModelArtifact, ModelFormat, TensorSpec
from compressor.errors import UsageError
from compressor.loaders.base import Loader, LoadOptions


class ExportedProgramLoader(Loader):
    """``torch.export.ExportedProgram`` saved with ``torch.export.save``."""

    formats: ClassVar[tuple[ModelFormat, ...]] = (ModelFormat.EXPORTED_PROGRAM,)
    description: ClassVar[str] = "a torch.export .pt2"

    def sniff(self, path: Path, head_bytes: bytes, zip_names: tuple[str, ...] | None) -> bool:
        """True for a zip holding ``*/archive_format``, ``*/models/model.json`` or ``serialized_exported_program``."""
        if zip_names is None:
            return False
        return any(n.endswith("/archive_format") or n.endswith("/models/model.json") for n in zip_names) or any(
            "serialized_exported_program" in n for n in zip_names
        )

    def load(self, path: Path, options: LoadOptions) -> ModelArtifact:
        """Load the program with ``torch.export.load`` (its warnings silenced).

        Returns:
            An artifact with ``loaded`` a ``torch.export.ExportedProgram`` and ``io`` from its inputs.

        Raises:
            UsageError: ``torch.export.load`` failed, or an input is not a tensor.
        """
        import torch

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ep = torch.export.load(os.fspath(path))
        except Exception as e:
            raise UsageError(f"cannot load ExportedProgram {path}: {type(e).__name__}: {e}") from e
        return ModelArtifact(path=path, format=ModelFormat.EXPORTED_PROGRAM, io=exported_program_io_spec(ep),
                             loaded=ep)

    def io_spec(self, artifact: ModelArtifact) -> IOSpec | None:
        """Inputs of the loaded program (see :func:`exported_program_io_spec`)."""
        return exported_program_io_spec(artifact.loaded)


def exported_program_io_spec(ep: Any) -> IOSpec:
    """Input spec of a ``torch.export.ExportedProgram`` from its user-input placeholders.

    Args:
        ep: ``torch.export.ExportedProgram``.

    Returns:
        One :class:`TensorSpec` per user input: dtype name without ``torch.``; static sizes as
        ``int``; a symbolic axis 0 named ``"batch"``, other symbolic axes by their symbol.

    Raises:
        UsageError: An input is not a tensor.
    """
    import torch

    user_inputs = list(ep.graph_signature.user_inputs)
    by_name = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    specs = []
    for name in user_inputs:
        val = by_name[name].meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise UsageError(f"ExportedProgram input '{name}' is not a tensor; only tensor inputs are supported")
        dims: list[int | str | None] = []
        for axis, d in enumerate(val.shape):
            if isinstance(d, int):
                dims.append(d)
            else:
                dims.append("batch" if axis == 0 else str(d))
        specs.append(TensorSpec(name, str(val.dtype).removeprefix("torch."), tuple(dims)))
    return IOSpec(inputs=tuple(specs))

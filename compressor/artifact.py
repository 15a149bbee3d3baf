"""Handles to models on disk and the description of their inputs.

A :class:`ModelArtifact` names a model file, its detected format and (when known) its
input specification. Passes take an artifact and return a new one; they never change their
input. (Pattern after Olive's model handlers.)
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from compressor.errors import UsageError

#: dtype names accepted in ``--input-shape`` and stored in specs (numpy names).
DTYPES = ("float32", "float16", "float64", "int64", "int32", "int8", "uint8", "bool")


class ModelFormat(str, enum.Enum):
    """Model file formats, detected from file content (never the extension)."""

    ONNX = "onnx"
    EXPORTED_PROGRAM = "exported_program"
    TORCHSCRIPT = "torchscript"
    TORCH_MODULE = "torch_module_pickle"
    STATE_DICT = "state_dict"
    SAFETENSORS = "safetensors"
    HF_FOLDER = "hf_folder"

    @property
    def is_torch(self) -> bool:
        """True for every PyTorch format (everything but ONNX)."""
        return self is not ModelFormat.ONNX

    @property
    def has_python_classes(self) -> bool:
        """True when loading gives the model's own ``nn.Module`` classes (needed by structured pruning)."""
        return self in (ModelFormat.TORCH_MODULE, ModelFormat.STATE_DICT, ModelFormat.SAFETENSORS,
                        ModelFormat.HF_FOLDER)


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output.

    Attributes:
        name: Tensor name (ONNX input name or ``forward`` argument name).
        dtype: numpy dtype name, e.g. ``"float32"`` or ``"int64"``.
        shape: One entry per axis: an ``int`` for a fixed size, a ``str`` for a named
            dynamic axis (e.g. ``"batch"``), or ``None`` for an unnamed dynamic axis.
    """

    name: str
    dtype: str
    shape: tuple[int | str | None, ...]

    def concrete_shape(self, *, batch_size: int | None = None) -> tuple[int, ...]:
        """Shape with the batch axis (axis 0) set to ``batch_size``.

        Raises:
            UsageError: An axis other than the batch axis is dynamic.
        """
        dims: list[int] = []
        for axis, d in enumerate(self.shape):
            if axis == 0 and batch_size is not None:
                dims.append(batch_size)
            elif isinstance(d, int) and d > 0:
                dims.append(d)
            elif axis == 0:
                dims.append(1)
            else:
                raise UsageError(
                    f"input '{self.name}' has dynamic axis {axis} ({d!r}); pass "
                    f"--input-shape {self.name}:1x...:{self.dtype} or --calibration-data FILE.npz"
                )
        return tuple(dims)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form: ``{"name", "dtype", "shape"}``."""
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}


@dataclass(frozen=True)
class IOSpec:
    """Inputs (in call order) and, when known, outputs of a model."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...] = ()

    @property
    def input_names(self) -> list[str]:
        """Names of the inputs in call order."""
        return [t.name for t in self.inputs]


@dataclass(frozen=True)
class ModelArtifact:
    """A model on disk.

    Attributes:
        path: File path of the model.
        format: Detected :class:`ModelFormat`.
        io: Input/output spec when the file carries one (ONNX, ExportedProgram), else None.
        loaded: The in-memory model once :func:`compressor.loaders.load_model` ran
            (``onnx.ModelProto``, ``torch.export.ExportedProgram`` or ``torch.nn.Module``).
        details: Free-form facts gathered while loading (e.g. ``{"pickle_classes": [...]}``).
    """

    path: Path
    format: ModelFormat
    io: IOSpec | None = None
    loaded: Any = field(default=None, repr=False, compare=False)
    details: dict[str, Any] = field(default_factory=dict, compare=False)

    def with_io(self, io: IOSpec) -> ModelArtifact:
        """Copy of this artifact with ``io`` set."""
        return replace(self, io=io)


def file_size_bytes(path: Path) -> int:
    """Size of a model on disk in bytes, ONNX external data files included.

    Args:
        path: Model file. For an ONNX model, every external-data file its initializers
            name (relative to the model's folder) is added once. For a model folder (Hugging Face), the
            weights files in it (``.safetensors``, ``.bin``, ``.pt``, ``.pth``, ``.onnx``, ``.data``).
    """
    path = Path(path)
    if path.is_dir():  # a Hugging Face folder: its weights files
        return sum(f.stat().st_size for f in path.rglob("*")
                   if f.is_file() and f.suffix in (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".data"))
    size = path.stat().st_size
    if path.suffix == ".onnx" or _looks_like_onnx(path):
        for loc in onnx_external_locations(path):
            p = path.parent / loc
            if p.exists():
                size += p.stat().st_size
    return size


def _looks_like_onnx(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    return head[:1] == b"\x08"  # field 1 (ir_version), varint: how every ONNX file starts


def onnx_external_locations(path: Path) -> set[str]:
    """External-data file names referenced by an ONNX model's initializers (no data loaded)."""
    import onnx

    try:
        model = onnx.load_model(os.fspath(path), load_external_data=False)
    except Exception:  # not ONNX: no external data
        return set()
    locs = set()
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            for kv in init.external_data:
                if kv.key == "location":
                    locs.add(kv.value)
    return locs


#: Models whose weights exceed this many bytes are written with external data (protobuf's 2 GB cap).
#: Read at call time through :func:`external_data_threshold`, so tests can lower it (monkeypatch).
EXTERNAL_DATA_BYTES = int(1.8 * 1024**3)


def external_data_threshold() -> int:
    """Bytes of weights above which a model is written with external data (:data:`EXTERNAL_DATA_BYTES`)."""
    return EXTERNAL_DATA_BYTES


def weights_bytes(model: Any) -> int:
    """Bytes of an ``onnx.ModelProto``'s initializers (stored inline or external)."""
    import numpy as np

    from compressor.onnx_graph import np_dtype

    total = 0
    for init in model.graph.initializer:
        if init.raw_data:
            total += len(init.raw_data)
        else:
            itemsize = np_dtype(init.data_type).itemsize
            total += int(np.prod(init.dims)) * itemsize if len(init.dims) else itemsize
    return total


def save_onnx(model: Any, path: Path, *, external: bool | None = None) -> None:
    """Save an ONNX model as one file, or with one external-data file ``<name>.data`` beside it.

    Args:
        model: ``onnx.ModelProto`` with its weights in memory.
        path: Destination.
        external: True to always write external data (e.g. the source had it), False never;
            None (default) when the weights exceed :func:`external_data_threshold`.
    """
    import onnx

    path = Path(path)
    if external is None:
        external = weights_bytes(model) > external_data_threshold()
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=f"{path.name}.data", size_threshold=1024)
    else:
        onnx.save_model(model, str(path))

"""ONNX models whose weights live in external data files (models over protobuf's 2 GB limit).

A model over 2 GB cannot be one protobuf message: its initializers are stored in a data file beside
it (ONNX external data). This module lets the passes work on such models without holding or
serializing the whole model:

- :func:`load_graph` reads the graph with its small tensors only; large weights stay on disk and
  are read one at a time through a :class:`TensorStore`.
- :class:`DataWriter` writes a model's weights, tensor by tensor, into ``<model name>.data``:
  changed weights as they are made, unchanged ones copied from the source file in chunks.
- :func:`rename_data` gives a model's data file the name of the published output
  (``<output name>.data``), so that two outputs in one folder never share a data file.

Memory stays at about one tensor plus the graph. (ONNX external data format:
https://onnx.ai/onnx/repo-docs/ExternalData.html; onnx 1.23.2.)
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

#: Tensors over this many bytes go to the data file (ONNX's own default ``size_threshold``).
INLINE_MAX_BYTES = 1024
#: Tensors at most this many bytes are read into the graph by :func:`load_graph` (scalars, shapes): what a
#: model saved with ONNX's default threshold holds inline anyway.
SMALL_TENSOR_BYTES = INLINE_MAX_BYTES
#: Offsets in the data file are multiples of this (page size: lets ONNX Runtime map the file).
ALIGN_BYTES = 4096
_CHUNK_BYTES = 64 << 20
_DATA_FIELDS = ("raw_data", "float_data", "int32_data", "int64_data", "double_data", "uint64_data")


def data_file_name(model_path: Path | str) -> str:
    """The data file name of a model written by compressor: ``<model file name>.data``."""
    return f"{Path(model_path).name}.data"


def external_tensors(model: Any) -> list[Any]:
    """Initializers of an ``onnx.ModelProto`` stored in external data (main graph)."""
    import onnx

    return [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]


def has_external_data(model_or_path: Any) -> bool:
    """True when a model (``onnx.ModelProto`` or file path) keeps any initializer in external data."""
    import onnx

    if isinstance(model_or_path, (str, os.PathLike)):
        model_or_path = onnx.load_model(os.fspath(model_or_path), load_external_data=False)
    return bool(external_tensors(model_or_path))


def _info(tensor: Any) -> tuple[str, int, int | None]:
    """(location, offset, length) of an external tensor."""
    from onnx.external_data_helper import ExternalDataInfo

    info = ExternalDataInfo(tensor)
    return info.location, int(info.offset or 0), None if info.length is None else int(info.length)


def data_path(tensor: Any, base_dir: Path | str) -> Path:
    """The file holding an external tensor's data, checked to be a regular file inside ``base_dir``.

    Raises:
        FileNotFoundError: The file is missing, outside ``base_dir`` or not a regular file.
    """
    location = _info(tensor)[0]
    rel = Path(location)
    if rel.is_absolute() or ".." in rel.parts:
        raise FileNotFoundError(f"external data of {tensor.name!r} is at {location!r}, outside the model's folder")
    p = Path(base_dir) / rel
    if not p.is_file() or p.is_symlink():
        raise FileNotFoundError(f"external data file {location} of tensor {tensor.name!r} is missing in {base_dir}")
    return p


def check_data_files(model: Any, base_dir: Path | str) -> None:
    """Check that every external tensor's file exists beside the model and is long enough.

    Raises:
        FileNotFoundError: A file is missing, not a regular file, or shorter than a tensor's extent.
    """
    sizes: dict[Path, int] = {}
    for t in external_tensors(model):
        p = data_path(t, base_dir)
        size = sizes.setdefault(p, p.stat().st_size)
        _, offset, length = _info(t)
        if length is not None and offset + length > size:
            raise FileNotFoundError(f"external data file {p.name} is {size} bytes, too short for tensor {t.name!r} "
                                    f"(offset {offset}, length {length}): the file is truncated or belongs to "
                                    "another model")


def load_graph(path: Path | str, *, small_bytes: int = SMALL_TENSOR_BYTES) -> Any:
    """Load an ONNX model's graph with its small tensors, leaving large external weights on disk.

    Args:
        path: ONNX file; its external data files sit beside it.
        small_bytes: External tensors of at most this many bytes are read in (constants the
            graph rewrites look at); larger ones stay external.

    Returns:
        ``onnx.ModelProto`` whose large initializers still point into the files in ``path``'s folder.
    """
    import onnx
    from onnx.external_data_helper import load_external_data_for_tensor

    path = Path(path)
    model = onnx.load_model(os.fspath(path), load_external_data=False)
    for t in external_tensors(model):
        length = _info(t)[2]
        if length is not None and length <= small_bytes:
            load_external_data_for_tensor(t, os.fspath(path.parent))
    return model


class DataWriter:
    """Writes the weights of a model into one new data file ``<model name>.data``, tensor by tensor.

    Offsets are aligned to :data:`ALIGN_BYTES`. Tensors of at most :data:`INLINE_MAX_BYTES` stay in
    the model file. Call :meth:`put` for each changed weight as it is made, then :meth:`save` once.

    Args:
        model_path: Where the model will be written; the data file goes beside it.

    Raises:
        FileExistsError: The data file already exists (a writer never overwrites a file, so it
            can never truncate the source it copies from).
    """

    def __init__(self, model_path: Path | str) -> None:
        self.model_path = Path(model_path)
        self.location = data_file_name(self.model_path)
        self.path = self.model_path.parent / self.location
        self._written: set[str] = set()  # names of the initializers whose data is in our file
        self._f = open(self.path, "xb")  # noqa: SIM115 - kept open across put() calls, closed by save()

    def _append(self, write: Any) -> int:
        pad = -self._f.tell() % ALIGN_BYTES
        if pad:
            self._f.write(b"\0" * pad)
        offset = self._f.tell()
        write()
        return offset

    def _mark(self, tensor: Any, offset: int, length: int) -> None:
        import onnx

        for name in _DATA_FIELDS:
            tensor.ClearField(name)
        del tensor.external_data[:]
        tensor.data_location = onnx.TensorProto.EXTERNAL
        # (onnx's set_external_data insists on raw_data being present, which is what this avoids holding)
        for key, value in (("location", self.location), ("offset", str(offset)), ("length", str(length))):
            entry = tensor.external_data.add()
            entry.key, entry.value = key, value
        self._written.add(tensor.name)

    def put(self, tensor: Any, array: np.ndarray) -> None:
        """Store ``array`` as the data of ``tensor`` (an initializer of the model being written).

        Args:
            tensor: ``onnx.TensorProto``; its dims and data type are set from ``array``.
            array: New value (any ONNX-mappable numpy dtype), written now; not kept in memory.
        """
        import onnx
        from onnx import helper

        array = np.ascontiguousarray(array)
        del tensor.dims[:]
        tensor.dims.extend(array.shape)
        tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
        if array.nbytes <= INLINE_MAX_BYTES:
            for name in _DATA_FIELDS:
                tensor.ClearField(name)
            del tensor.external_data[:]
            tensor.data_location = onnx.TensorProto.DEFAULT
            tensor.raw_data = array.tobytes()
            self._written.discard(tensor.name)
            return
        offset = self._append(lambda: self._f.write(memoryview(array.reshape(-1)).cast("B")))
        self._mark(tensor, offset, array.nbytes)

    def _copy(self, tensor: Any, base_dir: Path) -> None:
        src = data_path(tensor, base_dir)
        _, offset, length = _info(tensor)
        if length is None:
            length = src.stat().st_size - offset
        with open(src, "rb") as f:
            f.seek(offset)

            def write() -> None:
                left = length
                while left:
                    chunk = f.read(min(left, _CHUNK_BYTES))
                    if not chunk:
                        raise OSError(f"external data file {src.name} ends inside tensor {tensor.name!r}")
                    self._f.write(chunk)
                    left -= len(chunk)

            new_offset = self._append(write)
        self._mark(tensor, new_offset, length)

    def discard(self) -> None:
        """Close and delete the data file (nothing was changed after all)."""
        self._f.close()
        self.path.unlink(missing_ok=True)

    def save(self, model: Any, *, base_dir: Path | str | None) -> Path:
        """Write every remaining weight into the data file, then the model file; returns the model path.

        Args:
            model: ``onnx.ModelProto``. Initializers still pointing at other external files (relative
                to ``base_dir``) are copied in chunks; inline ones over :data:`INLINE_MAX_BYTES` move out.
            base_dir: Folder of the model the graph was loaded from (None when nothing is external).

        Raises:
            FileNotFoundError: A source data file is missing.
        """
        import onnx

        try:
            for t in model.graph.initializer:
                if t.data_location == onnx.TensorProto.EXTERNAL:
                    if t.name in self._written:
                        continue
                    if base_dir is None:
                        raise FileNotFoundError(f"tensor {t.name!r} is external but no source folder was given")
                    self._copy(t, Path(base_dir))
                elif t.HasField("raw_data") and len(t.raw_data) > INLINE_MAX_BYTES:
                    raw = t.raw_data
                    offset = self._append(lambda raw=raw: self._f.write(raw))
                    self._mark(t, offset, len(raw))
        finally:
            self._f.close()
        onnx.save_model(model, os.fspath(self.model_path))
        return self.model_path


class TensorStore:
    """Reads and writes initializer values of a graph loaded by :func:`load_graph`.

    With ``writer=None`` values live in the graph (``numpy_helper``); with a :class:`DataWriter`
    changed values go straight to the output's data file, so memory holds one tensor at a time.

    Args:
        base_dir: Folder of the source model (where its external data files are).
        writer: Where changed weights go, or None to keep them in the graph.
    """

    def __init__(self, base_dir: Path | str | None = None, writer: DataWriter | None = None) -> None:
        self.base_dir = None if base_dir is None else os.fspath(base_dir)
        self.writer = writer

    def get(self, tensor: Any) -> np.ndarray:
        """The value of ``tensor`` (read from its external file when it has one)."""
        from onnx import numpy_helper

        return numpy_helper.to_array(tensor, base_dir=self.base_dir or "")

    def set(self, tensor: Any, array: np.ndarray) -> None:
        """Give ``tensor`` the value ``array`` (same name; dims and type from the array)."""
        from onnx import numpy_helper

        if self.writer is not None:
            self.writer.put(tensor, array)
        else:
            tensor.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array), tensor.name))


def rename_data(model_path: Path, final_name: str) -> list[Path]:
    """Give a scratch model's external data the file name of its published output.

    The one data file becomes ``<final_name>.data`` (renamed, and the model's ``location``
    entries rewritten); several files (e.g. the TorchScript exporter's one file per tensor) are
    merged into it, tensor by tensor. Done in ``model_path``'s folder, before publishing.

    Args:
        model_path: A model in a scratch folder.
        final_name: File name of the published output (e.g. ``"m.int8.onnx"``).

    Returns:
        The data files to publish beside the model (empty when it has no external data).
    """
    import onnx

    model = onnx.load_model(os.fspath(model_path), load_external_data=False)
    tensors = external_tensors(model)
    if not tensors:
        return []
    folder = model_path.parent
    target = data_file_name(final_name)
    locations = {_info(t)[0] for t in tensors}
    if len(locations) == 1:
        (loc,) = locations
        if loc != target:
            if (folder / target).exists():
                raise FileExistsError(f"{folder / target} exists in the scratch folder")
            os.replace(folder / loc, folder / target)
            for t in tensors:
                for kv in t.external_data:
                    if kv.key == "location":
                        kv.value = target
            onnx.save_model(model, os.fspath(model_path))
        return [folder / target]
    staging = folder / ".publish"
    staging.mkdir(exist_ok=True)
    writer = DataWriter(staging / final_name)
    writer.save(model, base_dir=folder)
    os.replace(writer.path, folder / target)
    os.replace(staging / final_name, model_path)
    shutil.rmtree(staging, ignore_errors=True)
    return [folder / target]

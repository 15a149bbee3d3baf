"""Input specs from flags and data files, and the input arrays every step runs on.

Sources, in order: the model file (ONNX graph, ExportedProgram), ``--input-shape``
(``1,1,8,8`` for one float32 input; ``name:1x128:int64`` per input, comma-separated or
repeated), and ``--calibration-data FILE.npz`` (arrays keyed by input name, first axis =
samples).
"""

from __future__ import annotations

import inspect
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compressor.artifact import DTYPES, IOSpec, TensorSpec
from compressor.errors import UsageError

_SHAPE = re.compile(r"^\d+([x,]\d+)*$")


def parse_input_shapes(values: list[str]) -> list[tuple[str | None, tuple[int, ...], str]]:
    """Parse ``--input-shape`` values.

    Args:
        values: Each item is ``"1,1,8,8"`` (one unnamed float32 input) or one or more
            comma-separated ``"name:1x128[:dtype]"`` entries.

    Returns:
        ``(name or None, shape, dtype)`` per input, in the order given.

    Raises:
        UsageError: A value that is neither form, a zero or negative size, or an unknown dtype.
    """
    out: list[tuple[str | None, tuple[int, ...], str]] = []
    for value in values:
        value = value.strip()
        if ":" not in value:
            if not _SHAPE.match(value):
                raise UsageError(
                    f"--input-shape '{value}' is not a shape; write 1,1,8,8 or name:1x128:int64"
                )
            out.append((None, _dims(value, value), "float32"))
            continue
        for entry in value.split(","):
            parts = entry.strip().split(":")
            if len(parts) not in (2, 3) or not parts[0] or not _SHAPE.match(parts[1]):
                raise UsageError(f"--input-shape entry '{entry}' must look like name:1x128 or name:1x128:int64")
            dtype = parts[2] if len(parts) == 3 else "float32"
            if dtype not in DTYPES:
                raise UsageError(f"--input-shape dtype '{dtype}' is unknown; use one of {', '.join(DTYPES)}")
            out.append((parts[0], _dims(parts[1], entry), dtype))
    if sum(1 for n, _, _ in out if n is None) and len(out) > 1:
        raise UsageError("with several --input-shape values, name each one: name:1x128:int64")
    return out


def _dims(text: str, whole: str) -> tuple[int, ...]:
    dims = tuple(int(d) for d in re.split(r"[x,]", text))
    if any(d <= 0 for d in dims):
        raise UsageError(f"--input-shape '{whole}' has a zero size; every axis must be at least 1")
    return dims


@dataclass(frozen=True)
class SampleData:
    """Input arrays keyed by input name, first axis = samples, plus optional ``labels``.

    Attributes:
        arrays: ``name -> ndarray [samples, ...]``.
        labels: int64 ``[samples]`` class labels, or None.
        source: Where the arrays came from (file path or ``"random"``).
        casts: Dtype changes made to fit the model's inputs: ``(array, from dtype, to dtype)`` each
            (e.g. numpy's default float64 to the model's float32).
    """

    arrays: dict[str, np.ndarray]
    labels: np.ndarray | None
    source: str
    casts: tuple[tuple[str, str, str], ...] = ()

    @property
    def num_samples(self) -> int:
        """Number of samples (first axis)."""
        return int(next(iter(self.arrays.values())).shape[0])

    def batch(self, start: int, size: int) -> dict[str, np.ndarray]:
        """Samples ``start:start+size`` of every input."""
        return {k: v[start : start + size] for k, v in self.arrays.items()}

    def renamed(self, names: list[str]) -> SampleData:
        """The same data keyed by ``names`` (a single array is matched to a single input by position).

        Raises:
            UsageError: Keys and input names do not match.
        """
        if set(names) <= set(self.arrays):
            return SampleData({n: self.arrays[n] for n in names}, self.labels, self.source, self.casts)
        if len(names) == 1 and len(self.arrays) == 1:
            return SampleData({names[0]: next(iter(self.arrays.values()))}, self.labels, self.source, self.casts)
        missing = sorted(set(names) - set(self.arrays))
        raise UsageError(
            f"{self.source} has arrays {sorted(self.arrays)} but the model needs inputs {names} "
            f"(missing {missing}); key the .npz arrays by input name"
        )


def load_npz(path: Path, *, want_labels: bool = False) -> SampleData:
    """Load a ``.npz`` of input arrays (and ``labels``), a folder of ``.npy`` files, or one ``.npy`` file.

    Args:
        path: ``.npz`` file with one array per input name (plus optional ``labels``), a folder of
            ``<name>.npy``, or a single ``.npy`` array (for a model with one input; matched to it by position).
        want_labels: Require a ``labels`` array (training data). Evaluation data may come without labels:
            fidelity then runs on its inputs and accuracy is left out.

    Returns:
        The arrays as stored (dtypes are fitted to the model later by :func:`check_data_fits`); ``labels``
        as int64 ``[samples]``.

    Raises:
        UsageError: Missing file, not an npz/npy, object arrays, empty arrays, sample counts that differ
            between inputs, or labels that are not integer class ids of shape ``[samples]`` (see
            :func:`check_labels`).
    """
    path = Path(path)
    if not path.exists():
        raise UsageError(f"data file not found: {path}")
    arrays: dict[str, np.ndarray] = {}
    try:
        if path.is_dir():
            files = sorted(path.glob("*.npy"))
            if not files:
                raise UsageError(f"{path} holds no .npy files; save one <input name>.npy per input")
            for f in files:
                arrays[f.stem] = np.load(f, allow_pickle=False)
        else:
            loaded = np.load(path, allow_pickle=False)
            if isinstance(loaded, np.ndarray):  # one .npy file: one input's samples
                arrays = {path.stem: loaded}
            else:
                with loaded as z:
                    arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        reason = "empty file" if path.is_file() and path.stat().st_size == 0 else str(e).split(".")[0]
        raise UsageError(
            f"cannot read {path} as input data ({reason}); save arrays keyed by input name with numpy.savez"
        ) from e
    for k, v in arrays.items():
        if v.dtype.kind == "O":
            raise UsageError(
                f"array '{k}' in {path} holds variable-length samples (an object array); pad them to one length "
                "(e.g. token ids with the padding id and attention_mask 0) and save a regular numeric array"
            )
        if v.dtype.kind not in "biuf":
            raise UsageError(f"array '{k}' in {path} has dtype {v.dtype}; input data must be numeric")
        if v.dtype.kind == "f" and not np.isfinite(v).all():
            raise UsageError(f"array '{k}' in {path} contains NaN or infinite values; clean the data first")
    labels = arrays.pop("labels", None)
    if want_labels and labels is None:
        raise UsageError(f"{path} has no 'labels' array; training data needs inputs plus labels")
    if not arrays:
        raise UsageError(f"{path} has no input arrays")
    counts = {k: v.shape[0] if v.ndim else 0 for k, v in arrays.items()}
    if len(set(counts.values())) != 1 or 0 in counts.values():
        raise UsageError(f"arrays in {path} must share a non-empty first (sample) axis; got {counts}")
    if labels is not None:
        labels = check_labels(labels, samples=next(iter(counts.values())), source=str(path))
    return SampleData(arrays, labels, str(path))


def check_labels(labels: np.ndarray, *, samples: int, source: str, classes: int | None = None) -> np.ndarray:
    """Check that labels are class ids: integers, shape ``[samples]``, in ``[0, classes)``.

    Args:
        labels: The ``labels`` array as stored.
        samples: Number of input samples it must match.
        source: The data file, for messages.
        classes: Number of classes of the model's output, when known.

    Returns:
        The labels as int64 ``[samples]``.

    Raises:
        UsageError: One-hot or probability labels (``[samples, classes]``), float or boolean labels, a count
            that differs from the samples, negative ids, or ids the model's output has no class for.
    """
    if labels.ndim == 2 and labels.shape[0] == samples and labels.shape[1] > 1:
        raise UsageError(f"'labels' in {source} has shape {list(labels.shape)} (one-hot or probabilities); labels "
                         "must be integer class ids of shape [samples]: save labels.argmax(axis=1)")
    if labels.ndim != 1:
        raise UsageError(f"'labels' in {source} has shape {list(labels.shape)}; labels must be integer class ids "
                         f"of shape [{samples}] (one per sample)")
    if labels.dtype.kind not in "iu":
        hint = "labels.astype(numpy.int64)" if labels.dtype.kind == "f" and np.all(np.mod(labels, 1) == 0) else \
            "the class index of each sample"
        raise UsageError(f"'labels' in {source} is {labels.dtype.name}; labels must be integer class ids: save "
                         f"{hint}")
    if labels.shape[0] != samples:
        raise UsageError(f"'labels' in {source} has {labels.shape[0]} entries for {samples} samples")
    if labels.size and int(labels.min()) < 0:
        raise UsageError(f"'labels' in {source} holds negative class ids (least {int(labels.min())}); labels must "
                         "be class indices from 0")
    if classes is not None and labels.size and int(labels.max()) >= classes:
        raise UsageError(f"'labels' in {source} go up to {int(labels.max())} but the model's output has {classes} "
                         f"classes (ids 0-{classes - 1}); check that the labels belong to this model")
    return labels.astype(np.int64)


def torch_io_spec(module: Any, shapes: list[tuple[str | None, tuple[int, ...], str]], data: SampleData | None) -> IOSpec:
    """Input spec of a PyTorch module from ``--input-shape`` or calibration data.

    The batch axis (axis 0) is named ``"batch"`` (dynamic in the export); the other axes
    take the given sizes.

    Raises:
        UsageError: Neither source is available, or names do not match ``forward``.
    """
    arg_names = _forward_arg_names(module)
    if shapes:
        if len(shapes) == 1 and shapes[0][0] is None:
            name = arg_names[0] if arg_names else "input"
            return IOSpec(inputs=(TensorSpec(name, shapes[0][2], ("batch", *shapes[0][1][1:])),))
        return IOSpec(inputs=tuple(TensorSpec(n or "input", d, ("batch", *s[1:])) for n, s, d in shapes))
    if data is not None:
        names = list(data.arrays)
        if len(names) == 1 and arg_names:
            names = [arg_names[0]]
            data = data.renamed(names)
        return IOSpec(
            inputs=tuple(
                TensorSpec(n, _model_dtype(data.arrays[n].dtype), ("batch", *data.arrays[n].shape[1:])) for n in names
            )
        )
    raise UsageError(
        "the input shape of this PyTorch model is unknown: pass --input-shape (e.g. 1,1,8,8 or "
        "input_ids:1x128:int64) or --calibration-data FILE.npz"
    )


def _model_dtype(dtype: np.dtype) -> str:
    """The input dtype a PyTorch model is assumed to take for data of ``dtype``.

    float64 (numpy's default) is taken as float32, the dtype of PyTorch's default parameters, as an ONNX
    model's float32 input takes it: data is cast the same way for every format (:func:`check_data_fits`
    records the cast). A float64 model needs ``--input-shape name:...:float64``.
    """
    return "float32" if dtype == np.float64 else dtype.name


def _forward_arg_names(module: Any) -> list[str]:
    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError, AttributeError):
        return []
    return [
        p.name
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
    ]


def apply_shapes_to_spec(io: IOSpec, shapes: list[tuple[str | None, tuple[int, ...], str]]) -> IOSpec:
    """Fix the dynamic axes of a file's input spec with ``--input-shape`` values.

    Raises:
        UsageError: The given shapes do not match the file's inputs (count, rank or fixed sizes).
    """
    if not shapes:
        return io
    if len(shapes) == 1 and shapes[0][0] is None and len(io.inputs) == 1:
        shapes = [(io.inputs[0].name, shapes[0][1], io.inputs[0].dtype)]
    by_name = {n: (s, d) for n, s, d in shapes}
    unknown = sorted(set(by_name) - set(io.input_names))
    if unknown:
        raise UsageError(f"--input-shape names {unknown} are not inputs of the model; its inputs are {io.input_names}")
    new = []
    for spec in io.inputs:
        if spec.name not in by_name:
            new.append(spec)
            continue
        shape, _ = by_name[spec.name]
        if len(shape) != len(spec.shape):
            raise UsageError(
                f"--input-shape for '{spec.name}' has {len(shape)} axes but the model's input has "
                f"{len(spec.shape)}: {list(spec.shape)}"
            )
        dims: list[int | str | None] = []
        for axis, (given, have) in enumerate(zip(shape, spec.shape, strict=True)):
            if isinstance(have, int) and have > 0 and have != given and axis == 0:
                raise UsageError(f"--input-shape for '{spec.name}' has batch {given} but the model fixes its batch axis "
                                 f"at {have} (exported without a dynamic batch); use {have} or re-export with a dynamic "
                                 "batch axis")
            if isinstance(have, int) and have > 0 and have != given and axis != 0:
                raise UsageError(f"--input-shape for '{spec.name}' axis {axis} is {given} but the model fixes it at {have}")
            dims.append(have if axis == 0 and not isinstance(have, int) else given)
        new.append(TensorSpec(spec.name, spec.dtype, tuple(dims)))
    return IOSpec(inputs=tuple(new), outputs=io.outputs)


def fixed_batch_size(io: IOSpec) -> int | None:
    """The batch size the model fixes on axis 0 of its inputs, or None when the batch axis is dynamic (case R10).

    A ``torch.export`` program exported without ``dynamic_shapes`` (and an ONNX graph without a
    symbolic batch) runs only at the batch size it was traced with; every batch fed to it must have that size.

    Args:
        io: Input spec (axis 0 an ``int`` when fixed).

    Returns:
        The fixed size when every input has one and they agree, else None.
    """
    sizes = {s.shape[0] if s.shape else None for s in io.inputs}
    if len(sizes) != 1:
        return None
    size = sizes.pop()
    return size if isinstance(size, int) and size > 0 else None


def shape_batch_size(shapes: list[tuple[str | None, tuple[int, ...], str]]) -> int | None:
    """Batch size (axis 0) given in ``--input-shape``, or None."""
    return shapes[0][1][0] if shapes else None


#: Sequence length of generated token inputs when neither the graph, ``--input-shape`` nor data fix it
#: (the usual padded length of sentence encoders; documented in the README).
DEFAULT_SEQ_LEN = 128


def default_token_dims(io: IOSpec, dims: dict[str, tuple[int, ...]] | None = None, *,
                       known_axes: dict[str, int] | None = None) -> tuple[dict[str, tuple[int, ...]], bool]:
    """Shapes (without the sample axis) for inputs whose unfixed axes are token sequence axes.

    Token inputs are integer or boolean ``[batch, sequence]`` inputs (``input_ids``, ``attention_mask``,
    ``token_type_ids``, ``position_ids``). A dynamic axis named like one whose size is known (``known_axes``,
    e.g. from another input's ``--input-shape``) takes that size; otherwise a token input's axis 1, and any
    axis of another input with the same ``dim_param``, gets :data:`DEFAULT_SEQ_LEN`. Inputs already in
    ``dims`` are left as given.

    Returns:
        ``({input name: shape without the sample axis}, whether DEFAULT_SEQ_LEN was used)`` for the inputs
        this fills.
    """
    dims = dims or {}
    known = dict(known_axes or {})
    seq_names: set[str] = set()
    token_inputs = set()
    for spec in io.inputs:
        if len(spec.shape) != 2 or spec.dtype.startswith("float"):
            continue
        if not (isinstance(spec.shape[1], int) and spec.shape[1] > 0):
            token_inputs.add(spec.name)
            if isinstance(spec.shape[1], str):
                seq_names.add(spec.shape[1])
    out: dict[str, tuple[int, ...]] = {}
    used_default = False
    for spec in io.inputs:
        if spec.name in dims:
            continue
        shape: list[int] = []
        default_here = False
        for axis, d in enumerate(spec.shape[1:], 1):
            if isinstance(d, int) and d > 0:
                shape.append(d)
            elif isinstance(d, str) and d in known:
                shape.append(known[d])
            elif (spec.name in token_inputs and axis == 1) or (isinstance(d, str) and d in seq_names):
                shape.append(DEFAULT_SEQ_LEN)
                default_here = True
            else:
                break
        else:
            if tuple(shape) != tuple(spec.shape[1:]):
                out[spec.name] = tuple(shape)
                used_default |= default_here
    return out, used_default


def random_data(io: IOSpec, *, num_samples: int, seed: int = 0, dims: dict[str, tuple[int, ...]] | None = None,
                int_high: dict[str, int] | None = None) -> SampleData:
    """Seeded random inputs for a spec: N(0,1) floats, ones for ``*mask*`` ints, ids in [0, high) otherwise.

    Args:
        io: Input spec; dynamic axes other than the batch must be fixed by ``dims``.
        num_samples: Samples on the first axis.
        seed: numpy seed.
        dims: Optional per-input shape (without the sample axis) overriding the spec.
        int_high: Exclusive upper bound of the values of each integer input (the size of what it indexes,
            from :mod:`compressor.index_ranges`); 100 for inputs not listed.
    """
    rng = np.random.default_rng(seed)
    arrays = {}
    for spec in io.inputs:
        shape = (dims or {}).get(spec.name) or spec.concrete_shape(batch_size=1)[1:]
        full = (num_samples, *shape)
        if spec.dtype.startswith("float"):
            arrays[spec.name] = rng.standard_normal(full).astype(spec.dtype)
        elif spec.dtype == "bool":
            arrays[spec.name] = np.ones(full, dtype=bool)
        elif "mask" in spec.name.lower():
            arrays[spec.name] = np.ones(full, dtype=spec.dtype)
        else:
            high = max(1, min(100, (int_high or {}).get(spec.name, 100)))
            arrays[spec.name] = rng.integers(0, high, size=full).astype(spec.dtype)
    return SampleData(arrays, None, "random")


def check_data_fits(io: IOSpec, data: SampleData) -> SampleData:
    """Match data keys to inputs and check dtypes and fixed axes; cast to the inputs' dtypes.

    Arrays of the input's kind but another width (float64 data for a float32 input, int32 ids for int64)
    are cast, the same way for every model format; each cast is listed in the result's ``casts``.

    Raises:
        UsageError: A missing input, an array whose rank or fixed size differs from the spec.
    """
    data = data.renamed(io.input_names)
    arrays = {}
    casts = list(data.casts)
    for spec in io.inputs:
        arr = data.arrays[spec.name]
        if arr.ndim != len(spec.shape):
            raise UsageError(
                f"'{spec.name}' in {data.source} has shape {list(arr.shape)} (samples first) but the model's input "
                f"has {len(spec.shape)} axes: {list(spec.shape)}"
            )
        for axis, (have, want) in enumerate(zip(arr.shape, spec.shape, strict=True)):
            if axis and isinstance(want, int) and want > 0 and have != want:
                raise UsageError(
                    f"'{spec.name}' in {data.source} has size {have} on axis {axis}; the model needs {want}"
                )
        if arr.dtype.name != spec.dtype:
            if arr.dtype.kind != np.dtype(spec.dtype).kind and not (arr.dtype.kind in "iu" and np.dtype(spec.dtype).kind in "iu"):
                raise UsageError(f"'{spec.name}' in {data.source} is {arr.dtype.name}; the model needs {spec.dtype}")
            casts.append((spec.name, arr.dtype.name, spec.dtype))
            arr = arr.astype(spec.dtype)
        arrays[spec.name] = arr
    return SampleData(arrays, data.labels, data.source, tuple(dict.fromkeys(casts)))

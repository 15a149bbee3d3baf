"""ONNX models, with external data files beside them.

Sniffed by parsing the file as an ``onnx.ModelProto`` without its external data (a zip
archive is never ONNX); the IO spec comes from the graph's inputs (initializers excluded)
and outputs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar

from compressor.artifact import IOSpec, ModelArtifact, ModelFormat, TensorSpec
from compressor.errors import UsageError
from compressor.loaders.base import Loader, LoadOptions


class OnnxLoader(Loader):
    """ONNX (``onnx.ModelProto``), external data included."""

    formats: ClassVar[tuple[ModelFormat, ...]] = (ModelFormat.ONNX,)
    description: ClassVar[str] = "ONNX"

    def sniff(self, path: Path, head_bytes: bytes, zip_names: tuple[str, ...] | None) -> bool:
        """True when the file parses as an ONNX model with an IR version and at least one node."""
        return zip_names is None and parse_onnx(path) is not None

    def load(self, path: Path, options: LoadOptions) -> ModelArtifact:
        """Load the model's graph; weights in external data files stay on disk (checked, not read).

        Weights are read lazily, one tensor at a time, by the passes that need them (see
        :mod:`compressor.external_data`), so a model over 2 GB is never held in memory whole.

        Returns:
            An artifact with ``loaded`` an ``onnx.ModelProto`` (external initializers not loaded),
            ``io`` from its graph, and ``details["external_data"]`` (True when weights are external).

        Raises:
            UsageError: The model or an external data file it names cannot be read.
        """
        import onnx

        from compressor.external_data import check_data_files, has_external_data

        try:
            model = onnx.load_model(os.fspath(path), load_external_data=False)
            check_data_files(model, Path(path).parent)
        except Exception as e:
            raise UsageError(
                f"cannot load ONNX model {path}: {e}; check that its external data files sit beside it"
            ) from e
        return ModelArtifact(path=path, format=ModelFormat.ONNX, io=onnx_io_spec(model), loaded=model,
                             details={"external_data": has_external_data(model)})

    def io_spec(self, artifact: ModelArtifact) -> IOSpec | None:
        """Inputs and outputs of the loaded graph (see :func:`onnx_io_spec`)."""
        return onnx_io_spec(artifact.loaded)


def parse_onnx(path: Path) -> Any:
    """Parse an ONNX file without external data; None when it is not ONNX.

    Returns:
        The ``onnx.ModelProto``, or None when parsing fails, the IR version is not positive or
        the graph has no nodes.
    """
    import onnx

    try:
        model = onnx.load_model(os.fspath(path), load_external_data=False)
    except Exception:
        return None
    if model.ir_version <= 0 or len(model.graph.node) == 0:
        return None
    return model


def onnx_io_spec(model: Any) -> IOSpec:
    """Input/output spec of an ``onnx.ModelProto`` (initializers excluded from inputs).

    Args:
        model: ``onnx.ModelProto``.

    Returns:
        One :class:`TensorSpec` per graph input and output: numpy dtype name (``"float32"``
        when the element type is unset) and one entry per axis: ``int`` for ``dim_value``,
        ``str`` for ``dim_param``, None for neither.
    """
    from compressor.onnx_graph import dtype_name, initializers

    inits = initializers(model)

    def spec(v: Any) -> TensorSpec:
        t = v.type.tensor_type
        dtype = dtype_name(t.elem_type)
        dims: list[int | str | None] = []
        for d in t.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                dims.append(d.dim_param)
            else:
                dims.append(None)
        return TensorSpec(v.name, dtype, tuple(dims))

    return IOSpec(
        inputs=tuple(spec(v) for v in model.graph.input if v.name not in inits),
        outputs=tuple(spec(v) for v in model.graph.output),
    )


def default_opset(model: Any) -> int | None:
    """The default-domain (``ai.onnx``) opset an ``onnx.ModelProto`` declares, or None."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def upgrade_opset(src: Path, dst: Path, target: int, feeds: dict[str, Any], *, atol: float = 1e-5,
                  rtol: float = 1e-4) -> dict[str, Any]:
    """Convert an ONNX model to a newer default-domain opset with ONNX's version converter, checked by parity.

    ``onnx.version_converter.convert_version`` rewrites each node whose signature changed between the
    opsets (e.g. ``Unsqueeze``/``Squeeze``/``ReduceMean`` axes from an attribute to an input). The converted
    model is run in ONNX Runtime next to the original on ``feeds`` and must give the same outputs
    (``|a - b| <= atol + rtol * |b|``) before it is used.

    Args:
        src: ONNX file (external data beside it is loaded).
        dst: Where to write the converted model.
        target: The default-domain opset wanted.
        feeds: One batch of inputs (``name -> ndarray``) for the parity check.
        atol: Absolute tolerance of the parity check.
        rtol: Relative tolerance of the parity check.

    Returns:
        ``{"from", "to", "max_abs_diff"}``.

    Raises:
        UsageError: The converter fails on this graph, or the converted model does not load, run or match;
            the message names the opset and says how to re-export.
    """
    import numpy as np
    import onnx
    from onnx import version_converter

    from compressor.artifact import save_onnx
    from compressor.runtime import make_session

    model = onnx.load_model(os.fspath(src))
    before = default_opset(model)
    advice = f"re-export the model with opset {target} or later (torch.onnx.export(..., opset_version={target}))"
    try:
        converted = version_converter.convert_version(model, target)
        onnx.checker.check_model(converted)
    except Exception as e:
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise UsageError(f"the model uses ONNX opset {before}, and ONNX's version converter cannot upgrade it to "
                         f"opset {target} ({msg}); {advice}") from e
    save_onnx(converted, dst)
    try:
        ref = make_session(src).run(None, feeds)
        got = make_session(dst).run(None, feeds)
    except Exception as e:
        raise UsageError(f"the model upgraded from ONNX opset {before} to {target} does not run in ONNX Runtime "
                         f"({str(e).strip().splitlines()[0][:200]}); {advice}") from e
    worst = 0.0
    for a, b in zip(got, ref, strict=True):
        if a.shape != b.shape or not np.allclose(a, b, atol=atol, rtol=rtol, equal_nan=True):
            diff = float(np.max(np.abs(a.astype(np.float64) - b))) if a.shape == b.shape else float("inf")
            raise UsageError(f"the model upgraded from ONNX opset {before} to {target} gives other outputs (max abs "
                             f"diff {diff:.3g}); {advice}")
        if a.size and a.dtype.kind == "f":
            worst = max(worst, float(np.max(np.abs(a.astype(np.float64) - b))))
    return {"from": before, "to": target, "max_abs_diff": worst}


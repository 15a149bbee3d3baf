"""PyTorch -> ONNX export with a parity check against PyTorch and an exporter fallback.

Exporters: ``torch.onnx.export(dynamo=True)`` (torch.export based) first, then the
TorchScript-based ``torch.onnx.export(dynamo=False)``. Every export is run in ONNX Runtime
and compared with PyTorch on the same inputs before it is accepted. The batch axis is
dynamic; the example used for export has a batch of 2 so that torch.export does not
specialise it to 1 (case E1).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compressor.artifact import IOSpec, ModelArtifact, ModelFormat, external_data_threshold
from compressor.errors import ExportError, UsageError
from compressor.inputs import SampleData

if TYPE_CHECKING:
    from compressor.context import RunContext
    from compressor.passes import PassResult
    from compressor.passes.configs import ExportConfig

DEFAULT_OPSET = 18
#: Samples of each real data set (evaluation / calibration data) the parity check compares on.
PARITY_MAX_SAMPLES = 256
#: Samples of generated (random) inputs it compares on.
PARITY_RANDOM_SAMPLES = 8
#: Samples per ONNX Runtime / PyTorch call of the parity check.
PARITY_CHUNK = 32
#: Samples of each data set also checked one at a time (a batch can hide a per-sample branch).
PARITY_SINGLE = 16
EXPORTERS = ("dynamo", "torchscript")
_TWO_GB = 2 * 1024**3
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # torch.export (2.13) colours parts of its error messages


@dataclass
class ExportResult:
    """Outcome of :func:`export_to_onnx`.

    Attributes:
        path: The ONNX file written.
        exporter: ``"dynamo"`` or ``"torchscript"``.
        max_abs_diff: Largest |ONNX Runtime - PyTorch| over all outputs and check inputs.
        checked_samples: Samples the parity check compared on (real data when given).
        checked_on: The data sets it compared on (file paths, or "generated inputs").
        attempts: One entry per exporter tried: ``{"exporter", "ok", "error" | "max_abs_diff"}``.
        output_names: Names of the ONNX outputs.
        opset: The default-domain opset the file declares (may differ from the one asked for).
    """

    path: Path
    exporter: str
    max_abs_diff: float
    attempts: list[dict[str, Any]] = field(default_factory=list)
    output_names: list[str] = field(default_factory=list)
    opset: int | None = None
    checked_samples: int = 0
    checked_on: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {"exporter": self.exporter, "opset": self.opset, "max_abs_diff": self.max_abs_diff,
                "attempts": self.attempts, "checked_samples": self.checked_samples, "checked_on": self.checked_on}


def _flatten(out: Any) -> list[Any]:
    import torch

    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _flatten(o)]
    if isinstance(out, dict):
        return [t for o in out.values() for t in _flatten(o)]
    if hasattr(out, "to_tuple"):
        return _flatten(out.to_tuple())
    raise ExportError(f"the model returns {type(out).__name__}; compressor exports tensor, tuple or dict outputs")


def torch_forward(model: Any, feeds: dict[str, np.ndarray], io_spec: IOSpec) -> list[np.ndarray]:
    """Run a PyTorch model (nn.Module, ScriptModule or ExportedProgram) on numpy inputs.

    Args:
        model: The model; an ExportedProgram is run through ``.module()``.
        feeds: ``name -> ndarray`` for every input in ``io_spec`` order.
        io_spec: Input order.

    Returns:
        Flattened outputs as float32/int numpy arrays.

    Raises:
        UsageError: The model rejects inputs of this shape or dtype.
    """
    import torch

    fn = model.module() if isinstance(model, torch.export.ExportedProgram) else model
    args = [torch.from_numpy(np.ascontiguousarray(feeds[n])) for n in io_spec.input_names]
    try:
        with torch.inference_mode():
            out = fn(*args)
    except Exception as e:
        shapes = {n: list(feeds[n].shape) for n in io_spec.input_names}
        raise UsageError(
            f"the model fails on inputs of shape {shapes}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; "
            "check --input-shape and the data (--calibration-data / --eval-data; for text data, a --max-length "
            "the model accepts)"
        ) from e
    return [t.detach().cpu().numpy() for t in _flatten(out)]


def _quiet():
    """Silence exporter chatter (warnings, prints, logs) so stdout stays clean for --json."""
    stack = contextlib.ExitStack()
    stack.enter_context(warnings.catch_warnings())
    warnings.simplefilter("ignore")
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    # torch.export (2.13) prints the traced graph to stderr when it meets data-dependent control flow; the
    # failure itself is kept in the attempt's error
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript", "torch.fx"):
        logger = logging.getLogger(name)
        stack.callback(logger.setLevel, logger.level)  # restored on the way out: a library leaves logging as it was
        logger.setLevel(logging.ERROR)
    return stack


def export_to_onnx(
    model: Any,
    io_spec: IOSpec,
    out_path: Path,
    *,
    check_data: SampleData,
    opset: int = DEFAULT_OPSET,
    atol: float = 1e-4,
    rtol: float = 1e-3,
    exporter: str = "auto",
    more_check_data: tuple[SampleData, ...] = (),
) -> ExportResult:
    """Export a PyTorch model to one ONNX file and verify it against PyTorch on the real samples.

    The parity check runs the export and PyTorch on the first sample, the first two (the export example),
    then every sample of ``check_data`` and ``more_check_data`` up to :data:`PARITY_MAX_SAMPLES` each
    (:data:`PARITY_RANDOM_SAMPLES` of generated inputs), in batches of :data:`PARITY_CHUNK`. An export can
    match on its example and not on other samples when ``forward`` branches on tensor values in Python
    (the exporter keeps the branch its example took); the error then says so.

    Args:
        model: ``torch.nn.Module`` (eval mode), ``torch.jit.ScriptModule`` or ``ExportedProgram``.
        io_spec: Inputs in call order; axis 0 of each becomes the dynamic ``batch`` axis. Its ``outputs``, when
            there are as many as the model returns, name the ONNX outputs (else ``output`` / ``output_<i>``).
        out_path: Destination ``.onnx`` (one file unless the weights exceed 2 GB).
        check_data: Inputs to compare on (evaluation or calibration data, else generated inputs); its first
            two samples are the export example.
        more_check_data: Further real data sets to compare on (e.g. calibration data beside evaluation data).
        opset: ONNX opset version.
        atol: Absolute tolerance of the parity check.
        rtol: Relative tolerance of the parity check (``|a-b| <= atol + rtol*|b|``).
        exporter: ``"auto"`` (dynamo, then TorchScript), ``"dynamo"`` or ``"torchscript"``.

    Returns:
        :class:`ExportResult` of the first exporter whose output matched.

    Raises:
        ExportError: Every exporter failed or mismatched; the message lists each with its
            error or max abs diff, and names data-dependent control flow as the likely cause when the
            export matched its example but not other samples.
    """
    import torch

    is_ep = isinstance(model, torch.export.ExportedProgram)
    is_script = isinstance(model, (torch.jit.ScriptModule, torch.jit.ScriptFunction))
    order = list(EXPORTERS) if exporter == "auto" else [exporter]
    if exporter == "auto" and opset < 18:  # the dynamo exporter writes opset 18 at least
        order = ["torchscript", "dynamo"]
    if is_ep:
        order = [e for e in order if e == "dynamo"] or ["dynamo"]
    if is_script:
        order = [e for e in order if e == "torchscript"] or ["torchscript"]

    from compressor.inputs import fixed_batch_size

    n = check_data.num_samples
    fixed = fixed_batch_size(io_spec)
    if fixed is not None and n < fixed:  # a program traced at a fixed batch (case R10): only that batch size can run
        raise UsageError(f"the model's batch axis is fixed at {fixed} but the data has {n} sample(s); "
                         f"give at least {fixed} samples")
    batches, ids, checked_on = _parity_batches(check_data, more_check_data, fixed=fixed)
    example = batches[0] if fixed is not None else (check_data.batch(0, 2) if n >= 2 else check_data.batch(0, 1))
    refs = [torch_forward(model, b, io_spec) for b in batches]
    output_names = ["output"] if len(refs[0]) == 1 else [f"output_{i}" for i in range(len(refs[0]))]
    if io_spec.outputs and len(io_spec.outputs) == len(refs[0]):  # names the loader knows (Hugging Face folders)
        output_names = [t.name for t in io_spec.outputs]
    args = tuple(torch.from_numpy(np.ascontiguousarray(example[name])) for name in io_spec.input_names)
    # weights over the threshold (protobuf's 2 GB limit, less headroom) are written as external data
    big = _param_bytes(model) > min(external_data_threshold(), int(0.9 * _TWO_GB))

    attempts: list[dict[str, Any]] = []
    for name in order:
        try:
            with _quiet():
                _run_exporter(name, model, args, io_spec, output_names, out_path, opset, big, is_ep)
        except Exception as e:  # exporter internals raise anything
            from compressor.errors import stop_requested

            # torch.export wraps a Ctrl-C or SIGTERM in its own error: do not fall back
            stop = _interruption(e) or stop_requested()
            if stop is not None:
                raise stop from e
            msg = _ANSI.sub("", str(e)).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            attempts.append({"exporter": name, "ok": False, "error": f"{type(e).__name__}: {msg}"})
            if _names_data_dependence(_chain_text(e)):
                attempts[-1]["data_dependent_control_flow"] = True
                attempts[-1]["error"] = f"{type(e).__name__}: torch.export met control flow on tensor values"
            continue
        strip_debug_metadata(out_path)
        try:
            diff, differing, checked = _parity(out_path, batches, refs, ids, atol, rtol)
        except Exception as e:
            msg = str(e).strip().splitlines()[0][:300]
            attempts.append({"exporter": name, "ok": False, "error": f"ONNX Runtime could not run the export: {msg}"})
            continue
        ok = differing == 0
        attempts.append({"exporter": name, "ok": ok, "max_abs_diff": diff, "samples_differing": differing,
                         "samples_checked": checked})
        if ok:
            res = ExportResult(out_path, name, diff, attempts, output_names)
            res.opset = _opset_of(out_path)
            res.checked_samples = checked
            res.checked_on = checked_on
            return res
    for p in (out_path, out_path.with_name(out_path.name + ".data")):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()  # (the TorchScript exporter's one-file-per-tensor data goes with the scratch folder)
    parts = []
    data_dependent = False
    for a in attempts:
        if "error" in a:
            parts.append(f"{a['exporter']} failed ({a['error']})")
            data_dependent |= bool(a.get("data_dependent_control_flow"))
        else:
            parts.append(f"{a['exporter']} output differs from PyTorch by max abs diff {a['max_abs_diff']:.3g} > atol "
                         f"{atol:g} on {a['samples_differing']} of {a['samples_checked']} samples of "
                         f"{' and '.join(checked_on)}")
            data_dependent |= 0 < a["samples_differing"] < a["samples_checked"]
    if data_dependent:
        raise ExportError(
            "ONNX export failed: " + "; ".join(parts) + "; likely cause: data-dependent control flow (a Python if or "
            "loop on tensor values in forward): the export keeps the branch its example took, so it matches PyTorch "
            "on some samples and not others; write the branch with torch.where or torch.cond")
    raise ExportError(
        "ONNX export failed: " + "; ".join(parts) + "; try --opset, a looser --atol, or --debug for details"
    )


def run_export(artifact: ModelArtifact, config: ExportConfig, ctx: RunContext) -> PassResult:
    """The export step: a PyTorch model to one ONNX file, checked against PyTorch on ``ctx.data``.

    Args:
        artifact: A PyTorch model (``nn.Module``, ``ExportedProgram`` or TorchScript) in ``artifact.loaded``.
        config: Export settings.
        ctx: Inputs (axis 0 of each becomes the dynamic ``batch`` axis), check data, callbacks.

    Returns:
        The ONNX model in the scratch folder, with the report's ``export`` entry
        (``exporter``, ``opset``, ``max_abs_diff``, ``attempts``).

    Raises:
        UsageError: The artifact is already ONNX.
        ExportError: Every exporter failed or mismatched PyTorch.
    """
    from compressor.passes import PassResult

    if not artifact.format.is_torch:
        raise UsageError("export takes a PyTorch model, and the model is already ONNX at this step; drop the export step")
    path = ctx.workdir / "exported.onnx"
    more = (ctx.calibration,) if ctx.calibration is not None and ctx.calibration.source not in (
        ctx.data.source, "random") else ()
    res = export_to_onnx(artifact.loaded, ctx.io, path, check_data=ctx.data, opset=config.opset, atol=config.atol,
                         rtol=config.rtol, exporter=config.exporter, more_check_data=more)
    if res.opset is not None and res.opset != config.opset:
        ctx.warn(f"asked for opset {config.opset} but the {res.exporter} exporter wrote opset {res.opset}")
    for a in res.attempts[:-1]:
        ctx.warn(f"exporter {a['exporter']} was not used: {a.get('error') or 'max abs diff %.3g' % a['max_abs_diff']}")
    return PassResult(ModelArtifact(path, ModelFormat.ONNX, io=ctx.io), res.to_json())


def strip_debug_metadata(path: Path) -> int:
    """Remove the exporter's per-node debug records from an ONNX file in place; returns how many were removed.

    The dynamo exporter (torch 2.13) stores on every node the Python stack trace, FX node, class
    hierarchy and name scopes (``pkg.torch.onnx.*``, ``namespace``, ``pkg.onnxscript.rewriter.*``
    metadata) and doc strings. They do not change results, make up about half of a small model's
    file, leak the build machine's absolute paths into shipped models, and make exports differ
    between folders. Names of nodes and tensors are kept. External data stays where it is.
    """
    import onnx

    model = onnx.load_model(str(path), load_external_data=False)
    removed = 0
    graphs: list[Any] = [model.graph, *model.functions]
    while graphs:
        g = graphs.pop()
        for node in g.node:
            removed += len(node.metadata_props) + bool(node.doc_string)
            del node.metadata_props[:]
            node.doc_string = ""
            for a in node.attribute:  # subgraphs of If / Loop / Scan
                if a.HasField("g"):
                    graphs.append(a.g)
                graphs.extend(a.graphs)
    if removed:
        onnx.save_model(model, str(path))
    return removed


def _interruption(exc: BaseException | None) -> BaseException | None:
    """The KeyboardInterrupt (Ctrl-C) or SystemExit (our SIGTERM handler) down an exception's chain, if any."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _opset_of(path: Path) -> int | None:
    import onnx

    model = onnx.load_model(str(path), load_external_data=False)
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _param_bytes(model: Any) -> int:
    import torch

    if isinstance(model, torch.export.ExportedProgram):
        tensors = list(model.state_dict.values())
    else:
        tensors = list(model.state_dict().values())
    return sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))


def _is_token_input(t: Any) -> bool:
    """Integer ``[batch, sequence]`` inputs (token ids, attention masks) get a dynamic sequence axis too."""
    import torch

    return t.dim() == 2 and not t.is_floating_point() and t.dtype != torch.bool


def _run_exporter(name, model, args, io_spec, output_names, out_path, opset, big, is_ep) -> None:
    import torch

    input_names = io_spec.input_names
    if name == "dynamo":
        dynamic_shapes = None
        if not is_ep:
            batch = torch.export.Dim("batch", min=1, max=1 << 20)
            seq = torch.export.Dim("sequence", min=1, max=1 << 16)
            dynamic_shapes = tuple({0: batch, 1: seq} if _is_token_input(a) else {0: batch} for a in args)
        torch.onnx.export(
            model,
            args,
            os.fspath(out_path),
            dynamo=True,
            input_names=input_names,
            output_names=output_names,
            opset_version=opset,
            dynamic_shapes=dynamic_shapes,
            external_data=big,
            optimize=True,
        )
    else:
        axes = {n: ({0: "batch", 1: "sequence"} if _is_token_input(a) else {0: "batch"}) for n, a in zip(input_names, args, strict=True)}
        token = any(_is_token_input(a) for a in args)
        axes.update({n: ({0: "batch", 1: "sequence"} if token else {0: "batch"}) for n in output_names})
        known = {t.name: t.shape for t in io_spec.outputs if t.shape and t.name in output_names}
        axes.update({n: {i: d for i, d in enumerate(shape) if isinstance(d, str)} for n, shape in known.items()})
        torch.onnx.export(
            model,
            args,
            os.fspath(out_path),
            dynamo=False,
            input_names=input_names,
            output_names=output_names,
            opset_version=opset,
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    if not out_path.exists():
        raise ExportError(f"the {name} exporter wrote no file")


def _parity_batches(check_data: SampleData, more: tuple[SampleData, ...], *, fixed: int | None = None
                    ) -> tuple[list[dict[str, Any]], list[list[tuple[int, int]]], list[str]]:
    """The batches the parity check runs: the first sample, the export example, then the samples in chunks.

    With a fixed batch axis (case R10) every batch has exactly ``fixed`` rows (a data set's last samples that do
    not fill one are left out).

    Returns:
        ``(batches, ids, names)``: the feeds of each batch, the ``(data set, sample)`` of each of its rows, and
        the data sets' names.
    """
    n = check_data.num_samples
    if fixed is not None:
        batches, ids = [check_data.batch(0, fixed)], [[(0, j) for j in range(fixed)]]
    else:
        batches = [check_data.batch(0, 1)] + ([check_data.batch(0, 2)] if n >= 2 else [])
        ids = [[(0, 0)]] + ([[(0, 0), (0, 1)]] if n >= 2 else [])
    on = []
    for k, data in enumerate((check_data, *more)):
        cap = PARITY_RANDOM_SAMPLES if data.source == "random" else PARITY_MAX_SAMPLES
        count = min(data.num_samples, cap)
        chunk = PARITY_CHUNK
        if fixed is not None:
            chunk = fixed  # a fixed batch axis takes exactly that many rows
            count -= count % fixed
        if fixed is None:  # alone too: a branch on a batch-wide value (x.sum() > 0) takes each sample's own way
            for i in range(min(count, PARITY_SINGLE)):
                batches.append(data.batch(i, 1))
                ids.append([(k, i)])
        for i in range(0, count, chunk):
            size = min(chunk, count - i)
            batches.append(data.batch(i, size))
            ids.append([(k, j) for j in range(i, i + size)])
        on.append("generated inputs" if data.source == "random" else data.source)
    return batches, ids, on


def _chain_text(exc: BaseException | None) -> str:
    """The messages of an exception and of its causes (torch.onnx wraps torch.export's errors)."""
    parts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        parts.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def _names_data_dependence(error: str) -> bool:
    """True when an exporter's error says it met control flow on tensor values (torch.export's guard errors)."""
    text = error.lower()
    return "data-dependent" in text or "data dependent" in text or "guardondatadependent" in text


def _parity(path: Path, batches, refs, ids, atol: float, rtol: float) -> tuple[float, int, int]:
    """Compare ONNX Runtime with PyTorch on every batch (``|onnx - torch| <= atol + rtol * |torch|``).

    Returns:
        ``(max abs diff, samples differing, samples checked)``, counting each ``(data set, sample)`` once; a
        sample differs when any of its outputs does in any batch it is part of. An output count or shape
        that differs makes every sample differ.
    """
    from compressor.runtime import make_session

    sess = make_session(path)
    worst = 0.0
    every = {i for rows in ids for i in rows}
    differing: set[tuple[int, int]] = set()
    for feeds, ref, rows in zip(batches, refs, ids, strict=True):
        outs = sess.run(None, feeds)
        if len(outs) != len(ref):
            return float("inf"), len(every), len(every)
        n = len(rows)
        bad = np.zeros(n, dtype=bool)
        for o, r in zip(outs, ref, strict=True):
            if o.shape != r.shape:
                return float("inf"), len(every), len(every)
            if o.size == 0:
                continue
            o64, r64 = o.astype(np.float64), r.astype(np.float64)
            worst = max(worst, float(np.max(np.abs(o64 - r64))))
            close = np.isclose(o64, r64, atol=atol, rtol=rtol)
            if o.ndim and o.shape[0] == n:
                bad |= ~close.reshape(n, -1).all(axis=1)
            elif not close.all():
                bad[:] = True
        differing.update(row for row, b in zip(rows, bad, strict=True) if b)
    return worst, len(differing), len(every)

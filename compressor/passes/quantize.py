"""Dynamic int8 quantization with ONNX Runtime's quantization tool.

Weights are quantized ahead of time (per channel or per tensor); activations are quantized
at run time from their observed range (uint8, asymmetric), so no calibration data is
needed. Source: ONNX Runtime ``quantize_dynamic`` and ``quant_pre_process``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from compressor import onnx_graph
from compressor.artifact import ModelArtifact, ModelFormat, external_data_threshold, file_size_bytes, save_onnx
from compressor.context import RunContext
from compressor.errors import QuantizationError, SessionError
from compressor.passes import PassResult
from compressor.passes.configs import QuantizeConfig
from compressor.passes.quantize_by_node import has_other_quantizable
from compressor.runtime import cpu_info, int8_saturation_risk, make_session
from compressor.scope import ExclusionScope, require_op_types


def check_quantize(config: QuantizeConfig, ctx: RunContext, *, form: str, has_python_classes: bool,
                   artifact: ModelArtifact | None = None) -> None:
    """Refuse, before any work, settings that cannot run.

    Static int8 without calibration data, S8U8, and (for an ONNX input) ``exclude`` globs or
    ``op_types`` that match no node.

    Raises:
        UsageError: The reason and the flags that fix it.
    """
    if config.precision == "int8":
        choose_settings(config, has_conv=config.mode == "static", has_calibration=ctx.calibration is not None)
    if config.fallback:
        check_fallback_budget(ctx)
    if artifact is not None and not artifact.format.is_torch:
        import onnx

        model = artifact.loaded or onnx.load_model(str(artifact.path), load_external_data=False)
        excluded = ExclusionScope(config.exclude).onnx_nodes(model) if config.exclude else []
        if config.op_types:
            require_op_types(config.op_types, (n.op_type for n in model.graph.node), flag="--op-types")
        check_input_form(model, config, ctx, excluded=excluded)


def check_fallback_budget(ctx: RunContext) -> tuple[float | None, float | None]:
    """The accuracy budget of ``--fallback``: the run's ``max_accuracy_drop`` and ``min_cosine`` gates.

    Returns:
        ``(max_accuracy_drop points or None, min_cosine or None)``.

    Raises:
        UsageError: Neither gate is set, or ``max_accuracy_drop`` without labelled eval data.
    """
    from compressor.errors import UsageError

    gates = ctx.budget
    drop = getattr(gates, "max_accuracy_drop", None)
    cos = getattr(gates, "min_cosine", None)
    if drop is None and cos is None:
        raise UsageError("--fallback returns layers to float until an accuracy budget holds: give --max-accuracy-drop "
                         "POINTS (with labelled --eval-data) or --min-cosine X")
    if drop is not None and (ctx.eval_data is None or ctx.eval_data.labels is None):
        raise UsageError("--fallback with --max-accuracy-drop needs --eval-data FILE.npz with 'labels'")
    return drop, cos


def check_input_form(model: Any, config: QuantizeConfig, ctx: RunContext, *, excluded: list[str]) -> None:
    """Refuse, before any work, an input this precision cannot quantize (cases R7, R8, R21).

    Already quantized models (QDQ, QOperator, integer weights) for every precision; float16
    weights under ``--precision fp16``; and a run that would quantize no weight node (e.g. dynamic
    int8 of a CNN, whose convolutions stay float by default).

    Args:
        model: The ONNX model about to be quantized (external data need not be loaded).
        config: The quantize settings.
        ctx: The run (``ctx.calibration`` decides dynamic or static int8).
        excluded: Node names kept in float by ``--exclude``.

    Raises:
        UnsupportedModelError: Already quantized, or already float16 under ``--precision fp16``.
        UsageError: Nothing would be quantized; the message says what would.
    """
    from compressor.errors import UnsupportedModelError
    from compressor.passes import quant_inventory as inv

    form = inv.quantized_form(model)
    if form is not None:
        raise UnsupportedModelError(
            f"the model is already quantized: {form}; quantizing it again ({config.precision}) would stack a second "
            "rounding on the first: give the float model it came from")
    if config.precision == "fp16":
        half = inv.float16_weight_nodes(model)
        full = [w for w in inv.weight_nodes(model) if w.stored_as in ("float32", "float64")]
        if half and not full:
            raise UnsupportedModelError(
                f"the model's weights are already float16 ({len(half)} weight nodes): --precision fp16 would change "
                "nothing; use --precision int8 (the weights are upcast to float32 first) or int4")
    scheme = config.precision if config.precision != "int8" else choose_settings(
        config, has_conv=any(n.op_type in inv.CONV_OPS for n in model.graph.node),
        has_calibration=ctx.calibration is not None)["mode"]
    chosen, convs = inv.candidates(model, scheme=scheme, op_types=config.op_types, excluded=set(excluded))
    if chosen:
        return
    from compressor.errors import UsageError

    weights = inv.weight_nodes(model)
    have = sorted({w.op_type for w in weights}) or ["none"]
    if convs:
        raise UsageError(
            f"dynamic int8 keeps convolutions in float ({len(convs)} Conv: dynamic ConvInteger is usually slower than "
            "fp32 on CPU, ONNX Runtime's guidance) and this model has no other weights to quantize: static int8 needs "
            "--calibration-data FILE.npz (or --calibration-data random); --op-types Conv forces dynamic ConvInteger")
    takes = inv.QUANTIZABLE[scheme] - {"EmbedLayerNormalization"}
    if scheme == "dynamic" and not config.op_types:
        takes = takes - inv.CONV_OPS
    left_side = sorted({w.op_type for w in weights if w.weight_index == 0 and w.op_type in takes})
    raise UsageError(
        f"{config.precision} ({scheme}) would quantize no node: it takes {', '.join(sorted(takes))} weights"
        + (" left by --exclude/--op-types" if excluded or config.op_types else "")
        + f"; this model's weight nodes: {', '.join(have)}"
        + (f" ({', '.join(left_side)} with the constant as first input: ONNX Runtime quantizes a constant second "
           "input only; static int8 with --calibration-data quantizes both)" if left_side and scheme != "static" else "")
        + ("; static int8 (--calibration-data) quantizes Conv" if scheme == "int4" and "Conv" in have else ""))


def choose_settings(config: QuantizeConfig, *, has_conv: bool = False, has_calibration: bool = False) -> dict[str, Any]:
    """Resolve a config into the settings used on this CPU, with the reason for each choice.

    Defaults follow ONNX Runtime's CPU guidance: dynamic quantization for transformer-style
    MatMul graphs; static QDQ with int8 activations (with a zero point) and symmetric int8
    weights (S8S8) for convolutional graphs when calibration data is given. Weights default to symmetric int8
    per channel: the u8 x s8 integer kernels are the fast path on x86 (measured on MiniLM-L6:
    1.47x for s8 weights against 0.89x for u8 weights, case Q8), and per-channel scales keep
    fidelity (cosine 0.99 against 0.95 per tensor). On x86 without VNNI, u8 x s8 (and s8 x s8, which ONNX
    Runtime runs through the same kernel) can saturate 16-bit intermediates (cases Q7, R22), so 7-bit weights
    (``reduce_range``) are used there; :func:`compressor.runtime.int8_saturation_risk` decides from the CPU flags.

    Args:
        config: The user's settings.
        has_conv: The graph has Conv/ConvTranspose nodes.
        has_calibration: Calibration data was given.

    Returns:
        ``{"mode", "weight_type", "weight_scheme", "activation_type", "activation_scheme",
        "per_channel", "reduce_range", "saturation_risk" (None, or why 8-bit weights can saturate on this CPU),
        "calibration_method", "chosen_by", "reason"}``.

    Raises:
        UsageError: Static mode without calibration data.
    """
    import dataclasses

    from compressor.errors import UsageError
    from compressor.passes.kernel_formats import FORMATS

    explicit_format = config.format if config.format != "auto" else None
    if explicit_format:  # an explicit kernel format fixes the mode and the types
        fmt = FORMATS[config.format]
        dynamic = fmt.quant_format == "dynamic"
        config = dataclasses.replace(config, mode="dynamic" if dynamic else "static",
                                     activation_type=None if dynamic else fmt.activation_type,
                                     weight_type=fmt.weight_type)
    reasons = []
    mode = config.mode
    if mode == "auto":
        mode = "static" if has_conv and has_calibration else "dynamic"
        if has_conv and not has_calibration:
            reasons.append("mode dynamic (no --calibration-data; static QDQ suits convolutions better)")
        else:
            reasons.append(f"mode {mode} ({'convolutions with calibration data' if mode == 'static' else 'MatMul/Gemm graph'})")
    elif config.format != "auto" and explicit_format:
        reasons.append(f"--format {explicit_format}")
    else:
        reasons.append(f"--mode {mode}")
    if mode == "static" and not has_calibration:
        raise UsageError(
            "static quantization needs calibration data: pass --calibration-data FILE.npz (arrays keyed by input "
            "name, samples first) or a folder of <input>.npy files; --calibration-data random uses random inputs"
        )
    w_scheme = config.weight_scheme or config.scheme or "symmetric"
    w_type = config.weight_type or ("int8" if w_scheme == "symmetric" else "uint8")
    if mode == "dynamic":
        a_type, a_scheme = "uint8", "asymmetric"
    elif config.activation_scheme is None and config.scheme is None:
        # ONNX Runtime's default for static QDQ (S8S8, activations with a zero point): Relu/Clip then fold
        # into the activation range and disappear; symmetric activations keep each one in float
        # between DequantizeLinear and QuantizeLinear (digits CNN: 0.63x against 0.83x of fp32 at batch 1)
        a_scheme = "asymmetric"
        a_type = config.activation_type or "int8"
        reasons.append(f"{a_type} activations with a zero point"
                       + (" (QDQ S8S8, ONNX Runtime's default)" if a_type == "int8" else "")
                       + ": Relu/Clip fold into the activation range")
    else:
        a_scheme = config.activation_scheme or config.scheme
        a_type = config.activation_type or ("int8" if a_scheme == "symmetric" else "uint8")
        flag = "--activation-scheme" if config.activation_scheme else "--scheme"
        reasons.append(f"{a_type} {a_scheme} activations ({flag} {a_scheme}"
                       + (f", --activation-type {a_type})" if config.activation_type else ")"))
    if mode == "static" and a_type == "int8" and w_type == "uint8" and config.weight_type is None:
        w_type = "int8"  # asymmetric weights keep their zero points in int8: S8U8 has no kernels
    if mode == "static" and a_type == "int8" and w_type == "uint8":
        raise UsageError(
            "int8 activations with uint8 weights (S8U8) cannot run in ONNX Runtime: add --activation-type uint8 "
            "(U8U8), or use --weight-type int8 (S8S8, the fast path)"
        )
    cpu = cpu_info()
    # case R22: the choice is a pure function of the CPU flags and the format (runtime.int8_saturation_risk)
    risk = int8_saturation_risk(cpu["machine"], cpu.get("isa", {}), activation_type=a_type, weight_type=w_type,
                                weight_symmetric=w_scheme == "symmetric")
    if config.reduce_range is not None:
        reduce_range = config.reduce_range
        reasons.append(f"reduce_range {'on' if reduce_range else 'off'} by flag"
                       + (f" (saturation risk: {risk})" if risk and not reduce_range else ""))
    else:
        reduce_range = risk is not None
        if reduce_range:
            reasons.append(f"7-bit weights (reduce_range): {risk}")
    granularity = "channel" if config.per_channel else "tensor"
    if config.scheme is None and config.weight_scheme is None:
        if not (config.per_channel and w_type == "int8"):
            why = ""
        elif reduce_range:
            why = ": accurate on this CPU with 7-bit weights"
        elif risk:
            why = ": can saturate on this CPU (reduce_range off by flag)"
        else:
            why = ": fast and accurate on this CPU (int8 products accumulate without 16-bit saturation)"
        reasons.append(f"symmetric {w_type} weights per {granularity}{why}")
    else:
        flag = "--weight-scheme" if config.weight_scheme else "--scheme"
        reasons.append(f"{w_scheme} {w_type} weights per {granularity} ({flag} {w_scheme}"
                       + (f", --weight-type {w_type})" if config.weight_type else ")"))
    if w_type == "uint8":
        reasons.append("uint8 weights: usually slower than int8 on x86 (measured 0.89x vs 1.47x on MiniLM-L6)")
    user = any(v is not None for v in (config.scheme, config.weight_scheme, config.activation_scheme,
                                        config.weight_type, config.activation_type, config.reduce_range))
    return {
        "mode": mode,
        "format": "QDQ" if mode == "static" else "integer ops (MatMulInteger/ConvInteger)",
        "weight_type": w_type,
        "weight_scheme": w_scheme,
        "activation_type": a_type,
        "activation_scheme": a_scheme + (" (dynamic, per tensor, computed at run time)" if mode == "dynamic" else ""),
        "per_channel": config.per_channel,
        "reduce_range": reduce_range,
        "saturation_risk": risk,
        "calibration_method": config.calibration_method if mode == "static" else None,
        "chosen_by": "user" if user else "default",
        **({"kernel_format": explicit_format, "format_selection": {"by": "user"}} if explicit_format else {}),
        "reason": "; ".join(reasons),
    }


def _reader(ctx: RunContext, calib: Any) -> _NpzReader:
    """Calibration batches of one size: the model's fixed batch (case R10), else the largest divisor of n up to 16.

    Equal batches because ONNX Runtime 1.32.0's histogram calibrators (entropy, percentile) stack the
    batches' outputs with ``np.asarray`` and fail ("inhomogeneous shape") on a shorter last batch.
    """
    from compressor.inputs import fixed_batch_size

    fixed = fixed_batch_size(ctx.io)
    if fixed is not None:
        return _NpzReader(calib, fixed, exact=True)
    n = calib.num_samples
    return _NpzReader(calib, max(d for d in range(1, min(16, n) + 1) if n % d == 0))


class _NpzReader:
    """ONNX Runtime ``CalibrationDataReader`` over :class:`SampleData`, in batches."""

    def __init__(self, data: Any, batch_size: int = 16, *, exact: bool = False) -> None:
        self.data = data
        self.batch_size = batch_size
        self.exact = exact  # a model with a fixed batch axis: only whole batches (case R10)
        self.start = 0

    def get_next(self) -> dict[str, Any] | None:
        if self.start + (self.batch_size if self.exact else 1) > self.data.num_samples:
            return None
        b = self.data.batch(self.start, self.batch_size)
        self.start += self.batch_size
        return b

    def rewind(self) -> None:
        self.start = 0


def _node_summary(baseline: Any, result: Any, *, precision: str = "int8") -> dict[str, Any]:
    """Quantized and unquantized weight nodes of the OUTPUT graph, by the float op type each computes.

    Read from the result alone (cases R1, R23): every op holding a constant weight, recurrent layers,
    attention, embedding tables and subgraph bodies included, by its final type, so that the two
    lists never mix the graph before and after pre-processing. ``baseline`` is kept for callers.

    Returns:
        ``{"quantized_nodes", "unquantized_nodes", "weight_nodes"}`` (see :func:`quant_inventory.node_lists`).
    """
    from compressor.passes.quant_inventory import node_lists

    del baseline
    return node_lists(result, precision=precision)


def preprocess(src: Path, dst: Path, ctx: RunContext) -> tuple[Path, str]:
    """Run ONNX Runtime's quantization pre-processing (shape inference + graph optimisation).

    Falls back to no symbolic shape inference, then to no pre-processing at all with a warning
    (case Q4).

    Returns:
        The path to quantize, a short description of what ran (``full``, ``without symbolic shape
        inference``, ``skipped``), and why it did not run in full (None when it did): a fallback
        without symbolic shape inference is a note in the report, not a warning (ONNX Runtime's
        symbolic shape inference gives up on common transformer exports such as all-MiniLM-L6-v2).
    """
    import contextlib

    from onnxruntime.quantization.shape_inference import quant_pre_process

    from compressor.external_data import data_file_name, has_external_data

    errors = []
    src, dst = Path(src).resolve(), Path(dst).resolve()
    # ONNX Runtime 1.32: without save_as_external_data, the optimizer's temporary model keeps pointing at the
    # source's data file name in its own temp folder, and loading it fails ("should be stored in
    # <temp>/m.onnx.data, but it is not regular file"); with it, every intermediate carries its own data file
    external = {"save_as_external_data": True, "all_tensors_to_one_file": True,
                "external_data_location": data_file_name(dst)} if has_external_data(src) else {}
    for label, kwargs in (("full", {}), ("without symbolic shape inference", {"skip_symbolic_shape": True})):
        (dst.parent / data_file_name(dst)).unlink(missing_ok=True)  # onnx appends to an existing data file
        kwargs = {**kwargs, **external}
        try:
            # ONNX Runtime's symbolic shape inference writes temp files into the current folder
            # ... and prints its own failures with a traceback on stderr: keep them in the warning below
            with contextlib.chdir(dst.parent), _quiet_calibration():
                quant_pre_process(str(src), str(dst), **kwargs)
            if label != "full":  # a note, not a warning: the result is checked like any other (and ORT's
                # symbolic shape inference gives up on common transformer exports, such as all-MiniLM-L6-v2)
                return dst, label, f"symbolic shape inference failed ({errors[-1]}); ran without it"
            return dst, label, None
        except Exception as e:
            errors.append(f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}")
    ctx.warn(f"quantization pre-processing failed ({errors[-1]}); quantizing the graph as it is")
    return src, "skipped", f"pre-processing failed ({errors[-1]})"


def preprocess_skip_reason(src: Path) -> str | None:
    """Why quantization pre-processing is not run on a model, or None to run it.

    Models whose file size (external data included) exceeds the external-data threshold skip it:
    ONNX Runtime 1.32's ``quant_pre_process`` loads the whole model, its symbolic shape inference
    serializes it as one protobuf (fails over 2 GB) and its optimizer holds another copy, several
    times the model in memory. The quantizer's own ONNX shape inference by path
    (``onnx.shape_inference.infer_shapes_path``) still runs.
    """
    size = file_size_bytes(src)
    if size <= external_data_threshold():
        return None
    return (f"skipped: the model is {size / 1024**3:.2f} GB with external data; ONNX Runtime's quant_pre_process "
            "holds it in memory several times and its symbolic shape inference serializes it as one protobuf "
            "(2 GB limit); ONNX shape inference by path runs in the quantizer instead")


def _non_2d_matmuls(path: Path) -> list[str]:
    """Names of MatMul nodes whose constant weight (input B) is not 2-D."""
    import onnx

    model = onnx.load_model(str(path), load_external_data=False)
    inits = onnx_graph.initializers(model)
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and len(n.input) > 1 and n.input[1] in inits and len(inits[n.input[1]].dims) != 2
            and n.name]


def _tied_gathers(path: Path) -> dict[str, str]:
    """Gather nodes whose table is also used as a weight elsewhere (tied embedding / output layer), by node -> table.

    ONNX Runtime quantizes a Gather table per tensor; for a table tied to the output
    projection that per-tensor error shows up in every logit and flips argmaxes (case Q3),
    so such tables stay float (one copy) while the projection gets per-channel int8.
    """
    import onnx

    model = onnx.load_model(str(path), load_external_data=False)
    inits = onnx_graph.initializers(model)
    users = {name: uses for name, uses in onnx_graph.input_uses(model).items() if name in inits}
    tied = {}
    for table, uses in users.items():
        gathers = [n for n, i in uses if n.op_type == "Gather" and i == 0]
        others = [n for n, _ in uses if n.op_type != "Gather"]
        if gathers and others:
            tied.update({g.name: table for g in gathers if g.name})
    return tied


def _int4_op_types(config: QuantizeConfig, model: Any) -> tuple[str, ...]:
    """The op types given to the int4 quantizer: the user's, else MatMul, plus Gather where a constant table exists.

    ONNX Runtime 1.32.0's ``MatMulNBitsQuantizer`` sets the model's opset to 21 whenever ``Gather`` is in its
    op types, without converting the nodes (a ``ReduceMean`` with an ``axes`` attribute is then invalid), so
    ``Gather`` is only asked for when there is a table to quantize; the graph is then upgraded beforehand
    (see :func:`_upgrade_opset_for`).
    """
    if config.op_types:
        return tuple(config.op_types)
    inits = onnx_graph.initializers(model)
    tables = any(n.op_type == "Gather" and n.input and n.input[0] in inits for n in model.graph.node)
    return ("MatMul", "Gather") if tables else ("MatMul",)


def _upgrade_opset_for(config: QuantizeConfig, model: Any, source: Path, ctx: RunContext) -> tuple[Path, dict[str, Any]]:
    """Upgrade an old-opset graph to the opset the quantizer's output needs, with ONNX's version converter (case R6).

    int8: opset 13 (per-axis ``QuantizeLinear``/``DequantizeLinear``; ONNX Runtime's quantizer writes an
    ``axis`` attribute that opset 11 lacks: "Unrecognized attribute: axis for operator DequantizeLinear").
    int4 with embedding tables: opset 21 (int4 tensors), which ONNX Runtime's int4 quantizer declares
    without converting the nodes. Checked by parity on the run's data.

    Returns:
        The model to quantize and ``{"from", "to", "max_abs_diff"}`` (empty when nothing was upgraded).

    Raises:
        UsageError: The converter fails or its model differs; the message names the opset.
    """
    from compressor.loaders.onnx import default_opset, upgrade_opset

    opset = default_opset(model)
    target = None
    if config.precision == "int8":
        target = 13
    elif config.precision == "int4" and "Gather" in _int4_op_types(config, model):
        target = 21
    if opset is None or target is None or opset >= target:
        return source, {}
    feeds = ctx.data.batch(0, min(8, ctx.data.num_samples))
    info = upgrade_opset(source, ctx.workdir / "opset_upgraded.onnx", target, feeds)
    ctx.warn(f"the model uses ONNX opset {opset}; upgraded it to opset {target} with ONNX's version converter before "
             f"quantizing (outputs match, max abs diff {info['max_abs_diff']:.2g})")
    return ctx.workdir / "opset_upgraded.onnx", info


def _quantize_int4(ctx: RunContext, config: QuantizeConfig, src: Path, out: Path, excluded: list[str]) -> dict[str, Any]:
    """Weight-only blockwise int4 (ONNX Runtime MatMulNBits; embedding tables as GatherBlockQuantized)."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.load_model(str(src))
    op_types = _int4_op_types(config, model)
    symmetric = (config.weight_scheme or config.scheme or "asymmetric") == "symmetric"
    q = MatMulNBitsQuantizer(model, bits=4, block_size=config.block_size, is_symmetric=symmetric,
                             nodes_to_exclude=excluded, op_types_to_quantize=tuple(op_types),
                             quant_axes=(("MatMul", 0), ("Gather", 1)))
    q.process()
    save_onnx(q.model.model, out, external=_external(src))
    scheme = "symmetric" if symmetric else "asymmetric"
    return {"mode": "weight-only", "format": "MatMulNBits / GatherBlockQuantized", "weight_type": "int4",
            "weight_scheme": scheme, "activation_type": "float32", "activation_scheme": "none (weight-only)",
            "per_channel": False, "block_size": config.block_size, "reduce_range": False, "calibration_method": None,
            "chosen_by": "user", "reason": f"--precision int4: blockwise (block {config.block_size}) {scheme} int4 weights "
            f"of {', '.join(op_types)}; activations stay float32; asymmetric (zero points) is the default: on "
            "MiniLM-L6 it kept pooled cosine 0.963 against 0.959 symmetric at block 16"}


def _quantize_fp16(config: QuantizeConfig, src: Path, out: Path, excluded: list[str]) -> dict[str, Any]:
    """float16 conversion (ONNX Runtime's float16 converter), inputs and outputs float32 unless asked."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    if _external(src):
        # ONNX Runtime 1.32's converter runs onnx.shape_inference.infer_shapes on the model in memory, which
        # serializes it (fails over 2 GB): infer shapes by path on the graph instead, then load the weights
        shaped = out.with_name("fp16_shapes.onnx")
        onnx.shape_inference.infer_shapes_path(str(src), str(shaped))
        model = onnx.load_model(str(shaped), load_external_data=False)
        onnx.external_data_helper.load_external_data_for_model(model, str(Path(src).parent))
        shaped.unlink()
        model = convert_float_to_float16(model, keep_io_types=config.keep_io_types, node_block_list=excluded or None,
                                         disable_shape_infer=True)
    else:
        model = convert_float_to_float16(onnx.load_model(str(src)), keep_io_types=config.keep_io_types,
                                         node_block_list=excluded or None)
    # ONNX Runtime 1.32's converter appends the Cast nodes of kept float32 inputs at the end of the graph:
    # ONNX Runtime runs that, but the ONNX checker wants nodes in topological order
    from onnxruntime.quantization.onnx_model import ONNXModel

    ONNXModel(model).topological_sort()
    save_onnx(model, out, external=_external(src))
    return {"mode": "fp16", "format": "float16", "weight_type": "float16", "weight_scheme": "none",
            "activation_type": "float16", "activation_scheme": "none", "per_channel": False, "reduce_range": False,
            "calibration_method": None, "chosen_by": "user",
            "reason": f"--precision fp16; inputs and outputs {'kept float32' if config.keep_io_types else 'float16'}"}


def _rewrite(ctx: RunContext, config: QuantizeConfig, src: Path, *, smooth: bool,
             excluded: list[str], static: bool = False) -> tuple[Path, dict[str, int]]:
    """Result-preserving rewrites, then SmoothQuant smoothing when calibration data is given."""
    import onnx

    from compressor.external_data import DataWriter, TensorStore, load_graph
    from compressor.passes.rewrites import (
        apply_rewrites,
        fold_gemm_alpha_beta,
        gemm_to_matmul,
        gemm_trans_a_to_transpose,
        reduce_mean_to_global_average_pool,
        smooth_activations,
    )

    out = ctx.workdir / "rewritten.onnx"
    writer = None
    if _external(src):  # the graph with its small tensors; weights are read and written one at a time
        model = load_graph(src)
        writer = DataWriter(out)
        tensors = TensorStore(Path(src).parent, writer)
    else:
        model = onnx.load_model(str(src))
        tensors = None
    done = apply_rewrites(model) if config.rewrites else {}
    # always: ONNX Runtime's quantizers assume alpha = beta = 1 and transA = 0 (case R25)
    for name, fn in (("gemm_alpha_beta", fold_gemm_alpha_beta), ("gemm_trans_a", gemm_trans_a_to_transpose)):
        n = fn(model)
        if n:
            done[name] = n
    if static and config.rewrites:
        n = reduce_mean_to_global_average_pool(model)
        if n:
            done["global_average_pool"] = n
    if config.precision == "int4":  # MatMulNBits takes MatMul only
        n = gemm_to_matmul(model, tensors=tensors)
        if n:
            done["gemm_to_matmul"] = n
    if smooth and ctx.calibration is not None:
        calib = ctx.calibration
        if config.calibration_samples is not None:
            calib = type(calib)({k: v[: config.calibration_samples] for k, v in calib.arrays.items()}, None, calib.source)
        from compressor.inputs import fixed_batch_size

        if fixed_batch_size(ctx.io):  # a model with a fixed batch axis takes only whole batches of it (case R10)
            size = fixed_batch_size(ctx.io)
            batches = [calib.batch(i, size) for i in range(0, calib.num_samples - size + 1, size)]
        else:
            batches = [calib.batch(i, 16) for i in range(0, calib.num_samples, 16)]
        n = smooth_activations(model, batches, alpha=config.smooth_alpha, skip_nodes=set(excluded), tensors=tensors)
        if n:
            done[f"smoothquant(alpha={config.smooth_alpha})"] = n
    if not done:
        if writer is not None:
            writer.discard()
        return src, {}
    if writer is not None:
        writer.save(model, base_dir=Path(src).parent)
    else:
        save_onnx(model, out)
    return out, done


def _quantize_large_by_node(ctx: RunContext, src: Path, excluded: list[str], op_types: list[str] | None,
                            options: dict[str, Any]) -> Path | None:
    """Dynamic int8 of every 2-D MatMul of a large model, one node at a time (see :mod:`quantize_by_node`).

    Returns:
        The model with those MatMuls quantized, or None when it has none.
    """
    import onnx

    from compressor.passes.quantize_by_node import matmuls_to_quantize, quantize_dynamic_by_node

    nodes = matmuls_to_quantize(onnx.load_model(str(src), load_external_data=False), excluded=excluded,
                                op_types=op_types)
    if not nodes:
        return None
    return quantize_dynamic_by_node(src, ctx.workdir / "by_node.onnx", nodes, ctx.workdir, **options)


def _move_scratch_model(src: Path, dst: Path) -> None:
    """Rename a scratch model and its data file (``<dst name>.data``) within the scratch folder."""
    import os

    from compressor.external_data import rename_data

    rename_data(src, dst.name)
    os.replace(src, dst)


def _external(path: Path) -> bool:
    """True when a model keeps weights in external data or is over the threshold: its results do as well."""
    from compressor.external_data import has_external_data

    return has_external_data(path) or file_size_bytes(path) > external_data_threshold()


# Histogram for entropy (KL) calibration: 2048 bins searched for the 8-bit window of 255 levels that keeps
# the distribution closest (Migacz 2017, TensorRT). quantize_static does not pass these on, and its defaults
# (128 and 128) leave a single candidate, the full range: the same result as minmax.
ENTROPY_BINS = {"num_bins": 2048, "num_quantized_bins": 255}


def _quiet_calibration() -> Any:
    """Keep ONNX Runtime's calibration prints (histogram progress) off stdout and stderr."""
    import contextlib
    import io

    stack = contextlib.ExitStack()
    stack.enter_context(contextlib.redirect_stdout(io.StringIO()))
    stack.enter_context(contextlib.redirect_stderr(io.StringIO()))
    return stack


def _entropy_ranges(model: Path, workdir: Path, calib: Any, op_types: list[str] | None, large: bool,
                    reader: Any = _NpzReader) -> Path:
    """Entropy (KL-divergence) activation ranges from ONNX Runtime's calibrator, saved as its calibration cache.

    Returns:
        A JSON calibration cache for ``quantize_static(calibration_cache_path=...)``.
    """
    from onnxruntime.quantization import CalibrationMethod
    from onnxruntime.quantization.calibrate import create_calibrator, save_tensors_data

    with _quiet_calibration():
        calibrator = create_calibrator(model, op_types, augmented_model_path=str(workdir / "augmented.onnx"),
                                       calibrate_method=CalibrationMethod.Entropy, use_external_data_format=large,
                                       extra_options=dict(ENTROPY_BINS))
        calibrator.collect_data(reader(calib))
        ranges = calibrator.compute_data()
        del calibrator
    cache = workdir / "calibration_ranges.json"
    save_tensors_data(ranges, cache)
    return cache


#: Held-out samples taken from the calibration data when no --eval-data is given: a fifth of them (4 to 64),
#: only when at least this many samples are given, so that calibration keeps 16 or more.
HELD_OUT_MIN_CALIBRATION = 20


def _split_held_out(ctx: RunContext, calib: Any, limit: int | None) -> tuple[Any, Any]:
    """Calibration samples and held-out samples that static ranges never see (case R22).

    Held-out samples are ``--eval-data`` when given; else the samples past ``--calibration-samples``; else
    the last fifth of the calibration data (4 to 64 samples; only with 20 or more). With a fixed batch
    axis, the held-out count is a multiple of it.

    Returns:
        ``(calibration, held_out or None)`` as :class:`~compressor.inputs.SampleData`.
    """
    from compressor.inputs import SampleData, fixed_batch_size

    n = calib.num_samples

    def part(data: Any, start: int, stop: int | None, what: str) -> Any:
        return SampleData({k: v[start:stop] for k, v in data.arrays.items()}, None, what)

    step = fixed_batch_size(ctx.io) or 1
    if limit is not None and n > limit:
        rest = min(n - limit, 64) // step * step
        return part(calib, 0, limit, calib.source), (
            part(calib, limit, limit + rest, f"{calib.source} (samples {limit}-{limit + rest - 1}, not calibrated on)")
            if rest else None)
    if ctx.eval_data is not None:
        return calib, part(ctx.eval_data, 0, min(ctx.eval_data.num_samples, 512), ctx.eval_data.source)
    if n < HELD_OUT_MIN_CALIBRATION:
        return calib, None
    h = max(4, min(64, n // 5)) // step * step
    if not h:
        return calib, None
    return part(calib, 0, n - h, calib.source), part(calib, n - h, None,
                                                      f"{calib.source} (last {h} samples, not calibrated on)")


def _held_out_fidelity(baseline: Path, result: Path, held: Any, settings: dict[str, Any],
                       ctx: RunContext) -> dict[str, Any]:
    """Cosine of the static int8 result to its baseline on held-out samples, worst over float outputs (case R22).

    Warns in one line when the worst per-sample cosine is under 0.98 (int8 normally gives 0.99 or more),
    naming reduce_range where this CPU can saturate.
    """
    from compressor.fidelity import compare_outputs, run_onnx

    base, got = run_onnx(baseline, held), run_onnx(result, held)
    per = [compare_outputs([b], [r]) for b, r in zip(base, got, strict=True) if b.dtype.kind == "f"]
    if not per:
        return {"inputs": held.source, "samples": held.num_samples}
    fid = {"inputs": held.source, "samples": held.num_samples,
           "cosine_min": min(p["cosine_min"] for p in per), "cosine_mean": min(p["cosine_mean"] for p in per)}
    if fid["cosine_min"] < 0.98:
        advice = ("--reduce-range (this CPU can saturate 8-bit weights)" if settings.get("saturation_risk")
                  and not settings.get("reduce_range") else
                  "--calibration-method percentile, more calibration samples, --exclude the sensitive nodes, or "
                  "--mode dynamic")
        ctx.warn(f"static int8 on {fid['samples']} held-out samples: cosine_min {fid['cosine_min']:.3f} (mean "
                 f"{fid['cosine_mean']:.3f}), below the 0.99 int8 usually keeps; try {advice}")
    return fid


def _float_outputs(path: Path) -> dict[str, int]:
    """Let the last Gemm/MatMul of a QDQ model write float32 graph outputs (see ``float_graph_outputs``)."""
    import onnx

    from compressor.external_data import data_file_name
    from compressor.passes.rewrites import float_graph_outputs

    external = _external(path)
    model = onnx.load_model(str(path))
    n = float_graph_outputs(model)
    if not n:
        return {}
    (path.parent / data_file_name(path)).unlink(missing_ok=True)  # weights are in memory; onnx would append
    save_onnx(model, path, external=external)
    return {"float_output": n}


def _kept_float_activations(model: Any) -> list[str]:
    """Relu/Clip nodes left in float between ``DequantizeLinear`` and ``QuantizeLinear`` in a QDQ model."""
    producers, users = onnx_graph.producers(model), onnx_graph.consumers(model)
    kept = []
    for n in model.graph.node:
        if n.op_type in ("Relu", "Clip") and n.input and getattr(producers.get(n.input[0]), "op_type", "") == "DequantizeLinear":
            if any(u.op_type == "QuantizeLinear" for u in users.get(n.output[0], [])):
                kept.append(n.name)
    return kept


def _check_weight_scheme(model: Any, settings: dict[str, Any], ctx: RunContext, *, base_dir: str = "") -> None:
    """Read the weight zero points actually stored and correct the report when they differ from the request.

    ONNX Runtime's QDQ quantizer makes per-channel weights symmetric whatever ``WeightSymmetric`` says.
    """
    from onnx import numpy_helper

    if settings.get("weight_type") not in ("int8", "uint8"):
        return
    inits = onnx_graph.initializers(model)
    zps = []
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in inits and len(inits[n.input[0]].dims) >= 2 and len(n.input) > 2:
            zps.append(numpy_helper.to_array(inits[n.input[2]], base_dir=base_dir))
        elif n.op_type in ("MatMulInteger", "ConvInteger") and len(n.input) > 3 and n.input[3] in inits:
            zps.append(numpy_helper.to_array(inits[n.input[3]], base_dir=base_dir))
    if not zps:
        return
    mid = 128 if settings["weight_type"] == "uint8" else 0
    symmetric = all(np.all(z == mid) for z in zps)
    actual = "symmetric" if symmetric else "asymmetric"
    settings["weight_scheme_stored"] = actual
    if settings["weight_scheme"] != actual:
        settings["weight_scheme_requested"] = settings["weight_scheme"]
        ctx.warn(f"asked for {settings['weight_scheme']} weights but ONNX Runtime stored {actual} ones "
                 f"(zero points {'all ' + str(mid) if symmetric else 'vary'}); "
                 + ("its QDQ quantizer makes per-channel weights symmetric: use --per-tensor for zero points"
                    if settings.get("per_channel") and settings["mode"] == "static" else "see the report"))
        settings["weight_scheme"] = actual


def _excluded_or_none(config: QuantizeConfig, model: Any) -> list[str]:
    """Nodes ``--exclude`` matches in ``model``; [] when none do (the patterns are checked on the pre-processed graph)."""
    from compressor.errors import UsageError

    try:
        return ExclusionScope(config.exclude).onnx_nodes(model) if config.exclude else []
    except UsageError:
        return []


def _upcast_if_float16(source: Path, model: Any, config: QuantizeConfig, ctx: RunContext) -> tuple[Path, int]:
    """Upcast float16 weights to float32 before int8/int4 quantization (case R8), with a warning.

    Returns:
        The path to quantize (``source`` itself when nothing is float16) and the number of tensors upcast.
    """
    import onnx

    from compressor.passes.quant_inventory import float16_weight_nodes, upcast_float16

    half = float16_weight_nodes(model)
    if config.precision == "fp16" or not half:
        return source, 0
    full = onnx.load_model(str(source))
    n = upcast_float16(full)
    dst = ctx.workdir / "upcast_float32.onnx"
    save_onnx(full, dst)
    ctx.warn(f"the model's weights are float16 ({len(half)} weight nodes): upcast to float32 before {config.precision} "
             "quantization (ONNX Runtime's quantizers take float32); inputs and outputs keep their dtypes")
    return dst, n


def _dynamic_op_types(config: QuantizeConfig, pre: Path, settings: dict[str, Any], ctx: RunContext,
                      excluded: list[str]) -> tuple[list[str], list[str]]:
    """Op types and extra node exclusions for dynamic int8.

    Convolutions stay float unless ``--op-types`` names them (case R21). ONNX Runtime 1.32.0's
    dynamic quantizer first rewrites each Gemm (alpha = beta = 1) as ``<name>_MatMul`` + ``<name>_Add``
    (``ONNXModel.replace_gemm_with_matmul``) and then matches names and op types against the new
    nodes: an excluded Gemm must be excluded under its new name too, and ``--op-types Gemm`` must
    let MatMul through while keeping the graph's own MatMul nodes out.

    Returns:
        ``(op_types_to_quantize, names to add to nodes_to_exclude)``.
    """
    import onnx

    from compressor.passes.quant_inventory import candidates, dynamic_op_types

    model = onnx.load_model(str(pre), load_external_data=False)
    _, convs = candidates(model, scheme="dynamic", op_types=config.op_types, excluded=set(excluded))
    if convs:
        names = [w.name for w in convs]
        settings["convolutions_kept_float"] = names
        how = ("--mode static (with the --calibration-data given)" if ctx.calibration is not None
               else "static quantization, which needs --calibration-data FILE.npz")
        settings["reason"] += ("; convolutions kept in float (dynamic ConvInteger is usually slower than fp32 on CPU, "
                               f"ONNX Runtime's guidance): int8 convolutions need {how}")
        ctx.warn(f"{len(names)} convolution(s) kept in float: dynamic int8 ConvInteger is usually slower than fp32 on "
                 f"CPU; for int8 convolutions use {how} (--op-types Conv forces dynamic ConvInteger)")
    types = dynamic_op_types(config.op_types)
    gemms = {n.name for n in model.graph.node if n.op_type == "Gemm" and n.name}
    aliases = [name + "_MatMul" for name in excluded if name in gemms]
    if config.op_types and "Gemm" in types and "MatMul" not in types:
        types.append("MatMul")
        aliases += [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name]
    return types, aliases


def run_quantize(artifact: ModelArtifact, config: QuantizeConfig, ctx: RunContext) -> PassResult:
    """Quantize an ONNX model: int8 (dynamic, or static QDQ with calibration), int4 or fp16.

    Every quantized model is loaded into ONNX Runtime and run on real inputs before it is
    accepted. The input artifact is never changed. With ``config.fallback``, the pass runs again with the
    most sensitive layers in float until the run's accuracy budget holds
    (:func:`compressor.sensitivity.accuracy_aware_fallback`; details get ``fallback_layers`` and ``fallback``).

    Args:
        artifact: The ONNX model to quantize (``artifact.path``; external data beside it).
        config: Quantize settings.
        ctx: Inputs, data (``ctx.calibration`` for static ranges and smoothing), callbacks.

    Returns:
        The quantized ONNX model (in the scratch folder) and the report's ``quantization`` section.

    Raises:
        UsageError: Static mode without calibration data.
        QuantizationError: ONNX Runtime's tool failed, quantized no node, or its model does
            not load or run in ONNX Runtime.
    """
    if config.fallback:  # accuracy-aware: the quantize pass again, with the most sensitive layers in float
        import dataclasses

        from compressor.sensitivity import accuracy_aware_fallback

        drop, cos = check_fallback_budget(ctx)
        return accuracy_aware_fallback(artifact, dataclasses.replace(config, fallback=False), ctx,
                                       max_accuracy_drop=drop, min_cosine=cos)
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static

    ort.set_default_logger_severity(3)  # the quantizer's own sessions: keep ONNX Runtime's C++ warnings off stderr
    source = artifact.path
    base_model = onnx.load_model(str(source), load_external_data=False)
    has_conv = any(n.op_type in ("Conv", "ConvTranspose") for n in base_model.graph.node)
    # cases R7, R8, R21 (also checked before any work for an ONNX input): refuse or upcast the input's form
    check_input_form(base_model, config, ctx, excluded=_excluded_or_none(config, base_model))
    source, upcast = _upcast_if_float16(source, base_model, config, ctx)
    source, opset_upgrade = _upgrade_opset_for(config, onnx.load_model(str(source), load_external_data=False) if upcast else base_model, source, ctx)
    skip_reason = preprocess_skip_reason(source)
    if skip_reason is None:
        pre, pre_label, skip_reason = preprocess(source, ctx.workdir / "preprocessed.onnx", ctx)
    else:  # never silent: the reason goes in the report and a warning
        pre, pre_label = source, "skipped"
        ctx.warn(f"quantization pre-processing {skip_reason}")
    pre_model = onnx.load_model(str(pre), load_external_data=False)
    excluded = ExclusionScope(config.exclude).onnx_nodes(pre_model)
    require_op_types(config.op_types, (n.op_type for n in pre_model.graph.node), flag="--op-types")
    del pre_model
    out = ctx.workdir / "quantized.onnx"
    qtype = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
    large = _external(source)  # read and written with external data
    if config.precision != "int8":
        settings = {}
    else:
        settings = choose_settings(config, has_conv=has_conv, has_calibration=ctx.calibration is not None)
    op_types = list(config.op_types) or None
    gemm_aliases: list[str] = []
    if settings.get("mode") == "dynamic":
        op_types, gemm_aliases = _dynamic_op_types(config, pre, settings, ctx, excluded)
    if settings.get("saturation_risk") and not settings["reduce_range"]:
        ctx.warn(f"8-bit weights with reduce_range off: {settings['saturation_risk']}; expect lower fidelity "
                 "(drop --no-reduce-range)")
    if settings.get("mode") != "static" and (config.calibration_method != "minmax" or config.calibration_samples):
        ctx.warn("--calibration-method and --calibration-samples only affect static quantization; this run is "
                 f"{settings.get('mode', config.precision)}")
    if settings.get("mode") == "static" and settings["calibration_method"] != "percentile" and (
            config.percentile != QuantizeConfig.__dataclass_fields__["percentile"].default):
        ctx.warn(f"--percentile only applies with --calibration-method percentile; ignored "
                 f"(method {settings['calibration_method']})")
    rewrites: dict[str, int] = {}
    held_out = None
    if config.precision == "int4" or (config.precision == "int8" and settings["mode"] == "dynamic"):
        pre, rewrites = _rewrite(ctx, config, pre, smooth=config.precision == "int8" and config.smooth, excluded=excluded)
    elif config.precision == "int8":
        pre, rewrites = _rewrite(ctx, config, pre, smooth=False, excluded=excluded, static=True)
    try:
        if config.precision == "int4":
            settings = _quantize_int4(ctx, config, pre, out, excluded)
        elif config.precision == "fp16":
            settings = _quantize_fp16(config, pre, out, excluded)
        elif settings["mode"] == "dynamic":
            src_for_main = pre
            # look for ties in the graph before pre-processing: constant folding may have split them into copies
            present = {n.name for n in onnx.load_model(str(pre), load_external_data=False).graph.node}
            tied = {g: t for g, t in _tied_gathers(source).items() if g not in excluded and g in present}
            if tied:
                ctx.warn("tied weights kept in float so that they are stored once and the output layer keeps its "
                         f"accuracy: {', '.join(sorted(set(tied.values())))} (used by Gather {', '.join(sorted(tied))})")
                excluded = excluded + sorted(tied)
                settings["tied_weights_kept_float"] = sorted(set(tied.values()))
            dyn_options = {"per_channel": settings["per_channel"], "reduce_range": settings["reduce_range"],
                           "weight_type": qtype[settings["weight_type"]],
                           "extra_options": {"MatMulConstBOnly": True, "WeightSymmetric": settings["weight_scheme"] == "symmetric",
                                             "DefaultTensorType": onnx.TensorProto.FLOAT}}
            by_node = _quantize_large_by_node(ctx, pre, excluded, op_types, dyn_options) if large else None
            if by_node is not None:
                pre = src_for_main = by_node
                settings["quantized_one_node_at_a_time"] = True
            per_tensor_nodes = _non_2d_matmuls(pre) if settings["per_channel"] else []
            per_tensor_nodes = [n for n in per_tensor_nodes if n not in excluded]
            if per_tensor_nodes:
                # case Q2: per-channel dynamic MatMul with a 3-D (batched) weight fails at run time in ONNX
                # Runtime ("b zero point is not valid"): quantize those nodes per tensor first
                ctx.warn(f"per-channel quantization of MatMul with a non-2-D weight fails in ONNX Runtime; "
                         f"quantized per tensor instead: {', '.join(per_tensor_nodes)}")
                src_for_main = ctx.workdir / "per_tensor_part.onnx"
                quantize_dynamic(str(pre), str(src_for_main), per_channel=False, reduce_range=settings["reduce_range"],
                                 use_external_data_format=large,
                                 weight_type=qtype[settings["weight_type"]], nodes_to_quantize=per_tensor_nodes,
                                 extra_options={"MatMulConstBOnly": True,
                                                "WeightSymmetric": settings["weight_scheme"] == "symmetric",
                                                "DefaultTensorType": onnx.TensorProto.FLOAT})
                settings["per_tensor_nodes"] = per_tensor_nodes
            if by_node is not None and not per_tensor_nodes and not has_other_quantizable(
                    by_node, excluded=excluded, op_types=op_types):
                _move_scratch_model(by_node, out)  # every quantizable node is done
            else:
                def quantize_one(fmt: dict[str, Any], src: Path, dst: Path) -> None:
                    quantize_dynamic(
                        str(src),
                        str(dst),
                        per_channel=settings["per_channel"],
                        reduce_range=fmt["reduce_range"],
                        weight_type=qtype[fmt["weight_type"]],
                        op_types_to_quantize=op_types,
                        nodes_to_exclude=excluded + per_tensor_nodes + gemm_aliases,
                        use_external_data_format=large,
                        extra_options={"MatMulConstBOnly": True,
                                       "WeightSymmetric": settings["weight_scheme"] == "symmetric",
                                       "DefaultTensorType": onnx.TensorProto.FLOAT},
                    )

                from compressor.passes.kernel_formats import dynamic_formats

                dynamic_formats(ctx, config, settings, src_for_main, out, quantize_one, cpu=cpu_info(), measure=not large,
                                fusable=by_node is None and not per_tensor_nodes)
        else:
            calib, held_out = _split_held_out(ctx, ctx.calibration, config.calibration_samples)
            method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                      "percentile": CalibrationMethod.Percentile}[settings["calibration_method"]]
            extra = {
                "ActivationSymmetric": settings["activation_scheme"] == "symmetric",
                "WeightSymmetric": settings["weight_scheme"] == "symmetric",
                "QDQOpTypePerChannelSupportToAxis": {"ConvTranspose": 1},
                "DefaultTensorType": onnx.TensorProto.FLOAT,
            }
            if settings["calibration_method"] == "percentile":
                extra["CalibPercentile"] = config.percentile
                settings["percentile"] = config.percentile
            cache = None
            if settings["calibration_method"] == "entropy":
                cache = _entropy_ranges(pre, ctx.workdir, calib, op_types, large, reader=lambda d: _reader(ctx, d))
                settings["entropy_bins"] = dict(ENTROPY_BINS)
            # ranges are computed once (ONNX Runtime writes its calibration cache on the first call) and
            # shared by every kernel format that is tried
            cache = cache or ctx.workdir / "calibration_ranges.json"

            def quantize_one(fmt: dict[str, Any], dst: Path) -> None:
                with _quiet_calibration():
                    quantize_static(
                        str(pre),
                        str(dst),
                        _reader(ctx, calib),
                        quant_format=QuantFormat.QOperator if fmt["quant_format"] == "QOperator" else QuantFormat.QDQ,
                        per_channel=settings["per_channel"],
                        reduce_range=fmt["reduce_range"],
                        activation_type=qtype[fmt["activation_type"]],
                        weight_type=qtype[fmt["weight_type"]],
                        calibrate_method=method,
                        op_types_to_quantize=op_types,
                        nodes_to_exclude=excluded,
                        use_external_data_format=large,
                        extra_options=extra,
                        calibration_cache_path=cache,
                    )
                if config.rewrites and fmt["quant_format"] == "QDQ":
                    fmt["rewrites"] = _float_outputs(dst)

            from compressor.passes.kernel_formats import static_formats

            static_formats(ctx, config, settings, pre, out, calib, quantize_one, held_out=held_out, cpu=cpu_info())
            rewrites.update(settings.pop("_rewrites", {}))
            settings["calibration_samples"] = calib.num_samples
            settings["calibration_data"] = calib.source
    except Exception as e:
        raise QuantizationError(
            f"ONNX Runtime {config.precision} quantization ({settings.get('mode', config.precision)}) failed: {type(e).__name__}: "
            f"{str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
        ) from e
    qmodel = onnx.load_model(str(out), load_external_data=False)
    summary = _node_summary(base_model, qmodel, precision=config.precision)
    summary["excluded_nodes"] = excluded
    summary["rewrites"] = rewrites
    if upcast:
        settings["upcast_from_float16"] = upcast
        if summary["unquantized_nodes"]:
            left = ", ".join(f"{v} {k}" for k, v in summary["unquantized_nodes"].items())
            ctx.warn(f"weight nodes left in float ({left}) now hold float32 weights, upcast from float16: the result "
                     "can be larger than the input; --precision fp16 of the float32 model keeps them in float16")
    if not summary["quantized_nodes"]:
        left = ", ".join(f"{v} {k}" for k, v in summary["unquantized_nodes"].items()) or "none"
        raise QuantizationError(f"quantization quantized no node: ONNX Runtime's {config.precision} quantizer left "
                                f"every weight node in float ({left}); nothing would change")
    _check_weight_scheme(qmodel, settings, ctx, base_dir=str(out.parent))
    try:
        sess = make_session(out)
        sess.run(None, ctx.data.batch(0, ctx.batch_size(min(2, ctx.data.num_samples))))
    except SessionError as e:
        raise QuantizationError(
            f"the quantized model does not load in ONNX Runtime ({e}); try --scheme asymmetric or --per-tensor"
        ) from e
    except Exception as e:
        msg = str(e).strip().splitlines()[0][:300]
        raise QuantizationError(
            f"the quantized model fails when run in ONNX Runtime ({msg}); try --per-tensor or --exclude the node named"
        ) from e
    ops = [n.op_type for n in qmodel.graph.node]
    if settings.get("mode") == "static" and held_out is not None:
        settings["held_out_fidelity"] = _held_out_fidelity(artifact.path, out, held_out, settings, ctx)
    if settings.get("mode") == "static":
        kept = _kept_float_activations(qmodel)
        if kept and settings["activation_scheme"] == "symmetric":
            ctx.warn(f"symmetric activations keep {len(kept)} Relu/Clip node(s) in float between DequantizeLinear and "
                     "QuantizeLinear, which is slower; --activation-scheme asymmetric folds them into the range")
    if "ConvInteger" in ops:
        how = ("drop --mode dynamic (or pass --mode static)" if ctx.calibration is not None
               else "pass --calibration-data FILE.npz")
        ctx.warn("dynamic quantization turned convolutions into ConvInteger, which is often slower than fp32 "
                 f"on CPU; static quantization suits CNNs better: {how} (see the latency numbers)")
    settings["precision"] = config.precision
    if opset_upgrade:
        settings["opset_upgrade"] = opset_upgrade
    details = {**settings, **summary, "preprocess": pre_label, "cpu_isa": cpu_info()["isa"]}
    if skip_reason:
        details["preprocess_reason"] = skip_reason
    return PassResult(ModelArtifact(out, ModelFormat.ONNX, io=artifact.io), details)

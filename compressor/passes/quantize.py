"""Dynamic int8 quantization with ONNX Runtime's quantization tool.

Weights are quantized ahead of time (per channel or per tensor); activations are quantized
at run time from their observed range (uint8, asymmetric), so no calibration data is
needed. Source: ONNX Runtime ``quantize_dynamic`` and ``quant_pre_process``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compressor.context import RunContext
from compressor.errors import QuantizationError, SessionError
from compressor.passes.configs import QuantizeConfig
from compressor.passes.prune import PassOutcome
from compressor.runtime import cpu_info, has_vnni, make_session


def choose_settings(config: QuantizeConfig) -> dict[str, Any]:
    """Resolve a config into the settings used on this CPU.

    The default (no ``--scheme``) is symmetric int8 weights (zero point 0) with per-channel
    scales: ONNX Runtime's u8 x s8 integer kernels are the fast path on x86 (measured on
    MiniLM-L6: 1.47x for s8 weights against 0.89x for u8 weights, case Q8), and per-channel
    scales keep fidelity (cosine 0.99 against 0.95 per tensor). Without VNNI, u8 x s8 can
    saturate 16-bit intermediates (case Q7), so 7-bit weights (``reduce_range``) are used.

    Returns:
        ``{"mode", "weight_type", "weight_scheme", "activation_type", "activation_scheme",
        "per_channel", "reduce_range", "chosen_by", "reason"}``.
    """
    scheme = config.scheme or "symmetric"
    weight_type = "int8" if scheme == "symmetric" else "uint8"
    vnni = has_vnni()
    if config.reduce_range is not None:
        reduce_range = config.reduce_range
        why_rr = "set by --reduce-range/--no-reduce-range"
    else:
        reduce_range = weight_type == "int8" and not vnni and cpu_info()["machine"] in ("x86_64", "AMD64")
        why_rr = ("CPU has no AVX512-VNNI/AVX-VNNI: 7-bit weights avoid u8 x s8 saturation" if reduce_range
                  else "full 8-bit range")
    if config.scheme is None:
        reason = ("default: symmetric int8 weights per channel are the fast and accurate choice on this CPU "
                  f"({'VNNI' if vnni else 'no VNNI'}); uint8 (asymmetric) weights ran slower than fp32 on x86 in our measurements")
    else:
        reason = f"--scheme {config.scheme}"
        if scheme == "asymmetric":
            reason += " (uint8 weights with zero points: usually slower than symmetric int8 on x86)"
    return {
        "mode": config.mode,
        "weight_type": weight_type,
        "weight_scheme": scheme,
        "activation_type": "uint8",
        "activation_scheme": "asymmetric (dynamic, per tensor, computed at run time)",
        "per_channel": config.per_channel,
        "reduce_range": reduce_range,
        "chosen_by": "default" if config.scheme is None else "user",
        "reason": f"{reason}; reduce_range: {why_rr}",
    }


def preprocess(src: Path, dst: Path, ctx: RunContext) -> tuple[Path, str]:
    """Run ONNX Runtime's quantization pre-processing (shape inference + graph optimisation).

    Falls back to no symbolic shape inference, then to no pre-processing at all, with a
    warning each time (case Q4).

    Returns:
        The path to quantize and a one-word description of what ran.
    """
    from onnxruntime.quantization.shape_inference import quant_pre_process

    errors = []
    for label, kwargs in (("full", {}), ("without symbolic shape inference", {"skip_symbolic_shape": True})):
        try:
            quant_pre_process(str(src), str(dst), **kwargs)
            if label != "full":
                ctx.warn(f"quantization pre-processing failed with symbolic shape inference ({errors[-1]}); "
                         "ran it without")
            return dst, label
        except Exception as e:
            errors.append(f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200] if str(e).strip() else ''}")
    ctx.warn(f"quantization pre-processing failed ({errors[-1]}); quantizing the graph as it is")
    return src, "skipped"


def run_quantize(ctx: RunContext, config: QuantizeConfig) -> PassOutcome:
    """Quantize the baseline ONNX model dynamically to int8.

    Raises:
        QuantizationError: ONNX Runtime's tool failed, quantized no node, or its model does
            not load or run in ONNX Runtime.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    assert ctx.baseline_onnx is not None
    settings = choose_settings(config)
    pre, pre_label = preprocess(ctx.baseline_onnx, ctx.workdir / "preprocessed.onnx", ctx)
    out = ctx.workdir / "result.onnx"
    try:
        quantize_dynamic(
            str(pre),
            str(out),
            per_channel=settings["per_channel"],
            reduce_range=settings["reduce_range"],
            weight_type=QuantType.QInt8 if settings["weight_type"] == "int8" else QuantType.QUInt8,
            extra_options={"MatMulConstBOnly": True},
        )
    except Exception as e:
        raise QuantizationError(
            f"ONNX Runtime quantize_dynamic failed: {type(e).__name__}: {str(e).strip().splitlines()[0][:300]}"
        ) from e
    import onnx

    qmodel = onnx.load_model(str(out), load_external_data=False)
    ops = [n.op_type for n in qmodel.graph.node]
    quantized = [o for o in ops if o in ("MatMulInteger", "ConvInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul")]
    if not quantized and not any(o == "DequantizeLinear" for o in ops):
        raise QuantizationError(
            "quantization quantized no node (no Conv, MatMul or Gemm with constant weights); nothing would change"
        )
    try:
        make_session(out)
    except SessionError as e:
        raise QuantizationError(
            f"the quantized model does not load in ONNX Runtime ({e}); try --scheme asymmetric or --per-tensor"
        ) from e
    if "ConvInteger" in ops:
        ctx.warn("dynamic quantization turned convolutions into ConvInteger, which is often slower than fp32 "
                 "on CPU; static quantization suits CNNs better (see the latency numbers)")
    ctx.steps.append({"name": "quantize", "preprocess": pre_label, **{k: v for k, v in settings.items()}})
    return PassOutcome(out, {**settings, "preprocess": pre_label, "cpu_isa": cpu_info()["isa"]})

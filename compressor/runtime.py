"""ONNX Runtime sessions and facts about this CPU."""

from __future__ import annotations

import os
import platform
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from compressor.errors import SessionError

#: Instruction-set flags (as in /proc/cpuinfo) that decide int8 kernel choice and speed: x86 ``flags``, and
#: the aarch64 ``Features`` ``asimddp`` (dot product, SDOT/UDOT) and ``i8mm`` (int8 matrix multiply, SMMLA/UMMLA).
ISA_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "avx512_bf16",
             "avx512_fp16", "asimddp", "i8mm")

#: x86 flags whose int8 dot-product instructions (VPDPBUSD, AMX TDPBUSD) accumulate u8 x s8 products in 32 bits.
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")


def make_session(path: Path, *, threads: int = 0, inter_threads: int = 0, optimization: str = "all") -> Any:
    """Create a CPU ``onnxruntime.InferenceSession``.

    Args:
        path: ONNX file.
        threads: Intra-op threads; 0 lets ONNX Runtime choose (one per physical core).
        inter_threads: Inter-op threads; 0 lets ONNX Runtime choose.
        optimization: ``"all"`` (ORT_ENABLE_ALL) or ``"basic"``.

    Raises:
        SessionError: ONNX Runtime cannot load the model (e.g. an op without a CPU kernel).
    """
    import onnxruntime as ort

    ort.set_default_logger_severity(4)  # errors come back as exceptions; keep the C++ log off stderr
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = inter_threads
    opts.log_severity_level = 4  # run-time errors come back as exceptions; ORT's own log lines stay off stderr
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimization == "all" else ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    )
    try:
        return ort.InferenceSession(os.fspath(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:
        msg = str(e).strip().splitlines()[0][:400]
        raise SessionError(f"ONNX Runtime cannot load {Path(path).name}: {msg}") from e


def cpuinfo_flags(text: str) -> set[str]:
    """Instruction-set flags of the first CPU in ``/proc/cpuinfo`` text: x86 ``flags`` or aarch64 ``Features``."""
    for line in text.splitlines():
        key = line.split(":", 1)[0].strip()
        if key in ("flags", "Features") and ":" in line:
            return set(line.split(":", 1)[1].split())
    return set()


@lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    """CPU model, instruction sets and runtime versions of this machine.

    Returns:
        ``{"cpu_model", "machine", "logical_cores", "isa": {flag: bool}, "onnxruntime", "providers"}``.
        ISA flags are read from ``/proc/cpuinfo`` (Linux); elsewhere they are all False.
    """
    flags: set[str] = set()
    model = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        flags = cpuinfo_flags(text)
        for line in text.splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import onnxruntime as ort

    return {
        "cpu_model": model,
        "machine": platform.machine(),
        "logical_cores": os.cpu_count(),
        "isa": {f: f in flags for f in ISA_FLAGS},
        "onnxruntime": ort.__version__,
        "providers": ort.get_available_providers(),
    }


def has_vnni() -> bool:
    """True when the CPU has AVX512-VNNI or AVX-VNNI (u8 x s8 dot products without 16-bit saturation)."""
    isa = cpu_info()["isa"]
    return any(isa.get(f) for f in VNNI_FLAGS)


def int8_saturation_risk(machine: str, isa: Mapping[str, bool], *, activation_type: str, weight_type: str,
                         weight_symmetric: bool = True) -> str | None:
    """Whether ONNX Runtime's int8 GEMM/conv kernels can saturate 16-bit intermediates on this CPU (cases Q7, R22).

    A pure function of the CPU's architecture and instruction-set flags and the int8 format, so that
    the choice can be tested for every CPU with fake flags.

    - x86-64 without VNNI (AVX2, or AVX-512 without VNNI): ONNX Runtime's MLAS kernels (1.32.0) multiply
      u8 activations by s8 weights with ``VPMADDUBSW``, which adds each pair of products into a
      *saturating* 16-bit lane: 2 x 255 x 127 = 64770 does not fit in 32767. Static S8S8 QDQ takes
      the same kernel (ONNX Runtime shifts int8 activations to uint8 on x86), so both u8s8 and s8s8
      are exposed; 7-bit weights (``reduce_range``, [-64, 64]) bound the pair to 2 x 255 x 64 = 32640.
      uint8 weights (U8U8) are widened to 16 bits before ``VPMADDWD`` and never saturate.
    - x86-64 with AVX512-VNNI, AVX-VNNI or AMX-INT8: ``VPDPBUSD`` / ``TDPBUSD`` accumulate in 32 bits.
    - aarch64: with dot product (``asimddp``) or ``i8mm``, SDOT/UDOT/SMMLA/UMMLA accumulate in 32 bits; without
      them the NEON kernels form each product in 16 bits (UMULL/SMULL) and accumulate in 32 bits: u8 x u8
      and u8 x s8 products fit. For s8 x s8 only products of -128 by -128 come near the 16-bit limit; symmetric
      weights stop at -127, so only int8 activations with asymmetric int8 weights get 7-bit weights, to be safe.
    - Other machines: ONNX Runtime's portable kernels accumulate in 32 bits.

    Args:
        machine: ``platform.machine()`` (``x86_64``/``AMD64``, ``aarch64``/``arm64``, ...).
        isa: Instruction-set flags as in :data:`ISA_FLAGS` (missing flags count as absent).
        activation_type: ``"uint8"`` or ``"int8"``.
        weight_type: ``"int8"`` or ``"uint8"``.
        weight_symmetric: Symmetric weights (zero point 0, range [-127, 127]).

    Returns:
        None when the combination cannot saturate on this CPU, else one sentence saying why it can.
    """
    m = machine.lower()
    if m in ("x86_64", "amd64", "x86", "i386", "i686"):
        if weight_type != "int8" or any(isa.get(f) for f in VNNI_FLAGS):
            return None
        kind = "AVX-512 without VNNI" if isa.get("avx512bw") or isa.get("avx512f") else "AVX2 without VNNI"
        return (f"this x86 CPU ({kind}) runs {'s8' if activation_type == 'int8' else 'u8'} x s8 int8 products through "
                "VPMADDUBSW, whose 16-bit intermediates saturate with 8-bit weights")
    if m in ("aarch64", "arm64"):
        if isa.get("asimddp") or isa.get("i8mm"):
            return None
        if activation_type == "int8" and weight_type == "int8" and not weight_symmetric:
            return ("this Arm CPU has no dot-product instructions, and its NEON s8 x s8 kernel can overflow 16 bits "
                    "when int8 activations meet asymmetric int8 weights at -128")
        return None
    return None

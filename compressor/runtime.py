"""ONNX Runtime sessions and facts about this CPU."""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path
from typing import Any

from compressor.errors import SessionError

#: x86 instruction-set flags (as in /proc/cpuinfo) that decide int8 kernel choice and speed.
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "avx512_bf16", "avx512_fp16")


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
        for line in text.splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            elif line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
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
    return bool(isa.get("avx512_vnni") or isa.get("avx_vnni") or isa.get("amx_int8"))

"""Int8 kernel formats chosen by measuring them on this CPU, not by assuming.

Which int8 format runs fastest depends on the CPU and on ONNX Runtime's kernels: measured on a 2-vCPU
AMD EPYC with AVX512-VNNI (ONNX Runtime 1.32.0), a ResNet-18-shaped CNN at batch 1 on one thread ran
1.22x faster than fp32 as QDQ S8S8 (ONNX Runtime's default) and 3.96x as QDQ U8S8 (VNNI's ``vpdpbusd``
multiplies u8 by s8; s8 activations take a slower path); on an AVX2 CPU without VNNI, U8S8 was 1.89x
against 1.11x, but needs 7-bit weights (``reduce_range``) so that ``vpmaddubsw``'s 16-bit intermediates
do not saturate; on aarch64 the dot-product instructions (``sdot``/``udot``, ``usdot`` with i8mm) change
the order again. So the quantize pass builds every format valid for this CPU, times them against each
other briefly in one interleaved benchmark, and keeps the fastest whose fidelity is within
``COSINE_TOLERANCE`` of the best (the approach of optimum's per-ISA presets, made empirical). Results
are cached per (CPU flags, ONNX Runtime version, model hash, settings).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
from pathlib import Path
from typing import Any

#: A candidate is acceptable when its worst-sample cosine is at most this far below the best candidate's.
COSINE_TOLERANCE = 0.002
#: A format earlier in the order of preference is kept when it is at most this share slower than the fastest.
PREFERENCE_MARGIN = 0.03
#: Bump when the selection's rules change, so that old cache entries are not reused.
CACHE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class KernelFormat:
    """One int8 kernel format.

    Attributes:
        name: ``qdq-s8s8``, ``qdq-u8s8``, ``qoperator-u8s8``, ``qoperator-s8s8`` (static) or
            ``dynamic-u8s8``, ``dynamic-u8u8`` (dynamic: activations are always uint8 at run time).
        quant_format: ``"QDQ"`` or ``"QOperator"`` (ONNX Runtime's ``QuantFormat``); dynamic models use
            integer ops (``MatMulInteger``, ``DynamicQuantizeMatMul``).
        activation_type: ``"int8"`` or ``"uint8"``.
        weight_type: ``"int8"`` or ``"uint8"``.
    """

    name: str
    quant_format: str
    activation_type: str
    weight_type: str


FORMATS = {f.name: f for f in (
    KernelFormat("qdq-s8s8", "QDQ", "int8", "int8"),
    KernelFormat("qdq-u8s8", "QDQ", "uint8", "int8"),
    KernelFormat("qoperator-u8s8", "QOperator", "uint8", "int8"),
    KernelFormat("qoperator-s8s8", "QOperator", "int8", "int8"),
    KernelFormat("dynamic-u8s8", "dynamic", "uint8", "int8"),
    KernelFormat("dynamic-u8u8", "dynamic", "uint8", "uint8"),
)}
#: Values of ``--format``.
FORMAT_CHOICES = ("auto", *FORMATS)


def is_x86(machine: str | None = None) -> bool:
    """True on x86-64 CPUs."""
    return (machine or platform.machine()).lower() in ("x86_64", "amd64", "x64")


def saturates(isa: dict[str, bool], machine: str) -> bool:
    """True when 8-bit weights can saturate ONNX Runtime's x86 int8 kernels on this CPU.

    Without VNNI (AVX2 only), MLAS multiplies with ``vpmaddubsw``, which adds two u8 x s8 products into
    a signed 16-bit lane: with 8-bit weights the sum can overflow (ONNX Runtime's quantization docs,
    "reduce_range"; measured in case R22: held-out cosine 0.946 -> 0.994 with 7-bit weights). VNNI, AMX
    and Arm's dot-product instructions accumulate in 32 bits.
    """
    if not is_x86(machine):
        return False
    return not (isa.get("avx512_vnni") or isa.get("avx_vnni") or isa.get("amx_int8"))


def static_candidates(isa: dict[str, bool], machine: str) -> list[str]:
    """Static int8 formats worth timing on this CPU (all valid in ONNX Runtime's CPU provider)."""
    return ["qdq-u8s8", "qdq-s8s8", "qoperator-u8s8"]


def dynamic_candidates(isa: dict[str, bool], machine: str) -> list[str]:
    """Dynamic int8 formats worth timing.

    u8 x s8 wins on x86 with VNNI (no contest); without VNNI it needs 7-bit weights, and u8 x u8 may win;
    on Arm without i8mm u8 x u8 maps to ``udot``.
    """
    if is_x86(machine) and not saturates(isa, machine):
        return ["dynamic-u8s8"]
    return ["dynamic-u8s8", "dynamic-u8u8"]


def reduce_range_for(fmt: KernelFormat, isa: dict[str, bool], machine: str) -> bool:
    """7-bit weights where the format's kernels can saturate on this CPU.

    See :func:`compressor.runtime.int8_saturation_risk` (s8 weights on x86 without VNNI).
    """
    from compressor.runtime import int8_saturation_risk

    return int8_saturation_risk(machine, isa, activation_type=fmt.activation_type,
                                weight_type=fmt.weight_type) is not None


# ---------------------------------------------------------------------------------------------- cache


def cache_dir() -> Path:
    """Where measured selections are cached.

    ``$COMPRESSOR_CACHE_DIR``, else ``$XDG_CACHE_HOME/compressor``, else ``~/.cache/compressor``.
    """
    if os.environ.get("COMPRESSOR_CACHE_DIR"):
        return Path(os.environ["COMPRESSOR_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "compressor"


def cache_key(model: Path, settings: dict[str, Any], cpu: dict[str, Any]) -> str:
    """Key of one selection: model bytes (and its external data), settings, CPU flags and ONNX Runtime version."""
    h = hashlib.sha256()
    for p in [model, *sorted(model.parent.glob(model.name + ".data"))]:
        with open(p, "rb") as f:
            for block in iter(lambda f=f: f.read(1 << 20), b""):
                h.update(block)
    h.update(json.dumps({"v": CACHE_VERSION, "settings": settings, "isa": cpu.get("isa"), "machine": cpu.get("machine"),
                         "cpu": cpu.get("cpu_model"), "ort": cpu.get("onnxruntime")}, sort_keys=True,
                        default=str).encode())
    return h.hexdigest()


def cache_get(key: str) -> dict[str, Any] | None:
    """A cached selection, or None (a missing or unreadable cache is a miss)."""
    try:
        data = json.loads((cache_dir() / "kernel_formats.json").read_text())
    except (OSError, ValueError):
        return None
    entry = data.get(key) if isinstance(data, dict) else None
    ok = isinstance(entry, dict) and str(entry.get("chosen")).split("+")[0] in FORMATS
    return entry if ok else None


def cache_put(key: str, entry: dict[str, Any]) -> None:
    """Store a selection (atomic replace; failures to write are ignored: the cache only saves time)."""
    import tempfile

    path = cache_dir() / "kernel_formats.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            data = json.loads(path.read_text())
            data = data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            data = {}
        data[key] = entry
        if len(data) > 500:  # keep the newest entries
            data = dict(list(data.items())[-500:])
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".kernel_formats.")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------- measuring


def measure_candidates(reference: Path, candidates: dict[str, Path], data: Any, *, batch_size: int = 1,
                       threads: int = 1, min_time_s: float = 1.5) -> list[dict[str, Any]]:
    """Time candidates against each other and measure their fidelity to ``reference``.

    Args:
        reference: The float model (fidelity reference; timed too, for the speedup).
        candidates: Format name -> quantized ONNX model.
        data: :class:`~compressor.inputs.SampleData` (held-out samples where the user gave them).
        batch_size: Timing batch (samples repeat when fewer).
        threads: Intra-op threads for timing (1: the ranking is a kernel property, and one thread is
            immune to the oversubscription of small VMs, see :mod:`compressor.threads`).
        min_time_s: Least total timed seconds, over every model.

    Returns:
        One row per candidate: ``{"format", "latency_ms_p50", "speedup", "cosine_min", "sqnr_db"}``.
    """
    import numpy as np

    from compressor.benchmark import BenchmarkSettings, benchmark_detailed
    from compressor.fidelity import attention_mask_of, compare_outputs, output_names, run_onnx, sequence_outputs

    names = list(candidates)
    paths = [reference, *[candidates[n] for n in names]]
    outs = [run_onnx(p, data, threads=threads) for p in paths]
    n = data.num_samples
    if n >= batch_size:
        feeds = data.batch(0, batch_size)
    else:
        feeds = {k: np.concatenate([v] * (-(-batch_size // n)))[:batch_size] for k, v in data.arrays.items()}
    det = benchmark_detailed(paths, feeds, BenchmarkSettings(warmup=3, max_warmup=30, min_runs=8, blocks=2,
                                                             min_time_s=min_time_s, measure_memory=False),
                             threads=[threads] * len(paths))
    lat = det["latency"]
    rows = []
    # token outputs are compared on real positions only (padding has no meaning), as in the run's fidelity
    mask = attention_mask_of(data)
    tokens = sequence_outputs(reference, mask[0]) if mask is not None else None
    for i, name in enumerate(names, 1):
        fid = compare_outputs(outs[0], outs[i], names=output_names(reference), attention_mask=mask, token_outputs=tokens)
        rows.append({"format": name, "latency_ms_p50": lat[i].p50, "speedup": lat[0].p50 / lat[i].p50,
                     "cosine_min": fid.get("cosine_min"), "sqnr_db": fid.get("sqnr_db")})
    return rows


def pick(rows: list[dict[str, Any]], tolerance: float = COSINE_TOLERANCE, margin: float = PREFERENCE_MARGIN) -> str:
    """The fastest format whose worst-sample cosine is within ``tolerance`` of the best one's.

    Rows come in order of preference (QDQ, the portable form, first); a format earlier in that order is
    kept when it is within ``margin`` (a share) of the fastest, so that timing noise does not flip the
    choice between two equally fast formats.
    """
    best = max(r["cosine_min"] for r in rows)
    ok = [r for r in rows if r["cosine_min"] >= best - tolerance]
    fastest = min(r["latency_ms_p50"] for r in ok)
    return next(r for r in ok if r["latency_ms_p50"] <= fastest * (1 + margin))["format"]


# ---------------------------------------------------------------------------------------------- the pass's step


def quantized_weight_count(path: Path) -> int:
    """Weight elements stored as 8-bit integers (in rank >= 2 initializers of dtype int8/uint8) in an ONNX model.

    Elements, not tensors: a fused ``QAttention`` stores the Q, K and V weights as one tensor.
    """
    import math

    import onnx

    model = onnx.load_model(str(path), load_external_data=False)
    return sum(math.prod(t.dims) for t in model.graph.initializer
               if t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) and len(t.dims) >= 2)


def _format_settings(name: str, reduce_range: bool | None, isa: dict[str, bool], machine: str) -> dict[str, Any]:
    f = FORMATS[name]
    rr = reduce_range if reduce_range is not None else reduce_range_for(f, isa, machine)
    return {"name": name, "quant_format": f.quant_format, "activation_type": f.activation_type,
            "weight_type": f.weight_type, "reduce_range": rr}


def _data_digest(data: Any) -> str:
    h = hashlib.sha256()
    for k in sorted(data.arrays):
        h.update(k.encode())
        h.update(data.arrays[k].tobytes())
    return h.hexdigest()


def build_candidates(names: list[str], build: Any, workdir: Path) -> tuple[dict[str, Path], list[dict[str, Any]]]:
    """Build each candidate format with ``build(name, dst)`` and keep those that load and quantize the most weights.

    A candidate whose build or ONNX Runtime session fails is skipped with its reason; one that leaves more weight
    elements in float than the others (e.g. QOperator has no ConvTranspose kernel) is no candidate either: only
    the formats that quantize the most compete.

    Args:
        names: Candidate names, in order of preference.
        build: ``build(name, dst)`` writes the candidate's ONNX model to ``dst``.
        workdir: Scratch folder for ``format-<name>.onnx``.

    Returns:
        ``({name: path}, [{"format", "error"}, ...])`` of the candidates kept and those dropped.

    Raises:
        Exception: The last build error, when no candidate could be built.
    """
    from compressor.runtime import make_session

    built: dict[str, Path] = {}
    errors: list[dict[str, Any]] = []
    last_error: Exception | None = None
    for name in names:
        dst = workdir / f"format-{name}.onnx"
        try:
            build(name, dst)
            make_session(dst)
        except Exception as e:  # a candidate this graph cannot take is skipped, with the reason
            last_error = e
            errors.append({"format": name, "error": f"{type(e).__name__}: {str(e).strip()[:200]}"})
            continue
        built[name] = dst
    if not built:
        raise last_error  # type: ignore[misc]
    counts = {name: quantized_weight_count(p) for name, p in built.items()}
    most = max(counts.values())
    for name in [n for n, c in counts.items() if c < most]:
        errors.append({"format": name, "error": f"quantizes {counts[name]} weight elements, others {most}"})
        built.pop(name).unlink(missing_ok=True)
    return built, errors


def static_formats(ctx: Any, config: Any, settings: dict[str, Any], pre: Path, out: Path, calib: Any,
                   quantize_one: Any, *, held_out: Any = None, max_bytes: int | None = None,
                   cpu: dict[str, Any] | None = None) -> None:
    """Build the static int8 model at ``out`` in the kernel format chosen for this CPU; fill ``settings``.

    With ``config.format == "auto"`` and no type, scheme or reduce_range flag given, every format of
    :func:`static_candidates` is built from the same calibration ranges, timed against the others
    (:func:`measure_candidates`: batch 1, one thread, interleaved) and measured for fidelity on held-out
    data (``ctx.eval_data``, else the calibration samples); the fastest within ``COSINE_TOLERANCE`` of the
    best cosine wins. Selections are cached (:func:`cache_dir`). An explicit format, or explicit types,
    build one model.

    Args:
        ctx: The run context (``workdir``, ``eval_data``, warnings, progress).
        config: The :class:`~compressor.passes.configs.QuantizeConfig`.
        settings: Resolved settings from ``choose_settings``; updated in place (``format``,
            ``kernel_format``, ``activation_type``, ``weight_type``, ``reduce_range``, ``format_candidates``,
            ``format_selection``, ``reason``; ``_rewrites`` for the caller).
        pre: The pre-processed float model.
        out: Where the chosen model goes.
        calib: Calibration :class:`~compressor.inputs.SampleData`.
        quantize_one: ``quantize_one(fmt: dict, dst: Path)`` builds one format (``fmt`` has ``quant_format``,
            ``activation_type``, ``weight_type``, ``reduce_range``; it may add ``rewrites``).
        held_out: Samples kept out of calibration for fidelity (default: ``ctx.eval_data``, else ``calib``).
        max_bytes: Models larger than this are not built three times (default: the external-data size).
        cpu: ``cpu_info()``-shaped facts (``machine``, ``isa``) the choice is made for (default: this CPU).

    Raises:
        Exception: Whatever ``quantize_one`` raises when no format can be built.
    """
    from compressor.artifact import external_data_threshold, file_size_bytes
    from compressor.runtime import cpu_info

    cpu = cpu or cpu_info()
    isa, machine = cpu["isa"], cpu["machine"]
    fixed_by_user = settings.get("chosen_by") == "user" or not str(settings.get("activation_scheme")).startswith(
        "asymmetric")
    if config.format != "auto":
        names, by = [config.format], "user"
    elif fixed_by_user:
        fmt = {"name": None, "quant_format": "QDQ", "activation_type": settings["activation_type"],
               "weight_type": settings["weight_type"], "reduce_range": settings["reduce_range"]}
        quantize_one(fmt, out)
        settings["_rewrites"] = fmt.get("rewrites", {})
        settings["format"] = fmt["quant_format"]
        settings["format_selection"] = {"by": "flags"}
        return
    elif file_size_bytes(pre) > (max_bytes if max_bytes is not None else external_data_threshold()):
        names, by = ["qdq-u8s8"], "rule (model too large to build every format)"
    else:
        names, by = static_candidates(isa, machine), "measured"
    rows: list[dict[str, Any]] = []
    if len(names) == 1:
        chosen = names[0]
        fmt = _format_settings(chosen, config.reduce_range, isa, machine)
        quantize_one(fmt, out)
    else:
        key = cache_key(pre, {"config": dataclasses.asdict(config), "calibration": _data_digest(calib),
                              "held_out": _data_digest(held_out) if held_out is not None else
                              _data_digest(ctx.eval_data) if ctx.eval_data is not None else None}, cpu)
        hit = cache_get(key)
        if hit is not None:
            chosen, rows, by = hit["chosen"], hit["candidates"], "cached"
            fmt = _format_settings(chosen, config.reduce_range, isa, machine)
            quantize_one(fmt, out)
        else:
            fmts = {name: _format_settings(name, config.reduce_range, isa, machine) for name in names}
            built, errors = build_candidates(names, lambda name, dst: quantize_one(fmts[name], dst), ctx.workdir)
            held = held_out if held_out is not None else ctx.eval_data if ctx.eval_data is not None else calib
            if held.num_samples > 64:
                held = type(held)({k: v[:64] for k, v in held.arrays.items()}, None, held.source)
            task = f"timing {len(built)} int8 kernel formats on this CPU"
            ctx.progress(task, 0, 1)
            rows = measure_candidates(pre, built, held) if len(built) > 1 else [
                {"format": n, "latency_ms_p50": None, "speedup": None, "cosine_min": None, "sqnr_db": None}
                for n in built]
            ctx.progress(task, 1, 1)
            chosen = pick(rows) if len(built) > 1 else next(iter(built))
            os.replace(built[chosen], out)
            rows += errors
            cache_put(key, {"chosen": chosen, "candidates": rows})
            fmt = fmts[chosen]
    for r in rows:
        r["chosen"] = r["format"] == chosen
    settings["_rewrites"] = fmt.get("rewrites", {})
    old_a = settings["activation_type"]
    settings.update(activation_type=fmt["activation_type"], weight_type=fmt["weight_type"],
                    reduce_range=fmt["reduce_range"], format=fmt["quant_format"], kernel_format=chosen)
    settings["format_selection"] = {"by": by, "batch_size": 1, "threads": 1, "cosine_tolerance": COSINE_TOLERANCE,
                                    "chosen": chosen}
    if rows:
        settings["format_candidates"] = rows
    reason = str(settings.get("reason", ""))
    reason = reason.replace(f"{old_a} activations with a zero point (QDQ S8S8, ONNX Runtime's default)",
                            f"{fmt['activation_type']} activations with a zero point")
    if by in ("measured", "cached"):
        timed = [r for r in rows if r.get("latency_ms_p50") is not None]
        what = ", ".join(f"{r['format']} {r['speedup']:.2f}x cos {r['cosine_min']:.4f}" for r in timed)
        reason += (f"; kernel format {chosen}: the fastest within cosine {COSINE_TOLERANCE} of the most accurate "
                   f"(a QDQ form kept within {PREFERENCE_MARGIN:.0%} of the fastest) of {len(timed)} timed on this "
                   f"CPU at batch 1, 1 thread ({what})" + (" [cached]" if by == "cached" else ""))
    else:
        reason += f"; kernel format {chosen} ({'--format' if by == 'user' else by})"
    if fmt["reduce_range"] and config.reduce_range is None:
        reason += "; 7-bit weights: 8-bit ones can saturate this CPU's int8 kernels (no VNNI)"
    settings["reason"] = reason


#: Suffix of a candidate built on ONNX Runtime's fused transformer graph (see :mod:`transformer_fusion`).
FUSION_SUFFIX = "+fusion"
#: Suffix of a candidate whose residual Add + LayerNormalization pairs run on 2-D views, which ONNX Runtime
#: leaves unfused (:func:`~compressor.passes.transformer_fusion.flatten_residual_layernorm`).
FLAT_SUFFIX = "+flat-layernorm"


def graph_variant(name: str) -> str:
    """The graph a dynamic candidate is built on: ``""`` (as it is), ``FLAT_SUFFIX`` or ``FUSION_SUFFIX``."""
    return next((s for s in (FUSION_SUFFIX, FLAT_SUFFIX) if name.endswith(s)), "")


def dynamic_formats(ctx: Any, config: Any, settings: dict[str, Any], src: Path, out: Path, quantize_one: Any, *,
                    fusable: bool = True, measure: bool = True, cpu: dict[str, Any] | None = None) -> None:
    """Build the dynamic int8 model at ``out`` in the fastest valid form on this CPU; fill ``settings``.

    With ``config.format == "auto"`` and no type, scheme or reduce_range flag, the candidates are every format of
    :func:`dynamic_candidates`, each on the graph as it is and, for BERT-style encoders (``fusable``), on two
    variants: ``+flat-layernorm`` (:func:`~compressor.passes.transformer_fusion.flatten_residual_layernorm`:
    residual Add + LayerNormalization on 2-D views, which ONNX Runtime does not fuse into its slow
    SkipLayerNormalization) and ``+fusion`` (ONNX Runtime's fused transformer graph,
    :func:`~compressor.passes.transformer_fusion.fuse_transformer`: Attention, SkipLayerNormalization,
    BiasGelu; ``quantize_dynamic`` makes ``QAttention`` of Attention). They are timed
    against each other (:func:`measure_candidates`) at the benchmark's batch on one thread, measured for fidelity
    on held-out data (``ctx.eval_data``, else the calibration samples, else the run's inputs), and the fastest
    within ``COSINE_TOLERANCE`` of the best cosine is kept (the unfused graph when within ``PREFERENCE_MARGIN``).
    Candidates that quantize fewer weight elements are dropped. Selections are cached like the static ones.
    An explicit ``--format`` or explicit type flags build one unfused model.

    Args:
        ctx: The run context.
        config: The :class:`~compressor.passes.configs.QuantizeConfig`.
        settings: Resolved settings; updated in place (``kernel_format``, ``weight_type``, ``reduce_range``,
            ``format_candidates``, ``format_selection``, ``transformer_fusion``, ``flat_layernorm``, ``reason``).
        src: The float model to quantize (pre-processed, rewritten).
        out: Where the chosen model goes.
        quantize_one: ``quantize_one(fmt: dict, src: Path, dst: Path)`` runs ``quantize_dynamic`` with ``fmt``'s
            ``weight_type`` and ``reduce_range``.
        fusable: False skips the fusion candidate (models quantized one node at a time, partial quantizations).
        measure: False builds the first format of :func:`dynamic_candidates` unfused (models too large to build
            several times).
        cpu: ``cpu_info()``-shaped facts (default: this CPU).

    Raises:
        Exception: Whatever ``quantize_one`` raises when no candidate can be built.
    """
    from compressor.runtime import cpu_info

    cpu = cpu or cpu_info()
    isa, machine = cpu["isa"], cpu["machine"]
    if config.format != "auto" or settings.get("chosen_by") == "user":
        fmt = {"weight_type": settings["weight_type"], "reduce_range": settings["reduce_range"]}
        quantize_one(fmt, src, out)
        settings.setdefault("format_selection", {"by": "flags"})
        return
    held = ctx.eval_data if ctx.eval_data is not None else ctx.calibration if ctx.calibration is not None else ctx.data
    if held.num_samples > 64:
        held = type(held)({k: v[:64] for k, v in held.arrays.items()}, None, held.source)
    batch = ctx.batch_size(ctx.bench_batch_size)
    key = cache_key(src, {"config": dataclasses.asdict(config), "held_out": _data_digest(held), "batch": batch,
                          "fusable": fusable, "kind": "dynamic"}, cpu)
    fusion = None
    graphs = {"": src}
    flattened = 0
    if fusable and measure:
        import onnx

        from compressor.passes.transformer_fusion import flatten_residual_layernorm, fuse_transformer, looks_like_bert

        model = onnx.load_model(str(src))
        if looks_like_bert(model):
            flattened = flatten_residual_layernorm(model)
            if flattened:
                onnx.save(model, str(ctx.workdir / "flat_layernorm.onnx"))
                graphs[FLAT_SUFFIX] = ctx.workdir / "flat_layernorm.onnx"
        del model
        try:
            fusion = fuse_transformer(src, ctx.workdir / "fused_transformer.onnx",
                                      held.batch(0, min(4, held.num_samples)), ctx.workdir)
        except Exception as e:  # ONNX Runtime's optimizer on a graph it does not know: no fusion candidate
            settings["transformer_fusion_error"] = f"{type(e).__name__}: {str(e).strip()[:200]}"
            fusion = None
        if fusion is not None:
            graphs[FUSION_SUFFIX] = ctx.workdir / "fused_transformer.onnx"
    names = [n + suffix for n in dynamic_candidates(isa, machine) for suffix in graphs]
    if not measure:
        names = names[:1]
    fmts = {n: _format_settings(n.split("+")[0], config.reduce_range, isa, machine) for n in names}
    rows: list[dict[str, Any]] = []
    hit = cache_get(key) if len(names) > 1 else None
    if len(names) == 1:
        chosen, by = names[0], "rule (one candidate on this CPU)" if measure else "rule (model too large to build twice)"
        quantize_one(fmts[chosen], src, out)
    elif hit is not None and hit["chosen"] in fmts:
        chosen, rows, by = hit["chosen"], hit["candidates"], "cached"
        quantize_one(fmts[chosen], graphs[graph_variant(chosen)], out)
    else:
        by = "measured"
        built, errors = build_candidates(
            names, lambda name, dst: quantize_one(fmts[name], graphs[graph_variant(name)], dst), ctx.workdir)
        task = f"timing {len(built)} dynamic int8 candidates on this CPU"
        ctx.progress(task, 0, 1)
        if len(built) > 1:
            rows = measure_candidates(src, built, held, batch_size=batch, min_time_s=1.0)
            chosen = pick(rows)
        else:
            chosen = next(iter(built))
            rows = [{"format": chosen, "latency_ms_p50": None, "speedup": None, "cosine_min": None, "sqnr_db": None}]
        ctx.progress(task, 1, 1)
        os.replace(built[chosen], out)
        rows += errors
        for r in rows:
            r["transformer_fusion"] = graph_variant(r["format"]) == FUSION_SUFFIX
            r["flat_layernorm"] = graph_variant(r["format"]) == FLAT_SUFFIX
        cache_put(key, {"chosen": chosen, "candidates": rows, "fusion": fusion, "flattened": flattened})
    if by == "cached" and fusion is None:
        fusion = hit.get("fusion") if hit else None
    for r in rows:
        r["chosen"] = r["format"] == chosen
    fmt = fmts[chosen]
    base = chosen.split("+")[0]
    settings.update(weight_type=fmt["weight_type"], reduce_range=fmt["reduce_range"], kernel_format=base)
    settings["format_selection"] = {"by": by, "batch_size": batch, "threads": 1, "cosine_tolerance": COSINE_TOLERANCE,
                                    "chosen": chosen}
    if rows:
        settings["format_candidates"] = rows
    if graph_variant(chosen) == FLAT_SUFFIX:
        settings["flat_layernorm"] = flattened or (hit or {}).get("flattened")
        settings["format"] = ("integer ops (MatMulInteger/DynamicQuantizeMatMul); residual Add + LayerNormalization "
                              "on 2-D views, which ONNX Runtime leaves unfused")
    if graph_variant(chosen) == FUSION_SUFFIX and fusion is not None:
        settings["transformer_fusion"] = fusion
        settings["format"] = "integer ops (QAttention/DynamicQuantizeMatMul) on ONNX Runtime's fused transformer graph"
    timed = [r for r in rows if r.get("latency_ms_p50") is not None]
    if timed:
        what = ", ".join(f"{r['format']} {r['speedup']:.2f}x cos {r['cosine_min']:.4f}" for r in timed)
        settings["reason"] += (f"; {chosen}: the fastest within cosine {COSINE_TOLERANCE} of the most accurate (the "
                               f"graph as it is kept within {PREFERENCE_MARGIN:.0%} of the fastest) of {len(timed)} "
                               f"timed on this CPU at batch {batch}, 1 thread ({what})"
                               + (" [cached]" if by == "cached" else ""))
    else:
        settings["reason"] += f"; kernel format {chosen} ({by})"


def probe_model(path: Path) -> None:
    """Write a small seeded CNN for :func:`probe_formats`.

    ``x [N, 8, 32, 32]`` float32 -> 3 x (Conv 3x3 + Relu, 32 channels) -> global pool -> Gemm -> ``[N, 10]``.
    """
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, prev, cin = [], [], "x", 8
    for i in range(3):
        w = (rng.standard_normal((32, cin, 3, 3)) * (2.0 / (cin * 9)) ** 0.5).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"conv{i}.weight"),
                  numpy_helper.from_array((rng.standard_normal(32) * 0.1).astype(np.float32), f"conv{i}.bias")]
        nodes += [helper.make_node("Conv", [prev, f"conv{i}.weight", f"conv{i}.bias"], [f"c{i}"], name=f"conv{i}",
                                   pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}")]
        prev, cin = f"r{i}", 32
    inits += [numpy_helper.from_array((rng.standard_normal((10, 32)) * 0.2).astype(np.float32), "fc.weight"),
              numpy_helper.from_array(np.zeros(10, np.float32), "fc.bias")]
    nodes += [helper.make_node("GlobalAveragePool", [prev], ["pool"], name="pool"),
              helper.make_node("Flatten", ["pool"], ["flat"], name="flatten"),
              helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "probe", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 32, 32])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def probe_formats(workdir: Path) -> dict[str, Any]:
    """Measure the static int8 kernel formats on a small probe CNN (:func:`probe_model`) with the quantize pass.

    Returns:
        The report's ``quantization`` section of the run: ``kernel_format`` (the choice), ``format_candidates``
        (each format's latency at batch 1 on one thread, speedup over fp32 and cosine), ``format_selection``.

    Raises:
        CompressorError: The probe could not be quantized (the message says why).
    """
    import numpy as np

    from compressor.pipeline import run_recipe
    from compressor.recipe import Layer, build_recipe

    model, calib = workdir / "probe.onnx", workdir / "probe_calib.npz"
    probe_model(model)
    np.savez(calib, x=np.random.default_rng(1).standard_normal((16, 8, 32, 32)).astype(np.float32))
    recipe = build_recipe([Layer("probe", {
        "model": str(model), "calibration_data": str(calib), "output": str(workdir / "probe.int8.onnx"),
        "steps": [{"pass": "quantize", "mode": "static"}],
        "benchmark": {"runs": 4, "warmup": 1, "measure_memory": False, "threads": 1},
    })])
    report = run_recipe(recipe, command="compressor doctor (probe)")
    return report["quantization"]

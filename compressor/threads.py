"""Thread counts that tell the truth: the count actually used, the best count per model, a 1-thread check.

On small multi-core VMs ONNX Runtime's intra-op thread pool can make a model several times
*slower* than one thread (measured here: the fp32 digits ResNet at batch 64 took 2.15 ms on one
thread and 6.2-9.9 ms on two, on a 2-vCPU AMD EPYC), while a smaller model is not hurt. A speedup
measured at two threads then compares one model's oversubscription with another's good fortune.
This module resolves ONNX Runtime's default count, chooses each model's best count for
``--threads auto`` and checks a multi-thread benchmark against one thread.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

#: A speedup at N threads that differs from the 1-thread speedup by more than this share is flagged.
SPEEDUP_TOLERANCE = 0.20
#: The baseline counts as slower at N threads when its 1-thread p50 is below this share of the N-thread p50
#: (the two runs are separate benchmarks, so the margin is wide: on a busy machine a 10% difference is noise).
SLOWER_SHARE = 0.8


def physical_cores() -> int:
    """Physical cores this process may run on: ONNX Runtime's default intra-op thread count.

    Counts distinct cores (Linux ``topology/core_cpus_list``, else ``thread_siblings_list``) among the
    CPUs in this process's affinity mask; falls back to the number of usable logical CPUs.
    """
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        base = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        for name in ("core_cpus_list", "thread_siblings_list"):
            try:
                cores.add((base / name).read_text().strip())
                break
            except OSError:
                continue
        else:
            cores.add(str(cpu))
    return max(1, len(cores))


def resolve_threads(threads: int | str) -> int:
    """The intra-op thread count a session really gets.

    ``0`` is ONNX Runtime's default (one per physical core); ``"auto"`` has no single count and resolves to that
    default too.
    """
    if isinstance(threads, int) and threads > 0:
        return threads
    return physical_cores()


def candidate_counts(cores: int) -> list[int]:
    """Thread counts worth trying on ``cores`` physical cores: 1, powers of two below, and ``cores``."""
    counts = {1, cores}
    c = 2
    while c < cores:
        counts.add(c)
        c *= 2
    return sorted(counts)


def best_threads(paths: list[Path], feeds: dict[str, Any], settings: Any) -> tuple[list[int], dict[str, list[float]]]:
    """Each model's fastest intra-op thread count (``--threads auto``), by a short interleaved benchmark per count.

    Args:
        paths: ONNX models.
        feeds: One benchmark batch.
        settings: :class:`~compressor.benchmark.BenchmarkSettings`; a quarter of its time (at least 8
            rounds in 2 blocks) is spent per count.

    Returns:
        ``(counts, table)``: the best count per model, and ``{str(count): [p50 ms per model]}``.
    """
    from compressor.benchmark import benchmark_detailed

    probe = _short(settings)
    table: dict[str, list[float]] = {}
    for count in candidate_counts(physical_cores()):
        det = benchmark_detailed(paths, feeds, probe, threads=[count] * len(paths))
        table[str(count)] = [s.p50 for s in det["latency"]]
    counts = [int(min(table, key=lambda c, i=i: table[c][i])) for i in range(len(paths))]
    return counts, table


def one_thread_check(paths: list[Path], feeds: dict[str, Any], settings: Any, used: list[int],
                     latency: list[Any], speedups: list[tuple[float, tuple[float, float]]]) -> dict[str, Any]:
    """Time the same models at one thread and compare with the benchmark at ``used`` threads.

    Args:
        paths: Baseline first, then candidates.
        feeds: The benchmark batch.
        settings: The benchmark's settings (a shorter run of the same kind is made).
        used: Threads each model used in the benchmark.
        latency: Each model's :class:`~compressor.benchmark.LatencyStats` at ``used`` threads.
        speedups: Each candidate's ``(speedup, ci95)`` at ``used`` threads.

    Returns:
        ``{"threads": 1, "latency_ms_p50": [...], "speedup": [...], "speedup_ci95": [...],
        "baseline_slower_with_threads": bool, "speedup_differs": bool}``. ``speedup_differs`` is true when a
        candidate's speedup differs from its 1-thread speedup by more than ``SPEEDUP_TOLERANCE`` and the
        1-thread speedup lies outside the candidate's 95% interval.
    """
    from compressor.benchmark import benchmark_detailed, paired_speedup

    det = benchmark_detailed(paths, feeds, _short(settings, share=0.5), threads=[1] * len(paths))
    one = det["latency"]
    sp1 = [paired_speedup(one[0].samples_ms, s.samples_ms, block_ids=det["block_ids"]) for s in one[1:]]
    slower = used[0] > 1 and one[0].p50 < SLOWER_SHARE * latency[0].p50
    # a difference counts when it is large and the 1-thread speedup lies outside the N-thread interval (a wide
    # interval already says the figure is uncertain)
    differs = any(abs(a[0] - b[0]) > SPEEDUP_TOLERANCE * b[0] and not a[1][0] <= b[0] <= a[1][1]
                  for a, b in zip(speedups, sp1, strict=True))
    return {
        "threads": 1,
        "latency_ms_p50": [s.p50 for s in one],
        "speedup": [s for s, _ in sp1],
        "speedup_ci95": [list(ci) for _, ci in sp1],
        "baseline_slower_with_threads": bool(slower),
        "speedup_differs": bool(differs),
    }


def _short(settings: Any, share: float = 0.25) -> Any:
    """A shorter benchmark of the same kind: ``share`` of the rounds or time, at least 8 rounds in 2 blocks."""
    runs = None if settings.runs is None else max(8, int(settings.runs * share))
    return dataclasses.replace(settings, runs=runs, min_time_s=settings.min_time_s * share,
                               min_runs=max(8, int(settings.min_runs * share)), blocks=max(2, settings.blocks // 2),
                               measure_memory=False)

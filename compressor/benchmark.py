"""CPU latency of ONNX models on ONNX Runtime, measured interleaved in one process.

Each model gets its own session and warm-up runs; then timed rounds run every model once
per round, alternating the order, so that drift of the machine (frequency, other load)
hits all models alike.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compressor.runtime import make_session


@dataclass(frozen=True)
class BenchmarkSettings:
    """How to time.

    Attributes:
        warmup: Untimed runs per model before timing.
        runs: Fixed number of timed rounds; None means run until ``min_time_s`` and ``min_runs``.
        min_runs: Fewest timed rounds when ``runs`` is None.
        min_time_s: Least total timed seconds (all models) when ``runs`` is None.
        max_runs: Most timed rounds when ``runs`` is None.
        threads: Intra-op threads (0 = ONNX Runtime's choice).
        inter_threads: Inter-op threads (0 = ONNX Runtime's choice).
    """

    warmup: int = 10
    runs: int | None = None
    min_runs: int = 20
    min_time_s: float = 3.0
    max_runs: int = 1000
    threads: int = 0
    inter_threads: int = 0

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one model over timed runs, in milliseconds.

    Attributes:
        p50: Median.
        p90: 90th percentile.
        mean: Arithmetic mean.
        runs: Number of timed runs.
        samples_ms: Every timed run in milliseconds, in order.
    """

    p50: float
    p90: float
    mean: float
    runs: int
    samples_ms: tuple[float, ...]

    @classmethod
    def from_samples(cls, samples_ms: list[float]) -> LatencyStats:
        """Statistics of a list of run times in milliseconds."""
        a = np.asarray(samples_ms, dtype=np.float64)
        return cls(
            p50=float(np.percentile(a, 50)),
            p90=float(np.percentile(a, 90)),
            mean=float(a.mean()),
            runs=len(samples_ms),
            samples_ms=tuple(samples_ms),
        )

    def to_json(self) -> dict[str, Any]:
        """``{"p50", "p90", "mean", "runs"}`` in milliseconds (samples left out)."""
        return {"p50": self.p50, "p90": self.p90, "mean": self.mean, "runs": self.runs}


def benchmark_interleaved(
    paths: list[Path], feeds: dict[str, np.ndarray], settings: BenchmarkSettings | None = None
) -> list[LatencyStats]:
    """Time several ONNX models on the same inputs, interleaved.

    Args:
        paths: ONNX files; all take ``feeds``.
        feeds: ``input name -> ndarray`` (one batch).
        settings: Warm-up, run count and thread settings.

    Returns:
        One :class:`LatencyStats` per path, in order.

    Raises:
        SessionError: A model cannot be loaded.
    """
    settings = settings or BenchmarkSettings()
    sessions = [make_session(p, threads=settings.threads, inter_threads=settings.inter_threads) for p in paths]
    for sess in sessions:
        for _ in range(settings.warmup):
            sess.run(None, feeds)
    samples: list[list[float]] = [[] for _ in sessions]
    total_ns = 0
    rounds = 0
    while True:
        if settings.runs is not None:
            if rounds >= settings.runs:
                break
        elif rounds >= settings.max_runs or (rounds >= settings.min_runs and total_ns >= settings.min_time_s * 1e9):
            break
        order = range(len(sessions)) if rounds % 2 == 0 else reversed(range(len(sessions)))
        for i in order:
            t0 = time.perf_counter_ns()
            sessions[i].run(None, feeds)
            dt = time.perf_counter_ns() - t0
            total_ns += dt
            samples[i].append(dt / 1e6)
        rounds += 1
    return [LatencyStats.from_samples(s) for s in samples]

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
        warmup: Fewest untimed runs per model before timing; warm-up goes on (up to
            ``max_warmup`` runs or 5 s) until the median of the last 3 runs is within 5% of the 3 before.
        max_warmup: Most warm-up runs per model.
        runs: Fixed number of timed rounds; None means run until ``min_time_s`` and ``min_runs``.
        min_runs: Fewest timed rounds when ``runs`` is None.
        min_time_s: Least total timed seconds (all models) when ``runs`` is None.
        max_runs: Most timed rounds (all blocks) when ``runs`` is None.
        blocks: Blocks of rounds, each with fresh sessions (see :func:`benchmark_detailed`).
        threads: Intra-op threads: 0 = ONNX Runtime's choice (one per physical core), or ``"auto"``: each
            model gets its own fastest count (see :mod:`compressor.threads`).
        inter_threads: Inter-op threads (0 = ONNX Runtime's choice).
        measure_memory: Measure each session's peak resident memory in a child process.
    """

    warmup: int = 10
    max_warmup: int = 200
    runs: int | None = None
    min_runs: int = 20
    min_time_s: float = 3.0
    max_runs: int = 100_000
    blocks: int = 10
    threads: int | str = 0
    inter_threads: int = 0
    measure_memory: bool = True

    def __post_init__(self) -> None:
        """Validate.

        Raises:
            FieldError: A count below its least value, a negative time, or ``threads`` neither a count nor "auto".
        """
        from compressor.errors import FieldError

        if isinstance(self.threads, str) and self.threads != "auto":
            raise FieldError("threads", f"{{name}} must be a whole number >= 0 or 'auto', got {self.threads!r}")
        least = {"warmup": 0, "max_warmup": 0, "runs": 1, "min_runs": 1, "max_runs": 1, "blocks": 1,
                 "threads": 0 if isinstance(self.threads, int) else None, "inter_threads": 0}
        for name, low in least.items():
            value = getattr(self, name)
            if value is not None and low is not None and value < low:
                raise FieldError(name, f"{{name}} must be at least {low}, got {value}")
        if self.min_time_s < 0:
            raise FieldError("min_time_s", f"{{name}} must be >= 0 seconds, got {self.min_time_s}", flag="--min-time")

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one model over timed runs, in milliseconds.

    Attributes:
        p50: Median.
        p90: 90th percentile.
        p99: 99th percentile.
        mean: Arithmetic mean.
        std: Standard deviation.
        runs: Number of timed runs.
        samples_ms: Every timed run in milliseconds, in order.
    """

    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    runs: int
    samples_ms: tuple[float, ...]

    @classmethod
    def from_samples(cls, samples_ms: list[float]) -> LatencyStats:
        """Statistics of a list of run times in milliseconds."""
        a = np.asarray(samples_ms, dtype=np.float64)
        return cls(
            p50=float(np.percentile(a, 50)),
            p90=float(np.percentile(a, 90)),
            p99=float(np.percentile(a, 99)),
            mean=float(a.mean()),
            std=float(a.std(ddof=1)) if a.size > 1 else 0.0,
            runs=len(samples_ms),
            samples_ms=tuple(samples_ms),
        )

    def to_json(self) -> dict[str, Any]:
        """``{"p50", "p90", "p99", "mean", "std", "runs"}`` in milliseconds (samples left out)."""
        return {"p50": self.p50, "p90": self.p90, "p99": self.p99, "mean": self.mean, "std": self.std, "runs": self.runs}


def _warm_up(sess: Any, feeds: dict[str, np.ndarray], settings: BenchmarkSettings) -> int:
    """Run until timings settle (bounded); returns the number of warm-up runs."""
    times: list[float] = []
    t_end = time.perf_counter() + 5.0
    while len(times) < settings.max_warmup:
        t0 = time.perf_counter()
        sess.run(None, feeds)
        times.append(time.perf_counter() - t0)
        if len(times) >= max(settings.warmup, 6) and len(times) % 3 == 0:
            last, prev = np.median(times[-3:]), np.median(times[-6:-3])
            if abs(last - prev) <= 0.05 * prev or time.perf_counter() > t_end:
                break
        if settings.warmup == 0:
            break
    return len(times)


def benchmark_detailed(
    paths: list[Path], feeds: dict[str, np.ndarray], settings: BenchmarkSettings | None = None, *,
    threads: list[int] | None = None,
) -> dict[str, Any]:
    """Interleaved timing in blocks, each with fresh sessions; plus load times and warm-up counts.

    Two sessions of the same model can differ by about 1% for their whole life (memory
    placement), so a confidence interval from one pair of sessions is too narrow. The timed
    rounds are therefore split into ``settings.blocks`` blocks, each with new sessions of
    every model; :func:`paired_speedup` resamples blocks, then rounds within them.

    Args:
        paths: ONNX models.
        feeds: Input name -> array: the batch every model runs.
        settings: How to time.
        threads: Intra-op threads per model (overrides ``settings.threads``; needed when that is "auto").

    Returns:
        ``{"latency": [LatencyStats], "block_ids": ndarray[rounds] (int), "session_load_ms":
        [float] (first block), "warmup_runs": [int] (first block)}``.
    """
    settings = settings or BenchmarkSettings()
    if threads is None:
        threads = [settings.threads if isinstance(settings.threads, int) else 0] * len(paths)
    blocks = max(1, settings.blocks)
    if settings.runs is not None:  # at least 4 rounds per block
        blocks = max(1, min(blocks, settings.runs // 4))
    samples: list[list[float]] = [[] for _ in paths]
    block_ids: list[int] = []
    load_ms: list[float] = []
    warm: list[int] = []
    for block in range(blocks):
        # create the sessions in an order that alternates per block: creation order decides memory
        # placement, which gives one session a lasting edge of up to ~1%
        sessions = [None] * len(paths)
        creation = list(range(len(paths))) if block % 2 == 0 else list(reversed(range(len(paths))))
        for i in creation:
            t0 = time.perf_counter()
            sessions[i] = make_session(paths[i], threads=threads[i], inter_threads=settings.inter_threads)
            if block == 0:
                load_ms.append((time.perf_counter() - t0) * 1e3)
        if block == 0:
            load_ms = [load_ms[creation.index(i)] for i in range(len(paths))]
        if block == 0:
            warm = [_warm_up(sess, feeds, settings) for sess in sessions]
        else:
            for sess in sessions:
                for _ in range(max(2, settings.warmup // 5)):
                    sess.run(None, feeds)
        if settings.runs is not None:
            target = settings.runs // blocks + (1 if block < settings.runs % blocks else 0)
        else:
            target = None
        min_runs = -(-settings.min_runs // blocks)
        max_runs = max(1, settings.max_runs // blocks)
        min_ns = settings.min_time_s * 1e9 / blocks
        total_ns = 0
        rounds = 0
        while True:
            if target is not None:
                if rounds >= target:
                    break
            elif rounds >= max_runs or (rounds >= min_runs and total_ns >= min_ns):
                break
            order = range(len(sessions)) if rounds % 2 == 0 else reversed(range(len(sessions)))
            for i in order:
                t0 = time.perf_counter_ns()
                sessions[i].run(None, feeds)
                dt = time.perf_counter_ns() - t0
                total_ns += dt
                samples[i].append(dt / 1e6)
            block_ids.append(block)
            rounds += 1
        del sessions
    return {
        "latency": [LatencyStats.from_samples(s) for s in samples],
        "block_ids": np.asarray(block_ids, dtype=np.int64),
        "session_load_ms": load_ms,
        "warmup_runs": warm,
        "blocks": blocks,
    }


def paired_speedup(
    baseline_ms: tuple[float, ...],
    result_ms: tuple[float, ...],
    *,
    block_ids: np.ndarray | None = None,
    resamples: int = 1000,
    seed: int = 0,
) -> tuple[float, tuple[float, float]]:
    """Speedup (baseline p50 / result p50) with a 95% bootstrap confidence interval.

    Rounds are paired (both models ran in each round) and grouped in blocks of fresh
    sessions; the two-stage (cluster) percentile bootstrap resamples blocks with
    replacement, then rounds within each chosen block (Davison & Hinkley 1997, sec. 3.8), so
    the interval covers session-to-session differences as well as run-to-run noise.

    Args:
        baseline_ms: Baseline run time per round, in ms.
        result_ms: Result run time for the same rounds, in ms.
        block_ids: Block of each round (None: one block).
        resamples: Bootstrap resamples.
        seed: numpy seed.

    Returns:
        ``(speedup, (low, high))``.
    """
    b = np.asarray(baseline_ms, dtype=np.float64)
    r = np.asarray(result_ms, dtype=np.float64)
    n = min(b.size, r.size)
    b, r = b[:n], r[:n]
    ids = np.zeros(n, dtype=np.int64) if block_ids is None else np.asarray(block_ids)[:n]
    speedup = float(np.median(b) / np.median(r))
    boots = _cluster_bootstrap(ids, lambda idx: np.median(b[idx]) / np.median(r[idx]), resamples=resamples,
                               seed=seed)
    low, high = np.percentile(boots, [2.5, 97.5])
    return speedup, (float(min(low, speedup)), float(max(high, speedup)))


_BOOT_ROUNDS_PER_BLOCK = 400


def _cluster_bootstrap(ids: np.ndarray, statistic: Any, *, resamples: int, seed: int) -> np.ndarray:
    """``statistic(indices)`` over two-stage resamples: blocks with replacement, then rounds within each block.

    Blocks with more than :data:`_BOOT_ROUNDS_PER_BLOCK` rounds are subsampled evenly first (keeps it cheap).
    Source: Davison & Hinkley 1997, sec. 3.8 (cluster bootstrap).
    """
    rng = np.random.default_rng(seed)
    groups = []
    for k in np.unique(ids):
        g = np.flatnonzero(ids == k)
        if g.size > _BOOT_ROUNDS_PER_BLOCK:
            g = g[np.linspace(0, g.size - 1, _BOOT_ROUNDS_PER_BLOCK).astype(np.int64)]
        groups.append(g)
    boots = np.empty(resamples)
    for j in range(resamples):
        chosen = rng.integers(0, len(groups), size=len(groups)) if len(groups) > 1 else [0]
        idx = np.concatenate([groups[g][rng.integers(0, groups[g].size, size=groups[g].size)] for g in chosen])
        boots[j] = statistic(idx)
    return boots


def median_ci95(samples_ms: tuple[float, ...], *, block_ids: np.ndarray | None = None, resamples: int = 1000,
                seed: int = 0) -> tuple[float, float]:
    """95% confidence interval of one model's median latency (two-stage percentile bootstrap).

    The same cluster bootstrap as :func:`paired_speedup`: blocks of fresh sessions resampled, then rounds
    within each block (Davison & Hinkley 1997, sec. 3.8).

    Args:
        samples_ms: Run time per round, in ms.
        block_ids: Block of each round (None: one block).
        resamples: Bootstrap resamples.
        seed: numpy seed.

    Returns:
        ``(low, high)`` in ms; it contains the median.
    """
    x = np.asarray(samples_ms, dtype=np.float64)
    ids = np.zeros(x.size, dtype=np.int64) if block_ids is None else np.asarray(block_ids)[: x.size]
    med = float(np.median(x))
    boots = _cluster_bootstrap(ids, lambda idx: np.median(x[idx]), resamples=resamples, seed=seed)
    low, high = np.percentile(boots, [2.5, 97.5])
    return float(min(low, med)), float(max(high, med))


_MEMORY_PROBE = """
import resource, sys, numpy as np, onnxruntime as ort

def status(key):
    try:
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None

feeds = dict(np.load(sys.argv[2]))
opts = ort.SessionOptions(); opts.intra_op_num_threads = int(sys.argv[3]); opts.log_severity_level = 3
before = status("VmRSS")
try:  # reset the peak (VmHWM) to the current RSS so import-time peaks do not hide the session's
    open("/proc/self/clear_refs", "w").write("5")
    reset = True
except OSError:
    reset = False
before_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
sess = ort.InferenceSession(sys.argv[1], sess_options=opts, providers=["CPUExecutionProvider"])
sess.run(None, feeds)
if reset and before is not None and status("VmHWM") is not None:
    print(max(0, status("VmHWM") - before))
else:
    print(max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before_peak))
"""


def session_peak_rss_bytes(path: Path, feeds: dict[str, np.ndarray], *, threads: int = 0) -> int | None:
    """Peak resident memory added by loading and running a model once, in bytes.

    Measured in a fresh Python process: peak RSS (Linux ``VmHWM``, reset just before the
    session is created) minus RSS before the session, so other models and import-time peaks
    do not count. Elsewhere it falls back to the growth of ``ru_maxrss``. None on failure.
    """
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        npz = Path(d) / "feeds.npz"
        np.savez(npz, **feeds)
        try:
            out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(path), str(npz), str(threads)],
                                 capture_output=True, text=True, timeout=600)
        except (OSError, subprocess.TimeoutExpired):
            return None
    try:
        return int(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None

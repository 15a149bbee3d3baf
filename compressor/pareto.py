"""Pareto outputs of a search: ``pareto.json``, ``pareto.png`` and ``pareto.md``.

Minimal stand-in with the fixed API of the sweep/sensitivity work (helper h13a); at merge time that module
replaces this file. A candidate is a dict with ``name``, ``settings``, ``size_bytes``, ``latency_ms_p50``,
``latency_ms_ci95``, ``speedup``, ``accuracy_drop_pct`` (or None), ``cosine_min`` (or None), ``valid``,
``reason``, ``node`` and ``model_path``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

OBJECTIVES = ("latency", "size")


def _cost(p: dict[str, Any], objective: str) -> float:
    return float(p["latency_ms_p50"] if objective == "latency" else p["size_bytes"])


def _error(p: dict[str, Any]) -> float:
    if p.get("accuracy_drop_pct") is not None:
        return float(p["accuracy_drop_pct"])
    if p.get("cosine_min") is not None:
        return 1.0 - float(p["cosine_min"])
    return 0.0


def pareto_front(points: list[dict[str, Any]], objective: str) -> list[int]:
    """Indices of the valid points that no other valid point dominates (ascending cost).

    Both criteria are minimized: the objective (``latency_ms_p50`` in ms or ``size_bytes``) and the error
    (``accuracy_drop_pct`` in points, else ``1 - cosine_min``).

    Args:
        points: Candidate dicts.
        objective: ``"latency"`` or ``"size"``.

    Returns:
        Indices into ``points``, sorted by the objective.

    Raises:
        ValueError: Unknown objective.
    """
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
    ok = [i for i, p in enumerate(points) if p.get("valid") and p.get(
        "latency_ms_p50" if objective == "latency" else "size_bytes") is not None]
    front = []
    for i in ok:
        ci, ei = _cost(points[i], objective), _error(points[i])
        dominated = any((_cost(points[j], objective) <= ci and _error(points[j]) <= ei)
                        and (_cost(points[j], objective) < ci or _error(points[j]) < ei) for j in ok if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (_cost(points[i], objective), _error(points[i])))


def write_pareto(out_dir: Path, *, baseline: dict[str, Any], candidates: list[dict[str, Any]], chosen: int | None,
                 objective: str, title: str = "") -> dict[str, Path]:
    """Write ``pareto.json``, ``pareto.png`` (matplotlib) and ``pareto.md`` into ``out_dir`` (atomically each).

    Args:
        out_dir: Existing folder.
        baseline: ``size_bytes``, ``latency_ms_p50``, ``accuracy``, ``node``.
        candidates: Candidate dicts (every one, invalid included).
        chosen: Index of the chosen candidate, or None.
        objective: ``"latency"`` or ``"size"``.
        title: Plot and table title.

    Returns:
        ``{"json": path, "png": path, "md": path}``.
    """
    import os
    import tempfile

    from compressor.report import to_json, write_text_atomic

    out_dir = Path(out_dir)
    front = pareto_front(candidates, objective)
    data = {"objective": objective, "title": title, "baseline": baseline, "chosen": chosen, "front": front,
            "candidates": candidates}
    paths = {"json": out_dir / "pareto.json", "png": out_dir / "pareto.png", "md": out_dir / "pareto.md"}
    write_text_atomic(to_json(data) + "\n", paths["json"])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    valid = [i for i, c in enumerate(candidates) if c.get("valid") and c.get("latency_ms_p50") is not None]
    sizes = [max(20.0, 300.0 * c["size_bytes"] / max(baseline.get("size_bytes") or 1, 1)) for c in candidates]
    if valid:
        ax.scatter([candidates[i]["latency_ms_p50"] for i in valid], [_error(candidates[i]) for i in valid],
                   s=[sizes[i] for i in valid], alpha=0.5, label="valid candidate")
    if front:
        pts = sorted(((candidates[i]["latency_ms_p50"], _error(candidates[i])) for i in front))
        ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", color="C3", label=f"Pareto front ({objective})")
    if baseline.get("latency_ms_p50") is not None:
        ax.scatter([baseline["latency_ms_p50"]], [0.0], marker="s", color="k", label="baseline")
    if chosen is not None and candidates[chosen].get("latency_ms_p50") is not None:
        c = candidates[chosen]
        ax.scatter([c["latency_ms_p50"]], [_error(c)], marker="*", s=250, color="C2", label="chosen")
    ax.set_xlabel("latency p50 (ms)")
    ax.set_ylabel("accuracy drop (points)" if any(c.get("accuracy_drop_pct") is not None for c in candidates)
                  else "1 - cosine_min")
    ax.set_title(title or "candidates", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=".pareto.", suffix=".png", dir=out_dir)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, paths["png"])
    finally:
        plt.close(fig)
        Path(tmp).unlink(missing_ok=True)

    lines = [f"### {title or 'candidates'}", "",
             "| # | name | valid | size (bytes) | latency p50 (ms) | speedup | accuracy drop (points) | cosine_min "
             "| node | note |", "|---|---|---|---|---|---|---|---|---|---|"]
    for i, c in enumerate(candidates):
        mark = " (chosen)" if i == chosen else (" (front)" if i in front else "")

        def f(x: Any, spec: str) -> str:
            return "-" if x is None else format(x, spec)

        lines.append(f"| {i} | {c['name']}{mark} | {'yes' if c.get('valid') else 'no'} | {c.get('size_bytes') or '-'} "
                     f"| {f(c.get('latency_ms_p50'), '.4f')} | {f(c.get('speedup'), '.3f')} "
                     f"| {f(c.get('accuracy_drop_pct'), '.2f')} | {f(c.get('cosine_min'), '.5f')} "
                     f"| {c.get('node') or '-'} | {c.get('reason') or ''} |")
    write_text_atomic("\n".join(lines) + "\n", paths["md"])
    return paths

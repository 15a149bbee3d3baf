"""The trade-off of a search or a sweep: the Pareto front, ``pareto.json``, ``pareto.png`` and ``pareto.md``.

Shared by ``compressor sweep`` and ``compressor auto``. Both objectives are minimised: the cost
(latency p50 in ms, or file size in bytes, per ``objective``) and the accuracy loss. A candidate is on
the front when no other valid candidate is at least as good on both and better on one (Pareto
dominance; the "non-dominated set" of multi-objective optimisation, as Optuna's
``Study.best_trials`` reports it).

**Accuracy loss.** The top-1 accuracy drop in percentage points (``accuracy_drop_pct``) where every
candidate on the plot has one; otherwise ``1 - cosine_min`` (the worst per-sample cosine similarity of
the candidate's outputs to the baseline's, ``fidelity.cosine_min``), also when every candidate lost the
same accuracy (the drop then tells nothing apart). The two are never mixed on one axis:
:func:`accuracy_metric` picks one for the whole set, and candidates without it are left off the front.

**Candidate** (one dict per model built and measured):

- ``name`` (str): unique, also the file stem of its model (``candidates/<name>.onnx``).
- ``settings`` (dict): what built it, usually ``{"steps": [{"pass": "prune", "ratio": 0.5, ...}, ...]}``
  (each step's pass and config fields, as in a recipe); other keys are shown as ``key=value``.
- ``size_bytes`` (int): file size, external data included.
- ``latency_ms_p50`` (float): median latency in ms, measured interleaved with the baseline.
- ``latency_ms_ci95`` ([lo, hi]): 95% confidence interval of that median, in ms.
- ``speedup`` (float or None): baseline p50 / candidate p50 from the same interleaved benchmark.
- ``accuracy_drop_pct`` (float or None): baseline top-1 accuracy minus the candidate's, in percentage points.
- ``cosine_min`` (float or None): worst per-sample cosine similarity of the outputs to the baseline's.
- ``valid`` (bool): built, ran, and meets the budget (accuracy / cosine gates).
- ``reason`` (str or None): why not valid (the error, or the gate it missed); None when valid.
- ``node`` (str): host name of the machine that measured it (latency compares only within one node).
- ``model_path`` (str or None): where its ONNX model is, None when it was not built or not kept.

Figures a failed candidate lacks are None. **Baseline**: ``size_bytes``, ``latency_ms_p50``,
``accuracy`` (top-1 as a fraction, or None without labelled eval data) and ``node``.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from typing import Any

PARETO_SCHEMA_VERSION = "1.0"
OBJECTIVES = ("latency", "size")
#: Candidate key of each objective's cost.
COST_KEY = {"latency": "latency_ms_p50", "size": "size_bytes"}


def _num(x: Any) -> float | None:
    """``x`` as a finite float, else None."""
    if x is None or isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        from compressor.errors import UsageError

        raise UsageError(f"--objective '{objective}' is unknown; use latency or size")


def accuracy_metric(points: list[dict[str, Any]]) -> str:
    """The accuracy-loss measure for a set of candidates: ``"accuracy_drop_pct"`` or ``"1-cosine_min"``.

    The accuracy drop when every valid candidate that has a cosine also has an accuracy drop (and at least one
    has it), else ``1 - cosine_min``; one measure for the whole set, so that one axis never mixes units. When
    two or more candidates all have the same accuracy drop (often 0 on a small eval set) and all have a cosine,
    ``1 - cosine_min``, which still tells them apart.
    """
    valid = [p for p in points if p.get("valid")]
    pool = valid or points
    with_acc = [p for p in pool if _num(p.get("accuracy_drop_pct")) is not None]
    if with_acc and all(_num(p.get("accuracy_drop_pct")) is not None for p in pool
                        if _num(p.get("cosine_min")) is not None or _num(p.get("accuracy_drop_pct")) is not None):
        drops = {round(_num(p["accuracy_drop_pct"]), 9) for p in with_acc}
        with_cos = [p for p in pool if _num(p.get("cosine_min")) is not None]
        if len(drops) > 1 or len(with_acc) < 2 or len(with_cos) < len(pool):
            return "accuracy_drop_pct"
        # every candidate lost the same accuracy (often 0 on a small eval set): the cosine still tells them apart
    return "1-cosine_min"


def accuracy_loss(point: dict[str, Any], metric: str) -> float | None:
    """The candidate's accuracy loss by ``metric`` (see :func:`accuracy_metric`); None when it lacks it.

    Returns:
        Percentage points of top-1 accuracy for ``"accuracy_drop_pct"``; ``1 - cosine_min`` (0 = identical
        outputs, unitless) for ``"1-cosine_min"``.
    """
    if metric == "accuracy_drop_pct":
        return _num(point.get("accuracy_drop_pct"))
    cos = _num(point.get("cosine_min"))
    return None if cos is None else 1.0 - cos


def pareto_front(points: list[dict[str, Any]], objective: str) -> list[int]:
    """Indices of the non-dominated valid candidates, by increasing cost.

    Minimises the cost (``latency_ms_p50`` for ``objective="latency"``, ``size_bytes`` for ``"size"``) and
    the accuracy loss (``accuracy_drop_pct`` when the set has it, else ``1 - cosine_min``; see
    :func:`accuracy_metric`). A candidate is dominated when another valid one is no worse on both and
    strictly better on one; candidates with equal figures are all kept. Invalid candidates and those
    without both figures are never on the front.

    Args:
        points: Candidate dicts (see the module docstring).
        objective: ``"latency"`` or ``"size"``.

    Returns:
        Indices into ``points``, sorted by cost, then accuracy loss.

    Raises:
        UsageError: An unknown objective.
    """
    _check_objective(objective)
    metric = accuracy_metric(points)
    xy = []
    for i, p in enumerate(points):
        x, y = _num(p.get(COST_KEY[objective])), accuracy_loss(p, metric)
        if p.get("valid") and x is not None and y is not None:
            xy.append((x, y, i))
    front = [(x, y, i) for x, y, i in xy
             if not any(x2 <= x and y2 <= y and (x2 < x or y2 < y) for x2, y2, _ in xy)]
    return [i for _, _, i in sorted(front)]


def best_valid(points: list[dict[str, Any]], objective: str) -> int | None:
    """Index of the best valid candidate: least cost by ``objective``, ties broken by accuracy loss; None if none.

    The chosen point of ``sweep`` and ``auto``. It is always on the front.

    Raises:
        UsageError: An unknown objective.
    """
    front = pareto_front(points, objective)
    return front[0] if front else None


def _varying(rows: list[dict[str, Any]]) -> set[tuple[int, str]]:
    """``(step index, field)`` whose value differs between candidates (a sweep's grid, a search's choices)."""
    seen: dict[tuple[int, str], set[str]] = {}
    for r in rows:
        steps = (r.get("settings") or {}).get("steps")
        for i, step in enumerate(steps if isinstance(steps, list) else []):
            for k, v in (step.items() if isinstance(step, dict) else []):
                seen.setdefault((i, k), set()).add(repr(v))
    return {key for key, values in seen.items() if len(values) > 1}


def _settings_summary(settings: dict[str, Any] | None, varying: set[tuple[int, str]] = frozenset()) -> str:
    """One line: each step as ``pass(field=value, ...)``: fields that differ from the pass's defaults or in ``varying``."""
    if not settings:
        return "-"
    parts = []
    steps = settings.get("steps")
    if isinstance(steps, list):
        from compressor.passes import _registry

        specs = _registry()
        shown = []
        for index, step in enumerate(steps):
            if not isinstance(step, dict):
                continue
            name = step.get("pass", "?")
            defaults: dict[str, Any] = {}
            if name in specs:
                from compressor.passes import config_to_json

                try:
                    defaults = config_to_json(specs[name].config_cls())
                except Exception:  # a config without defaults: show every field
                    defaults = {}
            fields = [f"{k}={_value(v)}" for k, v in step.items() if k != "pass" and (defaults.get(k, object()) != v or (index, k) in varying)]
            shown.append(f"{name}({', '.join(fields)})")
        parts.append(" -> ".join(shown))
    parts += [f"{k}={_value(v)}" for k, v in settings.items() if k != "steps"]
    return "; ".join(p for p in parts if p) or "-"


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_value(x) for x in v) + "]"
    return str(v)


def _atomic_path(path: Path) -> Path:
    """A temporary file beside ``path`` with its suffix (matplotlib picks the format by suffix)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    return Path(tmp)


def _publish_file(tmp: Path, path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def write_pareto(out_dir: Path, *, baseline: dict[str, Any], candidates: list[dict[str, Any]], chosen: int | None,
                 objective: str, title: str = "") -> dict[str, Path]:
    """Write ``pareto.json``, ``pareto.png`` and ``pareto.md`` into ``out_dir`` (each atomically).

    ``pareto.json``: ``{"schema_version", "objective", "accuracy_metric", "title", "baseline", "candidates",
    "chosen"}``; each candidate is the given dict plus ``pareto`` (on the front) and ``chosen`` (bool);
    ``chosen`` at the top is the chosen candidate's name (or None).
    ``pareto.png`` (matplotlib, Agg): x = latency p50 in ms (with its 95% CI as an error bar) or file size in
    KiB, y = accuracy drop in points (or ``1 - cosine_min``); marker area proportional to file size; the
    front as a step line; the chosen point starred and labelled; invalid candidates grey; the baseline at
    loss 0. ``pareto.md``: the baseline, then one table row per candidate.

    Args:
        out_dir: Folder to write into (created if missing).
        baseline: ``size_bytes``, ``latency_ms_p50``, ``accuracy`` (fraction or None), ``node``.
        candidates: Candidate dicts (see the module docstring).
        chosen: Index of the chosen candidate in ``candidates``, or None.
        objective: ``"latency"`` or ``"size"``.
        title: Title of the plot and the Markdown file.

    Returns:
        ``{"json": path, "png": path, "md": path}``.

    Raises:
        UsageError: An unknown objective, or a ``chosen`` index out of range.
    """
    from compressor.errors import UsageError
    from compressor.report import write_json_atomic, write_text_atomic

    _check_objective(objective)
    if chosen is not None and not 0 <= chosen < len(candidates):
        raise UsageError(f"chosen candidate {chosen} is out of range (there are {len(candidates)})")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    front = pareto_front(candidates, objective)
    on_front = set(front)
    metric = accuracy_metric(candidates)
    rows = [{**c, "pareto": i in on_front, "chosen": i == chosen} for i, c in enumerate(candidates)]
    doc = {"schema_version": PARETO_SCHEMA_VERSION, "objective": objective, "accuracy_metric": metric,
           "title": title, "baseline": dict(baseline), "candidates": rows,
           "chosen": candidates[chosen]["name"] if chosen is not None else None}
    paths = {"json": out_dir / "pareto.json", "png": out_dir / "pareto.png", "md": out_dir / "pareto.md"}
    _plot(paths["png"], baseline, rows, front, chosen, objective, metric, title)
    write_text_atomic(_markdown(baseline, rows, objective, metric, title), paths["md"])
    write_json_atomic(doc, paths["json"])
    return paths


def _plot(path: Path, baseline: dict[str, Any], rows: list[dict[str, Any]], front: list[int], chosen: int | None,
          objective: str, metric: str, title: str) -> None:
    """Draw the trade-off with matplotlib's Agg backend (no display needed) and save it atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    def cost(p: dict[str, Any]) -> float | None:
        v = _num(p.get(COST_KEY[objective]))
        return None if v is None else (v if objective == "latency" else v / 1024)

    sizes = [_num(r.get("size_bytes")) for r in rows] + [_num(baseline.get("size_bytes"))]
    biggest = max([s for s in sizes if s] or [1.0])

    def area(p: dict[str, Any]) -> float:
        s = _num(p.get("size_bytes")) or 0.0
        return 30.0 + 370.0 * s / biggest  # points^2, proportional to file size above a visible minimum

    fig = Figure(figsize=(7.5, 5.0), dpi=110)
    ax = fig.add_subplot()
    plotted = [(i, r, cost(r), accuracy_loss(r, metric)) for i, r in enumerate(rows)]
    plotted = [(i, r, x, y) for i, r, x, y in plotted if x is not None and y is not None]
    for valid, colour, label in ((False, "0.7", "invalid (over budget, no gain or failed)"), (True, "tab:blue", "valid")):
        pts = [(i, r, x, y) for i, r, x, y in plotted if bool(r.get("valid")) == valid]
        if not pts:
            continue
        ax.scatter([x for _, _, x, _ in pts], [y for _, _, _, y in pts], s=[area(r) for _, r, _, _ in pts],
                   c=colour, alpha=0.6 if valid else 0.5, edgecolors="0.3", linewidths=0.5, label=label, zorder=2)
        if objective == "latency":
            for _, r, x, y in pts:
                ci = r.get("latency_ms_ci95") or []
                if len(ci) == 2 and _num(ci[0]) is not None and _num(ci[1]) is not None:
                    ax.errorbar([x], [y], xerr=[[max(x - ci[0], 0.0)], [max(ci[1] - x, 0.0)]], fmt="none",
                                ecolor=colour, elinewidth=0.8, alpha=0.7, zorder=1)
    pts = [(cost(rows[i]), accuracy_loss(rows[i], metric)) for i in front]
    if pts:
        ax.step([x for x, _ in pts], [y for _, y in pts], where="post", color="tab:red", linewidth=1.5,
                label="Pareto front", zorder=3)
        ax.scatter([x for x, _ in pts], [y for _, y in pts], s=12, c="tab:red", zorder=4)
    bx = cost(baseline)
    if bx is not None:
        ax.scatter([bx], [0.0], s=area(baseline), marker="s", c="white", edgecolors="black", label="baseline", zorder=3)
        ax.annotate("baseline", (bx, 0.0), textcoords="offset points", xytext=(8, -12), fontsize=8)
    if chosen is not None:
        x, y = cost(rows[chosen]), accuracy_loss(rows[chosen], metric)
        if x is not None and y is not None:
            ax.scatter([x], [y], s=260, marker="*", c="gold", edgecolors="black", label="chosen", zorder=5)
            ax.annotate(f"chosen: {rows[chosen]['name']}", (x, y), textcoords="offset points", xytext=(10, 10),
                        fontsize=9, fontweight="bold")
    ax.set_xlabel("latency p50 (ms), 95% CI" if objective == "latency" else "file size (KiB)")
    ax.set_ylabel("top-1 accuracy drop (points)" if metric == "accuracy_drop_pct" else "1 - cosine_min of outputs")
    ax.set_title(title or f"trade-off: {objective} vs accuracy (marker area ~ file size)", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best", markerscale=0.5)
    fig.tight_layout()
    tmp = _atomic_path(path)
    try:
        fig.savefig(tmp, format="png")
        _publish_file(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _markdown(baseline: dict[str, Any], rows: list[dict[str, Any]], objective: str, metric: str, title: str) -> str:
    """The Markdown summary: the baseline, then one row per candidate."""
    from compressor.report import _fmt_bytes, _md_table

    def f(x: Any, spec: str) -> str:
        v = _num(x)
        return "-" if v is None else format(v, spec)

    acc = _num(baseline.get("accuracy"))
    lines = [f"# {title or 'Pareto front'}", "",
             f"Objective: **{objective}** and accuracy loss ({'top-1 accuracy drop, points' if metric == 'accuracy_drop_pct' else '1 - cosine_min'}), both minimised. "
             f"Baseline: {_fmt_bytes(_num(baseline.get('size_bytes')))}, latency p50 "
             f"{f(baseline.get('latency_ms_p50'), '.3f')} ms"
             + (f", top-1 accuracy {100 * acc:.2f}%" if acc is not None else "")
             + (f", measured on {baseline['node']}" if baseline.get("node") else "") + ".", ""]
    table = []
    varying = _varying(rows)
    for r in rows:
        ci = r.get("latency_ms_ci95") or [None, None]
        lat = f(r.get("latency_ms_p50"), ".3f")
        if lat != "-" and len(ci) == 2 and _num(ci[0]) is not None:
            lat += f" [{f(ci[0], '.3f')}, {f(ci[1], '.3f')}]"
        sp = f(r.get("speedup"), ".2f")
        drop = f(r.get("accuracy_drop_pct"), ".2f")
        cos = f(r.get("cosine_min"), ".4f")
        valid = "yes" if r.get("valid") else f"no: {r.get('reason') or 'invalid'}"
        table.append([r.get("name", "-"), _settings_summary(r.get("settings"), varying), _fmt_bytes(_num(r.get("size_bytes"))),
                      lat, sp + ("x" if sp != "-" else ""), f"{drop} / {cos}", valid,
                      "yes" if r.get("pareto") else "", "**yes**" if r.get("chosen") else "", r.get("node") or "-"])
    lines += _md_table(["name", "settings", "size", "latency p50 ms [95% CI]", "speedup", "accuracy drop (points) / "
                        "cos_min", "valid", "on front", "chosen", "node"], table)
    return "\n".join(lines) + "\n"

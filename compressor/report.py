"""The Report: one versioned dict, rendered as a rich table, JSON or Markdown.

JSON field names are a contract with users' build scripts: add fields, never rename.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from compressor import __version__

SCHEMA_VERSION = "1.0"


def schema() -> dict[str, Any]:
    """The published JSON Schema (Draft 2020-12) of the report, shipped as ``compressor/report.schema.json``."""
    from importlib.resources import files

    return json.loads(files("compressor").joinpath("report.schema.json").read_text())


def new_report(command: str) -> dict[str, Any]:
    """An empty report for ``command`` with ``schema_version``, tool version and time."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "compressor", "version": __version__},
        "command": command,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def to_json(report: dict[str, Any]) -> str:
    """The report as indented JSON (NaN/inf written as null)."""
    return json.dumps(_clean(report), indent=2, sort_keys=False)


def _clean(x: Any) -> Any:
    if isinstance(x, float) and (x != x or x in (float("inf"), float("-inf"))):
        return None
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    return x


def write_json_atomic(report: dict[str, Any], path: Path) -> None:
    """Write the JSON report to ``path`` via a temp file and a rename."""
    write_text_atomic(to_json(report) + "\n", path)


def write_text_atomic(text: str, path: Path) -> None:
    """Write ``text`` to ``path`` via a temp file and a rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent if path.parent.exists() else ".")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a report is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _f(x: Any, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def render_table(report: dict[str, Any]) -> Any:
    """A ``rich`` renderable summarising the report for people."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = []
    models = [(k, report[k]) for k in ("baseline", "result") if report.get(k)]
    t = Table(title=report["command"], title_justify="left")
    t.add_column("")
    for name, _ in models:
        t.add_column(name, justify="right")
    rows = [
        ("path", lambda m: str(m.get("path", "-"))),
        ("size", lambda m: _fmt_bytes(m.get("size_bytes"))),
        ("parameters", lambda m: f"{m['parameters']:,}" if m.get("parameters") is not None else "-"),
        ("sparsity", lambda m: _f(m.get("sparsity"))),
        ("latency p50 (ms)", lambda m: _f((m.get("latency_ms") or {}).get("p50"))),
        ("latency p90 (ms)", lambda m: _f((m.get("latency_ms") or {}).get("p90"))),
        ("latency p99 (ms)", lambda m: _f((m.get("latency_ms") or {}).get("p99"))),
        ("latency mean (ms)", lambda m: _f((m.get("latency_ms") or {}).get("mean"))),
        ("top-1 accuracy", lambda m: _f(m.get("accuracy"), ".4f")),
    ]
    for label, fn in rows:
        t.add_row(label, *[fn(m) for _, m in models])
    parts.append(t)
    summary = []
    if report.get("size_ratio") is not None:
        summary.append(f"size ratio {report['size_ratio']:.3f}")
    if report.get("speedup") is not None:
        ci = report.get("speedup_ci95") or [None, None]
        summary.append(f"speedup {report['speedup']:.2f}x, 95% CI [{_f(ci[0])}, {_f(ci[1])}] "
                       f"(p50, batch {report.get('benchmark', {}).get('batch_size')})")
    fid = report.get("fidelity")
    if fid:
        s = f"fidelity: max abs diff {_f(fid.get('max_abs_diff'), '.3g')}, cosine mean {_f(fid.get('cosine_mean'), '.5f')}"
        s += f" min {_f(fid.get('cosine_min'), '.5f')}"
        if fid.get("top1_agreement") is not None:
            s += f", top-1 agreement {fid['top1_agreement']:.4f}"
        s += f" on {fid.get('samples')} samples ({fid.get('inputs')})"
        summary.append(s)
    q = report.get("quantization")
    if q:
        summary.append(
            f"quantization: {q['mode']}, weights {q['weight_type']} {q['weight_scheme']} "
            f"{'per-channel' if q['per_channel'] else 'per-tensor'}, activations {q['activation_type']} "
            f"{q['activation_scheme']}, reduce_range={q['reduce_range']} ({q['chosen_by']})"
        )
    p = report.get("pruning")
    if p:
        summary.append(f"pruning: {p['method']}, ratio {p['pruning_ratio']}, criterion {p['criterion']}")
        if p.get("note"):
            summary.append(f"note: {p['note']}")
    ex = report.get("export")
    if ex:
        summary.append(f"export: {ex.get('exporter')} exporter, max abs diff vs PyTorch {_f(ex.get('max_abs_diff'), '.3g')}")
    gates = report.get("gates")
    if gates:
        verdict = "passed" if gates["passed"] else "FAILED: " + ", ".join(g["gate"] for g in gates["failed"])
        summary.append(f"quality gates: {verdict}")
    for s in summary:
        parts.append(Text(s))
    ops = sorted({op for _, m in models for op in (m.get("op_types") or {})})
    if ops:
        h = Table(title="ONNX op types", title_justify="left")
        h.add_column("op type")
        for name, _ in models:
            h.add_column(name, justify="right")
        for op in ops:
            h.add_row(op, *[str((m.get("op_types") or {}).get(op, 0)) for _, m in models])
        parts.append(h)
    return Group(*parts)


def _md_cell(x: Any) -> str:
    return str(x).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    """GitHub-flavoured Markdown: headline table, verdicts, gates and op-type histogram.

    Ready for a pull-request comment or ``$GITHUB_STEP_SUMMARY``.
    """
    models = [(k, report[k]) for k in ("baseline", "result") if report.get(k)]
    out = [f"### compressor: `{report['command']}`", ""]
    rows = [
        ["path"] + [f"`{m.get('path')}`" for _, m in models],
        ["size (bytes)"] + [m.get("size_bytes") for _, m in models],
        ["parameters"] + [m.get("parameters") for _, m in models],
        ["sparsity"] + [_f(m.get("sparsity"), ".4f") for _, m in models],
    ]
    for stat in ("p50", "p90", "p99", "mean", "std"):
        rows.append([f"latency {stat} (ms)"] + [_f((m.get("latency_ms") or {}).get(stat), ".4f") for _, m in models])
    if any(m.get("accuracy") is not None for _, m in models):
        rows.append(["top-1 accuracy"] + [_f(m.get("accuracy"), ".4f") for _, m in models])
    out += _md_table(["metric"] + [k for k, _ in models], rows)
    summary = []
    if report.get("size_ratio") is not None:
        summary.append(["size_ratio", _f(report["size_ratio"], ".4f")])
    if report.get("speedup") is not None:
        ci = report.get("speedup_ci95") or [None, None]
        summary.append(["speedup (95% CI)", f"{report['speedup']:.3f} [{_f(ci[0])}, {_f(ci[1])}]"])
    fid = report.get("fidelity") or {}
    for key in ("max_abs_diff", "cosine_mean", "cosine_min", "sqnr_db", "top1_agreement"):
        if key in fid:
            summary.append([key, _f(fid[key], ".5g")])
    if summary:
        out += [""] + _md_table(["summary", "value"], summary)
    gates = report.get("gates")
    if gates:
        out += ["", f"**Quality gates: {'passed' if gates['passed'] else 'FAILED'}**", ""]
        out += _md_table(["gate", "threshold", "measured", "result"],
                         [[g["gate"], g["threshold"], _f(g["measured"], ".4g"), "pass" if g["passed"] else "FAIL"]
                          for g in gates["checked"]])
    ops = sorted({op for _, m in models for op in (m.get("op_types") or {})})
    if ops:
        out += ["", "<details><summary>ONNX op types</summary>", ""]
        out += _md_table(["op type"] + [k for k, _ in models], [[op] + [(m.get("op_types") or {}).get(op, 0) for _, m in models] for op in ops])
        out += ["", "</details>"]
    return "\n".join(out) + "\n"

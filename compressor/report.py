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
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent if path.parent.exists() else ".")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(to_json(report) + "\n")
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
    t = Table(title=f"compressor {report['command']}", title_justify="left")
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
        summary.append(f"speedup {report['speedup']:.2f}x (p50, batch {report.get('benchmark', {}).get('batch_size')})")
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
    for s in summary:
        parts.append(Text(s))
    return Group(*parts)


def render_markdown(report: dict[str, Any]) -> str:
    """A GitHub-flavoured Markdown table of the headline numbers."""
    models = [(k, report[k]) for k in ("baseline", "result") if report.get(k)]
    lines = ["| metric | " + " | ".join(k for k, _ in models) + " |", "|---|" + "---|" * len(models)]
    for label, key in (("size_bytes", "size_bytes"), ("parameters", "parameters"), ("sparsity", "sparsity")):
        lines.append(f"| {label} | " + " | ".join(str(m.get(key)) for _, m in models) + " |")
    lines.append("| latency p50 (ms) | " + " | ".join(_f((m.get("latency_ms") or {}).get("p50")) for _, m in models) + " |")
    return "\n".join(lines) + "\n"

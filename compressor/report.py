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

SCHEMA_VERSION = "1.1"


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
    steps = [st for st in report.get("steps") or [] if "measured" in st]
    if len(steps) > 1:
        out += ["", "**Steps** (each against the baseline, one interleaved benchmark)", ""]
        out += _md_table(["step", "size_ratio", "speedup (95% CI)", "cosine_min", "top-1 accuracy"],
                         [[f"steps[{st['step']}] {st['name']}", _f(st["measured"]["size_ratio"], ".4f"),
                           f"{st['measured']['speedup']:.3f} [{_f(st['measured']['speedup_ci95'][0])}, "
                           f"{_f(st['measured']['speedup_ci95'][1])}]",
                           _f(st["measured"]["fidelity"].get("cosine_min"), ".5g"),
                           _f(st["measured"].get("accuracy"), ".4f")] for st in steps])
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

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

SCHEMA_VERSION = "1.3"


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


def _fmt_bytes(n: float | None) -> str:
    """A size for people, in binary prefixes (1 KiB = 1024 bytes): ``"512 B"``, ``"114.6 KiB"``, ``"1.5 GiB"``.

    Args:
        n: Size in bytes, or None (shown as ``"-"``). Sizes of a TiB and more stay in GiB.
    """
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _is_onnx_export(report: dict[str, Any], key: str, model: dict[str, Any]) -> bool:
    """True when ``report[key]`` holds the figures of the fp32 ONNX export of a PyTorch file at ``model["path"]``.

    For a PyTorch input the baseline is measured on its export (``baseline.note`` says so; ``bench`` marks it
    by the input's format); ``bench A B`` with a PyTorch B lists B's export among its steps.
    """
    if key == "baseline" and (model.get("note") or (report.get("input") or {}).get("format", "onnx") != "onnx"):
        return True
    return any(st.get("name") == "export" and st.get("of") == model.get("path") for st in report.get("steps") or [])


def _model_label(report: dict[str, Any], key: str, model: dict[str, Any], *, code: bool = False) -> str:
    """What a column of figures measured: the model's path, or ``fp32 ONNX export of PATH`` for a PyTorch file.

    Args:
        report: The whole report (its ``input`` and ``steps`` tell exports apart).
        key: ``"baseline"`` or ``"result"``.
        model: ``report[key]``.
        code: Wrap the path in backticks (Markdown).
    """
    path = str(model.get("path", "-"))
    if code:
        path = f"`{path}`"
    return f"fp32 ONNX export of {path}" if _is_onnx_export(report, key, model) else path


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

    Ready for a pull-request comment or ``$GITHUB_STEP_SUMMARY``. Sizes are in binary prefixes (KiB, MiB, GiB;
    the JSON keeps bytes); for a PyTorch input the baseline column names the fp32 ONNX export it measured.
    """
    models = [(k, report[k]) for k in ("baseline", "result") if report.get(k)]
    out = [f"### compressor: `{report['command']}`", ""]
    rows = [
        ["model"] + [_model_label(report, k, m, code=True) for k, m in models],
        ["size"] + [_fmt_bytes(m.get("size_bytes")) for _, m in models],
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
    for key in ("max_abs_diff", "cosine_mean", "cosine_min", "sqnr_db", "top1_agreement", "exact_match"):
        if key in fid:
            summary.append([key, _f(fid[key], ".5g")])
    if len([o for o in fid.get("outputs") or [] if "pooled_from" not in o]) > 1:
        summary.append(["worst_output", _md_cell(fid.get("worst_output"))])
    for key in ("pooled_cosine_mean", "pooled_cosine_min"):
        if key in fid:
            summary.append([key, _f(fid[key], ".5g")])
    if fid.get("positions"):
        summary.append(["positions", _md_cell(fid["positions"])])
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
    q = report.get("quantization") or {}
    if q.get("fallback") is not None:
        left = q.get("fallback_layers") or []
        out += ["", f"**Accuracy-aware fallback:** {len(left)} layer(s) left in float"
                + ("" if q["fallback"].get("met") else " (budget not met)"), ""]
        if left:
            out += _md_table(["layer", "op type", "why"], [[x["layer"], x["op_type"], x["reason"]] for x in left])
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

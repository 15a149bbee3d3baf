"""The report as a rich table for people (the JSON and Markdown renderings live in :mod:`compressor.report`)."""

from __future__ import annotations

from typing import Any

from compressor.report import _f, _fmt_bytes, _model_label


def render_table(report: dict[str, Any]) -> Any:
    """A ``rich`` renderable summarising the report for people (one row per step for chains).

    Sizes are in binary prefixes (KiB, MiB, GiB). For a PyTorch input the baseline column names what was
    measured, the fp32 ONNX export of the input. Columns holding paths or names fold long values onto more
    lines instead of cutting them with "…", whatever the console's width.
    """
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = []
    models = [(k, report[k]) for k in ("baseline", "result") if report.get(k)]
    t = Table(title=report["command"], title_justify="left")
    t.add_column("", no_wrap=True)
    for name, _ in models:
        t.add_column(name, justify="right", overflow="fold")
    rows = [
        ("model", lambda k, m: _model_label(report, k, m)),
        ("size", lambda k, m: _fmt_bytes(m.get("size_bytes"))),
        ("parameters", lambda k, m: f"{m['parameters']:,}" if m.get("parameters") is not None else "-"),
        ("sparsity", lambda k, m: _f(m.get("sparsity"))),
        ("latency p50 (ms)", lambda k, m: _f((m.get("latency_ms") or {}).get("p50"))),
        ("latency p90 (ms)", lambda k, m: _f((m.get("latency_ms") or {}).get("p90"))),
        ("latency p99 (ms)", lambda k, m: _f((m.get("latency_ms") or {}).get("p99"))),
        ("latency mean (ms)", lambda k, m: _f((m.get("latency_ms") or {}).get("mean"))),
    ]
    if any(m.get("accuracy") is not None for _, m in models):  # only with --eval-data
        rows.append(("top-1 accuracy", lambda k, m: _f(m.get("accuracy"), ".4f")))
    for label, fn in rows:
        t.add_row(label, *[fn(k, m) for k, m in models])
    parts.append(t)
    summary = []
    if report.get("size_ratio") is not None:
        summary.append(f"size ratio {report['size_ratio']:.3f}")
    if report.get("speedup") is not None:
        ci = report.get("speedup_ci95") or [None, None]
        bench = report.get("benchmark", {})
        per = bench.get("threads_per_model") or []
        threads = (f"threads {'/'.join(map(str, per))} (auto)" if bench.get("threads_auto")
                   else f"{bench.get('threads')} thread{'s' if bench.get('threads') != 1 else ''}")
        summary.append(f"speedup {report['speedup']:.2f}x, 95% CI [{_f(ci[0])}, {_f(ci[1])}] "
                       f"(p50, batch {bench.get('batch_size')}, {threads})")
        one = bench.get("one_thread")
        if one and one.get("speedup"):
            oci = (one.get("speedup_ci95") or [[None, None]])[-1]
            summary.append(f"at 1 thread: speedup {one['speedup'][-1]:.2f}x, 95% CI [{_f(oci[0])}, {_f(oci[1])}]")
    fid = report.get("fidelity")
    if fid:
        s = f"fidelity: max abs diff {_f(fid.get('max_abs_diff'), '.3g')}, cosine mean {_f(fid.get('cosine_mean'), '.5f')}"
        s += f" min {_f(fid.get('cosine_min'), '.5f')}"
        if fid.get("top1_agreement") is not None:
            s += f", top-1 agreement {fid['top1_agreement']:.4f}"
        if fid.get("exact_match") is not None:
            s += f", integer outputs exact match {fid['exact_match']:.4f}"
        s += f" on {fid.get('samples')} samples ({fid.get('inputs')})"
        own = [o for o in fid.get("outputs") or [] if "pooled_from" not in o]
        if len(own) > 1:
            s += f"; worst of {len(own)} outputs: '{fid.get('worst_output')}'"
        if fid.get("pooled_cosine_min") is not None:
            s += (f"; mean-pooled embedding cosine mean {_f(fid.get('pooled_cosine_mean'), '.5f')} "
                  f"min {_f(fid['pooled_cosine_min'], '.5f')}")
        if fid.get("positions"):
            s += f"; {fid['positions']}"
        summary.append(s)
    q = report.get("quantization")
    if q:
        summary.append(
            f"quantization: {q['mode']}, weights {q['weight_type']} {q['weight_scheme']} "
            f"{'per-channel' if q['per_channel'] else 'per-tensor'}, activations {q['activation_type']} "
            f"{q['activation_scheme']}, reduce_range={q['reduce_range']} ({q['chosen_by']})"
        )
        timed = [c for c in q.get("format_candidates") or [] if c.get("latency_ms_p50") is not None]
        if timed:
            sel = q.get("format_selection") or {}
            chosen = next((c["format"] for c in timed if c.get("chosen")), q.get("kernel_format"))
            summary.append(
                f"kernel format: {chosen} ({sel.get('by')} at batch {sel.get('batch_size')}, {sel.get('threads')} "
                "thread; " + ", ".join(f"{c['format']} {c['latency_ms_p50']:.3g} ms cos {_f(c.get('cosine_min'), '.4f')}"
                                       for c in timed) + ")")
        fb = q.get("fallback")
        if fb is not None:
            left = q.get("fallback_layers") or []
            names = ", ".join(f"{x['layer']} (int8 alone: error {_f(x.get('error'), '.3g')})" for x in left)
            summary.append(f"accuracy-aware fallback: {len(left)} layer(s) left in float"
                           + (f": {names}" if left else " (full int8 meets the budget)")
                           + ("" if fb.get("met") else "; the budget was NOT met"))
    p = report.get("pruning")
    if p:
        summary.append(f"pruning: {p['method']}, ratio {p['pruning_ratio']}, criterion {p['criterion']}")
        if p.get("note"):
            summary.append(f"note: {p['note']}")
    acc = report.get("accuracy") or {}
    if acc.get("before_recovery") is not None and acc.get("after_recovery") is not None:
        summary.append(f"recovery: top-1 accuracy {acc['before_recovery']:.4f} right after pruning, "
                       f"{acc['after_recovery']:.4f} after recovery ({acc.get('eval_data')})")
    ex = report.get("export")
    if ex:
        summary.append(f"export: {ex.get('exporter')} exporter, max abs diff vs PyTorch {_f(ex.get('max_abs_diff'), '.3g')}")
    gates = report.get("gates")
    if gates:
        verdict = "passed" if gates["passed"] else "FAILED: " + ", ".join(g["gate"] for g in gates["failed"])
        summary.append(f"quality gates: {verdict}")
    for s in summary:
        parts.append(Text(s))
    steps = [st for st in report.get("steps") or [] if "measured" in st]
    if len(steps) > 1:
        st_table = Table(title="steps (each against the baseline, one interleaved benchmark)", title_justify="left")
        for col in ("step", "size ratio", "speedup", "95% CI", "cosine min", "top-1 accuracy"):
            st_table.add_column(col, justify="left" if col == "step" else "right", overflow="fold")
        for st in steps:
            m = st["measured"]
            st_table.add_row(f"steps[{st['step']}] {st['name']}", _f(m["size_ratio"]), f"{m['speedup']:.2f}x",
                             f"[{_f(m['speedup_ci95'][0], '.2f')}, {_f(m['speedup_ci95'][1], '.2f')}]",
                             _f(m["fidelity"].get("cosine_min"), ".5f"), _f(m.get("accuracy"), ".4f"))
        parts.append(st_table)
    ops = sorted({op for _, m in models for op in (m.get("op_types") or {})})
    if ops:
        h = Table(title="ONNX op types", title_justify="left")
        h.add_column("op type", overflow="fold")
        for name, _ in models:
            h.add_column(name, justify="right")
        for op in ops:
            h.add_row(op, *[str((m.get("op_types") or {}).get(op, 0)) for _, m in models])
        parts.append(h)
    return Group(*parts)

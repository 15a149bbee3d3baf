"""``compressor sweep``: every combination of grid values applied to a recipe, measured against one baseline.

A grid axis names one field of one step of the recipe and its values: ``steps[0].ratio=0.3,0.5,0.7``.
Each combination is a recipe of its own, built and validated by the same code as ``compressor run``
(:func:`compressor.recipe.build_recipe`, the passes' config objects), and built through the same steps
(:func:`compressor.pipeline.apply_steps`). The input is loaded, its data prepared and its baseline
exported once; then every candidate that was built is measured with the baseline in ONE interleaved
benchmark (:func:`compressor.measure.measure`), so all latencies and speedups are comparable and the
baseline is timed once. A candidate is valid when it meets the recipe's gates (and the command line's);
the chosen one is the best valid candidate by the objective (:func:`compressor.pareto.best_valid`).
A candidate that fails to build is recorded with its reason and the sweep goes on.
"""

from __future__ import annotations

import itertools
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compressor.errors import CompressorError, UsageError

_GRID = re.compile(r"^steps\[(\d+)\]\.([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


@dataclass(frozen=True)
class GridAxis:
    """One ``--grid`` axis.

    Attributes:
        text: As the user wrote it (for messages).
        step: Index into the recipe's ``steps``.
        field: Config field of that step's pass.
        values: Parsed values (TOML scalars: numbers, booleans; anything else is a string).
    """

    text: str
    step: int
    field: str
    values: tuple[Any, ...]

    @property
    def path(self) -> str:
        """``steps[i].field``."""
        return f"steps[{self.step}].{self.field}"


def _parse_value(text: str) -> Any:
    """A grid value as TOML reads it (``0.5``, ``true``, ``"x"``), else the plain string (``int8``)."""
    import tomllib

    text = text.strip()
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def parse_grid(texts: list[str]) -> list[GridAxis]:
    """Parse ``--grid`` arguments.

    Raises:
        UsageError: A malformed axis, an empty value, or one field given twice; the message names it.
    """
    axes: list[GridAxis] = []
    for text in texts:
        m = _GRID.match(text.strip())
        if m is None:
            raise UsageError(f"--grid '{text}' is not of the form steps[i].field=v1,v2,... (e.g. "
                             "--grid 'steps[0].ratio=0.3,0.5,0.7')")
        raw = m.group(3).split(",")
        if not m.group(3).strip() or any(not v.strip() for v in raw):
            raise UsageError(f"--grid '{text}' has an empty value; give values separated by commas")
        axis = GridAxis(text, int(m.group(1)), m.group(2), tuple(_parse_value(v) for v in raw))
        if any(a.path == axis.path for a in axes):
            raise UsageError(f"--grid {axis.path} is given twice; give its values in one --grid")
        if len(set(map(repr, axis.values))) != len(axis.values):
            raise UsageError(f"--grid {axis.path} repeats a value; give each value once")
        axes.append(axis)
    if not axes:
        raise UsageError("sweep needs at least one --grid 'steps[i].field=v1,v2,...'")
    return axes


def _with_values(layer: Any, axes: list[GridAxis], values: tuple[Any, ...]) -> Any:
    """A copy of the recipe layer with the grid values set (names in messages: ``--grid steps[i].field``)."""
    import copy

    from compressor.recipe import Layer

    data = copy.deepcopy(layer.data)
    data["steps"] = [dict(st) for st in data["steps"]]
    names = dict(layer.names)
    for axis, value in zip(axes, values, strict=True):
        data["steps"][axis.step][axis.field] = value
        names[axis.path] = f"--grid {axis.path}"
    return Layer(layer.label, data, base_dir=layer.base_dir, file=layer.file, names=names, warnings=list(layer.warnings))


def check_grid(layer: Any, axes: list[GridAxis], others: list[Any]) -> None:
    """Validate every grid axis and value on its own, with the recipe's own config objects, before any work.

    Raises:
        UsageError: A step index out of range, a field the step's pass does not have, or a value its config
            refuses (exit 2); the message names ``--grid steps[i].field``.
    """
    import dataclasses

    from compressor.passes import get_pass
    from compressor.recipe import build_recipe

    steps = layer.data.get("steps") or []
    listed = ", ".join(f"steps[{i}] {s.get('pass', '?')}" for i, s in enumerate(steps))
    for axis in axes:
        if axis.step >= len(steps):
            raise UsageError(f"--grid {axis.path}: the recipe has {len(steps)} step(s) ({listed})")
        spec = get_pass(str(steps[axis.step].get("pass")))
        fields = sorted(f.name for f in dataclasses.fields(spec.config_cls))
        if axis.field not in fields:
            raise UsageError(f"--grid {axis.path}: {spec.name} has no setting '{axis.field}'; valid settings: "
                             f"{', '.join(fields)}")
        for value in axis.values:  # each value on its own, the other settings as the recipe has them
            try:
                build_recipe([_with_values(layer, [axis], (value,)), *others])
            except UsageError as e:  # the config's own message, naming --grid steps[i].field when it is the field
                msg = str(e) if f"--grid {axis.path}" in str(e) else f"--grid {axis.path}={_fmt(value)}: {e}"
                raise UsageError(msg) from None


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def candidate_name(axes: list[GridAxis], values: tuple[Any, ...]) -> str:
    """A file-safe name from the grid values, e.g. ``ratio-0.3_precision-int8`` (step index added on clashes)."""
    fields = [a.field for a in axes]
    parts = []
    for axis, value in zip(axes, values, strict=True):
        key = axis.field if fields.count(axis.field) == 1 else f"s{axis.step}.{axis.field}"
        parts.append(f"{key}-{_fmt(value)}")
    return re.sub(r"[^A-Za-z0-9._=-]+", "-", "_".join(parts))


def _gate_view(c: dict[str, Any]) -> dict[str, Any]:
    """A candidate's figures in the shape :meth:`~compressor.gates.Gates.evaluate` reads."""
    comp = c["compare"]
    view: dict[str, Any] = {"speedup_ci95": comp.get("speedup_ci95"), "size_ratio": comp.get("size_ratio"),
                            "fidelity": comp.get("fidelity") or {}}
    if comp.get("accuracy_drop_points") is not None:
        view["accuracy"] = {"drop_points": comp["accuracy_drop_points"]}
    return view


#: What a sweep writes in its output folder; an earlier sweep's outputs may be replaced, anything else is kept safe.
SWEEP_OUTPUTS = frozenset({"candidates", "chosen.onnx", "chosen.onnx.data", "pareto.json", "pareto.png", "pareto.md"})


def _check_earlier_outputs(out_dir: Path) -> None:
    """Refuse an output folder holding files a sweep did not write (they would sit beside stale results).

    Raises:
        UsageError: ``out_dir`` holds other files, or its ``candidates/`` holds files that are not models.
    """
    if not out_dir.is_dir():
        return
    others = [p.name for p in out_dir.iterdir() if p.name not in SWEEP_OUTPUTS and not p.name.startswith(".compressor-")]
    cands = out_dir / "candidates"
    if cands.is_dir():
        others += [f"candidates/{p.name}" for p in cands.iterdir() if not p.name.endswith((".onnx", ".onnx.data"))]
    if others:
        raise UsageError(f"-o {out_dir} holds files a sweep did not write ({', '.join(sorted(others)[:3])}); choose "
                         "an empty or new folder (an earlier sweep's outputs there are replaced)")


def run_sweep(layer: Any, axes: list[GridAxis], *, out_dir: Path, objective: str = "latency",
              command: str, others: list[Any] | None = None, callbacks: Any = None) -> dict[str, Any]:
    """Build and measure every grid combination of a recipe; write the candidates and the Pareto outputs.

    Args:
        layer: The recipe file's :class:`~compressor.recipe.Layer`.
        axes: From :func:`parse_grid`.
        out_dir: Output folder: ``candidates/<name>.onnx``, ``chosen.onnx`` (a copy of the chosen candidate),
            ``pareto.json``, ``pareto.png``, ``pareto.md``.
        objective: ``"latency"`` or ``"size"``: what the chosen candidate minimises among the valid ones.
        command: The command line, stored in the report.
        others: Layers above the recipe (the command line: benchmark settings, gates).
        callbacks: :class:`~compressor.pipeline.Callbacks` (warnings, progress).

    Returns:
        The report: ``input``, ``baseline`` (model entry, measured once), ``benchmark`` (the one interleaved
        benchmark of the baseline and every built candidate), ``pareto`` (objective, accuracy metric, chosen
        name, files, ``candidates`` as in ``pareto.json``), ``output`` (``chosen.onnx``, when a candidate is
        valid), ``recipe`` and ``warnings``.

    Raises:
        UsageError: Bad grid, recipe or output folder (before any work).
    """
    import dataclasses

    from compressor import pipeline as pl
    from compressor.measure import measure, model_entry
    from compressor.outputs import publish, scratch_dir
    from compressor.pareto import OBJECTIVES, best_valid, write_pareto
    from compressor.recipe import build_recipe
    from compressor.report import new_report

    callbacks = callbacks or pl.Callbacks()
    others = list(others or [])
    if objective not in OBJECTIVES:
        raise UsageError(f"--objective '{objective}' is unknown; use latency or size")
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("sweep draws pareto.png with matplotlib, which is not installed: pip install "
                         "'compressor[auto]' (or matplotlib)")
    check_grid(layer, axes, others)
    base = build_recipe([layer, *others])
    base.gates.check_usable(has_eval_data=base.eval_data is not None, compares=True)
    combos = list(itertools.product(*(a.values for a in axes)))
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"-o {out_dir} is a file; give a folder for the sweep's outputs")
    if not out_dir.parent.exists():
        raise UsageError(f"folder {out_dir.parent} does not exist; create it or choose another -o")
    _check_earlier_outputs(out_dir)
    names = [candidate_name(axes, v) for v in combos]
    inputs = {"input model": base.model, "recipe": layer.file, "calibration data": base.calibration_data,
              "evaluation data": base.eval_data, "training data": base.train_data}
    dests = [out_dir / "candidates" / f"{n}.onnx" for n in names] + [out_dir / f for f in (
        "chosen.onnx", "pareto.json", "pareto.png", "pareto.md")]
    for dest in dests:
        for what, other in inputs.items():
            if other is not None and Path(other).exists() and dest.resolve() == Path(other).resolve():
                raise UsageError(f"-o {out_dir} would overwrite the {what} {other}; choose another folder")
    report = new_report(command)
    artifact = pl._load(base)
    form = pl.TORCH if artifact.format.is_torch else pl.ONNX
    node = socket.gethostname()
    with scratch_dir(out_dir) as work:
        ctx = pl.make_context(artifact, base, work, callbacks)
        pl.check_input_runs(artifact, ctx)
        pl.check_labels_fit(artifact, ctx)
        report["input"] = pl._input_entry(base, artifact, ctx)
        report["recipe"] = base.to_json()
        baseline_art = artifact
        if artifact.format.is_torch:
            planned = pl.PlannedStep(pl.get_pass("export"), base.export, None, "original model")
            baseline_art = pl._run_step(planned, artifact, ctx, work, 0).artifact
        built: list[dict[str, Any]] = []
        rows: list[dict[str, Any]] = []
        cache: dict[Any, Any] = {}  # steps shared by candidates (e.g. one prune ratio, two precisions) run once
        for k, (name, values) in enumerate(zip(names, combos, strict=True)):
            grid = {a.path: v for a, v in zip(axes, values, strict=True)}
            row: dict[str, Any] = {"name": name, "grid": grid, "settings": {}, "size_bytes": None,
                                   "latency_ms_p50": None, "latency_ms_ci95": None, "speedup": None,
                                   "accuracy_drop_pct": None, "cosine_min": None, "valid": False, "reason": None,
                                   "node": node, "model_path": None}
            rows.append(row)
            task = f"candidate {k + 1}/{len(combos)} {name}"
            ctx.progress(task, 0, 1)
            try:
                recipe = build_recipe([_with_values(layer, axes, values), *others])
                row["settings"] = {"steps": [s.to_json() for s in recipe.steps]}
                steps = pl.plan(recipe, form)
                pl.check_steps(steps, artifact, ctx)
                cwork = work / f"c{k:03d}"
                cwork.mkdir()
                cctx = dataclasses.replace(ctx, workdir=cwork, warnings=[], on_warning=None)
                try:
                    applied = pl.apply_steps(steps, artifact, cctx, cwork, [], baseline=baseline_art, cache=cache)
                finally:  # the candidate's warnings are the run's, named by candidate
                    for w in cctx.warnings:
                        ctx.warn(f"{name}: {w}")
                final = applied.candidates[-1]
                if final["onnx"] is None:
                    raise UsageError("the recipe's last step left no ONNX model")
                built.append({"onnx": final["onnx"], "entry": model_entry(final["onnx"], out_dir / "candidates" /
                                                                           f"{name}.onnx"),
                              "compare": {}, "row": row, "sections": applied.sections})
                ctx.progress(task, 1, 1)
            except CompressorError as e:
                row["reason"] = f"build failed: {e}"
                ctx.warn(f"sweep candidate {name} failed: {e}")
                ctx.progress(task, 1, 1)
        bentry = model_entry(baseline_art.path, base.model)
        if artifact.format.is_torch:
            bentry["note"] = "size, parameters and latency of the fp32 ONNX export of the input"
        base_m = {"onnx": baseline_art.path, "entry": bentry}
        measured: dict[str, Any] = {}
        if built:
            measured = measure(ctx, base, base_m, built, against="baseline fp32 ONNX" if artifact.format.is_torch
                               else "baseline ONNX")
        for c in built:
            row, entry, comp = c["row"], c["entry"], c["compare"]
            lat = entry["latency_ms"]
            row.update(size_bytes=entry["size_bytes"], latency_ms_p50=lat["p50"], latency_ms_ci95=lat["p50_ci95"],
                       speedup=comp.get("speedup"), accuracy_drop_pct=comp.get("accuracy_drop_points"),
                       cosine_min=(comp.get("fidelity") or {}).get("cosine_min"))
            gates = base.gates.evaluate(_gate_view(c)) if base.gates.any else {"passed": True, "failed": []}
            row["valid"] = bool(gates["passed"])
            if not row["valid"]:
                from compressor.gates import Gates

                row["reason"] = Gates.describe(gates["failed"], written=["the candidate"]).removeprefix(
                    "quality gate failed: ").replace("; the candidate was written", "")
            c["gates"] = gates
        chosen = best_valid(rows, objective)
        pl._shield(callbacks)
        out_dir.mkdir(exist_ok=True)
        (out_dir / "candidates").mkdir(exist_ok=True)
        for c in built:
            dest = out_dir / "candidates" / f"{c['row']['name']}.onnx"
            publish(c["onnx"], dest)
            c["row"]["model_path"] = str(dest)
        # an earlier sweep's models that this one did not build (other grid, failed candidate) must not linger
        keep = {f"{c['row']['name']}.onnx" for c in built}
        for p in (out_dir / "candidates").iterdir():
            if p.is_file() and p.name not in keep and p.name.removesuffix(".data") not in keep:
                p.unlink()
        if chosen is None:
            for name in ("chosen.onnx", "chosen.onnx.data"):
                (out_dir / name).unlink(missing_ok=True)
        if chosen is not None:
            import shutil

            src = Path(rows[chosen]["model_path"])
            from compressor.external_data import has_external_data

            if not has_external_data(src):
                tmp = work / "chosen.onnx"
                shutil.copyfile(src, tmp)
                publish(tmp, out_dir / "chosen.onnx")
                report["output"] = str(out_dir / "chosen.onnx")
            else:
                report["output"] = str(src)
    bl = {"size_bytes": bentry["size_bytes"], "latency_ms_p50": (bentry.get("latency_ms") or {}).get("p50"),
          "accuracy": bentry.get("accuracy"), "node": node, "path": str(base.model)}
    title = f"sweep of {layer.file.name if layer.file else 'recipe'}: {' x '.join(a.path for a in axes)}"
    files = write_pareto(out_dir, baseline=bl, candidates=rows, chosen=chosen, objective=objective, title=title)
    import json

    doc = json.loads(files["json"].read_text())
    report["baseline"] = bentry
    report.update({k: v for k, v in measured.items() if k in ("benchmark",)})
    report["pareto"] = {"objective": objective, "accuracy_metric": doc["accuracy_metric"], "chosen": doc["chosen"],
                        "files": {k: str(v) for k, v in files.items()}, "candidates": doc["candidates"],
                        "grid": [{"path": a.path, "values": list(a.values)} for a in axes]}
    report["sources"] = dict(base.sources)
    report["warnings"] = ctx.warnings
    return report

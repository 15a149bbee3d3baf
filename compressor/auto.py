"""``compressor auto``: the fastest (or smallest) model within an accuracy budget, found by a seeded Optuna search.

Every trial is a recipe (prune -> quantize chains of the registered passes and their configs) built by the same
orchestrator as ``compressor run`` (:func:`compressor.pipeline.build_candidate`) and measured against one
baseline: the input's fp32 ONNX export, exported, evaluated and timed once, and timed again interleaved with each
candidate (paired speedup, :func:`compressor.measure.measure`). Trials whose outputs miss the budget on the
held-out data are recorded invalid and skip the benchmark (stopped early); with ``objective="latency"`` a
candidate whose paired speedup's 95% CI lies wholly below 1 is invalid too (with ``"size"``, one not smaller than
the baseline): the chosen model always beats the original, or the search ends with none. The search is Optuna's
NSGA-II multi-objective sampler (objective, accuracy drop), seeded; its first generation is seeded random sampling
(after a few enqueued defaults), so the settings tried depend on the seed and the trial count only. Trials are asked and
told in the driver in a fixed order; with ``executor="ray"`` only the construction of candidates runs as Ray tasks,
so both executors try the same settings. The study lives in an Optuna RDB (SQLite file) and ``resume`` continues
it. The best valid model so far is always at ``DIR/model.onnx`` with ``DIR/report.json`` (both replaced
atomically), and the Pareto outputs of the trials done are rewritten after every trial (a stop asked for meanwhile
waits for them), so an interrupted search leaves them all, with ``report.json`` saying so; once the search is over,
a stop no longer cuts the run. (Search after Optuna's ask-and-tell interface; budgeted fallback in the spirit of NNCF's
accuracy-aware quantization.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compressor.errors import CompressorError, UsageError, stop_deferred, stop_requested
from compressor.pipeline import Callbacks
from compressor.recipe import Recipe, Step

OBJECTIVES = ("latency", "size")
EXECUTORS = ("local", "ray")
STUDY_NAME = "compressor-auto"
#: Prune ratios (fraction of channels removed per layer) the search tries; recovery always follows with data.
PRUNE_RATIOS = (0.25, 0.5, 0.625, 0.75)
#: Quantization choices: int8 dynamic / static (kernel format measured, ``--format auto``; with or without the
#: accuracy-aware fallback), int4 weight-only, fp16.
PRECISIONS = ("int8-dynamic", "int8-static", "int4", "fp16")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
#: Samples of the held-out data on which a candidate's outputs are checked first (collapsed: stopped early).
QUICK_SAMPLES = 64
#: Most ``ask`` calls per trial counted, so that a small search space ends the search instead of looping.
MAX_ASKS_PER_TRIAL = 25
#: A candidate whose accuracy drop on the first samples exceeds the budget by this many points is stopped
#: early (a subset's drop does not bound the whole set's, so only hopeless candidates are stopped there).
QUICK_MARGIN_POINTS = 10.0
#: Seconds kept free at the end of ``--time-budget`` for the final report and Pareto outputs.
BUDGET_RESERVE_S = 5.0
#: How the reasons of candidates that met the accuracy budget but did not beat the original begin.
SLOWER_REASONS = ("slower than the original", "not smaller than the original")


def parse_duration(text: str) -> float:
    """Seconds from ``"90"``, ``"90s"``, ``"10m"``, ``"1.5h"``.

    Raises:
        UsageError: Not a positive number with an optional unit s, m or h.
    """
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*", str(text).lower())
    if not m or float(m.group(1)) <= 0:
        raise UsageError(f"--time-budget must be a positive duration such as 90s, 10m or 1h, got '{text}'")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


@dataclass(frozen=True)
class AutoSettings:
    """Settings of one search.

    Attributes:
        out_dir: Folder of the outputs (``model.onnx``, ``report.json``, ``pareto.*``, the study).
        objective: ``"latency"`` (ONNX Runtime CPU p50 at the benchmark batch) or ``"size"`` (file bytes).
        max_accuracy_drop: Budget in top-1 percentage points (needs labelled eval data), or None.
        min_cosine: Budget as the least per-sample output cosine to the baseline, or None.
        time_budget_s: No wave of trials starts when the time spent plus the longest wave so far (and a few seconds
            for the outputs) would exceed this (seconds).
        trials: Candidates to evaluate (distinct settings, over every session of the study).
        seed: Seed of the sampler and of recovery training.
        study_path: The Optuna SQLite file.
        resume: Continue the study in ``study_path`` (it must exist); without it the file must not exist.
        executor: ``"local"`` (construction in this process) or ``"ray"`` (construction as Ray tasks).
        workers: Candidates asked and constructed together (one wave); same value, same settings tried.
        recover_steps: Optimiser steps of the recovery (distillation) after each structured pruning.
    """

    out_dir: Path
    objective: str = "latency"
    max_accuracy_drop: float | None = None
    min_cosine: float | None = None
    time_budget_s: float = 600.0
    trials: int = 20
    seed: int = 0
    study_path: Path | None = None
    resume: bool = False
    executor: str = "local"
    workers: int = 1
    recover_steps: int = 300

    def __post_init__(self) -> None:
        """Validate.

        Raises:
            UsageError: Unknown objective or executor, no budget, counts below 1.
        """
        if self.objective not in OBJECTIVES:
            raise UsageError(f"--objective must be latency or size, got '{self.objective}'")
        if self.executor not in EXECUTORS:
            raise UsageError(f"--executor must be local or ray, got '{self.executor}'")
        if self.max_accuracy_drop is None and self.min_cosine is None:
            raise UsageError("auto needs an accuracy budget: --max-accuracy-drop POINTS (eval data with labels) or "
                             "--min-cosine C (no labels)")
        if self.trials < 1 or self.workers < 1 or self.recover_steps < 1:
            raise UsageError("--trials, --workers and --recover-steps must be at least 1")
        if self.time_budget_s <= 0:
            raise UsageError("--time-budget must be positive, e.g. 10m")

    @property
    def study(self) -> Path:
        """The study file (default ``out_dir / "study.db"``)."""
        return Path(self.study_path) if self.study_path is not None else Path(self.out_dir) / "study.db"

    def fingerprint(self, recipe: Recipe) -> dict[str, Any]:
        """What a resumed study must share with the run that created it."""
        return {"model": str(Path(recipe.model).resolve()), "objective": self.objective,
                "max_accuracy_drop": self.max_accuracy_drop, "min_cosine": self.min_cosine,
                "eval_data": str(Path(recipe.eval_data).resolve()) if recipe.eval_data else None,
                "calibration_data": str(Path(recipe.calibration_data).resolve()) if recipe.calibration_data else None,
                "batch_size": recipe.batch_size, "seed": self.seed, "workers": self.workers,
                "recover_steps": self.recover_steps}


def check_paths(settings: AutoSettings, recipe: Recipe) -> None:
    """Refuse, before any work, an output folder or study file this run cannot use.

    Raises:
        UsageError: ``out_dir`` is a file or its parent is missing; the study exists without ``--resume`` or is
            missing with it; an input lies inside the files the search writes.
    """
    out = Path(settings.out_dir)
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o/--output {out} is a file; auto writes a folder (model.onnx, report.json, pareto.*)")
    if not out.parent.exists():
        raise UsageError(f"the folder of -o/--output {out} ({out.parent}) does not exist; create it first")
    study = settings.study
    if settings.resume and not study.is_file():
        raise UsageError(f"--resume: no study file {study}; run without --resume to start one (or give --study PATH)")
    if not settings.resume and study.exists():
        raise UsageError(f"study file {study} exists; pass --resume to continue it, or choose another -o or --study")
    written = {out / "model.onnx", out / "report.json", out / "pareto.json", out / "pareto.png", out / "pareto.md",
               study}
    for what, p in (("input model", recipe.model), ("evaluation data", recipe.eval_data),
                    ("calibration data", recipe.calibration_data)):
        if p is not None and Path(p).resolve() in {w.resolve() for w in written}:
            raise UsageError(f"the {what} {p} is one of the files auto writes; choose another -o/--output")


# ----------------------------------------------------------------------------- search space

def suggest(trial: Any, *, prunable: bool, static: bool) -> dict[str, Any]:
    """Ask the trial for one candidate's settings (Optuna define-by-run; conditional parameters).

    Args:
        trial: An ``optuna.Trial``.
        prunable: Structured pruning is possible (a PyTorch input with its Python classes).
        static: Calibration data is given (static int8 possible; recovery after pruning).

    Returns:
        ``{"chain": "quantize" | "prune" | "prune+quantize", "prune_ratio"?, "precision"?, "calibration_method"?,
        "fallback"?}``; ``fallback`` (static int8): the accuracy-aware fallback returns the most sensitive layers to
        float until the budget holds against the step's input (:func:`compressor.sensitivity.accuracy_aware_fallback`).
    """
    chains = ("quantize", "prune", "prune+quantize") if prunable else ("quantize",)
    chain = trial.suggest_categorical("chain", chains)
    params: dict[str, Any] = {"chain": chain}
    if "prune" in chain:
        params["prune_ratio"] = trial.suggest_categorical("prune_ratio", PRUNE_RATIOS)
    if "quantize" in chain:
        precisions = PRECISIONS if static else tuple(p for p in PRECISIONS if p != "int8-static")
        params["precision"] = trial.suggest_categorical("precision", precisions)
        if params["precision"] == "int8-static":
            params["calibration_method"] = trial.suggest_categorical("calibration_method", CALIBRATION_METHODS)
            params["fallback"] = trial.suggest_categorical("fallback", (False, True))
    return params


def all_settings(*, prunable: bool, static: bool) -> list[dict[str, Any]]:
    """Every distinct setting :func:`suggest` can give, in a fixed order."""
    quant = [{"precision": p} for p in PRECISIONS if p != "int8-static"]
    if static:
        quant += [{"precision": "int8-static", "calibration_method": m, "fallback": f} for m in CALIBRATION_METHODS
                  for f in (False, True)]
    out = [{"chain": "quantize", **q} for q in quant]
    if prunable:
        out += [{"chain": "prune", "prune_ratio": r} for r in PRUNE_RATIOS]
        out += [{"chain": "prune+quantize", "prune_ratio": r, **q} for r in PRUNE_RATIOS for q in quant]
    return out


def space_size(*, prunable: bool, static: bool) -> int:
    """Number of distinct settings :func:`suggest` can give."""
    return len(all_settings(prunable=prunable, static=static))


def defaults_to_try(*, prunable: bool, static: bool) -> list[dict[str, Any]]:
    """Settings enqueued first: what the single commands do by default (quantize; prune with recovery, quantize)."""
    q = ({"precision": "int8-static", "calibration_method": "minmax", "fallback": False} if static
         else {"precision": "int8-dynamic"})
    out = [{"chain": "quantize", **q}]
    if prunable:
        out.append({"chain": "prune+quantize", "prune_ratio": 0.5, **q})
    return out


def describe(params: dict[str, Any]) -> str:
    """A short name, e.g. ``prune 0.5 + int8-static (minmax)``."""
    parts = []
    if "prune_ratio" in params:
        parts.append(f"prune {params['prune_ratio']:g}")
    if "precision" in params:
        p = params["precision"]
        how = [params["calibration_method"]] if "calibration_method" in params else []
        how += ["fallback"] if params.get("fallback") else []
        parts.append(p + (f" ({', '.join(how)})" if how else ""))
    return " + ".join(parts)


def trial_steps(params: dict[str, Any], *, recover: bool, seed: int, recover_steps: int = 300) -> tuple[Step, ...]:
    """The recipe steps of one candidate's settings (the pass configs validate them)."""
    from compressor.passes.configs import PruneConfig, QuantizeConfig

    steps = []
    if "prune_ratio" in params:
        steps.append(Step("prune", PruneConfig(ratio=params["prune_ratio"], recover=recover, seed=seed,
                                                recover_steps=recover_steps)))
    if "precision" in params:
        p = params["precision"]
        if p == "int8-dynamic":
            cfg = QuantizeConfig(mode="dynamic")
        elif p == "int8-static":
            cfg = QuantizeConfig(mode="static", calibration_method=params["calibration_method"], format="auto",
                                 fallback=bool(params.get("fallback")))
        else:
            cfg = QuantizeConfig(precision=p)
        steps.append(Step("quantize", cfg))
    return tuple(steps)


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


# ----------------------------------------------------------------------------- executors

def construct(recipe: Recipe, out: str, on_progress: Any = None, *, baseline: str | None = None,
              work_root: Path | None = None, cache: dict[Any, Any] | None = None) -> dict[str, Any]:
    """Build one candidate (runs in this process or as a Ray task); never raises a CompressorError.

    Returns:
        ``{"ok", "output", "steps", "sections", "warnings", "error", "node", "construction_s"}``.
    """
    from compressor.pipeline import build_candidate

    start = time.perf_counter()
    warnings: list[str] = []
    try:
        res = build_candidate(recipe, Path(out), baseline=Path(baseline) if baseline else None,
                              callbacks=Callbacks(on_warning=warnings.append, on_progress=on_progress),
                              work_root=work_root, cache=cache)
        res.update(ok=True, error=None)
    except CompressorError as e:
        stop = stop_requested()  # a library may have wrapped the user's Ctrl-C in its own error
        if stop is not None:
            raise stop from e
        res = {"ok": False, "error": f"{type(e).__name__}: {e}", "steps": [], "output": None}
    res["warnings"] = warnings
    res["node"] = socket.gethostname()
    res["construction_s"] = time.perf_counter() - start
    return res


class LocalExecutor:
    """Builds candidates one after the other in this process.

    Steps shared by candidates (the same settings up to that step, e.g. one pruning with recovery under several
    quantizations) run once and are reused (:func:`compressor.pipeline.apply_steps`' cache).
    """

    name = "local"

    def __init__(self, callbacks: Callbacks, work_root: Path) -> None:
        self._progress = callbacks.on_progress
        self._work = work_root
        self._cache: dict[Any, Any] = {}

    def build(self, jobs: list[tuple[Recipe, str]], baseline: str | None) -> list[dict[str, Any]]:
        """Build each ``(recipe, output path)`` in order."""
        return [construct(recipe, path, self._progress, baseline=baseline, work_root=self._work, cache=self._cache)
                for recipe, path in jobs]

    def close(self) -> None:
        """Nothing to release."""


class RayExecutor:
    """Builds the candidates of a wave as Ray tasks (one CPU each), in parallel; results come back in order.

    ``ray.init()`` joins the cluster named by ``RAY_ADDRESS`` when it is set, else starts Ray on this machine.
    Candidate files are written where the driver asks (the output folder: on a cluster, shared storage).
    """

    name = "ray"

    def __init__(self) -> None:
        try:
            import ray
        except ImportError as e:
            raise UsageError("--executor ray needs Ray: pip install 'compressor[ray]' (or use --executor local)") from e
        self._ray = ray
        self._started = False
        if not ray.is_initialized():
            import logging

            kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                      "logging_level": logging.ERROR, "configure_logging": True}
            if not os.environ.get("RAY_ADDRESS"):
                kwargs["num_cpus"] = os.cpu_count() or 1
            ray.init(**kwargs)
            self._started = True
        self._task = ray.remote(num_cpus=1, max_retries=0)(construct)

    def build(self, jobs: list[tuple[Recipe, str]], baseline: str | None) -> list[dict[str, Any]]:
        """Submit every job, then wait for all (in submission order)."""
        refs = [self._task.remote(recipe, path, None, baseline=baseline) for recipe, path in jobs]
        try:
            return self._ray.get(refs)
        except BaseException:
            for r in refs:
                self._ray.cancel(r, force=True)
            raise

    def close(self) -> None:
        """Shut Ray down when this executor started it."""
        if self._started:
            self._ray.shutdown()


# ----------------------------------------------------------------------------- the search

@dataclass
class _State:
    candidates: list[dict[str, Any]]
    keys: dict[str, int]
    best: int | None
    best_report: dict[str, Any] | None


def _better(new: dict[str, Any], old: dict[str, Any], objective: str) -> bool:
    """Whether valid candidate ``new`` beats ``old``.

    Latency: faster when the 95% CIs of the paired speedups do not overlap; statistically tied candidates go to the
    smaller file, then the smaller accuracy drop (or higher cosine). Size: smaller file, then faster.
    """
    def err(c: dict[str, Any]) -> float:
        return c["accuracy_drop_pct"] if c.get("accuracy_drop_pct") is not None else 1.0 - (c.get("cosine_min") or 0)

    if objective == "latency":
        (nl, nh), (ol, oh) = new["speedup_ci95"], old["speedup_ci95"]
        if nl > oh:
            return True
        if nh < ol:
            return False
        if new["size_bytes"] != old["size_bytes"]:
            return new["size_bytes"] < old["size_bytes"]
        return err(new) < err(old)
    if new["size_bytes"] != old["size_bytes"]:
        return new["size_bytes"] < old["size_bytes"]
    if new["speedup"] != old["speedup"]:
        return new["speedup"] > old["speedup"]
    return err(new) < err(old)


def run_auto(recipe: Recipe, settings: AutoSettings, *, command: str,
             callbacks: Callbacks | None = None) -> dict[str, Any]:
    """Search for the best model within the budget; see the module docstring.

    Args:
        recipe: Model, data, export and benchmark settings (no steps; ``gates`` holds the budget).
        settings: The search's settings.
        command: The command line, stored in the reports.
        callbacks: Warning and progress callbacks (one progress event per trial).

    Returns:
        The chosen model's report (also at ``out_dir/report.json``) with an ``auto`` section: objective, budget,
        trials done, chosen trial, study file, executor, Pareto files, and ``interrupted`` / ``stopped_by``.
        ``result`` is absent when no candidate met the budget.

    Raises:
        UsageError: Bad inputs, or a study that belongs to another search.
        KeyboardInterrupt, SystemExit: The user stopped the search; the best model so far, its report, the Pareto
            outputs of the trials done and the study are in place.
    """
    import optuna

    from compressor.gates import Gates
    from compressor.measure import bench_feeds, measure, model_entry
    from compressor.outputs import publish, scratch_dir
    from compressor.pipeline import (
        PlannedStep,
        _input_entry,
        _load,
        _run_step,
        _shield,
        check_input_runs,
        check_labels_fit,
        make_context,
    )
    from compressor.report import new_report, write_json_atomic

    started = time.perf_counter()
    callbacks = callbacks or Callbacks()
    if recipe.eval_source is None:
        raise UsageError("auto needs --eval-data FILE.npz: held-out inputs (with 'labels' for --max-accuracy-drop) to "
                         "judge every candidate")
    recipe = dataclasses.replace(recipe, gates=Gates(max_accuracy_drop=settings.max_accuracy_drop,
                                                     min_cosine=settings.min_cosine), steps=())
    check_paths(settings, recipe)
    artifact = _load(recipe)
    out_dir = Path(settings.out_dir)
    created = not out_dir.exists()
    out_dir.mkdir(exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    node = socket.gethostname()
    executor: Any = None
    state = _State([], {}, None, None)
    auto: dict[str, Any] = {
        "objective": settings.objective, "max_accuracy_drop": settings.max_accuracy_drop,
        "min_cosine": settings.min_cosine, "trials_requested": settings.trials, "trials_done": 0,
        "time_budget_s": settings.time_budget_s, "seed": settings.seed, "executor": settings.executor,
        "workers": settings.workers, "recover_steps": settings.recover_steps, "study": str(settings.study), "resumed": settings.resume,
        "sampler": "optuna NSGAIISampler (seeded)", "benchmark_node": node, "chosen_trial": None, "chosen": None,
        "interrupted": False, "stopped_by": None, "pareto": {}, "elapsed_s": 0.0, "baseline_s": None,
        "trials_this_session": 0,
    }
    searching = False  # the study is open: from here an interrupt leaves the outputs of the trials done
    try:
        with scratch_dir(out_dir / "model.onnx") as work:
            ctx = make_context(artifact, recipe, work, callbacks)
            check_input_runs(artifact, ctx)
            check_labels_fit(artifact, ctx)
            prunable = artifact.format.is_torch and artifact.format.has_python_classes
            static = ctx.calibration is not None
            recover = static or ctx.train_data is not None

            # the one baseline: exported once, evaluated once, timed once alone (and again beside each candidate)
            if artifact.format.is_torch:
                ctx.progress("baseline export", 0, 1)
                res = _run_step(PlannedStep(_export_spec(), recipe.export, None, "original model"), artifact, ctx,
                                work, 0)
                ctx.progress("baseline export", 1, 1)
                baseline_onnx = work / "baseline.onnx"
                os.replace(res.artifact.path, baseline_onnx)
                export_entry = {"name": "export", "of": "original model", **res.details}
            else:
                baseline_onnx, export_entry = Path(artifact.path), None
            base_entry = model_entry(baseline_onnx, recipe.model)
            baseline = _measure_baseline(ctx, recipe, baseline_onnx, base_entry, node)
            quick = _Quick(ctx, baseline_onnx)
            auto["baseline_s"] = time.perf_counter() - started

            pareto_section: dict[str, Any] = {}

            def finish_outputs() -> None:
                auto["trials_done"] = len(state.candidates)
                auto["elapsed_s"] = time.perf_counter() - started
                from compressor.pareto import write_pareto

                title = (f"compressor auto: {Path(recipe.model).name}, objective {settings.objective}, budget "
                         + (f"accuracy drop <= {settings.max_accuracy_drop:g} points" if settings.max_accuracy_drop
                            is not None else f"cosine_min >= {settings.min_cosine:g}"))
                paths = write_pareto(out_dir, baseline=baseline, candidates=state.candidates, chosen=state.best,
                                     objective=settings.objective, title=title)
                auto["pareto"] = {k: str(v) for k, v in paths.items()}
                doc = json.loads(paths["json"].read_text())
                pareto_section.clear()
                pareto_section.update(objective=settings.objective, accuracy_metric=doc["accuracy_metric"],
                                      chosen=doc["chosen"], files=auto["pareto"], candidates=doc["candidates"])
                auto["chosen_trial"] = state.candidates[state.best]["trial"] if state.best is not None else None
                auto["chosen"] = state.candidates[state.best] if state.best is not None else None
                if state.best_report is not None:
                    state.best_report["auto"] = dict(auto)
                    state.best_report["pareto"] = dict(pareto_section)
                    write_json_atomic(state.best_report, out_dir / "report.json")

            def final_report() -> dict[str, Any]:
                """Write and return report.json: the chosen model's report, or (none valid) one without a result."""
                finish_outputs()
                if state.best is not None:
                    w = speed_warning(state.candidates[state.best], settings.objective, baseline["batch_size"])
                    if w is not None:
                        ctx.warn(w)
                if state.best_report is None:
                    rep = new_report(command)
                    rep.update(input=_input_entry(recipe, artifact, ctx), baseline=base_entry, auto=auto,
                               pareto=pareto_section, warnings=ctx.warnings)
                else:
                    rep = state.best_report
                    rep["auto"] = auto
                    rep["pareto"] = pareto_section
                    rep["warnings"] = list(dict.fromkeys([*ctx.warnings, *rep.get("warnings", [])]))
                write_json_atomic(rep, out_dir / "report.json")
                return rep

            study, fresh = _open_study(settings, recipe)
            searching = True
            restored = 0
            try:
                if fresh:
                    stale = [out_dir / n for n in ("model.onnx", "model.onnx.data", "report.json", "pareto.json",
                                                   "pareto.png", "pareto.md")]
                    stale = [p for p in stale if p.is_file()]
                    if stale:  # a new study: files of an earlier search in DIR would describe another model
                        ctx.warn(f"{out_dir} held the outputs of an earlier search ({', '.join(p.name for p in stale)}"
                                 "); they are replaced by this one's (use --resume to continue a search instead)")
                        for p in stale:
                            p.unlink()
                    for params in defaults_to_try(prunable=prunable, static=static):
                        study.enqueue_trial(params)
                _restore(study, state, out_dir)
                restored = len(state.candidates)
                auto["trials_done"] = restored
                total_space = space_size(prunable=prunable, static=static)
                if state.best is not None and (out_dir / "report.json").is_file():
                    state.best_report = json.loads((out_dir / "report.json").read_text())

                executor = RayExecutor() if settings.executor == "ray" else LocalExecutor(callbacks, work / "local")
                (work / "local").mkdir()
                asks = 0
                durations: list[float] = []
                while True:
                    done = len(state.candidates)
                    auto["trials_this_session"] = done - restored
                    if done >= settings.trials:
                        auto["stopped_by"] = "trials"
                        break
                    if len(state.keys) >= total_space:
                        auto["stopped_by"] = "search space exhausted"
                        ctx.warn(f"every one of the {total_space} settings in the search space was tried after {done} "
                                 "trials")
                        break
                    spent = time.perf_counter() - started
                    # the longest wave so far, plus the time to write the outputs: the search ends within the budget
                    longest = max(durations) if durations else 0.0
                    if spent + longest + BUDGET_RESERVE_S > settings.time_budget_s:
                        auto["stopped_by"] = "time budget"
                        if done == restored:
                            ctx.warn(f"--time-budget of {settings.time_budget_s:g} s left no time for a trial: the "
                                     f"baseline's export and measurement took {auto['baseline_s']:.0f} s (and "
                                     f"{BUDGET_RESERVE_S:g} s are kept for the outputs)")
                        else:
                            ctx.warn(f"time budget of {settings.time_budget_s:g} s reached after {done} of "
                                     f"{settings.trials} trials")
                        break
                    wave: list[tuple[Any, dict[str, Any]]] = []
                    while len(wave) < min(settings.workers, settings.trials - done):
                        if asks >= MAX_ASKS_PER_TRIAL * settings.trials:
                            break
                        trial = study.ask()
                        asks += 1
                        params = suggest(trial, prunable=prunable, static=static)
                        key = _key(params)
                        if key in state.keys or any(_key(p) == key for _, p in wave):
                            # tried already: record it, and ask next for an untried setting drawn with a seeded RNG
                            # (NSGA-II's later generations repeat settings of a small discrete space)
                            trial.set_user_attr("duplicate", True)
                            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                            taken = set(state.keys) | {_key(p) for _, p in wave}
                            left = [p for p in all_settings(prunable=prunable, static=static) if _key(p) not in taken]
                            if left:
                                import random

                                study.enqueue_trial(random.Random(settings.seed * 100_003 + trial.number).choice(left))
                            continue
                        wave.append((trial, params))
                    if not wave:
                        auto["stopped_by"] = "no new settings"
                        break
                    wave_start = time.perf_counter()
                    jobs = []
                    for trial, params in wave:
                        # absolute paths: a Ray worker on another node (shared storage) or in another folder reads them
                        r = dataclasses.replace(recipe, model=Path(recipe.model).absolute(), **_absolute(recipe),
                                                steps=trial_steps(params, recover=recover, seed=settings.seed,
                                                                  recover_steps=settings.recover_steps))
                        jobs.append((r, str((work / f"trial-{trial.number:04d}.onnx").absolute())))
                        ctx.progress(f"trial {trial.number}: building {describe(params)}", 0, None)
                    try:
                        built = executor.build(jobs,
                                               str(baseline_onnx.absolute()) if artifact.format.is_torch else None)
                    except BaseException:
                        _fail_trials(study, [t for t, _ in wave])
                        raise
                    for i, ((trial, params), b) in enumerate(zip(wave, built, strict=True)):
                        ctx.progress(f"trial {trial.number}: building {describe(params)}", 1, 1)
                        try:
                            cand = _evaluate(trial.number, params, b, jobs[i][0], ctx, recipe, settings, baseline,
                                             baseline_onnx, base_entry, quick, measure, model_entry, bench_feeds)
                        except BaseException:
                            _fail_trials(study, [t for t, _ in wave[i:]])
                            raise
                        try:
                            # the trial's record, the model, its report and the Pareto files go together: a stop
                            # asked for meanwhile is raised once they are all in place
                            with stop_deferred():
                                _record(trial, params, cand, study, state, settings, baseline, out_dir, publish,
                                        command, _input_entry(recipe, artifact, ctx), export_entry, ctx)
                                finish_outputs()
                        except BaseException:
                            _fail_trials(study, [t for t, _ in wave[i + 1:]])
                            raise
                    auto["trials_this_session"] = len(state.candidates) - restored
                    durations.append(time.perf_counter() - wave_start)
                    stop = stop_requested()
                    if stop is not None:
                        raise stop
            except (KeyboardInterrupt, SystemExit) as e:
                _shield(callbacks)  # a second Ctrl-C must not cut the outputs of the trials done in two
                auto["interrupted"] = True
                auto["stopped_by"] = "interrupted"
                auto["trials_this_session"] = len(state.candidates) - restored
                try:
                    rep = final_report()
                finally:
                    if executor is not None:
                        executor.close()
                with contextlib.suppress(AttributeError, TypeError):  # the CLI's --json error object shows it
                    e.report = rep
                raise
            # the search is over and its outputs are being put in place: a stop asked for now lets the run finish
            _shield(callbacks)
            executor.close()
            return final_report()
    except BaseException:
        if not searching:  # stopped or failed before the search began: leave nothing behind
            if not settings.resume:  # a study file now is one this run began to create (check_paths)
                for p in (settings.study, settings.study.with_name(settings.study.name + "-journal")):
                    p.unlink(missing_ok=True)
            if created:
                with contextlib.suppress(OSError):
                    out_dir.rmdir()
        raise


def _record(trial: Any, params: dict[str, Any], cand: dict[str, Any], study: Any, state: _State,
            settings: AutoSettings, baseline: dict[str, Any], out_dir: Path, publish: Any, command: str,
            input_entry: dict[str, Any], export_entry: dict[str, Any] | None, ctx: Any) -> None:
    """Record one judged candidate in the study and the state; a new best is published as ``out_dir/model.onnx``."""
    import optuna

    rep = cand.pop("_report", None)
    stage = cand.pop("_stage", None)
    trial.set_user_attr("candidate", {**cand, "model_path": None})
    state.candidates.append(cand)
    state.keys[_key(params)] = len(state.candidates) - 1
    if cand["valid"]:
        study.tell(trial, _values(cand, settings, baseline))
    elif stage == "build":
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    else:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    new_best = cand["valid"] and (state.best is None or _better(cand, state.candidates[state.best],
                                                                settings.objective))
    if new_best:
        final = out_dir / "model.onnx"
        publish(Path(cand["model_path"]), final)
        if state.best is not None:
            state.candidates[state.best]["model_path"] = None
        cand["model_path"] = str(final)
        state.best = len(state.candidates) - 1
        study.set_user_attr("best_trial", cand["trial"])
        rep["output"] = str(final)
        rep["result"]["path"] = str(final)
        rep["command"] = command
        rep["input"] = input_entry
        if export_entry is not None:
            rep["export"] = export_entry
        state.best_report = rep
    elif cand.get("model_path"):
        Path(cand["model_path"]).unlink(missing_ok=True)
        cand["model_path"] = None
    info = {"valid": 1.0 if cand["valid"] else 0.0}
    if cand.get("speedup") is not None:
        info["speedup"] = cand["speedup"]
    if cand.get("accuracy_drop_pct") is not None:
        info["drop_points"] = cand["accuracy_drop_pct"]
    ctx.progress(f"trial {trial.number} ({len(state.candidates)}/{settings.trials}) "
                 f"{cand['name']}: {'valid' if cand['valid'] else 'invalid: ' + cand['reason']}"
                 + (" (best so far)" if new_best else ""), 1, 1, **info)


def speed_warning(chosen: dict[str, Any], objective: str, batch: int) -> str | None:
    """The warning for a chosen candidate not shown faster than the original, or None.

    With ``objective="latency"`` a candidate slower beyond doubt is never chosen (it is invalid), so the case left is
    a 95% CI of the paired speedup that holds 1.0; with ``"size"`` the chosen one may be slower beyond doubt.
    """
    sp, ci = chosen.get("speedup"), chosen.get("speedup_ci95")
    if sp is None or not ci:
        return None
    figures = f"speedup {sp:.2f}, 95% CI [{ci[0]:.2f}, {ci[1]:.2f}]"
    if ci[1] < 1.0:
        return (f"the result is slower than the baseline on this CPU ({figures}) at batch {batch}; see the op types "
                "in the report")
    if ci[0] < 1.0 and objective == "latency":
        return (f"the result may be no faster than the baseline on this CPU ({figures}: the interval holds 1.0) at "
                f"batch {batch}; try --calibration-data (static int8) or a larger --bench-batch-size")
    return None


def no_valid_message(rep: dict[str, Any], *, has_calibration: bool) -> str:
    """The one-line error of a search that found no valid candidate (what happened, and what to try).

    Args:
        rep: The search's report (``auto`` and ``pareto`` sections).
        has_calibration: Calibration data was given (static int8 and recovery were in the search space).
    """
    info = rep["auto"]
    md = info["pareto"].get("md")
    if info.get("stopped_by") == "time budget" and not info.get("trials_this_session"):
        took = info.get("baseline_s")
        return (f"no trial ran: the --time-budget of {info['time_budget_s']:g} s ran out before the first trial (the "
                f"baseline's export and measurement took {took:.0f} s, and {BUDGET_RESERVE_S:g} s are kept for the "
                "outputs); give a larger --time-budget, e.g. 10m")
    cands = (rep.get("pareto") or {}).get("candidates") or []
    slower = [c for c in cands if str(c.get("reason") or "").startswith(SLOWER_REASONS)]
    more = "" if has_calibration else "--calibration-data (static int8, recovery), "
    if slower:
        what = "faster" if info["objective"] == "latency" else "smaller"
        return (f"no candidate beat the original: {len(slower)} of {info['trials_done']} met the budget but none was "
                f"{what} than the original (see {md}); try {more}a larger --bench-batch-size, or raise --trials")
    return (f"no candidate of {info['trials_done']} met the budget; see {md} for why each failed, and loosen the "
            f"budget, raise --trials" + (f" or give {more.rstrip(', ')}" if more else ""))


def _fail_trials(study: Any, trials: list[Any]) -> None:
    """Mark unfinished trials failed (on the way out of an interrupt: never raise over it)."""
    import contextlib

    import optuna

    for t in trials:
        with contextlib.suppress(Exception):
            study.tell(t, state=optuna.trial.TrialState.FAIL)


def _absolute(recipe: Recipe) -> dict[str, Path | None]:
    """The recipe's data paths made absolute (``random`` calibration stays as it is)."""
    from compressor.recipe import PATH_KEYS

    out: dict[str, Path | None] = {}
    for key in PATH_KEYS:
        if key in ("model", "output", "save_torch"):
            continue
        p = getattr(recipe, key)
        out[key] = p if p is None or str(p) == "random" else Path(p).absolute()
    return out


def _export_spec() -> Any:
    from compressor.passes import get_pass

    return get_pass("export")


def _values(cand: dict[str, Any], settings: AutoSettings, baseline: dict[str, Any]) -> list[float]:
    """Optuna objectives, both minimized.

    Latency relative to the one baseline timing (baseline p50 / paired speedup, robust to the machine's drift
    between trials) or file size; and the accuracy drop (or 1 - cosine).
    """
    first = (baseline["latency_ms_p50"] / cand["speedup"] if settings.objective == "latency"
             else float(cand["size_bytes"]))
    second = cand["accuracy_drop_pct"] if cand.get("accuracy_drop_pct") is not None else 1.0 - cand["cosine_min"]
    return [float(first), float(second)]


def _open_study(settings: AutoSettings, recipe: Recipe) -> tuple[Any, bool]:
    """Create or load the study; a resumed study must come from the same search.

    The sampler is NSGA-II seeded with ``seed`` (plus the number of trials already in the study when resuming,
    so that a resumed search does not replay the same random settings).

    Raises:
        UsageError: The study file is not an auto study, or was made for other settings.
    """
    import optuna

    storage = f"sqlite:///{Path(settings.study).resolve()}"
    fp = settings.fingerprint(recipe)
    if settings.resume:
        try:
            summaries = optuna.get_all_study_summaries(storage)
        except Exception as e:
            raise UsageError(f"--resume: {settings.study} is not an Optuna study file ({e})") from e
        if not any(s.study_name == STUDY_NAME for s in summaries):
            raise UsageError(f"--resume: {settings.study} holds no compressor auto study")
        probe = optuna.load_study(study_name=STUDY_NAME, storage=storage)
        old = probe.user_attrs.get("settings", {})
        diff = sorted(k for k in fp if old.get(k) != fp[k] and k != "workers")
        if diff:
            raise UsageError(f"--resume: the study in {settings.study} was made with other settings "
                             f"({', '.join(f'{k}: {old.get(k)!r}' for k in diff)}); give the same ones or start a new "
                             "study")
        n = len(probe.trials)
        sampler = optuna.samplers.NSGAIISampler(seed=settings.seed + n)
        return optuna.load_study(study_name=STUDY_NAME, storage=storage, sampler=sampler), False
    sampler = optuna.samplers.NSGAIISampler(seed=settings.seed)
    study = optuna.create_study(study_name=STUDY_NAME, storage=storage, sampler=sampler,
                                directions=["minimize", "minimize"])
    study.set_user_attr("settings", fp)
    return study, True


def _restore(study: Any, state: _State, out_dir: Path) -> None:
    """Candidates of earlier sessions from the study (trials left running by a killed process are marked failed)."""
    import optuna

    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.RUNNING:
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)
            continue
        cand = t.user_attrs.get("candidate")
        if cand is None:
            continue
        state.candidates.append(cand)
        state.keys[_key(cand["params"])] = len(state.candidates) - 1
    best = study.user_attrs.get("best_trial")
    for i, c in enumerate(state.candidates):
        if best is not None and c["trial"] == best:
            state.best = i
            c["model_path"] = str(out_dir / "model.onnx")


def _measure_baseline(ctx: Any, recipe: Recipe, path: Path, entry: dict[str, Any], node: str) -> dict[str, Any]:
    """The baseline's accuracy and its latency, timed once alone at the benchmark batch."""
    from compressor.benchmark import benchmark_detailed
    from compressor.fidelity import run_onnx, top1_accuracy
    from compressor.measure import bench_feeds
    from compressor.threads import resolve_threads

    acc = None
    if ctx.eval_data is not None and ctx.eval_data.labels is not None:
        acc = top1_accuracy(run_onnx(path, ctx.eval_data)[0], ctx.eval_data.labels)
    feeds, batch = bench_feeds(ctx, recipe)
    ctx.progress(f"baseline benchmark at batch {batch}", 0, 1)
    threads = 1 if recipe.bench.threads == "auto" else resolve_threads(recipe.bench.threads)
    det = benchmark_detailed([path], feeds, recipe.bench, threads=[threads])
    ctx.progress(f"baseline benchmark at batch {batch}", 1, 1)
    return {"size_bytes": entry["size_bytes"], "latency_ms_p50": det["latency"][0].p50, "accuracy": acc,
            "node": node, "batch_size": batch, "model_path": str(recipe.model)}


class _Quick:
    """The baseline's outputs on the first :data:`QUICK_SAMPLES` held-out samples and on all of them."""

    def __init__(self, ctx: Any, baseline: Path) -> None:
        from compressor.fidelity import run_onnx
        from compressor.inputs import SampleData

        d = ctx.data
        n = min(QUICK_SAMPLES, d.num_samples)
        self.few = SampleData({k: v[:n] for k, v in d.arrays.items()}, None, d.source, d.casts)
        self.few_out = run_onnx(baseline, self.few)
        self.all_out = run_onnx(baseline, d)
        self.eval_logits = run_onnx(baseline, ctx.eval_data)[0] if ctx.eval_data is not None else None
        same = ctx.eval_data is not None and d.source == ctx.eval_data.source
        self.few_logits = self.few_out[0] if same else None


def _evaluate(number: int, params: dict[str, Any], built: dict[str, Any], trial_recipe: Recipe, ctx: Any,
              recipe: Recipe, settings: AutoSettings, baseline: dict[str, Any], baseline_onnx: Path,
              base_entry: dict[str, Any], quick: _Quick, measure: Any, model_entry: Any, bench_feeds: Any
              ) -> dict[str, Any]:
    """Judge one built candidate and return its candidate dict (``_report``: the report of a valid one).

    Outputs on a few samples first, then the budget on all held-out data, then (valid ones only) the interleaved
    benchmark against the baseline.
    """
    from compressor.artifact import file_size_bytes
    from compressor.fidelity import compare_outputs, output_names, run_onnx, top1_accuracy

    cand: dict[str, Any] = {
        "name": f"t{number} {describe(params)}", "trial": number, "params": params,
        "settings": {"steps": [s.to_json() for s in trial_recipe.steps]},
        "size_bytes": None, "latency_ms_p50": None, "latency_ms_ci95": None, "speedup": None, "speedup_ci95": None,
        "accuracy_drop_pct": None, "cosine_min": None, "valid": False, "reason": None,
        "node": built.get("node"), "build_node": built.get("node"), "model_path": built.get("output"),
        "construction_s": built.get("construction_s"),
    }
    if not built["ok"]:
        cand.update(reason=f"construction failed: {built['error']}"[:300], _stage="build")
        return cand
    path = Path(built["output"])
    cand["size_bytes"] = file_size_bytes(path)
    names = output_names(baseline_onnx)
    few_out = run_onnx(path, quick.few)
    few = compare_outputs(quick.few_out, few_out, names=names)
    n = quick.few.num_samples
    if settings.min_cosine is not None and (few.get("cosine_min") or -1.0) < settings.min_cosine:
        # the least cosine over a subset bounds the least over all samples: this candidate cannot pass
        cand.update(cosine_min=few.get("cosine_min"),
                    reason=f"stopped early: cosine_min {few.get('cosine_min'):.5f} < {settings.min_cosine:g} on the "
                           f"first {n} samples")
        return cand
    labels = ctx.eval_data.labels if ctx.eval_data is not None else None
    if settings.max_accuracy_drop is not None and labels is not None and quick.few_logits is not None:
        few_drop = 100.0 * (top1_accuracy(quick.few_logits, labels[:n]) - top1_accuracy(few_out[0], labels[:n]))
        if few_drop > settings.max_accuracy_drop + QUICK_MARGIN_POINTS:
            cand.update(accuracy_drop_pct=few_drop,
                        reason=f"stopped early: accuracy drop {few_drop:.1f} points on the first {n} samples (budget "
                               f"{settings.max_accuracy_drop:g})")
            return cand
    fid = compare_outputs(quick.all_out, run_onnx(path, ctx.data), names=names)
    cand["cosine_min"] = fid.get("cosine_min")
    if settings.min_cosine is not None and (fid.get("cosine_min") or -1.0) < settings.min_cosine:
        cand["reason"] = f"stopped early: cosine_min {fid.get('cosine_min'):.5f} < {settings.min_cosine:g}"
        return cand
    if quick.eval_logits is not None and ctx.eval_data.labels is not None:
        labels = ctx.eval_data.labels
        drop = 100.0 * (top1_accuracy(quick.eval_logits, labels) - top1_accuracy(run_onnx(path, ctx.eval_data)[0],
                                                                                  labels))
        cand["accuracy_drop_pct"] = drop
        if settings.max_accuracy_drop is not None and drop > settings.max_accuracy_drop:
            cand["reason"] = f"stopped early: accuracy drop {drop:.2f} points > {settings.max_accuracy_drop:g}"
            return cand
    if settings.objective == "size" and cand["size_bytes"] >= base_entry["size_bytes"]:
        cand["reason"] = (f"not smaller than the original ({cand['size_bytes']} bytes, original "
                          f"{base_entry['size_bytes']} bytes)")
        return cand
    # within budget: time it beside the baseline, interleaved, on this node
    from compressor.pipeline import settings_block
    from compressor.report import new_report

    base = {"onnx": baseline_onnx, "entry": dict(base_entry)}
    c = {"onnx": path, "entry": model_entry(path, path), "compare": {}}
    # the benchmark's warnings (threads, slower than baseline) belong to this candidate's report; each distinct
    # one is shown once per search, not once per trial
    tctx = dataclasses.replace(ctx, warnings=[], on_warning=None)
    measured = measure(tctx, trial_recipe, base, [c], against="baseline fp32 ONNX (exported once for the search)")
    for w in tctx.warnings:
        if w not in ctx.warnings:
            ctx.warn(w)
    lat = c["entry"]["latency_ms"]
    sp, ci = c["compare"]["speedup"], c["compare"]["speedup_ci95"]
    cand.update(latency_ms_p50=lat["p50"], latency_ms_ci95=_latency_ci(lat), speedup=sp, speedup_ci95=list(ci),
                node=socket.gethostname(), valid=True)
    if c["compare"].get("accuracy_drop_points") is not None:
        cand["accuracy_drop_pct"] = c["compare"]["accuracy_drop_points"]
    cand["cosine_min"] = c["compare"]["fidelity"].get("cosine_min", cand["cosine_min"])
    rep = new_report("")
    rep["baseline"] = base["entry"]
    rep["result"] = c["entry"]
    rep.update({k: c["compare"][k] for k in ("size_ratio", "speedup", "speedup_ci95", "fidelity")})
    rep.update(measured)
    rep["settings"] = settings_block(trial_recipe)
    rep["recipe"] = trial_recipe.to_json()
    steps = built.get("steps") or []
    for st in steps:
        if not st.get("inserted"):
            st["measured"] = {**c["entry"], **c["compare"]}
    rep["steps"] = steps
    for key in ("pruning", "quantization"):
        if key in (built.get("sections") or {}):
            rep[key] = built["sections"][key]
    rep["gates"] = trial_recipe.gates.evaluate(rep)
    rep["warnings"] = list(dict.fromkeys([*(built.get("warnings") or []), *tctx.warnings]))
    if not rep["gates"]["passed"]:  # the benchmark's figures disagree with the early check: not valid
        cand.update(valid=False, reason="quality gate failed on the measured report")
        return cand
    if settings.objective == "latency" and ci[1] < 1.0:  # slower beyond doubt: never the fastest model
        cand.update(valid=False, reason=f"slower than the original (speedup {sp:.2f}, 95% CI [{ci[0]:.3f}, "
                                        f"{ci[1]:.3f}])")
        return cand
    cand["_report"] = rep
    return cand


def _latency_ci(lat: dict[str, Any]) -> list[float]:
    """The 95% interval of the p50 latency (ms): the benchmark's ``p50_ci95`` (bootstrap), else an approximation.

    The approximation, p50 +- 1.96 * 1.2533 * std / sqrt(runs) (the large-sample standard error of a median is
    about 1.2533 times that of the mean), is used only when the benchmark gave no interval.
    """
    if lat.get("p50_ci95"):
        return [float(x) for x in lat["p50_ci95"]]
    import math

    n = max(int(lat.get("runs") or 1), 1)
    half = 1.96 * 1.2533 * float(lat.get("std") or 0.0) / math.sqrt(n)
    return [lat["p50"] - half, lat["p50"] + half]

"""Compression passes, the pass contract, and the one registry.

A pass is ``run(artifact, config, ctx) -> PassResult(artifact, details)``: it takes a
:class:`~compressor.artifact.ModelArtifact`, never changes it, and returns a new one. It
declares which forms it accepts (a PyTorch module, an ONNX graph); the orchestrator in
:mod:`compressor.pipeline` inserts the export step where the form changes and never asks
which pass it runs. Configs are frozen, validated dataclasses that round-trip through JSON.
Adding a pass means one module plus one entry in :func:`_registry`.
(Pattern after Olive's ``olive/passes/olive_pass.py``.)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

from compressor.artifact import ModelArtifact
from compressor.errors import FieldError, UsageError

#: The two forms a model takes between steps.
TORCH = "torch"
ONNX = "onnx"


@dataclass
class PassResult:
    """What a pass produced.

    Attributes:
        artifact: The new model (an ONNX file in the scratch folder, or an in-memory PyTorch module).
        details: Pass-specific report fields (e.g. the ``pruning`` or ``quantization`` section).
    """

    artifact: ModelArtifact
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PassSpec:
    """One registered pass.

    Attributes:
        name: Name used in recipes (``pass = "prune"``) and reports.
        config_cls: Its frozen config dataclass.
        runner: ``"module:function"``, imported on use so that the CLI starts fast.
        accepts: Forms it takes, best first (``"torch"``, ``"onnx"``).
        report_key: Report section that holds its details (None: none).
        advice_when_far: What to try when its result's outputs moved far from the baseline's.
        cause_when_far: The likely cause when they did, for the one-line fidelity warning (a step's
            ``details["cause_when_far"]`` overrides it).
        output_suffix: Default output name ``<input stem>.<suffix>.onnx`` when it is the only step.
        output_form: The form it gives (None: the form it was given).
        check: ``"module:function"`` run before any work, ``check(config, ctx, *, form, has_python_classes,
            artifact)`` (``artifact``: the input model for its first step, else None): raises a UsageError for
            settings this run cannot satisfy (missing data, a form it cannot take, patterns that match nothing).
    """

    name: str
    config_cls: type
    runner: str
    accepts: tuple[str, ...]
    report_key: str | None = None
    advice_when_far: str | None = None
    cause_when_far: str | None = None
    output_suffix: str = "compressed"
    output_form: str | None = None
    check: str | None = None

    def load_check(self) -> Callable[..., None] | None:
        """Import and return the pass's up-front check, if it has one."""
        if self.check is None:
            return None
        import importlib

        module, _, fn = self.check.partition(":")
        return getattr(importlib.import_module(module), fn)

    def load_runner(self) -> Callable[..., PassResult]:
        """Import and return the pass's ``run(artifact, config, ctx)`` function."""
        import importlib

        module, _, fn = self.runner.partition(":")
        return getattr(importlib.import_module(module), fn)


def config_to_json(config: Any) -> dict[str, Any]:
    """A config dataclass as a JSON-ready dict (tuples become lists)."""
    return _lists(dataclasses.asdict(config))


def _lists(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _lists(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_lists(v) for v in x]
    return x


def config_from_json(cls: type, data: dict[str, Any]) -> Any:
    """Build (and so validate) a config of class ``cls`` from a dict.

    Raises:
        FieldError: Unknown keys (``field`` is the first unknown key).
        UsageError: Invalid values (a :class:`FieldError` names the field).
    """
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise FieldError(unknown[0], f"{{name}} is not a setting of {cls.__name__.removesuffix('Config').lower()}; "
                                     f"valid settings are {', '.join(sorted(names))}")
    return cls(**data)


def _registry() -> dict[str, PassSpec]:
    from compressor.passes.configs import ExportConfig, PruneConfig, QuantizeConfig

    specs = [
        PassSpec("export", ExportConfig, "compressor.export:run_export", accepts=(TORCH,), output_suffix="exported",
                 output_form=ONNX),
        PassSpec("prune", PruneConfig, "compressor.passes.prune:run_prune", accepts=(TORCH, ONNX),
                 report_key="pruning", advice_when_far="use --recover with --calibration-data, or a lower --ratio",
                 cause_when_far="the removed channels or weights carried signal the rest of the model needs",
                 output_suffix="pruned", check="compressor.passes.prune:check_prune"),
        PassSpec("quantize", QuantizeConfig, "compressor.passes.quantize:run_quantize", accepts=(ONNX,),
                 report_key="quantization",
                 advice_when_far="keep sensitive layers in float with --exclude, or try --mode dynamic or "
                                 "--calibration-method entropy",
                 cause_when_far="int8 rounding or saturation of weights or activations with a wide, outlier-heavy "
                                "range (static int8: also calibration data unlike these inputs)",
                 output_suffix="quantized", check="compressor.passes.quantize:check_quantize"),
    ]
    return {s.name: s for s in specs}


def get_pass(name: str) -> PassSpec:
    """The registered pass called ``name``.

    Raises:
        UsageError: No such pass; the message lists the valid names.
    """
    reg = _registry()
    if name not in reg:
        raise UsageError(f"unknown pass '{name}'; valid passes: {', '.join(sorted(reg))}")
    return reg[name]

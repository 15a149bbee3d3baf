"""Typed, validated configs of the passes (no heavy imports: the CLI builds these)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, NoReturn

from compressor.errors import FieldError, UsageError

EXPORTERS = ("auto", "dynamo", "torchscript")


def _bad(cls: type, field: str, template: str) -> NoReturn:
    """Raise a :class:`FieldError` for ``field`` of config class ``cls`` (``{name}`` in ``template``)."""
    raise FieldError(field, template, flag=getattr(cls, "FLAGS", {}).get(field))


@dataclass(frozen=True)
class ExportConfig:
    """Settings of the export step (PyTorch -> ONNX, checked against PyTorch).

    Attributes:
        opset: ONNX opset version (13-23; the dynamo exporter needs 18 or later).
        atol: Absolute tolerance of the parity check: pass when |onnx - torch| <= atol + rtol * |torch|.
        rtol: Relative tolerance of the parity check.
        exporter: ``"auto"`` (dynamo, then the TorchScript-based exporter), ``"dynamo"`` or ``"torchscript"``.
    """

    opset: int = 18
    atol: float = 1e-4
    rtol: float = 1e-3
    exporter: str = "auto"

    def __post_init__(self) -> None:
        """Validate.

        Raises:
            FieldError: An unknown exporter, an opset outside 13-23, or a negative tolerance.
        """
        if self.exporter not in EXPORTERS:
            _bad(type(self), "exporter", f"{{name}} '{self.exporter}' is unknown; use auto, dynamo or torchscript")
        if not (isinstance(self.opset, int) and 13 <= self.opset <= 23):
            _bad(type(self), "opset", f"{{name}} must be an integer from 13 to 23, got {self.opset}")
        for name in ("atol", "rtol"):
            if not (isinstance(getattr(self, name), (int, float)) and getattr(self, name) >= 0):
                _bad(type(self), name, f"{{name}} must be a number >= 0, got {getattr(self, name)}")

PRUNE_METHODS = ("structured", "unstructured")
PRUNE_CRITERIA = ("l1", "l2", "fpgm", "bn-scale", "taylor", "random")
QUANT_SCHEMES = ("symmetric", "asymmetric")
QUANT_MODES = ("auto", "dynamic", "static")
QUANT_TYPES = ("int8", "uint8")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
PRECISIONS = ("int8", "int4", "fp16")


@dataclass(frozen=True)
class PruneConfig:
    """Settings of the prune pass.

    Attributes:
        method: ``"structured"`` removes whole output channels / hidden units (Torch-Pruning
            dependency graph); ``"unstructured"`` zeroes single weights (torch.nn.utils.prune).
        ratio: Structured: fraction of channels removed in each prunable layer (or overall with
            ``global_pruning``); each layer keeps the feasible channel count nearest to it (multiples of
            GroupNorm groups, grouped convolutions and ``round_to``) and the report gives the ratio removed per
            layer. Unstructured: target sparsity over all weight matrices (Conv, Linear, embedding, recurrent and
            attention projections). In (0, 1).
        criterion: Importance criterion: ``l1`` (L1 norm, Li et al. 2017), ``l2``, ``fpgm``
            (geometric median, He et al. 2019), ``bn-scale`` (BatchNorm gamma, network slimming,
            Liu et al. 2017), ``taylor`` (first-order Taylor, Molchanov et al. 2019; needs
            calibration data), ``random`` (a baseline). Unstructured pruning supports ``l1``.
        global_pruning: Rank channels across layers instead of a uniform per-layer ratio.
        exclude: Module-name globs never pruned at their outputs (each must match a module).
        layer_ratios: Module-name glob -> ratio overriding ``ratio`` (from a TOML/JSON file).
        round_to: Keep channel counts multiples of this number (None: no rounding).
        steps: Iterative pruning in this many steps up to ``ratio``.
        heads: Fraction of attention heads removed (nn.MultiheadAttention, BERT-style attention).
        max_layer_ratio: No layer loses more than this fraction of its channels (never emptied); unstructured:
            no weight tensor loses more than this fraction of its weights.
        recover: Fine-tune the pruned model to match the original (knowledge distillation).
        recover_steps: Optimiser steps of recovery.
        lr: Recovery learning rate (Adam).
        recover_batch_size: Recovery batch size (``--recover-batch-size``; ``--batch-size`` is its deprecated spelling).
        seed: Seed of recovery (shuffling, init).
        temperature: Distillation temperature for classifiers (Hinton et al. 2015).
    """

    method: str = "structured"
    ratio: float = 0.5
    criterion: str = "l1"
    global_pruning: bool = False
    exclude: tuple[str, ...] = ()
    layer_ratios: tuple[tuple[str, float], ...] = ()
    round_to: int | None = None
    steps: int = 1
    heads: float | None = None
    max_layer_ratio: float = 0.9
    recover: bool = False
    recover_steps: int = 300
    lr: float = 1e-3
    recover_batch_size: int = 64
    seed: int = 0
    temperature: float = 4.0

    FLAGS: ClassVar[dict[str, str]] = {"global_pruning": "--global", "temperature": "the distillation temperature"}

    def __post_init__(self) -> None:
        """Validate.

        Raises:
            UsageError: Unknown method or criterion, a ratio outside (0, 1), or bad numbers.
        """
        object.__setattr__(self, "exclude", tuple(self.exclude))
        object.__setattr__(self, "layer_ratios", _layer_ratios(self.layer_ratios))
        cls = type(self)
        if self.method not in PRUNE_METHODS:
            _bad(cls, "method", f"{{name}} '{self.method}' is unknown; use one of {', '.join(PRUNE_METHODS)}")
        if not (isinstance(self.ratio, (int, float)) and 0.0 < float(self.ratio) < 1.0):
            _bad(cls, "ratio", f"{{name}} must be between 0 and 1 (exclusive), got {self.ratio}; e.g. 0.5")
        if self.criterion not in PRUNE_CRITERIA:
            _bad(cls, "criterion", f"{{name}} '{self.criterion}' is unknown; use one of {', '.join(PRUNE_CRITERIA)}")
        if self.method == "unstructured" and self.criterion != "l1":
            _bad(cls, "criterion", "unstructured pruning ranks single weights by magnitude: set {name} to l1")
        for name, r in self.layer_ratios:
            if not 0.0 <= r < 1.0:
                _bad(cls, "layer_ratios", f"{{name}}: the ratio for '{name}' must be in [0, 1), got {r}")
        if self.heads is not None and not 0.0 < self.heads < 1.0:
            _bad(cls, "heads", f"{{name}} must be between 0 and 1 (exclusive), got {self.heads}")
        if self.round_to is not None and self.round_to < 1:
            _bad(cls, "round_to", f"{{name}} must be a positive integer, got {self.round_to}")
        for name in ("steps", "recover_steps", "recover_batch_size"):
            if not (isinstance(getattr(self, name), int) and getattr(self, name) >= 1):
                _bad(cls, name, f"{{name}} must be an integer of at least 1, got {getattr(self, name)}")
        if not 0.0 < self.max_layer_ratio < 1.0:
            _bad(cls, "max_layer_ratio", f"{{name}} must be in (0, 1), got {self.max_layer_ratio}")
        for name in ("lr", "temperature"):
            if not getattr(self, name) > 0:
                _bad(cls, name, f"{{name}} must be positive, got {getattr(self, name)}")
        if self.method == "unstructured" and (self.heads or self.global_pruning or self.round_to or self.layer_ratios):
            raise UsageError("--heads, --global, --round-to and layer ratios apply to structured pruning")


def _layer_ratios(value: object) -> tuple[tuple[str, float], ...]:
    """Layer ratios as pairs, from pairs (flags) or a ``{glob: ratio}`` table (recipes)."""
    items = value.items() if isinstance(value, dict) else value
    return tuple((str(k), float(v)) for k, v in items)


@dataclass(frozen=True)
class QuantizeConfig:
    """Settings of the quantize pass (ONNX Runtime quantization tool).

    Attributes:
        mode: ``"dynamic"`` (int8 weights stored, uint8 activations quantized at run time),
            ``"static"`` (QDQ format; activation ranges from calibration data), or ``"auto"``
            (static for graphs with convolutions when calibration data is given, else dynamic,
            following ONNX Runtime's guidance: dynamic for transformers, static for CNNs).
        scheme: ``"symmetric"`` (zero point 0) or ``"asymmetric"`` (zero points) for weights and
            activations; None lets compressor choose for this CPU.
        weight_scheme: Overrides ``scheme`` for weights.
        activation_scheme: Overrides ``scheme`` for activations (static only).
        weight_type: ``"int8"`` or ``"uint8"``; None follows the weight scheme.
        activation_type: ``"int8"`` or ``"uint8"`` (static only); None follows the scheme.
        per_channel: One scale (and zero point) per output channel instead of per tensor.
        reduce_range: 7-bit weights; None lets compressor decide (on for u8 x s8 on CPUs
            without VNNI, where 16-bit intermediates can saturate).
        calibration_method: ``"minmax"``, ``"entropy"`` or ``"percentile"`` (static only).
        percentile: Percentile kept by ``"percentile"`` calibration, in (90, 100].
        calibration_samples: Use at most this many calibration samples (None: all).
        precision: ``"int8"``; ``"int4"`` (weight-only, blockwise, ONNX Runtime MatMulNBits, embedding
            tables too; asymmetric unless ``scheme`` says symmetric); ``"fp16"`` (float16 weights and compute).
        block_size: int4 block size along the reduction axis (power of two, >= 16).
        exclude: Node-name globs kept in float (each must match a node).
        op_types: Quantize only these op types (e.g. ``("MatMul",)``); empty: the tool's default.
        keep_io_types: fp16: keep float32 model inputs and outputs.
        rewrites: Apply the result-preserving graph rewrites of :mod:`compressor.passes.rewrites`
            before dynamic or int4 quantization.
        smooth: Dynamic int8 with calibration data: SmoothQuant activation smoothing.
        smooth_alpha: SmoothQuant migration strength in [0, 1].
        format: int8 kernel format: ``"auto"`` (static: time every format valid for this CPU and keep the
            fastest within fidelity tolerance, see :mod:`compressor.passes.kernel_formats`) or one of
            ``qdq-u8s8``, ``qdq-s8s8``, ``qoperator-u8s8``, ``qoperator-s8s8`` (static) and
            ``dynamic-u8s8``, ``dynamic-u8u8`` (dynamic).
        fallback: Accuracy-aware fallback (int8 only): return the most sensitive layers to float one at a time
            until the run's accuracy budget holds (its ``max_accuracy_drop`` / ``min_cosine`` gates); see
            :func:`compressor.sensitivity.accuracy_aware_fallback`.
    """

    mode: str = "auto"
    scheme: str | None = None
    weight_scheme: str | None = None
    activation_scheme: str | None = None
    weight_type: str | None = None
    activation_type: str | None = None
    per_channel: bool = True
    reduce_range: bool | None = None
    calibration_method: str = "minmax"
    percentile: float = 99.999
    calibration_samples: int | None = None
    precision: str = "int8"
    block_size: int = 16
    exclude: tuple[str, ...] = ()
    op_types: tuple[str, ...] = ()
    keep_io_types: bool = True
    rewrites: bool = True
    smooth: bool = True
    smooth_alpha: float = 0.7
    format: str = "auto"
    fallback: bool = False

    def __post_init__(self) -> None:
        """Validate each field and refuse combinations the runtime cannot run.

        Raises:
            UsageError: Unknown values, or a combination ONNX Runtime cannot run (with the reason).
        """
        cls = type(self)
        if self.mode not in QUANT_MODES:
            _bad(cls, "mode", f"{{name}} '{self.mode}' is unknown; use one of {', '.join(QUANT_MODES)}")
        for name in ("scheme", "weight_scheme", "activation_scheme"):
            value = getattr(self, name)
            if value is not None and value not in QUANT_SCHEMES:
                _bad(cls, name, f"{{name}} '{value}' is unknown; use one of {', '.join(QUANT_SCHEMES)}")
        for name in ("weight_type", "activation_type"):
            value = getattr(self, name)
            if value is not None and value not in QUANT_TYPES:
                _bad(cls, name, f"{{name}} '{value}' is unknown; use one of {', '.join(QUANT_TYPES)}")
        if self.calibration_method not in CALIBRATION_METHODS:
            _bad(cls, "calibration_method",
                 f"{{name}} '{self.calibration_method}' is unknown; use one of {', '.join(CALIBRATION_METHODS)}")
        if not 90.0 < self.percentile <= 100.0:
            _bad(cls, "percentile", f"{{name}} must be in (90, 100], got {self.percentile}; e.g. 99.999")
        if self.calibration_samples is not None and self.calibration_samples < 1:
            _bad(cls, "calibration_samples", f"{{name}} must be at least 1, got {self.calibration_samples}")
        object.__setattr__(self, "exclude", tuple(self.exclude))  # JSON gives lists
        object.__setattr__(self, "op_types", tuple(self.op_types))
        if not 0.0 <= self.smooth_alpha <= 1.0:
            _bad(cls, "smooth_alpha", f"{{name}} must be in [0, 1], got {self.smooth_alpha}")
        from compressor.passes.kernel_formats import FORMAT_CHOICES, FORMATS

        if self.format not in FORMAT_CHOICES:
            _bad(cls, "format", f"{{name}} '{self.format}' is unknown; use one of {', '.join(FORMAT_CHOICES)}")
        if self.format != "auto":
            fmt = FORMATS[self.format]
            kind = "dynamic" if fmt.quant_format == "dynamic" else "static"
            if self.mode not in ("auto", kind):
                _bad(cls, "format", f"{{name}} {self.format} is a {kind} format; it does not go with --mode {self.mode}")
            clash = [flag for flag, value, want in (("--activation-type", self.activation_type, fmt.activation_type),
                                                    ("--weight-type", self.weight_type, fmt.weight_type))
                     if value is not None and value != want]
            if clash:
                _bad(cls, "format", f"{{name}} {self.format} fixes the activation and weight types; drop "
                     f"{' and '.join(clash)}")
        if self.precision not in PRECISIONS:
            _bad(cls, "precision", f"{{name}} '{self.precision}' is unknown; use one of {', '.join(PRECISIONS)}")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            _bad(cls, "block_size", f"{{name}} must be a power of two of at least 16, got {self.block_size}")
        if self.precision != "int8":
            int8_only = {"--mode": self.mode != "auto", "--format": self.format != "auto", "--fallback": self.fallback,
                         "--activation-scheme": self.activation_scheme,
                         "--activation-type": self.activation_type, "--weight-type": self.weight_type}
            if self.precision == "fp16":
                int8_only.update({"--scheme": self.scheme, "--weight-scheme": self.weight_scheme})
            given = [k for k, v in int8_only.items() if v]
            if given:
                raise UsageError(
                    f"{', '.join(given)} {'applies' if len(given) == 1 else 'apply'} only to int8 quantization, not "
                    f"--precision {self.precision}; drop {'it' if len(given) == 1 else 'them'}"
                )
        if self.mode == "dynamic":
            if self.activation_type == "int8" or self.activation_scheme == "symmetric":
                raise UsageError(
                    "dynamic quantization computes uint8 asymmetric activations at run time (DynamicQuantizeLinear); "
                    "int8 or symmetric activations need --mode static with --calibration-data"
                )

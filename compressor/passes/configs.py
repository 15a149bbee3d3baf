"""Typed, validated configs of the passes (no heavy imports: the CLI builds these)."""

from __future__ import annotations

from dataclasses import dataclass

from compressor.errors import UsageError

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
            ``global_pruning``). Unstructured: target sparsity over all Conv/Linear weights. In (0, 1).
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
        max_layer_ratio: No layer loses more than this fraction of its channels (never emptied).
        recover: Fine-tune the pruned model to match the original (knowledge distillation).
        recover_steps: Optimiser steps of recovery.
        lr: Recovery learning rate (Adam).
        batch_size: Recovery batch size.
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
    batch_size: int = 64
    seed: int = 0
    temperature: float = 4.0

    def __post_init__(self) -> None:
        """Validate.

        Raises:
            UsageError: Unknown method or criterion, a ratio outside (0, 1), or bad numbers.
        """
        object.__setattr__(self, "exclude", tuple(self.exclude))
        object.__setattr__(self, "layer_ratios", tuple((str(k), float(v)) for k, v in self.layer_ratios))
        if self.method not in PRUNE_METHODS:
            raise UsageError(f"--method '{self.method}' is unknown; use one of {', '.join(PRUNE_METHODS)}")
        if not (isinstance(self.ratio, (int, float)) and 0.0 < float(self.ratio) < 1.0):
            raise UsageError(f"--ratio must be between 0 and 1 (exclusive), got {self.ratio}; e.g. --ratio 0.5")
        if self.criterion not in PRUNE_CRITERIA:
            raise UsageError(f"--criterion '{self.criterion}' is unknown; use one of {', '.join(PRUNE_CRITERIA)}")
        if self.method == "unstructured" and self.criterion != "l1":
            raise UsageError("unstructured pruning ranks single weights by magnitude: use --criterion l1")
        for name, r in self.layer_ratios:
            if not 0.0 <= r < 1.0:
                raise UsageError(f"layer ratio for '{name}' must be in [0, 1), got {r}")
        if self.heads is not None and not 0.0 < self.heads < 1.0:
            raise UsageError(f"--heads must be between 0 and 1 (exclusive), got {self.heads}")
        if self.round_to is not None and self.round_to < 1:
            raise UsageError(f"--round-to must be a positive integer, got {self.round_to}")
        if self.steps < 1 or self.recover_steps < 1 or self.batch_size < 1:
            raise UsageError("--steps, --recover-steps and --batch-size must be at least 1")
        if not 0.0 < self.max_layer_ratio < 1.0:
            raise UsageError(f"--max-layer-ratio must be in (0, 1), got {self.max_layer_ratio}")
        if self.lr <= 0 or self.temperature <= 0:
            raise UsageError("--lr and the distillation temperature must be positive")
        if self.method == "unstructured" and (self.heads or self.global_pruning or self.round_to or self.layer_ratios):
            raise UsageError("--heads, --global, --round-to and layer ratios apply to structured pruning")


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

    def __post_init__(self) -> None:
        """Validate each field and refuse combinations the runtime cannot run.

        Raises:
            UsageError: Unknown values, or a combination ONNX Runtime cannot run (with the reason).
        """
        if self.mode not in QUANT_MODES:
            raise UsageError(f"--mode '{self.mode}' is unknown; use one of {', '.join(QUANT_MODES)}")
        for flag, value in (("--scheme", self.scheme), ("--weight-scheme", self.weight_scheme),
                            ("--activation-scheme", self.activation_scheme)):
            if value is not None and value not in QUANT_SCHEMES:
                raise UsageError(f"{flag} '{value}' is unknown; use one of {', '.join(QUANT_SCHEMES)}")
        for flag, value in (("--weight-type", self.weight_type), ("--activation-type", self.activation_type)):
            if value is not None and value not in QUANT_TYPES:
                raise UsageError(f"{flag} '{value}' is unknown; use one of {', '.join(QUANT_TYPES)}")
        if self.calibration_method not in CALIBRATION_METHODS:
            raise UsageError(
                f"--calibration-method '{self.calibration_method}' is unknown; use one of {', '.join(CALIBRATION_METHODS)}"
            )
        if not 90.0 < self.percentile <= 100.0:
            raise UsageError(f"--percentile must be in (90, 100], got {self.percentile}; e.g. 99.999")
        if self.calibration_samples is not None and self.calibration_samples < 1:
            raise UsageError(f"--calibration-samples must be at least 1, got {self.calibration_samples}")
        object.__setattr__(self, "exclude", tuple(self.exclude))  # JSON gives lists
        object.__setattr__(self, "op_types", tuple(self.op_types))
        if not 0.0 <= self.smooth_alpha <= 1.0:
            raise UsageError(f"--smooth-alpha must be in [0, 1], got {self.smooth_alpha}")
        if self.precision not in PRECISIONS:
            raise UsageError(f"--precision '{self.precision}' is unknown; use one of {', '.join(PRECISIONS)}")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise UsageError(f"--block-size must be a power of two of at least 16, got {self.block_size}")
        if self.precision != "int8":
            int8_only = {"--mode": self.mode != "auto", "--activation-scheme": self.activation_scheme,
                         "--activation-type": self.activation_type, "--weight-type": self.weight_type}
            if self.precision == "fp16":
                int8_only.update({"--scheme": self.scheme, "--weight-scheme": self.weight_scheme})
            given = [k for k, v in int8_only.items() if v]
            if given:
                raise UsageError(
                    f"{', '.join(given)} only affect int8 quantization, not --precision {self.precision}; drop them"
                )
        if self.mode == "dynamic":
            if self.activation_type == "int8" or self.activation_scheme == "symmetric":
                raise UsageError(
                    "dynamic quantization computes uint8 asymmetric activations at run time (DynamicQuantizeLinear); "
                    "int8 or symmetric activations need --mode static with --calibration-data"
                )

"""Typed, validated configs of the passes (no heavy imports: the CLI builds these)."""

from __future__ import annotations

from dataclasses import dataclass

from compressor.errors import UsageError

PRUNE_METHODS = ("structured", "unstructured")
PRUNE_CRITERIA = ("l1",)
QUANT_SCHEMES = ("symmetric", "asymmetric")
QUANT_MODES = ("dynamic",)


@dataclass(frozen=True)
class PruneConfig:
    """Settings of the prune pass.

    Attributes:
        method: ``"structured"`` removes whole output channels / hidden units (Torch-Pruning
            dependency graph); ``"unstructured"`` zeroes single weights (torch.nn.utils.prune).
        ratio: Structured: fraction of channels removed in each prunable layer. Unstructured:
            target sparsity over all Conv/Linear weights. In (0, 1).
        criterion: Importance criterion; ``"l1"`` is the L1 norm (Li et al. 2017 for
            structured; weight magnitude for unstructured).
    """

    method: str = "structured"
    ratio: float = 0.5
    criterion: str = "l1"

    def __post_init__(self) -> None:
        """Validate.

        Raises:
            UsageError: Unknown method or criterion, or a ratio outside (0, 1).
        """
        if self.method not in PRUNE_METHODS:
            raise UsageError(f"--method '{self.method}' is unknown; use one of {', '.join(PRUNE_METHODS)}")
        if not (isinstance(self.ratio, (int, float)) and 0.0 < float(self.ratio) < 1.0):
            raise UsageError(f"--ratio must be between 0 and 1 (exclusive), got {self.ratio}; e.g. --ratio 0.5")
        if self.criterion not in PRUNE_CRITERIA:
            raise UsageError(f"--criterion '{self.criterion}' is unknown; use one of {', '.join(PRUNE_CRITERIA)}")


@dataclass(frozen=True)
class QuantizeConfig:
    """Settings of the quantize pass (ONNX Runtime dynamic quantization).

    Attributes:
        mode: ``"dynamic"``: int8 weights stored, activations quantized at run time.
        scheme: ``"symmetric"`` (int8 weights, zero point 0), ``"asymmetric"`` (uint8 weights
            with zero points), or None to let compressor choose for this CPU.
        per_channel: One scale (and zero point) per output channel instead of per tensor.
        reduce_range: Quantize weights to 7 bits; None lets compressor decide (on for u8 x s8
            on CPUs without VNNI, where 16-bit intermediates can saturate).
    """

    mode: str = "dynamic"
    scheme: str | None = None
    per_channel: bool = True
    reduce_range: bool | None = None

    def __post_init__(self) -> None:
        """Validate.

        Raises:
            UsageError: Unknown mode or scheme.
        """
        if self.mode not in QUANT_MODES:
            raise UsageError(f"--mode '{self.mode}' is unknown; use one of {', '.join(QUANT_MODES)}")
        if self.scheme is not None and self.scheme not in QUANT_SCHEMES:
            raise UsageError(f"--scheme '{self.scheme}' is unknown; use one of {', '.join(QUANT_SCHEMES)}")

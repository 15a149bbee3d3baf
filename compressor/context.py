"""What a pass gets to work with: the loaded model, its inputs, a scratch folder, settings."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compressor.artifact import IOSpec, ModelArtifact
from compressor.inputs import SampleData


@dataclass(frozen=True)
class ExportSettings:
    """ONNX export settings shared by every command.

    Attributes:
        opset: ONNX opset version.
        atol: Absolute tolerance of export parity checks.
        rtol: Relative tolerance of export parity checks.
        exporter: ``"auto"``, ``"dynamo"`` or ``"torchscript"``.
    """

    opset: int = 18
    atol: float = 1e-4
    rtol: float = 1e-3
    exporter: str = "auto"


@dataclass
class RunContext:
    """State shared by the steps of one command.

    Attributes:
        artifact: The loaded input model (never modified).
        io: Input spec used for export and runs.
        data: Inputs every check runs on (calibration data, eval inputs, or seeded random).
        workdir: Scratch folder beside the output; removed at the end.
        baseline_onnx: fp32 ONNX baseline (the input itself for ONNX inputs).
        calibration: Calibration inputs from ``--calibration-data`` (or the random opt-in), else None.
        eval_data: ``--eval-data`` inputs plus labels, else None.
        train_data: ``--train-data`` inputs plus labels (pruning recovery), else None.
        torch_result: The compressed PyTorch model when the pass made one (for ``--save-torch``).
        export: Export settings.
        steps: Report entries, one per step that ran.
        warnings: Warnings shown on stderr and stored in the report.
        quiet: Do not print warnings as they happen.
    """

    artifact: ModelArtifact
    io: IOSpec
    data: SampleData
    workdir: Path
    baseline_onnx: Path | None = None
    calibration: SampleData | None = None
    eval_data: SampleData | None = None
    train_data: SampleData | None = None
    torch_result: Any = None
    export: ExportSettings = field(default_factory=ExportSettings)
    steps: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    quiet: bool = False

    def warn(self, message: str) -> None:
        """Record a warning and print it to stderr."""
        self.warnings.append(message)
        if not self.quiet:
            print(f"warning: {message}", file=sys.stderr)

"""What a pass gets to work with besides its model: inputs, data, a scratch folder, and callbacks.

Library code never prints. Warnings and progress go to callbacks on the :class:`RunContext`;
the command-line interface renders them (warnings and progress on stderr). A library user
can leave the callbacks unset and read ``ctx.warnings`` afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from compressor.artifact import IOSpec
from compressor.inputs import SampleData


@dataclass(frozen=True)
class Progress:
    """One progress event of a long step.

    Attributes:
        task: What is running, e.g. ``"recovery"`` or ``"export"``.
        done: Units finished so far (0 at the start of the task).
        total: Units in all (None when unknown).
        info: Extra figures to show, e.g. ``{"loss": 0.12}``.
    """

    task: str
    done: int
    total: int | None = None
    info: dict[str, float] = field(default_factory=dict)


@dataclass
class RunContext:
    """State shared by the steps of one run; passes take the model itself as an argument.

    Attributes:
        io: Input spec of the model (the same for every step: passes keep the interface).
        data: Inputs every check runs on (eval inputs, calibration data, or seeded random).
        workdir: Scratch folder beside the output; removed at the end.
        calibration: Calibration inputs from ``calibration_data`` (or the random opt-in), else None.
        eval_data: ``eval_data`` inputs plus labels, else None.
        bench_batch_size: The benchmark's batch size (``--batch-size``, else the input shape's, else 1), the
            shape at which passes time their candidates.
        train_data: ``train_data`` inputs plus labels (pruning recovery), else None.
        warnings: Every warning of the run, in order (also stored in the report).
        on_warning: Called with each warning as it happens (the CLI prints it on stderr).
        on_progress: Called with :class:`Progress` events of long steps (the CLI draws them on stderr).
        input_notes: Facts about the run's inputs for the report's ``input`` entry: the default sequence
            length used, the ranges of generated integer inputs, dtype casts of the data.
        budget: The run's quality gates (:class:`~compressor.gates.Gates`), for passes that search within them
            (accuracy-aware fallback of the quantize pass); None outside a recipe run.
    """

    io: IOSpec
    data: SampleData
    workdir: Path
    calibration: SampleData | None = None
    eval_data: SampleData | None = None
    bench_batch_size: int = 1
    train_data: SampleData | None = None
    warnings: list[str] = field(default_factory=list)
    on_warning: Callable[[str], None] | None = None
    on_progress: Callable[[Progress], None] | None = None
    input_notes: dict[str, Any] = field(default_factory=dict)
    budget: Any = None

    def batch_size(self, want: int) -> int:
        """The batch size to feed the model: its fixed batch when its inputs fix one (case R10), else ``want``."""
        from compressor.inputs import fixed_batch_size

        return fixed_batch_size(self.io) or want

    def warn(self, message: str) -> None:
        """Record a warning and pass it to ``on_warning``."""
        self.warnings.append(message)
        if self.on_warning is not None:
            self.on_warning(message)

    def progress(self, task: str, done: int, total: int | None = None, **info: Any) -> None:
        """Report progress of a long step to ``on_progress`` (no-op without a callback)."""
        if self.on_progress is not None:
            self.on_progress(Progress(task, done, total, {k: float(v) for k, v in info.items()}))

"""The error tree of compressor and the one table that maps it to exit codes.

Every error message is one line that says what is wrong and what to do about it. The CLI
entry point is the only place that turns an error into an exit code.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_STEP_FAILED = 1
EXIT_USAGE = 2
EXIT_GATE_FAILED = 3


class CompressorError(Exception):
    """Base class of every error compressor raises on purpose.

    Attributes:
        exit_code: Process exit code the CLI uses for this error.
    """

    exit_code: int = EXIT_STEP_FAILED


class UsageError(CompressorError):
    """Bad usage or bad input: missing file, bad flag value, shapes that do not fit (exit 2)."""

    exit_code = EXIT_USAGE


class UnknownFormatError(UsageError):
    """The file's content is not a model format compressor can read (exit 2)."""


class UntrustedPickleError(UsageError):
    """A pickle needs classes outside ``torch.nn`` and ``--trust-pickle`` was not given (exit 2)."""


class UnsupportedModelError(UsageError):
    """The model cannot go through the requested pass (exit 2)."""


class StepFailedError(CompressorError):
    """A pipeline step failed on valid input (exit 1)."""

    exit_code = EXIT_STEP_FAILED


class ExportError(StepFailedError):
    """Both ONNX exporters failed or produced outputs that differ from PyTorch (exit 1)."""


class ParityError(StepFailedError):
    """The exported or compressed model's outputs differ from the source beyond tolerance."""


class QuantizationError(StepFailedError):
    """ONNX Runtime's quantization tool failed or produced a model that does not run (exit 1)."""


class PruningError(StepFailedError):
    """Pruning failed or removed nothing (exit 1)."""


class SessionError(StepFailedError):
    """An ONNX Runtime inference session could not be created or run (exit 1)."""


class GateFailedError(CompressorError):
    """A quality gate failed; outputs were still written (exit 3)."""

    exit_code = EXIT_GATE_FAILED

"""The error tree of compressor and the one table that maps it to exit codes.

Every error message is one line that says what is wrong and what to do about it. The CLI
entry point is the only place that turns an error into an exit code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

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


class FieldError(UsageError):
    """A setting has a bad value (exit 2). The message names the setting where its value came from.

    The message is a template with ``{name}``: the command-line flag by default (``--ratio``), or the
    recipe field (``steps[1].ratio in recipe.toml``) when the value came from a file.

    Attributes:
        field: The config field, e.g. ``"ratio"``.
        template: The message with ``{name}`` where the setting's name goes.
        flag: The command-line flag of the field.
    """

    def __init__(self, field: str, template: str, *, flag: str | None = None) -> None:
        self.field = field
        self.template = template
        self.flag = flag or "--" + field.replace("_", "-")
        super().__init__(template.format(name=self.flag))

    def named(self, name: str) -> FieldError:
        """The same error with the setting called ``name`` (e.g. a recipe field)."""
        return FieldError(self.field, self.template, flag=name)


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


#: Exit code of a stop the user asked for (130 Ctrl-C, 143 SIGTERM), recorded by the CLI's signal handlers, so that
#: library code which catches broad errors can tell an interrupt that a library wrapped in its own error.
STOP_REQUESTED: list[int] = []


def stop_requested() -> BaseException | None:
    """The interrupt to raise when the user stopped the run (None otherwise)."""
    if not STOP_REQUESTED:
        return None
    return KeyboardInterrupt() if STOP_REQUESTED[-1] == 130 else SystemExit(STOP_REQUESTED[-1])


#: Depth of :func:`stop_deferred` blocks now running; the CLI's signal handlers only record a stop while it is > 0.
DEFERRING: list[int] = []


@contextlib.contextmanager
def stop_deferred() -> Iterator[None]:
    """Run a short block that must not be cut in two (files and records that go together).

    A Ctrl-C or SIGTERM during the block is recorded by the CLI's handlers (see ``compressor.cli.app.main``), not
    raised there; at the end of the block any stop the user asked for is raised (KeyboardInterrupt, or SystemExit
    with 143). Without those handlers (library use) Python raises KeyboardInterrupt where it lands, as usual.

    Raises:
        KeyboardInterrupt, SystemExit: A stop was requested before or during the block (raised at its end).
    """
    DEFERRING.append(1)
    try:
        yield
    finally:
        DEFERRING.pop()
    stop = stop_requested() if not DEFERRING else None
    if stop is not None:
        raise stop

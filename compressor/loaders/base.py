"""What every loader offers, and the load settings they share.

A loader knows one input kind: how to recognise it from the file's bytes (``sniff``), how to
load it (``load``), what inputs the file records (``io_spec``) and which example inputs
suit it (``example_inputs``). (Pattern after Olive's ``olive/model/handler/``: one handler
class per model type, each with ``load_model`` and ``io_config``.)
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from compressor.artifact import IOSpec, ModelArtifact, ModelFormat

if TYPE_CHECKING:
    from compressor.inputs import SampleData


@dataclass(frozen=True)
class LoadOptions:
    """How to load a PyTorch file.

    Attributes:
        trust_pickle: Allow arbitrary classes in a pickle (runs code from the file).
        model_class: ``"package.module:ClassName"`` for a state_dict file.
        model_kwargs: Keyword arguments for ``model_class`` (from ``--model-kwargs`` JSON).
        task: Hugging Face folders: the head to load (``--task``, e.g. ``"sequence-classification"``); None
            for the one the folder's ``architectures`` names.
        pooling: Hugging Face folders: ``--pooling`` (``mean``, ``cls``, ``max`` or ``none``); None for the
            sentence-transformers folder's own pooling (none for other folders).
    """

    trust_pickle: bool = False
    model_class: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    task: str | None = None
    pooling: str | None = None


class Loader(abc.ABC):
    """One input kind: sniff, load, IO spec, example inputs.

    Attributes:
        formats: The :class:`ModelFormat` values ``load`` can return; the first is the one
            :func:`compressor.loaders.detect_format` reports once ``sniff`` matched (a torch.save
            file sniffs as ``TORCH_MODULE`` and loads as ``TORCH_MODULE`` or ``STATE_DICT``).
        description: How the unknown-format error names this kind, e.g. ``"a torch.export .pt2"``.
        takes_files: False for a kind that is only ever a folder (left out of the unknown-file error).
    """

    formats: ClassVar[tuple[ModelFormat, ...]]
    description: ClassVar[str]
    takes_files: ClassVar[bool] = True

    @property
    def name(self) -> str:
        """Registry name: the value of the first format, e.g. ``"onnx"``."""
        return self.formats[0].value

    @abc.abstractmethod
    def sniff(self, path: Path, head_bytes: bytes, zip_names: tuple[str, ...] | None) -> bool:
        """True when the file's content is this kind; never looks at the extension, never raises.

        Args:
            path: Model file (exists, is a file, is readable).
            head_bytes: The first :data:`compressor.loaders.HEAD_BYTES` bytes of the file (fewer
                when the file is shorter).
            zip_names: Member names when the file is a zip archive, else None.
        """

    def sniff_folder(self, path: Path) -> bool:
        """True when the folder ``path`` is this kind (by its content); most kinds are files: False."""
        return False

    @abc.abstractmethod
    def load(self, path: Path, options: LoadOptions) -> ModelArtifact:
        """Load the file into memory.

        Args:
            path: Model file that :meth:`sniff` accepted.
            options: Pickle trust and state_dict class settings.

        Returns:
            A :class:`ModelArtifact` with ``loaded`` set and ``io`` set to :meth:`io_spec`.

        Raises:
            UsageError: The file cannot be loaded; the message says what to do.
        """

    def io_spec(self, artifact: ModelArtifact) -> IOSpec | None:
        """Inputs (and outputs) the loaded file records, or None when it records none.

        A None spec is filled from ``--input-shape`` or the data by
        :func:`compressor.inputs.torch_io_spec`.
        """
        return None

    def example_inputs(self, artifact: ModelArtifact, io: IOSpec, *, num_samples: int, seed: int = 0,
                       dims: dict[str, tuple[int, ...]] | None = None) -> SampleData:
        """Example inputs for checks and benchmarks when the user gives no data.

        The default is :func:`compressor.inputs.random_data` (seeded N(0,1) floats, ones for
        ``*mask*`` ints, ids in [0, 100) otherwise); a kind that knows more about its inputs
        (a tokenizer, a vocabulary size) overrides it.

        Args:
            artifact: The loaded model.
            io: Input spec; dynamic axes other than the batch must be fixed by ``dims``.
            num_samples: Samples on the first axis.
            seed: numpy seed.
            dims: Optional per-input shape (without the sample axis) overriding the spec.

        Raises:
            UsageError: A dynamic axis other than the batch that ``dims`` does not fix.
        """
        from compressor.inputs import random_data

        return random_data(io, num_samples=num_samples, seed=seed, dims=dims)

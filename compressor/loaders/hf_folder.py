"""Hugging Face model folders (``save_pretrained``), sentence-transformers folders included.

Recognised by content (:func:`compressor.hf.is_hf_folder`: a ``config.json`` naming ``architectures`` or
``model_type``) and loaded with transformers' Auto classes, ``local_files_only=True``: nothing is ever
downloaded, and custom code in the folder (``auto_map``) is never run. Weights come from
``model.safetensors`` when present; a ``pytorch_model.bin`` is unpickled by transformers with
``torch.load(weights_only=True)`` (transformers 5), so it cannot run code either.

The loaded model is wrapped in :class:`~compressor.loaders.hf_modules.HFExportModule`: its ``forward``
takes the tokenizer's (or the image processor's) tensors positionally, in a fixed order, and returns the
task's outputs as a tuple whose names the IO spec records, so the ONNX export keeps them (``last_hidden_state``, ``logits``, ``sentence_embedding``).
A sentence-transformers folder (``modules.json`` with a ``Pooling`` module, and optionally ``Normalize``) is
exported with its pooling and normalisation as plain torch ops, so the ONNX gives ``sentence_embedding``
(no sentence-transformers dependency). Pattern after optimum's ONNX export configs (task -> inputs and outputs)
and Olive's ``HfModelHandler``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from compressor.artifact import IOSpec, ModelArtifact, ModelFormat, TensorSpec
from compressor.errors import UsageError
from compressor.loaders.base import Loader, LoadOptions

#: Attention implementation the model is loaded with. ``"eager"`` writes attention as plain MatMul/Softmax ops:
#: the pattern ONNX Runtime's transformer optimizer (``optimize_model(model_type="bert")``) fuses into
#: ``Attention``, and the faster of the two in ONNX Runtime here. Measured on all-MiniLM-L6-v2, fp32 ONNX from the
#: dynamo exporter, ONNX Runtime 1.32, batch 8 x 128 tokens, 1 intra-op thread, interleaved runs, AMD EPYC with
#: avx2, avx512_vnni, avx_vnni (2 vCPUs, load 4-6): eager p50 294 ms / 288 ms, sdpa p50 309 ms / 310 ms (two
#: sessions of 15 and 25 rounds). Fusion (ORT 1.32): eager + TorchScript exporter -> 6 Attention, 12
#: SkipLayerNormalization, 1 EmbedLayerNormalization; sdpa + TorchScript exporter -> no Attention; neither
#: dynamo export fuses (the optimizer's symbolic shape inference fails on it).
ATTN_IMPLEMENTATION = "eager"

#: Tasks: the transformers Auto class that loads the head, and the model outputs the export returns (by name).
TASKS: dict[str, tuple[str, tuple[str, ...]]] = {
    "feature-extraction": ("AutoModel", ("last_hidden_state",)),
    "sequence-classification": ("AutoModelForSequenceClassification", ("logits",)),
    "token-classification": ("AutoModelForTokenClassification", ("logits",)),
    "question-answering": ("AutoModelForQuestionAnswering", ("start_logits", "end_logits")),
    "fill-mask": ("AutoModelForMaskedLM", ("logits",)),
    "image-classification": ("AutoModelForImageClassification", ("logits",)),
}
#: Other spellings of tasks (optimum's and transformers pipelines' names).
TASK_ALIASES = {"text-classification": "sequence-classification", "masked-lm": "fill-mask",
                "ner": "token-classification", "default": "feature-extraction"}
#: ``architectures`` suffix -> task, most specific first.
_ARCH_SUFFIXES = (("ForSequenceClassification", "sequence-classification"),
                  ("ForTokenClassification", "token-classification"),
                  ("ForQuestionAnswering", "question-answering"), ("ForMaskedLM", "fill-mask"),
                  ("ForImageClassification", "image-classification"), ("Model", "feature-extraction"))
#: ``--pooling`` values: sentence-transformers' pooling modes, and ``none`` for the plain token outputs.
POOLING_MODES = ("mean", "cls", "max", "none")
#: sentence-transformers' ``1_Pooling/config.json`` keys, in the order its ``Pooling`` concatenates them.
_ST_POOLING_KEYS = (("pooling_mode_cls_token", "cls"), ("pooling_mode_max_tokens", "max"),
                    ("pooling_mode_mean_tokens", "mean"), ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len"))
#: Text inputs in the order of the export (optimum's order); only those the tokenizer produces are used.
TEXT_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
#: Image side when neither the image processor nor the config gives one.
DEFAULT_IMAGE_SIZE = 224


def canonical_task(task: str) -> str:
    """The task name in :data:`TASKS` for ``task`` or one of its aliases.

    Raises:
        UsageError: Not a known task; the message lists them.
    """
    name = TASK_ALIASES.get(task, task)
    if name not in TASKS:
        raise UsageError(f"--task {task} is not a task compressor exports; use one of {', '.join(TASKS)}")
    return name


def default_task(config: dict[str, Any]) -> str:
    """The task a folder's ``config.json`` implies.

    From ``architectures`` (``BertForSequenceClassification`` -> ``sequence-classification``, ``BertModel`` ->
    ``feature-extraction``); feature extraction when it names none.

    Raises:
        UsageError: The architecture names a head compressor does not export (e.g. a causal LM).
    """
    archs = config.get("architectures") or []
    if not archs:
        return "feature-extraction"
    arch = str(archs[0])
    for suffix, task in _ARCH_SUFFIXES:
        if arch.endswith(suffix):
            return task
    raise UsageError(f"the folder's architecture {arch} is not one compressor exports (encoders: "
                     f"{', '.join(TASKS)}); pass --task feature-extraction to export its base model")


def sentence_transformers_pooling(folder: Path) -> tuple[list[str] | None, bool]:
    """The pooling and normalisation of a sentence-transformers folder.

    Reads ``modules.json``; the ``Pooling`` module's ``config.json`` gives the modes (several are concatenated,
    in sentence-transformers' order cls, max, mean, mean_sqrt_len), a ``Normalize`` module adds L2 normalisation.

    Returns:
        ``(modes, normalize)``; modes is None when the folder is not a sentence-transformers folder.

    Raises:
        UsageError: ``modules.json`` is unreadable, names modules besides Transformer, Pooling and Normalize
            (e.g. ``Dense``), or the pooling uses a mode compressor does not export (weighted mean, last token).
    """
    path = Path(folder) / "modules.json"
    if not path.is_file():
        return None, False
    try:
        modules = json.loads(path.read_text(encoding="utf-8"))
        types = [(str(m.get("type", "")), str(m.get("path", ""))) for m in modules]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, TypeError) as e:
        raise UsageError(f"cannot read {path} ({e}); pass --pooling mean|cls|max|none to choose the pooling") from e
    pooling = next((p for t, p in types if t.endswith(".Pooling")), None)
    normalize = any(t.endswith(".Normalize") for t, _ in types)
    others = [t for t, _ in types if not t.endswith((".Transformer", ".Pooling", ".Normalize"))]
    if others and pooling is not None:  # e.g. a Dense projection after pooling: its weights are not in the export
        raise UsageError(f"{path} chains {', '.join(others)} after the transformer, which compressor does not export "
                         "(it exports Transformer, Pooling and Normalize); pass --pooling none for the token outputs")
    if pooling is None:
        return None, normalize
    conf_path = Path(folder) / pooling / "config.json"
    try:
        conf = json.loads(conf_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"cannot read the pooling config {conf_path} ({e}); pass --pooling mean|cls|max|none") from e
    unsupported = [k for k in ("pooling_mode_weightedmean_tokens", "pooling_mode_lasttoken") if conf.get(k)]
    if unsupported:
        raise UsageError(f"{conf_path} uses {', '.join(unsupported)}, which compressor does not export; pass "
                         "--pooling mean|cls|max (or none for the token outputs)")
    modes = [mode for key, mode in _ST_POOLING_KEYS if conf.get(key)]
    if not modes:
        raise UsageError(f"{conf_path} turns on no pooling mode; pass --pooling mean|cls|max|none")
    return modes, normalize


def processor_config(folder: Path) -> dict[str, Any] | None:
    """The folder's image processor settings (``preprocessor_config.json`` or ``image_processor_config.json``).

    Read as JSON, not through ``AutoImageProcessor``: transformers 5's image processors need torchvision and
    Pillow, and the export only needs the size.
    """
    for name in ("preprocessor_config.json", "image_processor_config.json"):
        path = Path(folder) / name
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
                raise UsageError(f"cannot read {path} ({e}); fix or remove it") from e
            return data if isinstance(data, dict) else None
    return None


def _image_size(processor: dict[str, Any] | None, config: dict[str, Any]) -> tuple[int, int]:
    """``(height, width)`` of ``pixel_values``.

    The image processor's crop size when it crops, else its resize size (``{"height", "width"}``,
    ``{"shortest_edge"}`` or an int), else the config's ``image_size``, else :data:`DEFAULT_IMAGE_SIZE`.
    """
    processor = processor or {}
    keys = ("crop_size", "size") if processor.get("do_center_crop") else ("size",)
    for key in keys:
        size = processor.get(key)
        if isinstance(size, int) and size > 0:
            return size, size
        if isinstance(size, dict):
            if "height" in size and "width" in size:
                return int(size["height"]), int(size["width"])
            if "shortest_edge" in size:
                return int(size["shortest_edge"]), int(size["shortest_edge"])
    side = config.get("image_size")
    if isinstance(side, int):
        return side, side
    if isinstance(side, (list, tuple)) and len(side) == 2:
        return int(side[0]), int(side[1])
    return DEFAULT_IMAGE_SIZE, DEFAULT_IMAGE_SIZE


def _is_image_model(config: dict[str, Any], task: str, folder: Path) -> bool:
    if task == "image-classification":
        return True
    if task != "feature-extraction":
        return False
    if "vocab_size" in config or "text_config" in config:
        return False
    return "num_channels" in config or any((folder / n).is_file() for n in ("preprocessor_config.json",
                                                                              "image_processor_config.json"))


class HFFolderLoader(Loader):
    """A Hugging Face model folder (``config.json`` + weights + tokenizer or image processor files)."""

    formats: ClassVar[tuple[ModelFormat, ...]] = (ModelFormat.HF_FOLDER,)
    description: ClassVar[str] = "a Hugging Face model folder (config.json)"
    takes_files: ClassVar[bool] = False

    def sniff(self, path: Path, head_bytes: bytes, zip_names: tuple[str, ...] | None) -> bool:
        """Files are never Hugging Face folders (see :meth:`sniff_folder`)."""
        return False

    def sniff_folder(self, path: Path) -> bool:
        """True for a Hugging Face folder, or a sentence-transformers folder holding one in a subfolder.

        See :func:`compressor.hf.model_folder`.
        """
        from compressor.hf import model_folder

        return model_folder(path) is not None

    def load(self, path: Path, options: LoadOptions) -> ModelArtifact:
        """Load the folder's model offline with transformers and wrap it for export.

        Args:
            path: The folder.
            options: ``task`` (default from ``architectures``) and ``pooling`` (default from a
                sentence-transformers folder's ``1_Pooling``, else none).

        Returns:
            An artifact with ``loaded`` an ``HFExportModule`` (:mod:`compressor.loaders.hf_modules`) in eval
            mode; ``io`` its inputs (dynamic ``batch`` and, for text, ``sequence`` axes) and named outputs;
            ``details["hf"]`` (task, architecture, pooling, normalize, attn_implementation, weights file),
            ``details["index_high"]`` (exclusive bound of each integer input: ``vocab_size``,
            ``type_vocab_size``) and ``details["max_sequence_length"]`` (``max_position_embeddings``).

        Raises:
            UsageError: transformers is not installed, an unknown ``--task``/``--pooling``, an architecture
                that is not exported, a folder transformers cannot load offline, a head the folder has no
                weights for, or ``--pooling`` on a classification head or an image model.
        """
        try:
            import torch
            import transformers
        except ImportError as e:
            raise UsageError(f"{path} is a Hugging Face folder, and loading it needs transformers: "
                             "pip install 'compressor[hf]'") from e
        from compressor.hf import model_folder, read_config

        root, path = Path(path), model_folder(path) or Path(path)  # the older sentence-transformers layout:
        config = read_config(path) or {}  # the model in a subfolder (0_Transformer/), modules.json at the top
        task = canonical_task(options.task) if options.task else default_task(config)
        auto_name, output_keys = TASKS[task]
        if options.pooling is not None and options.pooling not in POOLING_MODES:
            raise UsageError(f"--pooling {options.pooling} is not a pooling mode; use one of "
                             f"{', '.join(POOLING_MODES)}")
        st_modes, st_normalize = None, False
        if (root / "modules.json").is_file() and task == "feature-extraction" and options.pooling != "none":
            st_modes, st_normalize = sentence_transformers_pooling(root)
        if options.pooling is None:
            modes = tuple(st_modes or ()) if task == "feature-extraction" else ()
        elif options.pooling == "none":
            modes = ()
        else:
            modes = (options.pooling,)
        if modes and task != "feature-extraction":
            raise UsageError(f"--pooling {options.pooling} pools token embeddings, but --task {task} gives "
                             f"{', '.join(output_keys)}; use --task feature-extraction or drop --pooling")
        normalize = bool(modes) and st_normalize
        image = _is_image_model(config, task, path)
        if modes and image:
            raise UsageError(f"--pooling applies to text encoders; {path} is an image model")

        weights = next((n for n in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                                    "pytorch_model.bin.index.json") if (path / n).is_file()), None)
        if weights is None:
            raise UsageError(f"{path} has a config.json but no weights (model.safetensors or pytorch_model.bin); "
                             "save the model with save_pretrained")
        auto = getattr(transformers, auto_name)
        kwargs: dict[str, Any] = {"local_files_only": True, "dtype": torch.float32, "output_loading_info": True}
        with _transformers_quiet():  # missing weights are checked below, as an error
            model, info = _from_pretrained(auto, path, task, kwargs)
        missing = sorted(info.get("missing_keys") or [])
        if task == "feature-extraction":  # the pooler feeds pooler_output, which the export does not return
            missing = [k for k in missing if "pooler" not in k]
        if missing:  # a head the folder has no weights for would be exported with random weights
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            arch = (config.get("architectures") or ["?"])[0]
            raise UsageError(f"{path} has no weights for {len(missing)} parameter(s) of the {task} model ({shown}): "
                             f"transformers would initialise them at random; the folder holds a {arch}, so use "
                             f"--task {default_task(config)} (or drop --task)")
        model.eval()

        details: dict[str, Any] = {"warnings": []}
        high: dict[str, int] = {}
        if image:
            processor = processor_config(path)
            h, w = _image_size(processor, config)
            channels = int(config.get("num_channels", 3))
            inputs = (TensorSpec("pixel_values", "float32", ("batch", channels, h, w)),)
            if processor is None:
                details["warnings"].append(f"{path} has no image processor (preprocessor_config.json): pixel_values "
                                           f"are [batch, {channels}, {h}, {w}] from the config")
        else:
            names = self._text_inputs(path, config, details)
            inputs = tuple(TensorSpec(n, "int64", ("batch", "sequence")) for n in names)
            vocab = config.get("vocab_size") or getattr(getattr(model, "config", None), "vocab_size", None)
            if vocab:
                high["input_ids"] = int(vocab)
            if "token_type_ids" in names:
                high["token_type_ids"] = int(config.get("type_vocab_size") or 2)
            longest = config.get("max_position_embeddings")
            if isinstance(longest, int) and longest > 0:
                details["max_sequence_length"] = longest
        input_names = tuple(s.name for s in inputs)
        from compressor.loaders.hf_modules import wrap

        wrapped = wrap(model, input_names=input_names, output_keys=output_keys, pooling=modes, normalize=normalize)
        names_out = ("sentence_embedding", "last_hidden_state") if modes else output_keys
        shapes = _output_shapes(model.config, task, image=image, pooled_width=len(modes))
        outputs = tuple(TensorSpec(n, "float32", shapes.get(n, ())) for n in names_out)
        arch = (config.get("architectures") or [type(model).__name__])[0]
        details.update(
            hf={"task": task, "architecture": str(arch), "model_class": type(model).__name__,
                "pooling": list(modes) or None, "normalize": normalize, "weights_file": weights,
                "attn_implementation": getattr(model.config, "_attn_implementation", None),
                "sentence_transformers": st_modes is not None},
            index_high=high)
        if not details["warnings"]:
            del details["warnings"]
        return ModelArtifact(path=root, format=ModelFormat.HF_FOLDER, io=IOSpec(inputs, outputs), loaded=wrapped,
                             details=details)

    @staticmethod
    def _text_inputs(path: Path, config: dict[str, Any], details: dict[str, Any]) -> tuple[str, ...]:
        """The text inputs: ``input_ids``, ``attention_mask``, and ``token_type_ids`` when the tokenizer uses it.

        ``token_type_ids`` is used when the tokenizer's ``model_input_names`` has it; without a loadable
        tokenizer, when the config has ``type_vocab_size`` (BERT-style), with a warning.
        """
        from compressor.hf import load_tokenizer

        try:
            with _transformers_quiet():
                used = list(load_tokenizer(path).model_input_names)
        except UsageError:
            used = ["input_ids", "attention_mask"] + (["token_type_ids"] if config.get("type_vocab_size") else [])
            details["warnings"].append(f"{path} has no tokenizer transformers can load: inputs "
                                       f"{', '.join(used)} from its config.json")
        return tuple(n for n in TEXT_INPUTS if n in used or n in ("input_ids", "attention_mask"))

    def io_spec(self, artifact: ModelArtifact) -> IOSpec | None:
        """Inputs and named outputs recorded at load time."""
        return artifact.io

    def example_inputs(self, artifact: ModelArtifact, io: IOSpec, *, num_samples: int, seed: int = 0,
                       dims: dict[str, tuple[int, ...]] | None = None) -> Any:
        """Seeded random inputs that the model accepts (see :func:`compressor.inputs.random_data`).

        Token ids stay below ``vocab_size`` (and below 100), ``token_type_ids`` below ``type_vocab_size``;
        attention masks are ones, pixel values N(0, 1).
        """
        from compressor.inputs import random_data

        return random_data(io, num_samples=num_samples, seed=seed, dims=dims,
                           int_high=artifact.details.get("index_high") or None)


@contextlib.contextmanager
def _transformers_quiet() -> Iterator[None]:
    """No progress bars and no log lines from transformers inside (library code never prints); restored after."""
    from transformers.utils import logging as hf_logging

    bar, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()  # "Loading weights" bars
    hf_logging.set_verbosity_error()  # the load report of missing / unexpected keys
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def _output_shapes(config: Any, task: str, *, image: bool, pooled_width: int) -> dict[str, tuple[int | str, ...]]:
    """Shapes of the export's outputs, with named dynamic axes (``batch``, ``sequence``), where the config fixes them.

    The TorchScript exporter names output axes from these; an output left out keeps the exporter's own shape.
    """
    hidden = getattr(config, "hidden_size", None)
    labels = getattr(config, "num_labels", None)
    vocab = getattr(config, "vocab_size", None)
    shapes: dict[str, tuple[int | str, ...]] = {}
    if task in ("sequence-classification", "image-classification") and labels:
        shapes["logits"] = ("batch", int(labels))
    if image:
        return shapes
    if task == "token-classification" and labels:
        shapes["logits"] = ("batch", "sequence", int(labels))
    if task == "fill-mask" and vocab:
        shapes["logits"] = ("batch", "sequence", int(vocab))
    if task == "question-answering":
        shapes.update(start_logits=("batch", "sequence"), end_logits=("batch", "sequence"))
    if task == "feature-extraction" and hidden:
        shapes["last_hidden_state"] = ("batch", "sequence", int(hidden))
        if pooled_width:
            shapes["sentence_embedding"] = ("batch", int(hidden) * pooled_width)
    return shapes


def _from_pretrained(auto: Any, path: Path, task: str, kwargs: dict[str, Any]) -> Any:
    """``auto.from_pretrained`` offline with :data:`ATTN_IMPLEMENTATION`, errors as one-line UsageErrors.

    A model class without that attention switch is loaded with its default.
    """
    try:
        return auto.from_pretrained(str(path), attn_implementation=ATTN_IMPLEMENTATION, **kwargs)
    except (ValueError, TypeError) as e:
        if "attn_implementation" not in str(e) and "attention" not in str(e):
            raise UsageError(_load_error(path, task, e)) from e
    except Exception as e:  # transformers raises OSError, KeyError, RuntimeError... for folders it cannot load
        raise UsageError(_load_error(path, task, e)) from e
    try:
        return auto.from_pretrained(str(path), **kwargs)
    except Exception as e:
        raise UsageError(_load_error(path, task, e)) from e


def _load_error(path: Path, task: str, e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}"
    if "Weights only load failed" in text or "UnpicklingError" in text:
        return (f"{path}'s pytorch_model.bin needs more than tensors to unpickle, and compressor reads pickles only "
                "with torch.load(weights_only=True) (unpickling other objects runs code from the file); re-save the "
                "model with save_pretrained (model.safetensors) from code you trust")
    first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    return (f"transformers cannot load {path} for --task {task} offline ({type(e).__name__}: {first}); check that "
            "the folder was written by save_pretrained, or pass another --task")

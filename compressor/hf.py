"""Hugging Face model folders: recognise them and open their preprocessors, never downloading.

A Hugging Face folder is recognised by content: a ``config.json`` holding ``architectures``
or ``model_type`` (what transformers' ``AutoConfig`` needs). Its tokenizer or image
processor is opened with transformers' Auto classes and ``local_files_only=True``, so
nothing is fetched from a hub. Source: transformers ``AutoConfig`` / ``AutoTokenizer`` /
``AutoImageProcessor``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from compressor.errors import UsageError

__all__ = ["TOKENIZER_FILES", "hub_id_error", "is_hf_folder", "load_image_processor", "load_tokenizer", "looks_like_hub_id",
           "model_folder", "read_config"]

#: Files any transformers tokenizer is loaded from (fast, WordPiece, BPE, SentencePiece, tiktoken).
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model",
                   "sentencepiece.bpe.model", "merges.txt", "tokenizer.tiktoken", "vocab.model")

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def read_config(folder: Path) -> dict[str, Any] | None:
    """The folder's ``config.json`` as a dict, or None when there is none or it is not a JSON object."""
    path = Path(folder) / "config.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def is_hf_folder(path: Path) -> bool:
    """Whether ``path`` is a folder whose ``config.json`` names ``architectures`` or ``model_type``."""
    path = Path(path)
    if not path.is_dir():
        return False
    config = read_config(path)
    return bool(config) and ("architectures" in config or "model_type" in config)


def looks_like_hub_id(text: str) -> bool:
    """Whether a MODEL argument that does not exist on disk reads like a hub id (``bert-base-uncased``, ``org/name``)."""
    return bool(_HUB_ID.match(str(text))) and Path(text).suffix.lower() not in {".onnx", ".pt", ".pt2", ".pth", ".bin",
                                                                               ".safetensors", ".npz", ".toml"}


def hub_id_error(text: str) -> UsageError:
    """The error for a MODEL that is not a local path: compressor never downloads (exit 2)."""
    return UsageError(f"model '{text}' is not a local file or folder, and compressor never downloads models: save it "
                      "locally first (e.g. `save_pretrained('DIR')` or `huggingface-cli download` on a machine with "
                      "network access) and pass the folder")


def load_tokenizer(folder: Path) -> Any:
    """The folder's tokenizer, opened offline with ``transformers.AutoTokenizer``.

    Args:
        folder: A Hugging Face model folder (or a tokenizer-only folder).

    Returns:
        A ``transformers`` tokenizer.

    Raises:
        UsageError: The folder has no loadable tokenizer.
    """
    folder = Path(folder)
    # transformers 5 builds an empty tokenizer from config.json alone (every word becomes [UNK]): a folder
    # without tokenizer files has no tokenizer
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise UsageError(f"{folder} has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...); pass "
                         "--tokenizer DIR with the folder the model's tokenizer was saved to")
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # transformers raises OSError, ValueError, KeyError... for a folder without one
        raise UsageError(f"{folder} has no tokenizer transformers can load ({type(e).__name__}: "
                         f"{str(e).strip().splitlines()[0][:160] if str(e).strip() else ''}); pass --tokenizer DIR "
                         "with tokenizer files (tokenizer.json or vocab.txt)") from e


def load_image_processor(folder: Path) -> Any | None:
    """The folder's image processor (``transformers.AutoImageProcessor``, offline), or None when it has none."""
    folder = Path(folder)
    if not any((folder / name).is_file() for name in ("preprocessor_config.json", "image_processor_config.json")):
        return None
    from transformers import AutoImageProcessor

    try:
        return AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means: no usable processor
        raise UsageError(f"{folder}'s image processor cannot be loaded ({type(e).__name__}); pass --image-size, "
                         "--mean and --std instead") from e


def model_folder(folder: Path) -> Path | None:
    """The folder holding the transformers model of ``folder``, or None when it holds none.

    ``folder`` itself when it is a Hugging Face folder (:func:`is_hf_folder`); for a sentence-transformers
    folder in the older layout (``modules.json`` at the top, the transformer in a subfolder such as
    ``0_Transformer/``), that subfolder.
    """
    folder = Path(folder)
    if is_hf_folder(folder):
        return folder
    path = folder / "modules.json"
    if not folder.is_dir() or not path.is_file():
        return None
    try:
        modules = json.loads(path.read_text(encoding="utf-8"))
        sub = next((str(m.get("path", "")) for m in modules if str(m.get("type", "")).endswith(".Transformer")), None)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, AttributeError, TypeError):
        return None
    if not sub:
        return None
    inner = folder / sub
    return inner if folder.resolve() in inner.resolve().parents and is_hf_folder(inner) else None

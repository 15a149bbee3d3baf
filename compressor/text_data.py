"""Text data files: one example per line, or JSON Lines with ``text`` (and ``label``), tokenized for the model.

``--calibration-text FILE`` / ``--eval-text FILE`` give the samples of a text model as text. Each
non-blank line is one example; a file whose first example line is a JSON object (or named ``.jsonl``)
is read as JSON Lines: ``{"text": ..., "text_pair": ... (optional), "label": <class id> (optional)}``.
The tokenizer is the model folder's (a Hugging Face folder) or ``--tokenizer DIR``; sequences are cut
at ``--max-length`` tokens. ``SampleData`` holds one array per input, so every sample of a file shares
one length: the longest example of the file (at most ``--max-length``) when the graph's sequence axis
is dynamic, else the graph's fixed length. Tokenization: transformers' tokenizers (``__call__`` with
``truncation=True``).
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compressor.artifact import IOSpec
from compressor.errors import UsageError
from compressor.inputs import SampleData, check_labels

__all__ = ["DEFAULT_MAX_LENGTH", "TOKEN_INPUTS", "TextExamples", "read_text_examples", "text_sample_data",
           "token_input_names", "tokenize"]

#: Token cap per example when ``--max-length`` is not given (the usual length of sentence encoders).
DEFAULT_MAX_LENGTH = 128
#: Model inputs a tokenizer gives, in the order BERT-style models take them.
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_JSONL_SUFFIXES = (".jsonl", ".ndjson")


@dataclass(frozen=True)
class TextExamples:
    """The examples of a text data file.

    Attributes:
        texts: One string per example, in file order.
        pairs: Second segments (``text_pair``), one per example, or None.
        labels: int64 ``[examples]`` class ids, or None when the file has none.
        line_numbers: 1-based line of each example in the file.
        source: The file path, for messages.
    """

    texts: list[str]
    pairs: list[str] | None
    labels: np.ndarray | None
    line_numbers: list[int]
    source: str


def read_text_examples(path: Path, *, label2id: dict[str, int] | None = None) -> TextExamples:
    """Read a text data file: one example per line (blank lines skipped), or JSON Lines.

    A file is JSON Lines when it is named ``.jsonl`` / ``.ndjson`` or its first non-blank line is a JSON
    object; then every non-blank line must be an object with a string ``text`` and, optionally, a
    ``text_pair`` string and a ``label`` integer class id (all lines or none, for each field).

    Args:
        path: The file (UTF-8).
        label2id: Class names -> ids (a Hugging Face folder's ``config.json`` ``label2id``): ``label`` may then
            also be a class name.

    Returns:
        The examples with their labels (None for plain text or JSON Lines without ``label``).

    Raises:
        UsageError: Missing or unreadable file, no examples, a JSON Lines line that is not an object with a
            string ``text`` (named by line number), labels that are not integers, or a field on some lines
            only.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"text data file not found: {path}" + ("; give a file (one example per line)"
                                                                 if path.is_dir() else ""))
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as e:
        raise UsageError(f"{path} is not UTF-8 text (byte {e.start}); save it as UTF-8, one example per line") from e
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror or e}") from e
    numbered = [(i, line) for i, line in enumerate(lines, 1) if line.strip()]
    if not numbered:
        raise UsageError(f"{path} holds no examples (it is empty or blank); write one example per line, or JSON Lines "
                         "with a 'text' field")
    jsonl = path.suffix.lower() in _JSONL_SUFFIXES or _is_json_object(numbered[0][1])
    if not jsonl:
        return TextExamples([line.strip() for _, line in numbered], None, None, [i for i, _ in numbered], str(path))
    texts: list[str] = []
    pairs: list[str | None] = []
    labels: list[Any] = []
    for i, line in numbered:
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UsageError(f"line {i} of {path} is not valid JSON ({e.msg} at column {e.colno}); each line of a "
                             "JSON Lines file is one object such as {\"text\": \"...\", \"label\": 0}") from e
        if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
            raise UsageError(f"line {i} of {path} has no string 'text' field; each line must be an object such as "
                             "{\"text\": \"...\", \"label\": 0}")
        pair = obj.get("text_pair")
        if pair is not None and not isinstance(pair, str):
            raise UsageError(f"line {i} of {path}: 'text_pair' must be a string, got {type(pair).__name__}")
        label = obj.get("label")
        if isinstance(label, str) and label2id:
            if label not in label2id:
                raise UsageError(f"line {i} of {path}: label {json.dumps(label)} is not a class of the model; its "
                                 f"classes (config.json label2id) are {', '.join(map(json.dumps, label2id))}")
            label = int(label2id[label])
        if label is not None and (isinstance(label, bool) or not isinstance(label, int)):
            raise UsageError(f"line {i} of {path}: 'label' must be an integer class id, got {json.dumps(label)}; "
                             "write the class index (0, 1, ...) of each example")
        texts.append(obj["text"])
        pairs.append(pair)
        labels.append(label)
    line_numbers = [i for i, _ in numbered]
    for name, values in (("text_pair", pairs), ("label", labels)):
        have = [v is not None for v in values]
        if any(have) and not all(have):
            missing = line_numbers[have.index(False)]
            raise UsageError(f"line {missing} of {path} has no '{name}' but other lines have one; give '{name}' on "
                             "every line or on none")
    label_arr = None
    if labels and labels[0] is not None:
        label_arr = check_labels(np.asarray(labels, dtype=np.int64), samples=len(texts), source=str(path))
    return TextExamples(texts, pairs if pairs and pairs[0] is not None else None, label_arr, line_numbers, str(path))


def _is_json_object(line: str) -> bool:
    text = line.strip()
    if not text.startswith("{"):
        return False
    try:
        return isinstance(json.loads(text), dict)
    except json.JSONDecodeError:
        return False


def token_input_names(io: IOSpec | None, module: Any = None) -> list[str]:
    """The model inputs text data fills, in the model's order.

    Args:
        io: The model's input spec when the file gives one (ONNX, ExportedProgram, a Hugging Face folder).
        module: The PyTorch module when there is no spec: its ``forward`` parameters named like tokenizer
            outputs are taken, in signature order.

    Returns:
        Input names among ``input_ids``, ``attention_mask``, ``token_type_ids`` (and any other input of the
        spec, which :func:`tokenize` then refuses).

    Raises:
        UsageError: A spec with no ``input_ids`` input, or a module whose ``forward`` takes none of them.
    """
    if io is not None and io.inputs:
        names = list(io.input_names)
        if "input_ids" not in names:
            raise UsageError(f"text data needs a model with an 'input_ids' input; this model's inputs are {names}: "
                             "give --calibration-data/--eval-data .npz instead")
        return names
    params: list[str] = []
    if module is not None:
        try:
            params = [p.name for p in inspect.signature(module.forward).parameters.values()
                      if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
        except (TypeError, ValueError, AttributeError):
            params = []
    names = [p for p in params if p in TOKEN_INPUTS]
    if module is not None and params and "input_ids" not in names:
        raise UsageError(f"text data needs a model whose forward takes 'input_ids'; it takes {params}: rename the "
                         "argument or give --calibration-data/--eval-data .npz instead")
    return names or ["input_ids", "attention_mask"]


def tokenize(tokenizer: Any, examples: TextExamples, *, names: list[str], dtypes: dict[str, str] | None = None,
             max_length: int = DEFAULT_MAX_LENGTH, fixed_length: int | None = None) -> tuple[dict[str, np.ndarray],
                                                                                          dict[str, Any]]:
    """Tokenize examples into the model's token inputs.

    Sequences are cut at ``max_length`` tokens (the tokenizer's truncation), then padded with the
    tokenizer's padding id (``attention_mask`` 0, ``token_type_ids`` 0) on its padding side to one length:
    ``fixed_length`` when the graph fixes the sequence axis, else the longest example.

    Args:
        tokenizer: A ``transformers`` tokenizer.
        examples: From :func:`read_text_examples`.
        names: Model inputs to fill (:func:`token_input_names`).
        dtypes: Input name -> dtype of the model's input (default int64).
        max_length: Most tokens per example (special tokens included).
        fixed_length: The graph's fixed sequence length, or None when it is dynamic.

    Returns:
        ``({name: int array [examples, length]}, notes)``; notes hold ``examples``, ``seq_len``, ``max_length``
        and ``truncated`` (examples longer than ``max_length`` tokens, which were cut).

    Raises:
        UsageError: An input no tokenizer gives (other than ``token_type_ids``, filled with zeros), or a
            tokenizer without a padding token.
    """
    unknown = [n for n in names if n not in TOKEN_INPUTS]
    if unknown:
        raise UsageError(f"the model takes {unknown}, which a tokenizer does not give; use --calibration-data/"
                         "--eval-data .npz with every input")
    if tokenizer.pad_token_id is None:
        raise UsageError("the tokenizer has no padding token, so examples of different lengths cannot share a batch; "
                         "use a tokenizer with a pad token")
    cap = min(max_length, fixed_length) if fixed_length else max_length
    pairs = examples.pairs
    full = tokenizer(examples.texts, pairs, truncation=False)["input_ids"]
    truncated = sum(len(ids) > cap for ids in full)
    enc = tokenizer(examples.texts, pairs, truncation=True, max_length=cap, padding="longest",
                    return_tensors="np", return_token_type_ids="token_type_ids" in names,
                    return_attention_mask=True)
    length = int(enc["input_ids"].shape[1])
    target = fixed_length or length
    left = getattr(tokenizer, "padding_side", "right") == "left"
    arrays: dict[str, np.ndarray] = {}
    for name in names:
        arr = np.asarray(enc[name]) if name in enc else np.zeros_like(np.asarray(enc["input_ids"]))
        if target > length:
            fill = tokenizer.pad_token_id if name == "input_ids" else 0
            arr = np.pad(arr, [(0, 0), (target - length, 0) if left else (0, target - length)], constant_values=fill)
        arrays[name] = arr.astype((dtypes or {}).get(name, "int64"))
    notes = {"examples": len(examples.texts), "seq_len": target, "max_length": max_length, "truncated": truncated}
    return arrays, notes


def text_sample_data(path: Path, tokenizer: Any, *, io: IOSpec | None, module: Any = None,
                     max_length: int = DEFAULT_MAX_LENGTH, label2id: dict[str, int] | None = None
                     ) -> tuple[SampleData, dict[str, Any]]:
    """A text data file as the model's token input arrays (plus labels when the file has them).

    Args:
        path: The text or JSON Lines file (see :func:`read_text_examples`).
        tokenizer: A ``transformers`` tokenizer.
        io: The model's input spec, when known (names, dtypes, a fixed sequence length on axis 1).
        module: The PyTorch module when ``io`` is None (its ``forward`` names the inputs).
        max_length: Most tokens per example.
        label2id: Class names -> ids, for labels written as names (see :func:`read_text_examples`).

    Returns:
        ``(SampleData, notes)``: arrays ``[examples, length]`` keyed by input name, int64 (or the spec's
        dtype), ``labels`` int64 ``[examples]`` or None; notes as from :func:`tokenize` plus ``path``.

    Raises:
        UsageError: See :func:`read_text_examples`, :func:`token_input_names` and :func:`tokenize`.
    """
    examples = read_text_examples(path, label2id=label2id)
    names = token_input_names(io, module)
    dtypes: dict[str, str] = {}
    fixed: int | None = None
    if io is not None:
        for spec in io.inputs:
            dtypes[spec.name] = spec.dtype
            if len(spec.shape) != 2:
                raise UsageError(f"input '{spec.name}' has shape {list(spec.shape)}; text data fills [batch, sequence] "
                                 "token inputs only")
            if spec.dtype.startswith(("float", "bool")):
                raise UsageError(f"input '{spec.name}' is {spec.dtype}; text data fills integer token inputs only")
            d = spec.shape[1]
            if isinstance(d, int) and d > 0:
                fixed = d if fixed is None else fixed
                if d != fixed:
                    raise UsageError(f"the model's token inputs fix different sequence lengths ({fixed} and {d})")
    arrays, notes = tokenize(tokenizer, examples, names=names, dtypes=dtypes, max_length=max_length,
                             fixed_length=fixed)
    return SampleData(arrays, examples.labels, str(path)), {"path": str(path), **notes}

"""The export wrappers of Hugging Face models (imports torch: load it only inside a command).

:func:`wrap` puts a transformers model in a ``torch.nn.Module`` whose ``forward`` takes named tensors
positionally, in a fixed order, and returns the task's outputs as a tuple, so ``torch.onnx.export`` and the
parity check see plain tensors. sentence-transformers' ``Pooling`` and ``Normalize`` are :func:`pool`, in plain
torch ops. The classes live at module level so a wrapped model pickles (``--save-torch``).
"""

from __future__ import annotations

from typing import Any

import torch

from compressor.errors import UsageError


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, modes: tuple[str, ...], normalize: bool) -> torch.Tensor:
    """sentence-transformers' ``Pooling`` (+ ``Normalize``) in plain torch ops.

    Args:
        hidden: float32 ``[batch, sequence, hidden]`` token embeddings.
        attention_mask: int64 ``[batch, sequence]``, 1 for real tokens, 0 for padding.
        modes: Pooling modes, concatenated in this order: ``cls`` (first token), ``max`` (padding set to -1e9
            first, as sentence-transformers does), ``mean`` (mean over real tokens), ``mean_sqrt_len`` (sum over
            real tokens / sqrt(count)).
        normalize: L2-normalise the result (``torch.nn.functional.normalize``, eps 1e-12).

    Returns:
        float32 ``[batch, hidden * len(modes)]``.
    """
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    parts = []
    for mode in modes:
        if mode == "cls":
            parts.append(hidden[:, 0])
        elif mode == "max":
            parts.append(torch.where(mask > 0, hidden, torch.full_like(hidden, -1e9)).max(dim=1).values)
        else:
            summed = (hidden * mask).sum(dim=1)
            count = mask.sum(dim=1).clamp(min=1e-9)
            parts.append(summed / (count if mode == "mean" else torch.sqrt(count)))
    out = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
    return torch.nn.functional.normalize(out, p=2, dim=1) if normalize else out


class HFExportModule(torch.nn.Module):
    """Wraps a transformers model: named tensors in a fixed order in, the task's named outputs out.

    Attributes:
        model: The transformers ``PreTrainedModel`` (eval mode).
        output_keys: Keys of the model's output returned, in order (e.g. ``("logits",)``).
        pooling: sentence-transformers pooling modes; when set, ``forward`` returns ``(sentence_embedding,
            last_hidden_state)`` instead.
        normalize: L2-normalise the pooled embedding.
        input_names: The ``forward`` arguments, in order.
    """

    def __init__(self, model: Any, output_keys: tuple[str, ...], pooling: tuple[str, ...], normalize: bool,
                 input_names: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.output_keys = tuple(output_keys)
        self.pooling = tuple(pooling)
        self.normalize = normalize
        self.input_names = tuple(input_names)

    def _outputs(self, out: Any, attention_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, ...]:
        if self.pooling:
            hidden = out["last_hidden_state"]
            return pool(hidden, attention_mask, self.pooling, self.normalize), hidden
        return tuple(out[k] for k in self.output_keys)


class TextIdsMask(HFExportModule):
    """Text model with ``input_ids`` and ``attention_mask`` (int64 ``[batch, sequence]``)."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The task's outputs (see :class:`HFExportModule`)."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        return self._outputs(out, attention_mask)


class TextIdsMaskTypes(HFExportModule):
    """Text model with ``input_ids``, ``attention_mask`` and ``token_type_ids`` (int64 ``[batch, sequence]``)."""

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The task's outputs (see :class:`HFExportModule`)."""
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                         return_dict=True)
        return self._outputs(out, attention_mask)


class Image(HFExportModule):
    """Image model with ``pixel_values`` (float32 ``[batch, channels, height, width]``)."""

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The task's outputs (see :class:`HFExportModule`)."""
        return self._outputs(self.model(pixel_values=pixel_values, return_dict=True))


SIGNATURES: dict[tuple[str, ...], type[HFExportModule]] = {
    ("input_ids", "attention_mask"): TextIdsMask,
    ("input_ids", "attention_mask", "token_type_ids"): TextIdsMaskTypes,
    ("pixel_values",): Image,
}


def wrap(model: Any, *, input_names: tuple[str, ...], output_keys: tuple[str, ...], pooling: tuple[str, ...] = (),
         normalize: bool = False) -> HFExportModule:
    """A ``torch.nn.Module`` around a transformers model, ready for ``torch.onnx.export``, in eval mode.

    Its ``forward`` takes the inputs positionally in ``input_names`` order and returns a tuple: the model
    outputs named ``output_keys`` (e.g. ``logits`` float32 ``[batch, classes]``), or with ``pooling``
    ``(sentence_embedding [batch, hidden], last_hidden_state [batch, sequence, hidden])``.

    Args:
        model: A transformers ``PreTrainedModel``.
        input_names: One of :data:`SIGNATURES`.
        output_keys: Keys of the model's output to return, in order.
        pooling: Pooling modes (see :func:`pool`); empty for the plain outputs.
        normalize: L2-normalise the pooled embedding.

    Raises:
        UsageError: ``input_names`` is not a supported signature.
    """
    cls = SIGNATURES.get(tuple(input_names))
    if cls is None:
        raise UsageError(f"compressor exports Hugging Face models with inputs {[list(k) for k in SIGNATURES]}; this "
                         f"one needs {list(input_names)}")
    return cls(model, output_keys, pooling, normalize, input_names).eval()

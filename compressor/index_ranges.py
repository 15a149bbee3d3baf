"""The values a model's integer inputs may take, read from the model, for generated (random) inputs.

Without data, integer inputs are drawn at random. An input that indexes a tensor (token ids into an
embedding table, indices of ``GatherElements``) must stay within the size of the axis it indexes, or
even the original model fails. This module finds that size:

- ONNX: the input is followed through ops that pass its values on unchanged (``Cast``, ``Reshape``,
  ``Unsqueeze``, ``Concat``, ...) to the ops that index with it: ``Gather`` / ``GatherElements`` /
  ``GatherND`` / ``ScatterElements`` / ``ScatterND`` (indices), ``OneHot`` (indices, by its depth) and
  ONNX Runtime's ``EmbedLayerNormalization`` (ids into its tables). The indexed axis's size comes from
  initializers, ``Constant`` nodes, the resolved input shapes and ONNX shape inference. Source: the
  operator signatures of the ONNX specification (https://onnx.ai/onnx/operators/) and ONNX Runtime's
  contrib ops.
- PyTorch: the fewest rows of any ``nn.Embedding`` / ``nn.EmbeddingBag`` (``aten.embedding`` in an
  ExportedProgram): ids below it fit every table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from compressor.artifact import IOSpec

#: Ops whose output holds (some of) the values of the given input unchanged: ``op -> input positions``.
_PASS_VALUES = {
    "Cast": (0,), "Identity": (0,), "Reshape": (0,), "Squeeze": (0,), "Unsqueeze": (0,), "Flatten": (0,),
    "Transpose": (0,), "Expand": (0,), "Slice": (0,), "Tile": (0,), "Split": (0,), "Concat": None,
    "Gather": (0,), "GatherElements": (0,), "Clip": (),
}

#: Ops that index with an input: ``op -> {indices input position: (data input position, axis attribute,
#: default axis)}``; an axis of None means every axis of the data (GatherND, ScatterND: the smallest).
_INDEXING = {
    "Gather": {1: (0, "axis", 0)},
    "GatherElements": {1: (0, "axis", 0)},
    "ScatterElements": {1: (0, "axis", 0)},
    "GatherND": {1: (0, None, None)},
    "ScatterND": {1: (0, None, None)},
    "EmbedLayerNormalization": {0: (2, None, 0), 1: (4, None, 0), 8: (3, None, 0)},
}


@dataclass(frozen=True)
class IndexRange:
    """What an integer input may hold.

    Attributes:
        high: Exclusive upper bound of its values (they start at 0), or None when an op indexes with it
            along an axis whose size the model does not fix.
        where: The op that sets the bound (or has the unknown size), for messages and the report.
    """

    high: int | None
    where: str


def onnx_index_ranges(model: Any, io: IOSpec) -> dict[str, IndexRange]:
    """Index ranges of the integer inputs of an ONNX model.

    Args:
        model: ``onnx.ModelProto``.
        io: The resolved input spec (``--input-shape`` and data applied), for the sizes of graph inputs.

    Returns:
        ``{input name: IndexRange}`` for the integer inputs that reach an indexing op; the tightest bound
        when several do, and ``high=None`` when any of them indexes an axis of unknown size.
    """
    from compressor.onnx_graph import consumers, initializers

    graph = model.graph
    cons = consumers(graph)
    shapes = _known_shapes(model, io, initializers(graph))
    out: dict[str, IndexRange] = {}
    for spec in io.inputs:
        if not spec.dtype.startswith(("int", "uint")):
            continue
        bounds: list[IndexRange] = []
        seen = {spec.name}
        todo = [spec.name]
        while todo:
            tensor = todo.pop()
            for node in cons.get(tensor, []):
                positions = [i for i, name in enumerate(node.input) if name == tensor]
                for pos in positions:
                    index = _INDEXING.get(node.op_type, {}).get(pos)
                    if index is not None:
                        bounds.append(_bound(node, index, shapes, pos))
                    passes = _PASS_VALUES.get(node.op_type, ())
                    if passes is None or pos in passes:
                        for o in node.output:
                            if o and o not in seen:
                                seen.add(o)
                                todo.append(o)
        if not bounds:
            continue
        unknown = [b for b in bounds if b.high is None]
        out[spec.name] = unknown[0] if unknown else min(bounds, key=lambda b: b.high)
    return out


def _bound(node: Any, index: tuple[int, str | None, int | None], shapes: dict[str, tuple[int | None, ...]],
           pos: int) -> IndexRange:
    data_pos, attr, default = index
    name = f"{node.op_type} node '{node.name or node.output[0]}'"
    data = node.input[data_pos] if data_pos < len(node.input) else ""
    shape = shapes.get(data)
    if node.op_type == "EmbedLayerNormalization":
        size = shape[0] if shape else None
        return IndexRange(size, f"{name} (table '{data}' of {size} rows)")
    if shape is None:
        return IndexRange(None, f"{name} (indexes '{data}', whose shape the model does not fix)")
    if attr is None:
        sizes = [d for d in shape if d is not None]
        size = min(sizes) if sizes and len(sizes) == len(shape) else None
        return IndexRange(size, f"{name} (indexes '{data}' of shape {list(shape)})")
    axis = next((a.i for a in node.attribute if a.name == attr), default)
    axis = axis + len(shape) if axis < 0 else axis
    size = shape[axis] if 0 <= axis < len(shape) else None
    if size is None:
        return IndexRange(None, f"{name} (indexes axis {axis} of '{data}', whose size the model does not fix)")
    return IndexRange(size, f"{name} (axis {axis} of '{data}', size {size})")


def _known_shapes(model: Any, io: IOSpec, inits: dict[str, Any]) -> dict[str, tuple[int | None, ...]]:
    """Static shapes of tensors: initializers, Constant nodes, inputs (resolved), value_info, shape inference."""
    import onnx

    shapes: dict[str, tuple[int | None, ...]] = {n: tuple(int(d) for d in t.dims) for n, t in inits.items()}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value" and a.HasField("t"):
                    shapes[node.output[0]] = tuple(int(d) for d in a.t.dims)
    for spec in io.inputs:
        shapes[spec.name] = tuple(d if isinstance(d, int) and d > 0 else None for d in spec.shape)

    def read(values: Any) -> None:
        for v in values:
            if v.name in shapes or not v.type.HasField("tensor_type") or not v.type.tensor_type.HasField("shape"):
                continue
            shapes[v.name] = tuple(int(d.dim_value) if d.HasField("dim_value") else None
                                   for d in v.type.tensor_type.shape.dim)

    read(model.graph.value_info)
    read(model.graph.output)
    if sum(len(t.raw_data) for t in inits.values()) < 256 * 1024**2:  # shape inference copies the model
        try:
            fixed = onnx.ModelProto()
            fixed.CopyFrom(model)
            by_name = {s.name: s for s in io.inputs}
            for v in fixed.graph.input:
                spec = by_name.get(v.name)
                if spec is None or not v.type.HasField("tensor_type"):
                    continue
                for d, size in zip(v.type.tensor_type.shape.dim, spec.shape, strict=False):
                    if isinstance(size, int) and size > 0:
                        d.dim_value = size
            read(onnx.shape_inference.infer_shapes(fixed, data_prop=True).graph.value_info)
        except Exception:  # noqa: BLE001 - shape inference is a best effort here: unknown sizes stay unknown
            pass
    return shapes


def torch_index_high(model: Any) -> IndexRange | None:
    """The fewest rows of the embedding tables of a PyTorch model (nn.Module or ExportedProgram), or None."""
    import torch

    sizes: list[tuple[int, str]] = []
    if isinstance(model, torch.export.ExportedProgram):
        for node in model.graph.nodes:
            if node.op == "call_function" and "embedding" in str(node.target):
                val = getattr(node.args[0], "meta", {}).get("val")
                if val is not None and val.dim() == 2:
                    sizes.append((int(val.shape[0]), f"embedding '{node.args[0].name}'"))
    elif isinstance(model, torch.nn.Module):
        for name, m in model.named_modules():
            if isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag)):
                sizes.append((int(m.num_embeddings), f"nn.{type(m).__name__} '{name}' of {m.num_embeddings} rows"))
    if not sizes:
        return None
    size, where = min(sizes)
    return IndexRange(size, where)

"""Dynamic int8 quantization of a large model one MatMul at a time (bounded memory).

ONNX Runtime's ``quantize_dynamic`` (1.32) holds a model in memory about 3.5 times over: it loads
it, and its ``ONNXQuantizer`` then deep-copies it, saves the copy and loads it back (to refresh
shape information) while the caller still holds the first. On a 2.4 GB model that peaks near 8 GB.

Dynamic quantization of a ``MatMul`` with a constant weight is local to that node: its activation
is quantized at run time by its own ``DynamicQuantizeLinear`` and its output is float again. So each
such node is cut out into a one-node model (its weight read from the external data file),
quantized by ONNX Runtime's ``quantize_dynamic`` with the run's settings, and its nodes and
initializers are put back in the node's place; the int8 weights are written straight to the
output's data file. Memory: the graph plus about 3.5 times the largest weight. A
``DynamicQuantizeLinear`` that several MatMuls share (same input) is kept once, as ONNX Runtime
does for the whole model.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from compressor import onnx_graph

#: Op types ONNX Runtime's dynamic quantizer turns into integer ops (its ``IntegerOpsRegistry``).
_INTEGER_OPS = ("Conv", "MatMul", "Gemm", "Attention", "LSTM", "Gather", "EmbedLayerNormalization", "Transpose")


def matmuls_to_quantize(model: Any, *, excluded: Iterable[str], op_types: Iterable[str] | None) -> list[str]:
    """Names of the MatMul nodes with a constant 2-D float weight (input B) that the run quantizes.

    Args:
        model: ``onnx.ModelProto`` (graph only is enough).
        excluded: Node names left in float.
        op_types: The op types to quantize, or None for ONNX Runtime's default (all).
    """
    if op_types is not None and "MatMul" not in set(op_types):
        return []
    skip = set(excluded)
    inits = onnx_graph.initializers(model)
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and n.name and n.name not in skip and len(n.input) > 1 and n.input[1] in inits
            and len(inits[n.input[1]].dims) == 2 and inits[n.input[1]].data_type in onnx_graph.FLOAT_ELEM_TYPES]


def has_other_quantizable(path: Path, *, excluded: Iterable[str], op_types: Iterable[str] | None) -> bool:
    """True when a graph still has nodes ONNX Runtime's dynamic quantizer would take (weights as initializers)."""
    import onnx

    model = onnx.load_model(os.fspath(path), load_external_data=False)
    inits = onnx_graph.initializers(model)
    wanted = set(op_types) if op_types is not None else set(_INTEGER_OPS)
    skip = set(excluded)
    return any(n.op_type in wanted and n.op_type in _INTEGER_OPS and n.name not in skip
               and any(i in inits and inits[i].data_type in onnx_graph.FLOAT_ELEM_TYPES for i in n.input)
               for n in model.graph.node)


def quantize_dynamic_by_node(src: Path, out: Path, nodes: list[str], workdir: Path, **quantize_kwargs: Any) -> Path:
    """Quantize ``nodes`` (MatMuls with constant 2-D weights) of ``src`` one at a time; write ``out`` + ``out.data``.

    Args:
        src: ONNX model (external data beside it, or inline).
        out: Destination model; its weights go to ``<out name>.data`` (a new file).
        nodes: MatMul node names, e.g. from :func:`matmuls_to_quantize`.
        workdir: Scratch folder for the one-node models (removed as it goes).
        **quantize_kwargs: Passed to ``onnxruntime.quantization.quantize_dynamic`` for every node
            (``per_channel``, ``reduce_range``, ``weight_type``, ``extra_options``).

    Returns:
        ``out``.

    Raises:
        ValueError: ONNX Runtime left a node unquantized or gave a node output it did not have.
    """
    import onnx
    from onnx import helper, numpy_helper
    from onnx.external_data_helper import load_external_data_for_tensor
    from onnxruntime.quantization import quantize_dynamic

    from compressor.external_data import DataWriter, load_graph

    src, out = Path(src), Path(out)
    base = src.parent
    model = load_graph(src)
    inits = onnx_graph.initializers(model)
    infos = {v.name: v for v in [*model.graph.value_info, *model.graph.input, *model.graph.output]}
    wanted = set(nodes)
    writer = DataWriter(out)
    merged: list[Any] = []
    produced: set[str] = set()
    new_inits: dict[str, Any] = {}
    domains: dict[str, int] = {}
    for k, node in enumerate(model.graph.node):
        if node.name not in wanted:
            merged.append(node)
            continue
        weight = onnx.TensorProto()
        weight.CopyFrom(inits[node.input[1]])
        if weight.data_location == onnx.TensorProto.EXTERNAL:
            load_external_data_for_tensor(weight, os.fspath(base))
        x = infos.get(node.input[0]) or helper.make_tensor_value_info(node.input[0], onnx.TensorProto.FLOAT, None)
        y = infos.get(node.output[0]) or helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None)
        sub = helper.make_model(helper.make_graph([node], "one_node", [x], [y], [weight]),
                                opset_imports=list(model.opset_import), ir_version=model.ir_version)
        folder = workdir / f"node-{k:04d}"
        folder.mkdir()
        onnx.save_model(sub, os.fspath(folder / "in.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                        location="in.onnx.data", size_threshold=1024)
        del sub, weight
        quantize_dynamic(os.fspath(folder / "in.onnx"), os.fspath(folder / "out.onnx"), nodes_to_quantize=[node.name],
                         use_external_data_format=True, **quantize_kwargs)
        q = onnx.load_model(os.fspath(folder / "out.onnx"), load_external_data=False)
        if any(n.op_type == "MatMul" and n.name == node.name for n in q.graph.node):
            raise ValueError(f"ONNX Runtime left MatMul {node.name} unquantized")
        if [o.name for o in q.graph.output] != [node.output[0]]:
            raise ValueError(f"quantizing {node.name} on its own changed its output")
        for n in q.graph.node:
            if n.output and all(o in produced for o in n.output):
                continue  # e.g. the DynamicQuantizeLinear of an input shared with an earlier MatMul
            merged.append(n)
            produced.update(n.output)
        for t in q.graph.initializer:
            if t.name in new_inits or t.name in inits:
                continue
            new_t = onnx.TensorProto()
            new_t.CopyFrom(t)
            writer.put(new_t, numpy_helper.to_array(t, base_dir=os.fspath(folder)))
            new_inits[t.name] = new_t
        for o in q.opset_import:
            domains[o.domain] = max(domains.get(o.domain, 0), o.version)
        del q
        shutil.rmtree(folder, ignore_errors=True)
    del model.graph.node[:]
    model.graph.node.extend(merged)
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    keep = [t for t in model.graph.initializer if t.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
    model.graph.initializer.extend(new_inits.values())
    have = {o.domain: o for o in model.opset_import}
    for domain, version in domains.items():
        if domain in have:
            have[domain].version = max(have[domain].version, version)
        else:
            model.opset_import.append(helper.make_opsetid(domain, version))
    writer.save(model, base_dir=base)
    return out

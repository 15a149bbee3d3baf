"""A small zoo of seeded ONNX op graphs (cases R22-R25), each with calibration and held-out data.

The graphs are the forms on which ONNX Runtime's quantization op tests tripped the product:
saturation on CPUs without VNNI (R22), a lone recurrent layer (R23), a gather over a small table
(R24), Gemm with alpha/beta (R25). Every builder returns a :class:`ZooGraph`; the slow suite
(tests/test_zoo_graphs_slow.py) runs every precision over every graph.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17


@dataclass
class ZooGraph:
    """One graph of the zoo.

    Attributes:
        name: Short identifier (used in test ids and file names).
        model: The float32 ``onnx.ModelProto`` (checked).
        make_data: ``seed -> {input name: array [samples, ...]}``; seed 0 is calibration, 1 held-out.
    """

    name: str
    model: onnx.ModelProto
    make_data: Callable[[int], dict[str, np.ndarray]]

    def save(self, folder: Path) -> tuple[Path, Path, Path]:
        """Write ``<name>.onnx``, ``<name>.calib.npz`` (seed 0) and ``<name>.heldout.npz`` (seed 1) into ``folder``."""
        path = Path(folder) / f"{self.name}.onnx"
        onnx.save_model(self.model, str(path))
        calib, held = Path(folder) / f"{self.name}.calib.npz", Path(folder) / f"{self.name}.heldout.npz"
        np.savez(calib, **self.make_data(0))
        np.savez(held, **self.make_data(1))
        return path, calib, held


def _model(nodes: list, inputs: list, outputs: list, inits: dict[str, np.ndarray], name: str) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, name, inputs, outputs,
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def _f(name: str, *shape: int | str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _w(rng: np.random.Generator, *shape: int, scale: float | None = None) -> np.ndarray:
    scale = scale if scale is not None else 1.0 / np.sqrt(shape[0])
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _normal(shape: tuple[int, ...], n: int = 64, *, offset: float = 0.0) -> Callable[[int], dict[str, np.ndarray]]:
    def make(seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(100 + seed)
        return {"x": (rng.standard_normal((n, *shape)) + offset).astype(np.float32)}
    return make


def matmul_add() -> ZooGraph:
    """x [N,32] @ W [32,16] + b [16] (R22)."""
    rng = np.random.default_rng(0)
    m = _model([helper.make_node("MatMul", ["x", "W"], ["h"], name="matmul"),
                helper.make_node("Add", ["h", "b"], ["y"], name="bias")],
               [_f("x", "N", 32)], [_f("y", "N", 16)], {"W": _w(rng, 32, 16), "b": _w(rng, 16, scale=0.1)},
               "matmul_add")
    return ZooGraph("matmul_add", m, _normal((32,)))


def gemm_clip_gemm() -> ZooGraph:
    """Gemm [32->64] -> Clip(0, 6) -> Gemm [64->10] (R22)."""
    rng = np.random.default_rng(1)
    m = _model([helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], name="gemm1"),
                helper.make_node("Clip", ["h", "lo", "hi"], ["r"], name="clip"),
                helper.make_node("Gemm", ["r", "W2", "b2"], ["y"], name="gemm2", transB=1)],
               [_f("x", "N", 32)], [_f("y", "N", 10)],
               {"W1": _w(rng, 32, 64), "b1": _w(rng, 64, scale=0.1), "W2": _w(rng, 10, 64, scale=0.125),
                "b2": _w(rng, 10, scale=0.1), "lo": np.float32(0.0), "hi": np.float32(6.0)},
               "gemm_clip_gemm")
    return ZooGraph("gemm_clip_gemm", m, _normal((32,)))


def reshape_matmul() -> ZooGraph:
    """x [N,4,8] -> Reshape [N,32] -> MatMul W [32,16] (R22)."""
    rng = np.random.default_rng(2)
    m = _model([helper.make_node("Reshape", ["x", "shape"], ["flat"], name="reshape"),
                helper.make_node("MatMul", ["flat", "W"], ["y"], name="matmul")],
               [_f("x", "N", 4, 8)], [_f("y", "N", 16)],
               {"shape": np.array([-1, 32], dtype=np.int64), "W": _w(rng, 32, 16)}, "reshape_matmul")
    return ZooGraph("reshape_matmul", m, _normal((4, 8)))


def softmax_matmul() -> ZooGraph:
    """x [N,8,16] -> Softmax(-1) -> MatMul W [16,16] (R22), scores with a spread like attention logits."""
    rng = np.random.default_rng(3)
    m = _model([helper.make_node("Softmax", ["x"], ["p"], name="softmax", axis=-1),
                helper.make_node("MatMul", ["p", "W"], ["y"], name="matmul")],
               [_f("x", "N", 8, 16)], [_f("y", "N", 8, 16)], {"W": _w(rng, 16, 16, scale=1.0)}, "softmax_matmul")

    def make(seed: int) -> dict[str, np.ndarray]:
        r = np.random.default_rng(100 + seed)
        return {"x": (2.0 * r.standard_normal((64, 8, 16))).astype(np.float32)}
    return ZooGraph("softmax_matmul", m, make)


def reduce_mean_gemm() -> ZooGraph:
    """A spatial ReduceMean over [N,8,6,6] (axes 2,3, keepdims 0) before a Gemm [8->10] (R22)."""
    rng = np.random.default_rng(4)
    m = _model([helper.make_node("Relu", ["x"], ["r"], name="relu"),
                helper.make_node("ReduceMean", ["r"], ["m"], name="mean", axes=[2, 3], keepdims=0),
                helper.make_node("Gemm", ["m", "W", "b"], ["y"], name="gemm")],
               [_f("x", "N", 8, 6, 6)], [_f("y", "N", 10)],
               {"W": _w(rng, 8, 10, scale=1.0), "b": _w(rng, 10, scale=0.1)}, "reduce_mean_gemm")

    def make(seed: int) -> dict[str, np.ndarray]:
        r = np.random.default_rng(100 + seed)
        per_channel = r.uniform(-1.0, 2.0, size=(64, 8, 1, 1))  # channel means differ per sample
        return {"x": (per_channel + 0.5 * r.standard_normal((64, 8, 6, 6))).astype(np.float32)}
    return ZooGraph("reduce_mean_gemm", m, make)


def gather_table() -> ZooGraph:
    """Gather over a 20-row table on int64 ids [N,5], then MatMul [16->8] (R24)."""
    rng = np.random.default_rng(5)
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 5])
    m = _model([helper.make_node("Gather", ["table", "ids"], ["e"], name="gather"),
                helper.make_node("MatMul", ["e", "W"], ["y"], name="matmul")],
               [ids], [_f("y", "N", 5, 8)], {"table": _w(rng, 20, 16, scale=1.0), "W": _w(rng, 16, 8)},
               "gather_table")

    def make(seed: int) -> dict[str, np.ndarray]:
        return {"ids": np.random.default_rng(100 + seed).integers(0, 20, size=(64, 5)).astype(np.int64)}
    return ZooGraph("gather_table", m, make)


def gemm_alpha_beta(alpha: float = 0.5, beta: float = 2.0) -> ZooGraph:
    """Gemm(x [N,32], W [32,16], b [16]) with alpha 0.5 and beta 2 (R25)."""
    rng = np.random.default_rng(6)
    m = _model([helper.make_node("Gemm", ["x", "W", "b"], ["y"], name="gemm", alpha=alpha, beta=beta)],
               [_f("x", "N", 32)], [_f("y", "N", 16)], {"W": _w(rng, 32, 16), "b": _w(rng, 16, scale=0.5)},
               "gemm_alpha_beta")
    return ZooGraph("gemm_alpha_beta", m, _normal((32,)))


def lone_lstm() -> ZooGraph:
    """One ONNX LSTM (constant W, R, B; hidden 32) over x [N,10,8]; output its last hidden state [N,32] (R23)."""
    rng = np.random.default_rng(7)
    h = 32
    m = _model([helper.make_node("Transpose", ["x"], ["xt"], name="to_seq_first", perm=[1, 0, 2]),
                helper.make_node("LSTM", ["xt", "W", "R", "B"], ["", "y_h"], name="lstm", hidden_size=h),
                helper.make_node("Squeeze", ["y_h", "axis0"], ["y"], name="squeeze")],
               [_f("x", "N", 10, 8)], [_f("y", "N", h)],
               {"W": _w(rng, 1, 4 * h, 8, scale=0.3), "R": _w(rng, 1, 4 * h, h, scale=0.15),
                "B": _w(rng, 1, 8 * h, scale=0.1), "axis0": np.array([0], dtype=np.int64)}, "lone_lstm")
    return ZooGraph("lone_lstm", m, _normal((10, 8)))


#: Every builder of the zoo, by name.
ZOO: dict[str, Callable[[], ZooGraph]] = {
    "matmul_add": matmul_add,
    "gemm_clip_gemm": gemm_clip_gemm,
    "reshape_matmul": reshape_matmul,
    "softmax_matmul": softmax_matmul,
    "reduce_mean_gemm": reduce_mean_gemm,
    "gather_table": gather_table,
    "gemm_alpha_beta": gemm_alpha_beta,
    "lone_lstm": lone_lstm,
}


def run(model: onnx.ModelProto | Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """Outputs of a model in ONNX Runtime (CPU, graph optimisations off so that rewrites are compared as written)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"]).run(None, feeds)


def cosine_min(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest per-sample cosine similarity of two ``[samples, ...]`` arrays."""
    a2, b2 = a.reshape(len(a), -1).astype(np.float64), b.reshape(len(b), -1).astype(np.float64)
    num = (a2 * b2).sum(1)
    den = np.linalg.norm(a2, axis=1) * np.linalg.norm(b2, axis=1) + 1e-12
    return float((num / den).min())

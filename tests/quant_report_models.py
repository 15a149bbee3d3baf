"""Small seeded models and graphs for the quantization report cases R1, R7, R8, R11, R16, R21, R23.

Importable (``tests.quant_report_models``) so that ``--model-class`` and pickles of these classes load.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper


class LSTMLast(torch.nn.Module):
    """Case R1: 2-layer ``nn.LSTM(8, 32, batch_first=True)``; returns the last time step. Input [1, 10, 8]."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = torch.nn.LSTM(8, 32, num_layers=2, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rnn(x)[0][:, -1]


class LSTMHead(LSTMLast):
    """Case R1: :class:`LSTMLast` with a Linear(32, 4) head."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(super().forward(x))


class GRUHead(torch.nn.Module):
    """Case R1: 2-layer ``nn.GRU(8, 32, batch_first=True)``, last time step, Linear(32, 4)."""

    def __init__(self) -> None:
        super().__init__()
        self.rnn = torch.nn.GRU(8, 32, num_layers=2, batch_first=True)
        self.head = torch.nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.rnn(x)[0][:, -1])


class EmbedLSTM(torch.nn.Module):
    """Case R16 (and R14): Embedding(100, 16) -> LSTM(16, 32) -> Linear(32, 10) on the last step; ids [1, 12]."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(100, 16)
        self.rnn = torch.nn.LSTM(16, 32, batch_first=True)
        self.fc = torch.nn.Linear(32, 10)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.rnn(self.emb(ids))[0][:, -1])


class ConvOnly(torch.nn.Module):
    """Case R21: conv 3->8->8, global mean; no Linear. Input [1, 3, 16, 16]."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(torch.relu(self.c1(x))).mean(dim=(2, 3))


class ConvHead(ConvOnly):
    """Case R21: :class:`ConvOnly` with a Linear(8, 10) head."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(super().forward(x))


def _rand(rng: np.random.Generator, *shape: int, scale: float = 0.3) -> np.ndarray:
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def _model(nodes: list, inputs: list, outputs: list, inits: list, *, ms: bool = False) -> onnx.ModelProto:
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.microsoft", 1)] if ms else [])
    model = helper.make_model(helper.make_graph(nodes, "g", inputs, outputs, inits), opset_imports=opsets)
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def mlp(seed: int = 0, dims: tuple[int, ...] = (16, 32, 32, 4), *, matmul_add: bool = False,
        sparse: bool = False) -> onnx.ModelProto:
    """Cases R8, R11, R16, R23: an MLP of Gemm (or MatMul + Add) with Relu between; input x [N, 16] float32.

    ``sparse``: half of each weight matrix is exactly zero and every other weight is at least 0.3 of its
    row's largest magnitude, so that no weight rounds to zero in int8 or int4 (the sparsity is exact).
    """
    rng = np.random.default_rng(seed)
    nodes, inits, x = [], [], "x"
    for i in range(len(dims) - 1):
        w = _rand(rng, dims[i], dims[i + 1])
        if sparse:
            w = (np.sign(w) * (0.5 + 0.5 * rng.random(w.shape))).astype(np.float32)
            w[rng.random(w.shape) < 0.5] = 0.0
        b = _rand(rng, dims[i + 1], scale=0.1)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        y = "y" if i == len(dims) - 2 else f"h{i}"
        pre = f"{y}_pre" if y != "y" else y
        if matmul_add:
            nodes += [helper.make_node("MatMul", [x, f"w{i}"], [f"mm{i}"], name=f"matmul{i}"),
                      helper.make_node("Add", [f"mm{i}", f"b{i}"], [pre], name=f"add{i}")]
        else:
            nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [pre], name=f"gemm{i}"))
        if y != "y":
            nodes.append(helper.make_node("Relu", [pre], [y], name=f"relu{i}"))
        x = y
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", dims[0]])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", dims[-1]])], inits)


def onnx_lstm(*, head: bool = False, bidirectional: bool = False, seed: int = 0) -> onnx.ModelProto:
    """Case R23: one ONNX LSTM (constant W [1,128,8], R [1,128,32], B [1,256]) on x [N, 10, 8] (transposed to
    sequence first: ONNX Runtime runs layout 0 only); output Y_h as [N, 1, 32], or with ``head`` a MatMul by a
    constant [32, 4] after it. ``bidirectional``: two directions (weights [2, ...], output [N, 2, 32])."""
    rng = np.random.default_rng(seed)
    d = 2 if bidirectional else 1
    inits = [numpy_helper.from_array(_rand(rng, d, 128, 8), "W"), numpy_helper.from_array(_rand(rng, d, 128, 32), "R"),
             numpy_helper.from_array(_rand(rng, d, 256, scale=0.1), "B")]
    nodes = [helper.make_node("Transpose", ["x"], ["xs"], name="to_seq_first", perm=[1, 0, 2]),
             helper.make_node("LSTM", ["xs", "W", "R", "B"], ["", "h"], name="lstm", hidden_size=32,
                              direction="bidirectional" if bidirectional else "forward"),
             helper.make_node("Transpose", ["h"], ["hb"], name="to_batch_first", perm=[1, 0, 2])]
    out = "hb"
    if head:
        inits.append(numpy_helper.from_array(_rand(rng, 32, 4), "Wo"))
        nodes.append(helper.make_node("MatMul", ["hb", "Wo"], ["y"], name="head"))
        out = "y"
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10, 8])],
                  [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", d, 4 if head else 32])], inits)


def ms_attention(seed: int = 0) -> onnx.ModelProto:
    """Case R23: com.microsoft Attention (hidden 16, 2 heads, weights [16, 48]) -> MatMul [16, 4]; x [N, 8, 16]."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(_rand(rng, 16, 48), "Wqkv"), numpy_helper.from_array(_rand(rng, 48, scale=0.1), "Bqkv"),
             numpy_helper.from_array(_rand(rng, 16, 4), "Wo")]
    nodes = [helper.make_node("Attention", ["x", "Wqkv", "Bqkv"], ["a"], name="attention", domain="com.microsoft",
                              num_heads=2),
             helper.make_node("MatMul", ["a", "Wo"], ["y"], name="proj")]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8, 16])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8, 4])], inits, ms=True)


def embedding_matmul(seed: int = 0, rows: int = 128) -> onnx.ModelProto:
    """Case R23: Gather over a constant table [rows, 16] (ids [N, 6] int64) -> MatMul [16, 4]."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(_rand(rng, rows, 16), "table"), numpy_helper.from_array(_rand(rng, 16, 4), "Wo")]
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], name="embed"),
             helper.make_node("MatMul", ["e", "Wo"], ["y"], name="proj")]
    return _model(nodes, [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 6])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6, 4])], inits)


def integer_weights(seed: int = 0) -> onnx.ModelProto:
    """Case R7: a weight stored as int8 and cast to float before a MatMul (an integer-weight model, no QDQ)."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-127, 128, size=(16, 4)).astype(np.int8)
    inits = [numpy_helper.from_array(w, "w_int8"), numpy_helper.from_array(np.float32(0.01), "w_scale")]
    nodes = [helper.make_node("Cast", ["w_int8"], ["w_f"], to=TensorProto.FLOAT, name="cast"),
             helper.make_node("Mul", ["w_f", "w_scale"], ["w"], name="scale"),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")]
    return _model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 16])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], inits)


def tied_embedding(seed: int = 0, rows: int = 128) -> onnx.ModelProto:
    """Case R16: one table [rows, 16] read by a Gather (ids [N, 6] int64) and, transposed, by the output MatMul."""
    rng = np.random.default_rng(seed)
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"], name="embed"),
             helper.make_node("Transpose", ["table"], ["table_t"], name="tie", perm=[1, 0]),
             helper.make_node("MatMul", ["e", "table_t"], ["y"], name="logits")]
    return _model(nodes, [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N", 6])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 6, rows])],
                  [numpy_helper.from_array(_rand(rng, rows, 16), "table")])

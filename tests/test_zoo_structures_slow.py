"""Every pass over the zoo of pruning structures (tests/zoo_structures.py): a new fault of a known kind shows here.

Each run either exits 0 with the model's interface intact (same inputs, same outputs and shapes at another batch
size, every ONNX output checked by the full ONNX checker in ``run_cli``) or stops with a one-line refusal (exit 2)
or an honest one-line "removed no channel" (exit 1, structured pruning only). Slow: ~33 CLI runs.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests import zoo_structures as zoo
from tests.conftest import run_cli

RUNS = [("prune", "structured"), ("prune", "unstructured"), ("quantize", None)]


def _feeds(entry: zoo.ZooEntry, batch: int) -> dict[str, np.ndarray]:
    feeds = {}
    for i, spec in enumerate(entry.input_shapes):
        parts = spec.split(":")
        name = parts[0] if len(parts) > 1 else None
        dims = [int(d) for d in (parts[1].split("x") if name else parts[0].split(","))]
        dtype = parts[2] if len(parts) > 2 else "float32"
        rng = np.random.default_rng(i)
        arr = rng.integers(0, 50, [batch, *dims[1:]]) if dtype == "int64" else rng.standard_normal([batch, *dims[1:]])
        feeds[name or i] = arr.astype(dtype)
    return feeds


@pytest.mark.slow
@pytest.mark.parametrize("entry", zoo.ZOO, ids=[e.name for e in zoo.ZOO])
@pytest.mark.parametrize(("command", "method"), RUNS, ids=[m or c for c, m in RUNS])
def test_zoo_structure(tmp_path, entry, command, method):
    src = tmp_path / f"{entry.name}.pt"
    model = entry.model()
    torch.save(model, src)
    out = tmp_path / "out.onnx"
    args = ["--method", method] if method else []
    r = run_cli(command, src, "--trust-pickle", *entry.shape_flags(), *args, "-o", out, "--json",
                "--runs", "3", "--warmup", "1", "--no-measure-memory")
    if r.code != 0:
        lines = [line for line in r.error_lines if line.startswith("error")]
        assert len(lines) == 1 and "Traceback" not in r.stderr and "unexpected" not in r.stderr, r.stderr
        assert r.code == 2 or (r.code == 1 and method == "structured" and "removed no channel" in r.stderr), r.stderr
        return
    feeds = _feeds(entry, 3)
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    got = sess.run(None, {names[k] if isinstance(k, int) else k: v for k, v in feeds.items()})
    with torch.no_grad():
        ref = zoo._flatten(model(*[torch.from_numpy(v) for v in feeds.values()]))
    assert [g.shape for g in got] == [tuple(t.shape) for t in ref]
    if command == "prune" and method == "structured":
        p = r.report["pruning"]
        assert p["torch_parameters_after"] < p["torch_parameters_before"]
        assert all(la["channels_after"] == la["channels_before"] for la in p["layers"] if la["kept_because"])

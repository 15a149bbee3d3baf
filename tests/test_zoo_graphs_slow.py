"""Every precision over every graph of the zoo (tests/zoo_graphs.py): exit 0 with held-out fidelity, or a clear refusal.

A new fault of a known kind (saturation, a form the quantizer mishandles, a false "quantized no node")
shows up here first. Held-out: calibration uses seed-0 samples, fidelity is measured on seed-1 samples.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests import zoo_graphs
from tests.conftest import FAST_BENCH, run_cli

PRECISIONS = {
    "static": ["--mode", "static"],
    "dynamic": ["--mode", "dynamic"],
    "int4": ["--precision", "int4"],
    "fp16": ["--precision", "fp16"],
}

#: Least held-out per-sample cosine to fp32 accepted for each precision (int4 is weight-only at block 16).
MIN_COSINE = {"static": 0.99, "dynamic": 0.99, "int4": 0.95, "fp16": 0.999}


@pytest.mark.slow
@pytest.mark.parametrize("precision", list(PRECISIONS))
@pytest.mark.parametrize("graph", list(zoo_graphs.ZOO))
def test_zoo_every_precision(graph, precision, tmp_path):
    g = zoo_graphs.ZOO[graph]()
    model, calib, held = g.save(tmp_path)
    out = tmp_path / f"{graph}.{precision}.onnx"
    r = run_cli("quantize", model, "-o", out, "--calibration-data", calib, *PRECISIONS[precision], "--json",
                *FAST_BENCH)
    if r.code == 2:  # a refusal: one line, naming the form, no output left behind
        assert len(r.error_lines) == 1, r.stderr
        assert not out.exists()
        pytest.skip(f"refused: {r.error_lines[0]}")
    assert r.code == 0, r.stderr
    feeds = dict(np.load(held))
    ref = zoo_graphs.run(model, feeds)
    got = zoo_graphs.run(out, feeds)
    worst = min(zoo_graphs.cosine_min(a, b) for a, b in zip(ref, got, strict=True))
    assert worst >= MIN_COSINE[precision], f"{graph} {precision}: held-out cosine_min {worst:.4f}"
    q = r.report["quantization"]
    assert q["quantized_nodes"], q

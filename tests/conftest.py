"""Shared test helpers: run the real CLI in a subprocess and parse its JSON report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
CLI = [sys.executable, "-m", "compressor"]
FAST_BENCH = ["--runs", "20", "--warmup", "2", "--no-measure-memory"]


class CliResult:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.code = proc.returncode
        self.stdout = proc.stdout
        self.stderr = proc.stderr

    @property
    def report(self) -> dict:
        return json.loads(self.stdout)

    @property
    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]


def run_cli(*args: str | Path, cwd: Path | None = None, timeout: float = 300) -> CliResult:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd or ROOT, env=env,
                          timeout=timeout)
    return CliResult(proc)


@pytest.fixture(scope="session")
def samples() -> Path:
    return SAMPLES

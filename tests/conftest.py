"""Shared test helpers: run the real CLI (in process by default, or as a subprocess) and parse its JSON report."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
CLI = [sys.executable, "-m", "compressor"]
FAST_BENCH = ["--runs", "20", "--warmup", "2", "--no-measure-memory"]


class CliResult:
    def __init__(self, code: int, stdout: str, stderr: str):
        self.code = code
        self.stdout = stdout
        self.stderr = stderr

    @property
    def report(self) -> dict:
        return json.loads(self.stdout)

    @property
    def error_lines(self) -> list[str]:
        """Lines of stderr that are not progress reports."""
        return [line for line in self.stderr.splitlines() if line.strip() and not line.startswith("progress: ")]

    @property
    def progress_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("progress: ")]


@contextlib.contextmanager
def _captured_fds():
    """Send file descriptors 1 and 2 (and sys.stdout / sys.stderr) to temporary files, as a process's pipes would."""
    out_f, err_f = tempfile.TemporaryFile(), tempfile.TemporaryFile()
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    old = sys.stdout, sys.stderr
    os.dup2(out_f.fileno(), 1)
    os.dup2(err_f.fileno(), 2)
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), write_through=True)
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), write_through=True)
    try:
        yield out_f, err_f
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        sys.stdout, sys.stderr = old
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])


def _read(f) -> str:
    f.seek(0)
    return f.read().decode(errors="replace")


def assert_valid_onnx(path: str | Path) -> None:
    """The one shared assertion on every ONNX file a test produces: the full ONNX checker (by path, so models
    with external data are checked too) passes."""
    import onnx

    onnx.checker.check_model(str(path), full_check=True)


def _outputs_of(args: list[str], result: CliResult, cwd: Path) -> set[Path]:
    """The ONNX files a successful command says it wrote: ``-o``/``--output``, ``wrote PATH`` lines, and the
    JSON report's ``output`` / ``result.path``."""
    found: list[str] = []
    for i, a in enumerate(args[:-1]):
        if a in ("-o", "--output"):
            found.append(args[i + 1])
    for text in (result.stdout, result.stderr):
        found += [line[len("wrote "):].split(" (")[0] for line in text.splitlines() if line.startswith("wrote ")]
    try:
        rep = json.loads(result.stdout)
    except ValueError:
        rep = None
    if isinstance(rep, dict):
        found += [rep.get("output") or "", (rep.get("result") or {}).get("path") or ""]
    paths = set()
    for f in found:
        p = Path(f) if Path(f).is_absolute() else cwd / f
        if f and p.suffix == ".onnx" and p.is_file():
            paths.add(p)
    return paths


def run_cli(*args: str | Path, cwd: Path | None = None, timeout: float = 300, subprocess_: bool = False,
            check_outputs: bool = True) -> CliResult:
    """Run ``compressor ARGS``: in this process (fast; the same entry point as the console script), or in a
    child process with ``subprocess_=True`` (for signals, module imports from a test folder, the installed CLI).

    After exit 0, every ONNX file the command wrote passes :func:`assert_valid_onnx` (unless ``check_outputs``
    is False)."""
    result = _run_cli(*args, cwd=cwd, timeout=timeout, subprocess_=subprocess_)
    if check_outputs and result.code == 0:
        for p in _outputs_of([str(a) for a in args], result, cwd or ROOT):
            assert_valid_onnx(p)
    return result


def _run_cli(*args: str | Path, cwd: Path | None, timeout: float, subprocess_: bool) -> CliResult:
    if subprocess_:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        proc = subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd or ROOT, env=env,
                              timeout=timeout)
        return CliResult(proc.returncode, proc.stdout, proc.stderr)
    from compressor.cli.app import main

    here = os.getcwd()
    os.chdir(cwd or ROOT)
    code = 0
    try:
        with _captured_fds() as (out_f, err_f):
            try:
                main([str(a) for a in args])
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        return CliResult(code, _read(out_f), _read(err_f))
    finally:
        os.chdir(here)


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory) -> None:
    """Measured kernel-format selections go to a cache of this test session, not the user's."""
    os.environ["COMPRESSOR_CACHE_DIR"] = str(tmp_path_factory.mktemp("compressor-cache"))


@pytest.fixture(scope="session")
def samples() -> Path:
    return SAMPLES

"""The README's quick start runs as written: exit 0 and not one warning."""

from __future__ import annotations

import re
import shlex

from tests.conftest import ROOT, run_cli


def quick_start_args() -> list[str]:
    """The compressor arguments of the README's first ```bash block (what follows ``.venv/bin/compressor``)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"^```bash\n(.*?)^```", text, re.S | re.M)
    assert block, "README.md has no ```bash block"
    command = " ".join(block[1].split("\\\n"))
    marker = ".venv/bin/compressor "
    assert marker in command, f"the first ```bash block of README.md does not run {marker.strip()}: {command}"
    return shlex.split(command.split(marker, 1)[1].split("&&")[0])


def test_quick_start_command_parses():
    args = quick_start_args()
    assert args[0] in {"prune", "quantize", "run", "export", "bench"}
    assert "--eval-data" in args, "the quick start shows accuracy before and after"


def test_quick_start_runs_without_warnings(tmp_path):
    out = tmp_path / "quick_start.onnx"
    r = run_cli(*quick_start_args(), "-o", out, "--json")
    assert r.code == 0, r.stderr
    report = r.report
    assert report["warnings"] == [], report["warnings"]
    assert "warning" not in r.stderr.lower(), r.stderr
    assert out.exists()
    assert report["accuracy"]["baseline"] is not None and report["accuracy"]["result"] is not None

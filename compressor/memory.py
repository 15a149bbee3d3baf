"""Peak resident memory of a stretch of work in this process (a pipeline step).

Linux: the kernel's high-water mark ``VmHWM`` is reset to the current RSS (``echo 5 >
/proc/self/clear_refs``, Linux 4.0+) when the step starts and read when it ends, so the figure is
the step's own peak, not an earlier one's. Elsewhere (or if the reset is refused) the process's
``ru_maxrss`` is reported and marked as such: it may hold a peak from before the step.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path


def _vm_hwm_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakRss:
    """Context manager measuring the peak resident memory of the code it wraps.

    Attributes:
        peak_bytes: Peak RSS in bytes of the whole process while the block ran (set on exit).
        scope: ``"step"`` when the high-water mark was reset at the start (the figure belongs to the
            block), ``"process"`` when it is the process's lifetime peak (``ru_maxrss``).
    """

    def __init__(self) -> None:
        self.peak_bytes: int | None = None
        self.scope = "process"

    def __enter__(self) -> PeakRss:
        if _reset_hwm() and _vm_hwm_bytes() is not None:
            self.scope = "step"
        return self

    def __exit__(self, *exc: object) -> None:
        hwm = _vm_hwm_bytes() if self.scope == "step" else None
        if hwm is None:
            self.scope = "process"
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            hwm = rss if sys.platform == "darwin" else rss * 1024  # bytes on macOS, KiB on Linux
        self.peak_bytes = int(hwm)

    def to_json(self) -> dict[str, object]:
        """``{"peak_rss_bytes", "peak_rss_scope"}`` for a report entry."""
        return {"peak_rss_bytes": self.peak_bytes, "peak_rss_scope": self.scope}

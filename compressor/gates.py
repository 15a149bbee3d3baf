"""Quality gates for build pipelines: judged on the report, failing with exit code 3.

When a gate fails the output and the report are still written; the report's ``gates``
section names each failed gate with its threshold and measured value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from compressor.errors import UsageError


@dataclass(frozen=True)
class Gates:
    """Thresholds; None disables a gate.

    Attributes:
        max_accuracy_drop: Largest allowed top-1 accuracy drop, in percentage points
            (``accuracy.drop_points``); needs ``--eval-data``.
        min_speedup: Least speedup, judged on the lower bound of its 95% confidence interval
            (``speedup_ci95[0]``).
        max_size_ratio: Largest result/baseline size ratio (``size_ratio``).
        min_cosine: Least cosine similarity of any sample's output, over every float output
            (``fidelity.cosine_min``, the worst over outputs; padding left out where the data has an
            attention mask). Integer outputs are judged by exact match, not by this gate.
    """

    max_accuracy_drop: float | None = None
    min_speedup: float | None = None
    max_size_ratio: float | None = None
    min_cosine: float | None = None

    def __post_init__(self) -> None:
        """Validate: each threshold must lie in the domain of what it is compared with.

        Raises:
            FieldError: A threshold outside its valid range (exit 2), named with that range:
                ``max_accuracy_drop`` in [0, 100] points, ``min_speedup`` > 0, ``max_size_ratio`` > 0,
                ``min_cosine`` in [-1, 1].
        """
        import math

        from compressor.errors import FieldError

        for name, value in self.__dict__.items():
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                raise FieldError(name, f"{{name}} must be a finite number, got {value!r}")
        if self.max_accuracy_drop is not None and not 0.0 <= self.max_accuracy_drop <= 100.0:
            raise FieldError("max_accuracy_drop", "{name} is a top-1 accuracy drop in percentage points and must be "
                             f"between 0 and 100, got {self.max_accuracy_drop:g}")
        if self.min_speedup is not None and not self.min_speedup > 0:
            raise FieldError("min_speedup", f"{{name}} is a speedup and must be greater than 0 (e.g. 1.2), got "
                             f"{self.min_speedup:g}")
        if self.max_size_ratio is not None and not self.max_size_ratio > 0:
            raise FieldError("max_size_ratio", "{name} is a result/baseline size ratio and must be greater than 0 "
                             f"(e.g. 0.5), got {self.max_size_ratio:g}")
        if self.min_cosine is not None and not -1.0 <= self.min_cosine <= 1.0:
            raise FieldError("min_cosine", f"{{name}} is a cosine similarity and must be between -1 and 1, got "
                             f"{self.min_cosine:g}")

    @property
    def any(self) -> bool:
        """True when at least one gate is set."""
        return any(v is not None for v in self.__dict__.values())

    def check_usable(self, *, has_eval_data: bool, compares: bool) -> None:
        """Refuse gates that the run cannot judge.

        Raises:
            UsageError: ``--max-accuracy-drop`` without ``--eval-data``, or any gate on a single-model run.
        """
        if self.any and not compares:
            raise UsageError("quality gates compare a result with a baseline; give bench two models or use prune/quantize")
        if self.max_accuracy_drop is not None and not has_eval_data:
            raise UsageError("--max-accuracy-drop needs --eval-data FILE.npz (inputs plus labels)")

    def evaluate(self, report: dict[str, Any]) -> dict[str, Any]:
        """Judge the report.

        Returns:
            ``{"passed": bool, "checked": [...], "failed": [...]}``; each entry is
            ``{"gate", "threshold", "measured", "passed"}``.
        """
        checks = []

        def add(gate: str, threshold: float | None, measured: float | None, ok: bool, **more: Any) -> None:
            if threshold is not None:
                checks.append({"gate": gate, "threshold": threshold, "measured": measured, "passed": bool(ok),
                               **more})

        acc = report.get("accuracy") or {}
        if self.max_accuracy_drop is not None:
            drop = acc.get("drop_points")
            add("max_accuracy_drop", self.max_accuracy_drop, drop, drop is not None and drop <= self.max_accuracy_drop)
        if self.min_speedup is not None:
            low = (report.get("speedup_ci95") or [None])[0]
            add("min_speedup", self.min_speedup, low, low is not None and low >= self.min_speedup)
        if self.max_size_ratio is not None:
            ratio = report.get("size_ratio")
            add("max_size_ratio", self.max_size_ratio, ratio, ratio is not None and ratio <= self.max_size_ratio)
        if self.min_cosine is not None:
            fid = report.get("fidelity") or {}
            cos = fid.get("cosine_min")  # the worst over every float output
            more = {"output": fid["worst_output"]} if fid.get("worst_output") and cos is not None else {}
            add("min_cosine", self.min_cosine, cos, cos is not None and cos >= self.min_cosine, **more)
        failed = [c for c in checks if not c["passed"]]
        return {"passed": not failed, "checked": checks, "failed": failed}

    @staticmethod
    def describe(failed: list[dict[str, Any]], *, written: list[str] | None = None) -> str:
        """One line naming every failed gate with its measured value, and what was written (only that).

        Args:
            failed: The failed checks from :meth:`evaluate`.
            written: What the run wrote despite the failure, e.g. ``["output model m.onnx", "report r.json"]``;
                None or empty: nothing was written, and the line says so.
        """
        parts = []
        for f in failed:
            m, t = ("n/a", f"{f['threshold']:g}") if f["measured"] is None else _apart(f["measured"], f["threshold"])
            where = f" on output '{f['output']}'" if f.get("output") else ""
            parts.append(f"{f['gate']} (measured {m}{where}, threshold {t})")
        tail = f"; {' and '.join(written)} {'was' if len(written) == 1 else 'were'} written" if written else \
            "; no file was written"
        return "quality gate failed: " + ", ".join(parts) + tail


def _apart(measured: float, threshold: float) -> tuple[str, str]:
    """The threshold as given, and the measured value in the fewest digits that keep it on its side.

    At least 4 significant digits: 0.9999786 against 0.99999999 reads "0.99998", not "1 against 1".
    """
    t = f"{threshold}" if isinstance(threshold, float) else f"{threshold:g}"
    for digits in range(4, 17):
        m = f"{measured:.{digits}g}"
        if (float(m) < threshold) == (measured < threshold) and (float(m) > threshold) == (measured > threshold):
            return m, t
    return f"{measured!r}", t

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
        min_cosine: Least cosine similarity of any sample's output (``fidelity.cosine_min``).
    """

    max_accuracy_drop: float | None = None
    min_speedup: float | None = None
    max_size_ratio: float | None = None
    min_cosine: float | None = None

    def __post_init__(self) -> None:
        """Validate.

        Raises:
            FieldError: A threshold no result could be judged against (negative drop, speedup or size ratio;
                a cosine outside [-1, 1]).
        """
        from compressor.errors import FieldError

        for name in ("max_accuracy_drop", "min_speedup", "max_size_ratio"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise FieldError(name, f"{{name}} must be a number >= 0, got {value}")
        if self.min_cosine is not None and not -1.0 <= self.min_cosine <= 1.0:
            raise FieldError("min_cosine", f"{{name}} must be between -1 and 1, got {self.min_cosine}")

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

        def add(gate: str, threshold: float | None, measured: float | None, ok: bool) -> None:
            if threshold is not None:
                checks.append({"gate": gate, "threshold": threshold, "measured": measured, "passed": bool(ok)})

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
            cos = (report.get("fidelity") or {}).get("cosine_min")
            add("min_cosine", self.min_cosine, cos, cos is not None and cos >= self.min_cosine)
        failed = [c for c in checks if not c["passed"]]
        return {"passed": not failed, "checked": checks, "failed": failed}

    @staticmethod
    def describe(failed: list[dict[str, Any]]) -> str:
        """One line naming every failed gate with its measured value."""
        parts = []
        for f in failed:
            m = "n/a" if f["measured"] is None else f"{f['measured']:.4g}"
            parts.append(f"{f['gate']} (measured {m}, threshold {f['threshold']:g})")
        return "quality gate failed: " + ", ".join(parts) + "; outputs and report were written"

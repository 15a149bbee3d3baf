"""Compression passes and their one registry.

A pass has a frozen, validated config dataclass and a ``run(ctx, config)`` function. CLI
flags (and later recipe files) fill the same config objects; every config round-trips
through JSON with ``to_json`` / ``from_json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from compressor.errors import UsageError


@dataclass(frozen=True)
class PassSpec:
    """One registered pass: its name, config class and run function (imported lazily)."""

    name: str
    config_cls: type
    runner: str  # "module:function", imported on use so the CLI starts fast

    def load_runner(self) -> Callable[..., Any]:
        """Import and return the pass's run function."""
        import importlib

        module, _, fn = self.runner.partition(":")
        return getattr(importlib.import_module(module), fn)


def config_to_json(config: Any) -> dict[str, Any]:
    """A config dataclass as a JSON-ready dict."""
    return dataclasses.asdict(config)


def config_from_json(cls: type, data: dict[str, Any]) -> Any:
    """Build (and so validate) a config of class ``cls`` from a dict.

    Raises:
        UsageError: Unknown keys or invalid values.
    """
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise UsageError(f"unknown {cls.__name__} fields {unknown}; valid fields are {sorted(names)}")
    return cls(**data)


def _registry() -> dict[str, PassSpec]:
    from compressor.passes.configs import PruneConfig, QuantizeConfig

    return {
        "prune": PassSpec("prune", PruneConfig, "compressor.passes.prune:run_prune"),
        "quantize": PassSpec("quantize", QuantizeConfig, "compressor.passes.quantize:run_quantize"),
    }


def get_pass(name: str) -> PassSpec:
    """The registered pass called ``name``.

    Raises:
        UsageError: No such pass; the message lists the valid names.
    """
    reg = _registry()
    if name not in reg:
        raise UsageError(f"unknown pass '{name}'; valid passes: {', '.join(sorted(reg))}")
    return reg[name]

"""Which parts of a model a pass leaves alone: name globs and op types, each required to match.

One :class:`ExclusionScope` serves every pass: pruning matches it against PyTorch module
names (``model.named_modules()``), quantization against ONNX node names. A pattern or op
type that matches nothing is a mistake (a typo, or a name from another export of the
model), so it is an error naming the flag, the pattern and some real names, never a run
that silently excludes nothing. Pattern after NNCF's ``IgnoredScope`` with ``validate=True``
(``src/nncf/scopes.py``), with shell globs (``fnmatch``, case-sensitive) instead of regular
expressions.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from compressor.errors import UsageError

#: Names shown in an error when a pattern matches nothing.
SAMPLE_NAMES = 5


def match_globs(patterns: Iterable[str], names: Sequence[str], *, flag: str, kind: str = "node",
                validate: bool = True) -> list[str]:
    """Names matched by any of the globs (``fnmatch.fnmatchcase``), in pattern order, each once.

    Args:
        patterns: Shell globs, e.g. ``"encoder.layer.0.*"``.
        names: Candidate names in model order; empty names (an unnamed node, the root module) never match.
        flag: The option the patterns came from, for the error message (e.g. ``"--exclude"``).
        kind: What the names name (``"node"``, ``"layer"``), for the error message.
        validate: Raise for a pattern that matches nothing.

    Returns:
        The matched names.

    Raises:
        UsageError: A pattern that matches no name (when ``validate``); the message shows the
            first few names.
    """
    named = [n for n in names if n]
    matched: list[str] = []
    for pat in patterns:
        hits = [n for n in named if fnmatch.fnmatchcase(n, pat)]
        if not hits and validate:
            sample = ", ".join(named[:SAMPLE_NAMES])
            raise UsageError(f"{flag} '{pat}' matches no {kind}; {kind} names look like: {sample}")
        matched += [h for h in hits if h not in matched]
    return matched


def require_op_types(op_types: Iterable[str], present: Iterable[str], *, flag: str = "--op-types",
                     where: str = "graph") -> None:
    """Check that every requested op type occurs in the model.

    Args:
        op_types: Op types named by the user (ONNX ``op_type`` or PyTorch module class names).
        present: The op types the model has.
        flag: The option the op types came from, for the error message.
        where: ``"graph"`` or ``"model"``, for the error message.

    Raises:
        UsageError: Op types the model does not have; the message lists those it has.
    """
    have = set(present)
    missing = [o for o in op_types if o not in have]
    if missing:
        raise UsageError(f"{flag} {', '.join(missing)} not in the {where}; it has {', '.join(sorted(have))}")


@dataclass(frozen=True)
class ExclusionScope:
    """Parts of a model a pass must not change, by name glob or by op type.

    Attributes:
        patterns: Name globs (``fnmatch``, case-sensitive): ONNX node names or PyTorch module
            names (``"layer1.*"``).
        op_types: Exact op types: ONNX ``op_type`` (``"Gather"``) or PyTorch module class names
            (``"Conv2d"``).
        validate: Every pattern and op type must match something (NNCF ``validate=True``);
            ``False`` only for scopes built by code, never from user flags.
        flag: The option that filled ``patterns``, named in errors.
        op_types_flag: The option that filled ``op_types``, named in errors (no CLI flag fills
            ``op_types`` yet, hence the plain-words default).

    Raises:
        UsageError: An empty or non-string pattern or op type.
    """

    patterns: tuple[str, ...] = ()
    op_types: tuple[str, ...] = ()
    validate: bool = True
    flag: str = "--exclude"
    op_types_flag: str = "excluded op types"

    def __post_init__(self) -> None:
        """Normalise sequences (JSON gives lists) and validate."""
        for attr, flag in (("patterns", self.flag), ("op_types", self.op_types_flag)):
            value = getattr(self, attr)
            if isinstance(value, str):
                raise UsageError(f"{flag} takes a list of strings, got the string '{value}'")
            value = tuple(value)
            bad = [v for v in value if not isinstance(v, str) or not v.strip()]
            if bad:
                raise UsageError(f"{flag} has an empty or non-text entry {bad[0]!r}; give names or globs")
            object.__setattr__(self, attr, value)

    def __bool__(self) -> bool:
        """True when the scope excludes anything at all."""
        return bool(self.patterns or self.op_types)

    def match(self, items: Sequence[tuple[str, str]], *, kind: str = "node", where: str = "graph") -> list[str]:
        """Names of the items in scope: those matched by a pattern, then those of an excluded op type.

        Args:
            items: ``(name, op type)`` of each candidate, in model order.
            kind: What the names name (``"node"``, ``"layer"``), for error messages.
            where: ``"graph"`` or ``"model"``, for error messages.

        Returns:
            The names in scope, each once: pattern matches in pattern order, then op-type
            matches in model order.

        Raises:
            UsageError: A pattern or op type that matches nothing (when ``validate``).
        """
        names = [n for n, _ in items]
        matched = match_globs(self.patterns, names, flag=self.flag, kind=kind, validate=self.validate)
        if self.op_types:
            if self.validate:
                require_op_types(self.op_types, (t for _, t in items), flag=self.op_types_flag, where=where)
            wanted = set(self.op_types)
            matched += [n for n, t in items if n and t in wanted and n not in matched]
        return matched

    def onnx_nodes(self, model: Any) -> list[str]:
        """Names of the ONNX nodes in scope.

        Args:
            model: ``onnx.ModelProto`` or ``onnx.GraphProto`` (top graph only).

        Returns:
            Node names, as for :meth:`match`; unnamed nodes are never in scope.

        Raises:
            UsageError: A pattern that matches no node name, or an op type not in the graph.
        """
        graph = getattr(model, "graph", model)
        return self.match([(n.name, n.op_type) for n in graph.node], kind="node", where="graph")

    def torch_modules(self, named: Mapping[str, Any]) -> list[Any]:
        """The PyTorch modules in scope.

        Args:
            named: ``dict(model.named_modules())`` (the root module, named ``""``, never matches).

        Returns:
            Modules, in the order of :meth:`match`.

        Raises:
            UsageError: A pattern that matches no module name, or a class name not in the model.
        """
        items = [(n, type(m).__name__) for n, m in named.items()]
        return [named[n] for n in self.match(items, kind="layer", where="model")]

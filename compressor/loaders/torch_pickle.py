"""``torch.save`` files: a whole pickled module, or a state_dict plus ``--model-class``.

Sniffed from the zip member names (a ``data.pkl``). Pickles are loaded with
``torch.load(weights_only=True)``: the ``torch.nn`` module classes a full-module pickle needs
are allow-listed; any other class needs ``trust_pickle=True`` (``--trust-pickle``). A
state_dict is loaded into ``model_class(**model_kwargs)`` with ``strict=True``. Neither
records input shapes, so the IO spec comes from ``--input-shape`` or the data.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Any, ClassVar

from compressor.artifact import ModelArtifact, ModelFormat
from compressor.errors import UnknownFormatError, UntrustedPickleError, UsageError
from compressor.loaders.base import Loader, LoadOptions


class TorchPickleLoader(Loader):
    """A ``torch.save`` zip: full ``nn.Module`` pickle (``TORCH_MODULE``) or a state_dict (``STATE_DICT``)."""

    formats: ClassVar[tuple[ModelFormat, ...]] = (ModelFormat.TORCH_MODULE, ModelFormat.STATE_DICT)
    description: ClassVar[str] = "a torch.save file (full module or state_dict)"

    def sniff(self, path: Path, head_bytes: bytes, zip_names: tuple[str, ...] | None) -> bool:
        """True for a zip holding a ``data.pkl`` member."""
        return zip_names is not None and any(n.endswith("data.pkl") for n in zip_names)

    def load(self, path: Path, options: LoadOptions) -> ModelArtifact:
        """Unpickle the file safely, then return the module or build ``--model-class`` from the state_dict.

        Returns:
            An artifact with ``loaded`` a ``torch.nn.Module`` in eval mode, format
            ``TORCH_MODULE`` or ``STATE_DICT``, and ``details["pickle_classes"]`` (plus
            ``warnings``, ``model_class`` and ``model_kwargs`` where they apply).

        Raises:
            UntrustedPickleError: The pickle needs classes outside ``torch.nn`` and
                ``options.trust_pickle`` is False.
            UnknownFormatError: The pickle cannot be read or unpickled.
            UsageError: A class cannot be imported (a class defined in the ``__main__`` of the script
                that saved the file never can), the file holds neither a module nor a
                state_dict, a state_dict comes without ``model_class``, or it does not fit the class.
        """
        import torch

        try:
            needed = torch.serialization.get_unsafe_globals_in_checkpoint(os.fspath(path))
        except Exception as e:
            raise UnknownFormatError(f"{path} is not a readable torch.save file: {e}") from e
        torch_nn = [g for g in needed if _is_torch_nn_class(g)]
        foreign = [g for g in needed if g not in torch_nn]
        details: dict[str, Any] = {"pickle_classes": sorted(needed)}
        in_main = sorted(g.removeprefix("__main__.") for g in foreign if g.startswith("__main__."))
        if in_main:  # refused with or without --trust-pickle: no other process can import a script's classes
            raise UsageError(_saved_from_main(path, in_main))
        if foreign and not options.trust_pickle:
            raise UntrustedPickleError(
                f"{path} needs classes outside torch.nn to unpickle: {', '.join(sorted(foreign))}; "
                "unpickling them runs code from the file: pass --trust-pickle if you trust it, "
                "or save a state_dict and use --model-class"
            )
        if foreign:
            _ensure_cwd_importable()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    obj = torch.load(os.fspath(path), map_location="cpu", weights_only=False)
            except (ImportError, AttributeError) as e:
                if "__main__" in str(e):  # a class of __main__ that the scan above did not list
                    name = re.search(r"attribute '(\w+)'", str(e))
                    raise UsageError(_saved_from_main(path, [name[1] if name else "the model's class"])) from e
                raise UsageError(
                    f"{path} needs a class that cannot be imported ({e}); run from the folder that holds its "
                    "package or add it to PYTHONPATH"
                ) from e
            except Exception as e:
                raise UnknownFormatError(f"cannot unpickle {path}: {type(e).__name__}: {e}") from e
        else:
            classes = [getattr(importlib.import_module(g.rpartition(".")[0]), g.rpartition(".")[2]) for g in torch_nn]
            try:
                with torch.serialization.safe_globals(classes):
                    obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
            except Exception as e:
                raise UnknownFormatError(f"cannot load {path} with weights_only=True: {type(e).__name__}: {e}") from e

        if isinstance(obj, torch.nn.Module):
            obj.eval()
            if options.model_class:
                details["warnings"] = [
                    f"--model-class {options.model_class} is ignored: {path.name} holds a whole module"
                ]
            return ModelArtifact(path=path, format=ModelFormat.TORCH_MODULE, loaded=obj, details=details)
        if isinstance(obj, dict) and obj and not _is_state_dict(obj):  # a training checkpoint (case R15)
            found = find_weights(obj)
            if found is None:
                raise UsageError(
                    f"{path} holds a dict with keys [{few(obj)}] but no model or state_dict under the usual keys "
                    f"({', '.join(CHECKPOINT_KEYS)}); save model.state_dict() (and pass --model-class) or the module"
                )
            key, weights = found
            ignored = [str(k) for k in obj if k != key]
            details["checkpoint"] = {"weights_key": key, "ignored_keys": ignored}
            details.setdefault("warnings", []).append(
                f"{path.name} is a training checkpoint: loaded the weights under '{key}'"
                + (f", ignored {few(ignored)}" if ignored else ""))
            obj = weights
            if isinstance(obj, torch.nn.Module):
                obj.eval()
                if options.model_class:
                    details["warnings"].append(f"--model-class {options.model_class} is ignored: '{key}' in "
                                               f"{path.name} holds a whole module")
                return ModelArtifact(path=path, format=ModelFormat.TORCH_MODULE, loaded=obj, details=details)
        if isinstance(obj, dict) and obj:
            return _load_state_dict(path, obj, options, details)
        raise UsageError(f"{path} holds a {type(obj).__name__}, not a torch.nn.Module or a state_dict")


#: Keys under which training scripts store a model's weights in a checkpoint dict, tried in this order:
#: ``state_dict`` (PyTorch Lightning, many scripts), ``model_state_dict`` (the PyTorch tutorial's
#: ``{"epoch", "model_state_dict", "optimizer_state_dict", "loss"}``), ``model`` (torchvision's and timm's
#: reference scripts), then less common spellings.
CHECKPOINT_KEYS = ("state_dict", "model_state_dict", "model", "net", "network", "module", "weights", "params")

#: Key prefixes that wrappers add to every entry of a state_dict: ``module.`` (``nn.DataParallel``,
#: ``DistributedDataParallel``) and ``_orig_mod.`` (``torch.compile``), stripped in any nesting.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _is_state_dict(obj: Any) -> bool:
    import torch

    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def few(items: Any, n: int = 5) -> str:
    """At most ``n`` items of ``items``, comma-separated, with how many more there are (keeps error lines short)."""
    items = [str(i) for i in items]
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more


def find_weights(checkpoint: dict) -> tuple[str, Any] | None:
    """The model weights inside a training checkpoint dict.

    Args:
        checkpoint: An unpickled dict such as ``{"epoch", "state_dict", "optimizer", ...}``.

    Returns:
        ``(key, value)`` for the first key of :data:`CHECKPOINT_KEYS` whose value is an ``nn.Module`` or a
        non-empty dict of tensors, or None.
    """
    import torch

    for key in CHECKPOINT_KEYS:
        value = checkpoint.get(key)
        if isinstance(value, torch.nn.Module) or _is_state_dict(value):
            return key, value
    return None


def strip_prefixes(state: dict, expected: set[str] | None = None) -> tuple[dict, list[str]]:
    """Remove wrapper prefixes from state_dict keys (``module.``, ``_orig_mod.``) and any prefix that makes them fit.

    Another common prefix is removed only when the keys are then exactly ``expected``. The wrapper prefixes are removed with ``torch.nn.modules.utils.consume_prefix_in_state_dict_if_present``
    when every key carries them; another prefix (e.g. ``model.`` of a Lightning module holding the
    network as ``self.model``) only when the result matches the class's keys.

    Args:
        state: The state_dict (not changed).
        expected: The keys of the model class's own ``state_dict()``, when known.

    Returns:
        The state_dict with plain keys, and the prefixes removed, in order.
    """
    from collections import OrderedDict

    from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

    state = OrderedDict(state)
    removed: list[str] = []
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES:
            if all(str(k).startswith(prefix) for k in state):
                consume_prefix_in_state_dict_if_present(state, prefix)
                removed.append(prefix)
                changed = True
    if expected is not None and set(state) != expected:
        first = str(next(iter(state)))
        parts = first.split(".")
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i]) + "."
            if all(str(k).startswith(prefix) for k in state) and {str(k)[len(prefix):] for k in state} == expected:
                consume_prefix_in_state_dict_if_present(state, prefix)
                removed.append(prefix)
                break
    return state, removed


def _saved_from_main(path: Path, class_names: list[str]) -> str:
    """The one-line advice for a pickle whose classes were defined in the saving script's ``__main__``."""
    names = ", ".join(class_names)
    first = class_names[0] if len(class_names) == 1 and class_names[0].isidentifier() else "ClassName"
    return (
        f"{path} was saved from a script that defines {names} in __main__, and a pickle can only name a class "
        f"importable from a module: move {first} into a module (e.g. package/module.py), then save "
        f"model.state_dict() and pass --model-class package.module:{first} (no --trust-pickle needed), "
        f"or import {first} from that module in the script and torch.save() the model again"
    )


def _is_torch_nn_class(qualname: str) -> bool:
    """True when ``qualname`` names an ``nn.Module`` subclass defined inside ``torch.nn``."""
    import torch

    module_name, _, attr = qualname.rpartition(".")
    if not module_name.startswith("torch.nn."):
        return False
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError):
        return False
    return isinstance(obj, type) and issubclass(obj, torch.nn.Module)


def _ensure_cwd_importable() -> None:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def import_model_class(spec: str) -> type:
    """Import ``"package.module:ClassName"`` (the current folder is importable).

    Raises:
        UsageError: Bad spec, module not importable, no such class, or not an nn.Module.
    """
    import torch

    module_name, sep, class_name = spec.partition(":")
    if not sep or not module_name or not class_name:
        raise UsageError(f"--model-class must look like package.module:ClassName, got '{spec}'")
    _ensure_cwd_importable()
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise UsageError(
            f"cannot import module '{module_name}' for --model-class ({e}); run from the folder that holds it "
            "or add it to PYTHONPATH"
        ) from e
    cls = module
    for part in class_name.split("."):
        cls = getattr(cls, part, None)
        if cls is None:
            raise UsageError(f"module '{module_name}' has no class '{class_name}' (--model-class)")
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise UsageError(f"--model-class {spec} is not a torch.nn.Module subclass")
    return cls


def _load_state_dict(path: Path, state: dict, options: LoadOptions, details: dict[str, Any]) -> ModelArtifact:
    if not _is_state_dict(state):
        raise UsageError(f"{path} holds a dict with keys [{few(state)}] whose values are not all tensors; "
                         "save model.state_dict() (and pass --model-class) or the module itself")
    if not options.model_class:
        where = f" (under '{details['checkpoint']['weights_key']}')" if "checkpoint" in details else ""
        raise UsageError(
            f"{path} is a state_dict (weights only){where}; pass --model-class package.module:ClassName "
            "(and --model-kwargs '{...}' if its constructor needs arguments)"
        )
    cls = import_model_class(options.model_class)
    try:
        module = cls(**options.model_kwargs)
    except TypeError as e:
        raise UsageError(
            f"cannot build {options.model_class} with --model-kwargs {json.dumps(options.model_kwargs)}: {e}"
        ) from e
    expected = {str(k) for k in module.state_dict()}
    state, removed = strip_prefixes(state, expected)
    if removed:
        details.setdefault("checkpoint", {})["stripped_prefixes"] = removed
        details.setdefault("warnings", []).append(
            f"removed the key prefix {' + '.join(repr(p) for p in removed)} from the state_dict in {path.name} "
            "(saved from a wrapped model: DataParallel/DistributedDataParallel, torch.compile or a training module)")
    missing = sorted(expected - {str(k) for k in state})
    unexpected = sorted({str(k) for k in state} - expected)
    if missing or unexpected:  # torch's own message lists every key (kilobytes on one line): name a handful
        parts = ([f"{len(missing)} missing key(s): {few(missing)}"] if missing else []) + (
            [f"{len(unexpected)} unexpected key(s): {few(unexpected)}"] if unexpected else [])
        raise UsageError(f"the state_dict in {path} does not fit {options.model_class}: {'; '.join(parts)}; "
                         "check --model-class and --model-kwargs")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
        detail = next((line for line in lines if line.startswith("size mismatch")), lines[-1] if lines else str(e))
        raise UsageError(
            f"the state_dict in {path} does not fit {options.model_class}: {detail[:300]}; "
            "check --model-class and --model-kwargs"
        ) from e
    module.eval()
    details = {**details, "model_class": options.model_class, "model_kwargs": options.model_kwargs}
    return ModelArtifact(path=path, format=ModelFormat.STATE_DICT, loaded=module, details=details)

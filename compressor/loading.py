"""Load a model file whatever its format, detected from content, with safe pickle handling.

Formats: ONNX (with external data), ``torch.export`` ExportedProgram (``.pt2``),
TorchScript, a full-module pickle (``torch.save(model)``) and a state_dict plus
``--model-class``. Pickles are loaded with ``torch.load(weights_only=True)``: the
``torch.nn`` module classes a full-module pickle needs are allow-listed; any other class
needs ``trust_pickle=True`` (``--trust-pickle``).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compressor.artifact import IOSpec, ModelArtifact, ModelFormat, TensorSpec
from compressor.errors import UnknownFormatError, UntrustedPickleError, UsageError


@dataclass(frozen=True)
class LoadOptions:
    """How to load a PyTorch file.

    Attributes:
        trust_pickle: Allow arbitrary classes in a pickle (runs code from the file).
        model_class: ``"package.module:ClassName"`` for a state_dict file.
        model_kwargs: Keyword arguments for ``model_class`` (from ``--model-kwargs`` JSON).
    """

    trust_pickle: bool = False
    model_class: str | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)


def detect_format(path: Path) -> ModelFormat:
    """Detect a model file's format from its bytes.

    Args:
        path: Model file.

    Returns:
        The :class:`ModelFormat`. A ``torch.save`` zip is reported as ``TORCH_MODULE``;
        :func:`load_model` refines it to ``STATE_DICT`` after unpickling.

    Raises:
        UsageError: The file does not exist or cannot be read.
        UnknownFormatError: The content is none of the supported formats.
    """
    path = Path(path)
    if not path.exists():
        raise UsageError(f"model file not found: {path}")
    if path.is_dir():
        raise UsageError(f"{path} is a folder; pass the model file inside it")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as e:
        raise UsageError(f"cannot read {path}: {e.strerror}") from e
    if head[:4] == b"PK\x03\x04":
        try:
            names = zipfile.ZipFile(path).namelist()
        except zipfile.BadZipFile as e:
            raise UnknownFormatError(f"{path} is a damaged zip archive ({e}); re-save the model") from e
        if any(n.endswith("/archive_format") or n.endswith("/models/model.json") for n in names) or any(
            "serialized_exported_program" in n for n in names
        ):
            return ModelFormat.EXPORTED_PROGRAM
        if any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names):
            return ModelFormat.TORCHSCRIPT
        if any(n.endswith("data.pkl") for n in names):
            return ModelFormat.TORCH_MODULE
        raise UnknownFormatError(
            f"{path} is a zip archive but not a PyTorch file (torch.save, torch.export.save or TorchScript)"
        )
    if _parse_onnx(path) is not None:
        return ModelFormat.ONNX
    raise UnknownFormatError(
        f"{path} is not a model compressor can read: expected ONNX, a torch.export .pt2, TorchScript, "
        "or a torch.save file (full module or state_dict)"
    )


def _parse_onnx(path: Path) -> Any:
    """Parse an ONNX file without external data; None when it is not ONNX."""
    import onnx

    try:
        model = onnx.load_model(os.fspath(path), load_external_data=False)
    except Exception:
        return None
    if model.ir_version <= 0 or len(model.graph.node) == 0:
        return None
    return model


def load_model(path: Path, options: LoadOptions | None = None) -> ModelArtifact:
    """Load a model file into memory.

    Args:
        path: Model file in any supported format.
        options: Pickle trust and state_dict class settings.

    Returns:
        A :class:`ModelArtifact` with ``loaded`` set to an ``onnx.ModelProto`` (ONNX), a
        ``torch.export.ExportedProgram`` or a ``torch.nn.Module`` in eval mode, and ``io``
        set when the format records its inputs (ONNX, ExportedProgram).

    Raises:
        UsageError: Missing file, unknown format, untrusted pickle classes, a state_dict
            without ``--model-class``, or a state_dict that does not fit the class.
    """
    options = options or LoadOptions()
    path = Path(path)
    fmt = detect_format(path)
    if fmt is ModelFormat.ONNX:
        return _load_onnx(path)
    if fmt is ModelFormat.EXPORTED_PROGRAM:
        return _load_exported_program(path)
    if fmt is ModelFormat.TORCHSCRIPT:
        return _load_torchscript(path)
    return _load_pickle(path, options)


def _load_onnx(path: Path) -> ModelArtifact:
    import onnx

    try:
        model = onnx.load_model(os.fspath(path), load_external_data=True)
    except Exception as e:
        raise UsageError(f"cannot load ONNX model {path}: {e}; check that its external data files sit beside it") from e
    return ModelArtifact(path=path, format=ModelFormat.ONNX, io=onnx_io_spec(model), loaded=model)


def onnx_io_spec(model: Any) -> IOSpec:
    """Input/output spec of an ``onnx.ModelProto`` (initializers excluded from inputs)."""
    from compressor.onnx_graph import dtype_name, initializers

    inits = initializers(model)

    def spec(v: Any) -> TensorSpec:
        t = v.type.tensor_type
        dtype = dtype_name(t.elem_type)
        dims: list[int | str | None] = []
        for d in t.shape.dim:
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param"):
                dims.append(d.dim_param)
            else:
                dims.append(None)
        return TensorSpec(v.name, dtype, tuple(dims))

    return IOSpec(
        inputs=tuple(spec(v) for v in model.graph.input if v.name not in inits),
        outputs=tuple(spec(v) for v in model.graph.output),
    )


def _load_exported_program(path: Path) -> ModelArtifact:
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = torch.export.load(os.fspath(path))
    except Exception as e:
        raise UsageError(f"cannot load ExportedProgram {path}: {type(e).__name__}: {e}") from e
    return ModelArtifact(path=path, format=ModelFormat.EXPORTED_PROGRAM, io=exported_program_io_spec(ep), loaded=ep)


def exported_program_io_spec(ep: Any) -> IOSpec:
    """Input spec of a ``torch.export.ExportedProgram`` from its user-input placeholders."""
    import torch

    user_inputs = list(ep.graph_signature.user_inputs)
    by_name = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    specs = []
    for name in user_inputs:
        val = by_name[name].meta.get("val")
        if not isinstance(val, torch.Tensor):
            raise UsageError(f"ExportedProgram input '{name}' is not a tensor; only tensor inputs are supported")
        dims: list[int | str | None] = []
        for axis, d in enumerate(val.shape):
            if isinstance(d, int):
                dims.append(d)
            else:
                dims.append("batch" if axis == 0 else str(d))
        specs.append(TensorSpec(name, str(val.dtype).removeprefix("torch."), tuple(dims)))
    return IOSpec(inputs=tuple(specs))


def _load_torchscript(path: Path) -> ModelArtifact:
    import torch

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(os.fspath(path), map_location="cpu")
    except Exception as e:
        raise UsageError(f"cannot load TorchScript {path}: {type(e).__name__}: {e}") from e
    module.eval()
    return ModelArtifact(path=path, format=ModelFormat.TORCHSCRIPT, loaded=module)


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


def _load_pickle(path: Path, options: LoadOptions) -> ModelArtifact:
    import torch

    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(os.fspath(path))
    except Exception as e:
        raise UnknownFormatError(f"{path} is not a readable torch.save file: {e}") from e
    torch_nn = [g for g in needed if _is_torch_nn_class(g)]
    foreign = [g for g in needed if g not in torch_nn]
    details: dict[str, Any] = {"pickle_classes": sorted(needed)}
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
            details["warnings"] = [f"--model-class {options.model_class} is ignored: {path.name} holds a whole module"]
        return ModelArtifact(path=path, format=ModelFormat.TORCH_MODULE, loaded=obj, details=details)
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _load_state_dict(path, obj, options, details)
    if isinstance(obj, dict):
        keys = ", ".join(map(str, list(obj)[:8]))
        raise UsageError(
            f"{path} holds a dict with keys [{keys}] rather than a model or a state_dict; "
            "save model.state_dict() (and pass --model-class) or the module itself"
        )
    raise UsageError(f"{path} holds a {type(obj).__name__}, not a torch.nn.Module or a state_dict")


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
    if not options.model_class:
        raise UsageError(
            f"{path} is a state_dict (weights only); pass --model-class package.module:ClassName "
            "(and --model-kwargs '{...}' if its constructor needs arguments)"
        )
    cls = import_model_class(options.model_class)
    try:
        module = cls(**options.model_kwargs)
    except TypeError as e:
        raise UsageError(f"cannot build {options.model_class} with --model-kwargs {json.dumps(options.model_kwargs)}: {e}") from e
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = " ".join(line.strip() for line in first[1:3]) or first[0]
        raise UsageError(
            f"the state_dict in {path} does not fit {options.model_class}: {detail}; check --model-class and --model-kwargs"
        ) from e
    module.eval()
    details = {**details, "model_class": options.model_class, "model_kwargs": options.model_kwargs}
    return ModelArtifact(path=path, format=ModelFormat.STATE_DICT, loaded=module, details=details)

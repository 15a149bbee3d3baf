"""Loader registry: formats listed, content sniffing per sample, unknown files, adding a loader."""

from __future__ import annotations

import enum
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

import compressor.loaders as loaders
from compressor.artifact import IOSpec, ModelArtifact, ModelFormat, TensorSpec
from compressor.errors import UnknownFormatError, UntrustedPickleError, UsageError
from compressor.inputs import random_data
from compressor.loaders import (
    LOADERS,
    Loader,
    LoadOptions,
    detect_format,
    example_inputs,
    find_loader,
    get_loader,
    load_model,
    registered_formats,
)
from compressor.loaders.exported_program import ExportedProgramLoader
from compressor.loaders.hf_folder import HFFolderLoader
from compressor.loaders.onnx import OnnxLoader
from compressor.loaders.safetensors_file import SafetensorsLoader
from compressor.loaders.torch_pickle import TorchPickleLoader
from compressor.loaders.torchscript import TorchScriptLoader
from tests.conftest import run_cli

UNKNOWN = ("is not a model compressor can read: expected ONNX, a torch.export .pt2, TorchScript, "
           "a torch.save file (full module or state_dict), or a safetensors state_dict")


def _onnx_relu(path: Path, *, external: bool = False) -> Path:
    """[batch, 4] float32 -> Add(x, w) -> Relu, w a 4-float initializer."""
    w = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["s"]), helper.make_node("Relu", ["s"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, location=f"{path.name}.data", size_threshold=0)
    else:
        onnx.save_model(model, str(path))
    return path


@pytest.fixture(scope="module")
def model_files(tmp_path_factory, samples) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    ts = d / "linear.bin"  # extensions are deliberately misleading: sniffing reads content
    with warnings.catch_warnings():  # torch.jit is deprecated, still a format users have
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(torch.nn.Linear(4, 2)), str(ts))
    return {
        "onnx": _onnx_relu(d / "relu.pt"),
        "onnx_external": _onnx_relu(d / "relu_ext.onnx", external=True),
        "torchscript": ts,
        "cnn": samples / "digits_cnn.pt",
        "resnet": samples / "digits_resnet.pt",
        "mlp": samples / "digits_mlp.pt2",
    }


def test_registry_lists_the_formats():
    assert [type(loader) for loader in LOADERS] == [OnnxLoader, ExportedProgramLoader, TorchScriptLoader,
                                                    TorchPickleLoader, SafetensorsLoader, HFFolderLoader]
    assert [loader.name for loader in LOADERS] == ["onnx", "exported_program", "torchscript", "torch_module_pickle",
                                                   "safetensors", "hf_folder"]
    assert registered_formats() == [ModelFormat.ONNX, ModelFormat.EXPORTED_PROGRAM, ModelFormat.TORCHSCRIPT,
                                    ModelFormat.TORCH_MODULE, ModelFormat.STATE_DICT, ModelFormat.SAFETENSORS,
                                    ModelFormat.HF_FOLDER]
    assert set(registered_formats()) == set(ModelFormat)  # every format has a loader
    assert type(get_loader(ModelFormat.STATE_DICT)) is TorchPickleLoader


@pytest.mark.parametrize(("name", "fmt"), [
    ("onnx", ModelFormat.ONNX), ("onnx_external", ModelFormat.ONNX), ("torchscript", ModelFormat.TORCHSCRIPT),
    ("cnn", ModelFormat.TORCH_MODULE), ("resnet", ModelFormat.TORCH_MODULE),  # a state_dict is refined on load
    ("mlp", ModelFormat.EXPORTED_PROGRAM),
])
def test_each_model_is_sniffed_by_content(model_files, name, fmt):
    assert detect_format(model_files[name]) is fmt
    assert fmt in find_loader(model_files[name]).formats


def test_sample_models_sniffed(samples):
    got = {p.name: detect_format(p) for p in sorted(samples.iterdir()) if p.suffix in (".pt", ".pt2", ".onnx")}
    assert got == {"digits_cnn.pt": ModelFormat.TORCH_MODULE, "digits_mlp.pt2": ModelFormat.EXPORTED_PROGRAM,
                   "digits_resnet.pt": ModelFormat.TORCH_MODULE}


def test_load_each_format(model_files):
    art = load_model(model_files["onnx_external"])
    assert art.format is ModelFormat.ONNX and isinstance(art.loaded, onnx.ModelProto)
    assert art.io == IOSpec(inputs=(TensorSpec("x", "float32", ("batch", 4)),),
                            outputs=(TensorSpec("y", "float32", ("batch", 4)),))
    assert OnnxLoader().io_spec(art) == art.io

    art = load_model(model_files["torchscript"])
    assert art.format is ModelFormat.TORCHSCRIPT and art.io is None and not art.loaded.training

    art = load_model(model_files["mlp"])
    assert art.format is ModelFormat.EXPORTED_PROGRAM and art.io.input_names == ["x"]
    assert art.io.inputs[0].shape[0] == "batch" and art.io.inputs[0].dtype == "float32"

    art = load_model(model_files["cnn"])
    assert art.format is ModelFormat.TORCH_MODULE and isinstance(art.loaded, torch.nn.Sequential)
    assert art.io is None and all(c.startswith("torch.nn.") for c in art.details["pickle_classes"])

    art = load_model(model_files["resnet"], LoadOptions(model_class="sample_models.digits_nets:DigitsResNet"))
    assert art.format is ModelFormat.STATE_DICT and type(art.loaded).__name__ == "DigitsResNet"
    assert art.details["model_class"] == "sample_models.digits_nets:DigitsResNet"


def test_load_errors(model_files, tmp_path):
    with pytest.raises(UsageError, match="pass --model-class package.module:ClassName"):
        load_model(model_files["resnet"])
    moved = tmp_path / "alone.onnx"
    moved.write_bytes(model_files["onnx_external"].read_bytes())  # without its .data file
    with pytest.raises(UsageError, match="check that its external data files sit beside it"):
        load_model(moved)

    from sample_models.digits_nets import DigitsMLP

    torch.save(DigitsMLP(), tmp_path / "mlp_module.pt")  # a class outside torch.nn: refused without --trust-pickle
    with pytest.raises(UntrustedPickleError, match="sample_models.digits_nets.DigitsMLP.*--trust-pickle"):
        load_model(tmp_path / "mlp_module.pt")
    art = load_model(tmp_path / "mlp_module.pt", LoadOptions(trust_pickle=True))
    assert art.format is ModelFormat.TORCH_MODULE and type(art.loaded).__name__ == "DigitsMLP"


def test_unknown_files(tmp_path, samples):
    junk = tmp_path / "m.onnx"
    junk.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(UnknownFormatError) as e:
        detect_format(junk)
    assert str(e.value) == f"{junk} {UNKNOWN}"
    with pytest.raises(UnknownFormatError, match="is a zip archive but not a PyTorch file"):
        detect_format(samples / "digits_calib.npz")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    with pytest.raises(UnknownFormatError, match="damaged zip archive"):
        detect_format(broken)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(UnknownFormatError):
        load_model(empty)
    with pytest.raises(UsageError, match="not found"):
        detect_format(tmp_path / "missing.onnx")
    with pytest.raises(UsageError, match="is a folder"):
        detect_format(tmp_path)


class _DummyFormat(str, enum.Enum):
    """Stands in for the ModelFormat member a real new format adds."""

    TEXT = "text_model"


class _TextLoader(Loader):
    """A zip holding ``model.txt``: one float per line, the weights of a scale-by-vector model."""

    formats: ClassVar[tuple] = (_DummyFormat.TEXT,)
    description: ClassVar[str] = "a text model"

    def sniff(self, path, head_bytes, zip_names):
        return zip_names is not None and "model.txt" in zip_names

    def load(self, path, options):
        with zipfile.ZipFile(path) as z:
            weights = [float(v) for v in z.read("model.txt").split()]
        art = ModelArtifact(path=path, format=_DummyFormat.TEXT, loaded=weights)
        return art.with_io(self.io_spec(art))

    def io_spec(self, artifact):
        return IOSpec(inputs=(TensorSpec("x", "float32", ("batch", len(artifact.loaded))),))


def test_adding_a_loader_is_one_registry_entry(tmp_path, monkeypatch, model_files):
    model = tmp_path / "scale.zip"
    with zipfile.ZipFile(model, "w") as z:
        z.writestr("model.txt", "1.0\n2.0\n3.0\n")
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"nothing")
    with pytest.raises(UnknownFormatError, match="zip archive but not a PyTorch file"):
        detect_format(model)

    monkeypatch.setattr(loaders, "LOADERS", [*LOADERS, _TextLoader()])
    assert detect_format(model) is _DummyFormat.TEXT
    art = load_model(model)
    assert art.loaded == [1.0, 2.0, 3.0] and art.io.inputs[0].shape == ("batch", 3)
    assert registered_formats()[-1] is _DummyFormat.TEXT and type(get_loader(_DummyFormat.TEXT)) is _TextLoader
    with pytest.raises(UnknownFormatError,
                       match=r"a torch\.save file \(full module or state_dict\), a safetensors state_dict, or a text model$"):
        detect_format(junk)
    assert detect_format(model_files["cnn"]) is ModelFormat.TORCH_MODULE  # the others are unaffected
    data = example_inputs(art, art.io, num_samples=5, seed=3)  # the default: seeded random inputs
    assert data.arrays["x"].shape == (5, 3) and data.arrays["x"].dtype == np.float32

    monkeypatch.undo()
    with pytest.raises(UnknownFormatError, match="no loader is registered for format 'text_model'"):
        get_loader(_DummyFormat.TEXT)


def test_example_inputs_default_to_seeded_random(model_files):
    art = load_model(model_files["onnx"])
    got = example_inputs(art, art.io, num_samples=4, seed=1)
    want = random_data(art.io, num_samples=4, seed=1)
    assert list(got.arrays) == ["x"] and np.array_equal(got.arrays["x"], want.arrays["x"])


_NET = """
import torch


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return torch.relu(self.fc(x))
"""


def test_pickle_saved_from_a_scripts_main_says_how_to_fix_it(tmp_path):
    script = tmp_path / "train.py"  # the class lives in the script: pickled as __main__.Net
    script.write_text(_NET + "\nif __name__ == '__main__':\n    torch.save(Net(), 'model.pt')\n")
    subprocess.run([sys.executable, str(script)], cwd=tmp_path, check=True)
    for trust in ([], ["--trust-pickle"]):  # --trust-pickle cannot help: no other process can import __main__
        r = run_cli("export", "model.pt", "--input-shape", "1,4", "-o", "out.onnx", *trust, cwd=tmp_path,
                    subprocess_=True)
        assert r.code == 2, r.stderr
        assert len(r.error_lines) == 1, r.stderr
        msg = r.error_lines[0]
        assert "defines Net in __main__" in msg and "importable from a module" in msg
        assert "model.state_dict()" in msg and "--model-class package.module:Net" in msg
        assert "torch.save() the model again" in msg
        assert not (tmp_path / "out.onnx").exists()

    # following the advice works: the class in a module, a state_dict and --model-class
    (tmp_path / "nets.py").write_text(_NET)
    (tmp_path / "save.py").write_text("import torch\nfrom nets import Net\n\n"
                                      "torch.save(Net().state_dict(), 'weights.pt')\n")
    subprocess.run([sys.executable, "save.py"], cwd=tmp_path, check=True)
    r = run_cli("export", "weights.pt", "--model-class", "nets:Net", "--input-shape", "1,4", "-o", "out.onnx",
                cwd=tmp_path, subprocess_=True)
    assert r.code == 0, r.stderr
    assert (tmp_path / "out.onnx").exists()

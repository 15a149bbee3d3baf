"""Text files and image folders as calibration / evaluation data (issue 12, data side).

Small real models built here: a token classifier and a token encoder (ExportedPrograms with dynamic batch and
sequence axes), a tiny CNN (a torch.nn.Sequential pickle), a BERT WordPiece tokenizer folder written with
transformers, and PNG folders written with Pillow.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from compressor.errors import UsageError
from tests.conftest import FAST_BENCH, run_cli

WORDS = ["good", "great", "fine", "nice", "bad", "awful", "poor", "sad", "the", "movie", "was", "very", "a", "day"]
POSITIVE = {"good", "great", "fine", "nice"}


class _TokenClassifier(torch.nn.Module):
    """Embedding, attention-mask mean over tokens, linear head: logits [batch, 2]."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(vocab, 16)
        self.head = torch.nn.Linear(16, 2)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        m = attention_mask.unsqueeze(-1).to(torch.float32)
        pooled = (self.emb(input_ids) * m).sum(1) / m.sum(1).clamp(min=1.0)
        return self.head(pooled)


class _TokenEncoder(torch.nn.Module):
    """Embedding and a per-token linear layer: last_hidden_state [batch, sequence, 16]."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.emb = torch.nn.Embedding(vocab, 16)
        self.proj = torch.nn.Linear(16, 16)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.proj(self.emb(input_ids))) * attention_mask.unsqueeze(-1).to(torch.float32)


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    from transformers import BertTokenizerFast

    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    BertTokenizerFast(vocab=vocab).save_pretrained(str(out))  # a WordPiece tokenizer folder (tokenizer.json)
    return out


def _export(module: torch.nn.Module, path: Path) -> Path:
    ids = torch.tensor([[2, 5, 6, 3], [2, 7, 3, 0]])
    mask = (ids != 0).to(torch.int64)
    batch, seq = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("seq", min=2, max=512)
    ep = torch.export.export(module.eval(), (ids, mask), dynamic_shapes=({0: batch, 1: seq}, {0: batch, 1: seq}))
    torch.export.save(ep, str(path))
    return path


@pytest.fixture(scope="module")
def text_models(tmp_path_factory, tokenizer_dir) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("textmodels")
    vocab = 5 + len(WORDS)
    clf = _TokenClassifier(vocab)
    with torch.no_grad():  # a classifier that reads sentiment words: class 1 for positive words
        ids = torch.arange(vocab)
        clf.emb.weight.zero_()
        clf.emb.weight[:, 0] = torch.tensor([1.0 if i >= 5 and WORDS[i - 5] in POSITIVE else 0.0 for i in ids])
        clf.emb.weight[:, 1] = torch.tensor([1.0 if i >= 5 and WORDS[i - 5] not in POSITIVE | {"the", "movie", "was",
                                                                                               "very", "a", "day"}
                                             else 0.0 for i in ids])
        clf.emb.weight[:, 2:] += 0.01 * torch.randn(vocab, 14)
        clf.head.weight.zero_()
        clf.head.weight[1, 0], clf.head.weight[0, 1] = 4.0, 4.0
        clf.head.bias.zero_()
    return {"classifier": _export(clf, d / "clf.pt2"), "encoder": _export(_TokenEncoder(vocab), d / "enc.pt2")}


def _sentences(n: int, seed: int) -> list[tuple[str, int]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        label = i % 2
        word = rng.choice(sorted(POSITIVE) if label else ["bad", "awful", "poor", "sad"])
        filler = " ".join(rng.choice(["the", "movie", "was", "very", "a", "day"], size=int(rng.integers(1, 6))))
        out.append((f"{filler} {word}", int(label)))
    return out


def _write_text(path: Path, rows: list[tuple[str, int]], *, jsonl: bool) -> Path:
    lines = [json.dumps({"text": t, "label": y}) if jsonl else t for t, y in rows]
    path.write_text("\n\n".join(lines) + "\n")  # blank lines between examples are skipped
    return path


def _valid(report: dict) -> dict:
    import jsonschema

    from compressor.report import schema

    jsonschema.Draft202012Validator(schema()).validate(report)
    return report


# ------------------------------------------------------------------------------------------------ text data
def test_quantize_with_text_files_reports_accuracy(tmp_path, text_models, tokenizer_dir):
    calib = _write_text(tmp_path / "calib.txt", _sentences(24, 0), jsonl=False)
    heldout = _write_text(tmp_path / "heldout.jsonl", _sentences(30, 1), jsonl=True)
    r = run_cli("quantize", text_models["classifier"], "--tokenizer", tokenizer_dir, "--calibration-text", calib,
                "--eval-text", heldout, "-o", tmp_path / "q.onnx", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    rep = _valid(r.report)
    acc = rep["accuracy"]
    assert acc["samples"] == 30 and acc["eval_data"] == str(heldout)
    assert acc["baseline"] == 1.0 and acc["result"] >= 0.9
    text = rep["input"]["text_data"]
    assert text["evaluation"]["examples"] == 30 and text["calibration"]["examples"] == 24
    assert text["evaluation"]["truncated"] == 0 and text["evaluation"]["max_length"] == 128
    # one length per file: the longest example ([CLS] + at most 6 words + [SEP]), not --max-length
    assert 3 <= text["evaluation"]["seq_len"] <= 8
    assert {i["name"]: i["dtype"] for i in rep["input"]["inputs"]} == {"input_ids": "int64",
                                                                      "attention_mask": "int64"}
    assert rep["fidelity"]["inputs"] == str(heldout) and rep["fidelity"]["samples"] == 30


def test_text_data_for_a_pickled_module_has_a_dynamic_sequence(tmp_path, tokenizer_dir):
    # no input spec in the file: the names come from forward(), and calibration and eval text differ in length
    torch.save(_TokenClassifier(5 + len(WORDS)), tmp_path / "clf.pt")
    calib = _write_text(tmp_path / "c.txt", [("good", 1), ("bad", 0)], jsonl=False)
    heldout = _write_text(tmp_path / "e.jsonl", _sentences(8, 4), jsonl=True)
    r = run_cli("quantize", tmp_path / "clf.pt", "--trust-pickle", "--tokenizer", tokenizer_dir, "--calibration-text",
                calib, "--eval-text", heldout, "-o", tmp_path / "q.onnx", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    rep = _valid(r.report)
    assert [(i["name"], i["shape"]) for i in rep["input"]["inputs"]] == [("input_ids", ["batch", "sequence"]),
                                                                         ("attention_mask", ["batch", "sequence"])]
    text = rep["input"]["text_data"]
    assert text["calibration"]["seq_len"] == 3 and text["evaluation"]["seq_len"] > 3
    assert rep["accuracy"]["samples"] == 8


def test_text_max_length_cuts_and_warns(tmp_path, text_models, tokenizer_dir):
    rows = [("the movie was very very very very good", 1), ("bad", 0), ("a good day", 1)]
    heldout = _write_text(tmp_path / "e.jsonl", rows, jsonl=True)
    r = run_cli("bench", text_models["classifier"], "--tokenizer", tokenizer_dir, "--eval-text", heldout,
                "--max-length", "5", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    rep = _valid(r.report)
    entry = rep["input"]["text_data"]["evaluation"]
    assert entry["seq_len"] == 5 and entry["truncated"] == 1 and entry["max_length"] == 5
    assert any("1 of 3 evaluation examples" in w and "cut" in w for w in rep["warnings"])
    assert rep["accuracy"]["samples"] == 3


def test_pooled_embedding_fidelity_for_token_outputs(tmp_path, text_models, tokenizer_dir):
    heldout = _write_text(tmp_path / "e.txt", _sentences(16, 2), jsonl=False)
    r = run_cli("quantize", text_models["encoder"], "--tokenizer", tokenizer_dir, "--eval-text", heldout,
                "-o", tmp_path / "q.onnx", "--min-cosine", "0.9", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    rep = _valid(r.report)
    fid = rep["fidelity"]
    own = [o for o in fid["outputs"] if "pooled_from" not in o]
    pooled = [o for o in fid["outputs"] if "pooled_from" in o]
    assert len(own) == 1 and own[0]["positions"].startswith("real tokens")
    assert len(pooled) == 1 and pooled[0]["name"] == f"pooled({own[0]['name']})"
    assert pooled[0]["pooling"] == "mean over attention_mask" and pooled[0]["kind"] == "float"
    assert fid["pooled_cosine_min"] == pooled[0]["cosine_min"] > 0.9
    assert fid["worst_output"] == own[0]["name"] and fid["cosine_min"] == own[0]["cosine_min"]
    assert not any("no labels" in w for w in rep["warnings"])  # an encoder has no accuracy to miss
    # the pooled figure is the mean-pooled embedding of the two models' real outputs
    import onnxruntime as ort

    from compressor.hf import load_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    enc = tok([line for line in heldout.read_text().splitlines() if line.strip()], padding="longest",
              return_tensors="np")
    feeds = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
    base = torch.export.load(str(text_models["encoder"])).module()(
        torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"])).detach().numpy()
    quant = ort.InferenceSession(str(tmp_path / "q.onnx"), providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    m = feeds["attention_mask"][:, :, None].astype(np.float64)
    pb, pq = (base * m).sum(1) / m.sum(1), (quant * m).sum(1) / m.sum(1)
    cos = (pb * pq).sum(1) / (np.linalg.norm(pb, axis=1) * np.linalg.norm(pq, axis=1))
    assert abs(cos.min() - fid["pooled_cosine_min"]) < 1e-3


def test_text_data_in_recipe_and_project_config(tmp_path, text_models, tokenizer_dir):
    heldout = _write_text(tmp_path / "e.jsonl", _sentences(10, 3), jsonl=True)
    (tmp_path / "compressor.toml").write_text(f'eval_text = "e.jsonl"\ntokenizer = "{tokenizer_dir}"\n'
                                              "max_length = 16\n")
    r = run_cli("quantize", text_models["classifier"], "--dry-run", "--json", cwd=tmp_path)
    assert r.code == 0, r.stderr
    assert r.report["recipe"]["eval_text"].endswith(heldout.name) and r.report["recipe"]["max_length"] == 16
    # the command line's --eval-data replaces the project config's eval_text (another form of the same data)
    np.savez(tmp_path / "e.npz", input_ids=np.ones((2, 4), np.int64), attention_mask=np.ones((2, 4), np.int64))
    r = run_cli("quantize", text_models["classifier"], "--eval-data", "e.npz", "--dry-run", "--json", cwd=tmp_path)
    assert r.code == 0, r.stderr
    assert "eval_text" not in r.report["recipe"] and r.report["recipe"]["eval_data"].endswith("e.npz")


def _err(r) -> str:
    assert r.code == 2, (r.code, r.stderr)
    lines = r.error_lines
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_text_without_tokenizer_is_a_usage_error(tmp_path, text_models):
    calib = _write_text(tmp_path / "c.txt", _sentences(4, 0), jsonl=False)
    msg = _err(run_cli("quantize", text_models["classifier"], "--calibration-text", calib, "-o", tmp_path / "q.onnx"))
    assert "--calibration-text needs a tokenizer" in msg and "--tokenizer DIR" in msg
    assert not (tmp_path / "q.onnx").exists()


@pytest.mark.parametrize(("content", "expected"), [
    ('{"text": "good", "label": 1}\n{"text": "bad" "label": 0}\n', "line 2 of"),
    ('{"text": "good", "label": 1}\n\n{"label": 0}\n', "line 3 of"),
    ('{"text": "good", "label": 1}\n{"text": "bad", "label": "negative"}\n', "'label' must be an integer"),
    ('{"text": "good", "label": 1}\n{"text": "bad"}\n', "line 2 of"),
    ('{"text": "good", "label": -1}\n', "negative class ids"),
    ("\n   \n", "holds no examples"),
    ("", "holds no examples"),
])
def test_bad_text_files(tmp_path, text_models, tokenizer_dir, content, expected):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(content)
    msg = _err(run_cli("quantize", text_models["classifier"], "--tokenizer", tokenizer_dir, "--eval-text", bad,
                       "-o", tmp_path / "q.onnx"))
    assert expected in msg and str(bad) in msg


def test_labels_beyond_the_models_classes(tmp_path, text_models, tokenizer_dir):
    heldout = _write_text(tmp_path / "e.jsonl", [("good", 1), ("bad", 5)], jsonl=True)
    msg = _err(run_cli("quantize", text_models["classifier"], "--tokenizer", tokenizer_dir, "--eval-text", heldout,
                       "-o", tmp_path / "q.onnx"))
    assert "2 classes" in msg


def test_two_forms_of_the_same_data(tmp_path, text_models, tokenizer_dir):
    calib = _write_text(tmp_path / "c.txt", _sentences(4, 0), jsonl=False)
    np.savez(tmp_path / "c.npz", input_ids=np.ones((2, 4), np.int64), attention_mask=np.ones((2, 4), np.int64))
    msg = _err(run_cli("quantize", text_models["classifier"], "--tokenizer", tokenizer_dir, "--calibration-data",
                       tmp_path / "c.npz", "--calibration-text", calib))
    assert "--calibration-data and --calibration-text both give calibration data" in msg
    msg = _err(run_cli("bench", text_models["classifier"], "--eval-text", calib, "--eval-images", tmp_path))
    assert "--eval-text and --eval-images" in msg


def test_tokenize_pads_to_a_fixed_sequence_length_and_fills_token_type_ids(tmp_path, tokenizer_dir):
    from compressor.artifact import IOSpec, TensorSpec
    from compressor.hf import load_tokenizer
    from compressor.text_data import text_sample_data

    f = tmp_path / "pairs.jsonl"
    f.write_text('{"text": "good day", "text_pair": "the movie"}\n{"text": "bad", "text_pair": "sad"}\n')
    io = IOSpec(inputs=(TensorSpec("input_ids", "int32", ("batch", 12)), TensorSpec("token_type_ids", "int32",
                                                                                    ("batch", 12))))
    data, notes = text_sample_data(f, load_tokenizer(tokenizer_dir), io=io, max_length=128)
    assert list(data.arrays) == ["input_ids", "token_type_ids"] and data.labels is None
    ids, types = data.arrays["input_ids"], data.arrays["token_type_ids"]
    assert ids.shape == (2, 12) and ids.dtype == np.int32 and notes["seq_len"] == 12
    assert ids[1].tolist()[:5] == [2, 5 + WORDS.index("bad"), 3, 5 + WORDS.index("sad"), 3]
    assert ids[1, 5:].tolist() == [0] * 7  # [PAD]
    assert types[0].tolist()[:7] == [0, 0, 0, 0, 1, 1, 1]


# ----------------------------------------------------------------------------------------------- image data
def _cnn(channels: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(channels, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(8, 8, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 2))
    return net.eval()


def _pngs(folder: Path, *, classes: bool, n: int = 6, size: int = 20) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(["cat", "dog"] if classes else [""]):
        d = folder / name if name else folder
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            px = rng.integers(0, 256, size=(size, size + 4, 3), dtype=np.uint8)
            px[..., c * 2] = 255  # cats red, dogs blue
            Image.fromarray(px).save(d / f"{i:02d}.{'png' if i % 2 else 'PNG'}")
    (folder / "notes.txt").write_text("not an image: skipped")
    return folder


def test_static_int8_with_image_folders(tmp_path):
    torch.save(_cnn(), tmp_path / "cnn.pt")
    calib = _pngs(tmp_path / "calib", classes=False)
    heldout = _pngs(tmp_path / "heldout", classes=True)
    r = run_cli("quantize", tmp_path / "cnn.pt", "--calibration-images", calib, "--eval-images", heldout,
                "--image-size", "16", "--mode", "static", "-o", tmp_path / "q.onnx", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    rep = _valid(r.report)
    assert rep["quantization"]["mode"] == "static"
    assert rep["accuracy"]["samples"] == 12 and "result" in rep["accuracy"]
    images = rep["input"]["image_data"]
    assert images["evaluation"]["classes"] == ["cat", "dog"] and images["evaluation"]["images"] == 12
    assert images["calibration"]["classes"] is None and images["calibration"]["size"] == [16, 16]
    assert "mean 0.485,0.456,0.406" in images["calibration"]["preprocessing"]
    assert rep["input"]["inputs"][0]["shape"] == ["batch", 3, 16, 16]
    assert rep["fidelity"]["inputs"] == str(heldout)


def test_image_folder_labels_and_preprocessing_follow_imagefolder(tmp_path):
    from PIL import Image

    from compressor.artifact import IOSpec, TensorSpec
    from compressor.image_data import image_sample_data

    folder = tmp_path / "imgs"
    for name, value in (("b_second", 200), ("a_first", 50)):
        (folder / name / "sub").mkdir(parents=True)
        Image.new("L", (4, 4), value).save(folder / name / "sub" / "x.bmp")
    io = IOSpec(inputs=(TensorSpec("pixels", "float32", ("batch", 1, 4, 4)),))
    data, notes = image_sample_data(folder, io=io, mean=(0.5,), std=(0.25,))
    assert data.labels.tolist() == [0, 1] and notes["classes"] == ["a_first", "b_second"]
    x = data.arrays["pixels"]
    assert x.shape == (2, 1, 4, 4) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0, 0, 0], [(50 / 255 - 0.5) / 0.25, (200 / 255 - 0.5) / 0.25], rtol=1e-6)
    nhwc = IOSpec(inputs=(TensorSpec("pixels", "float32", ("batch", 4, 4, 3)),))
    data, _ = image_sample_data(folder, io=nhwc)
    assert data.arrays["pixels"].shape == (2, 4, 4, 3)  # RGB from grayscale files, channels last


def test_unlabelled_eval_images_warn_and_give_fidelity_only(tmp_path):
    torch.save(_cnn(), tmp_path / "cnn.pt")
    flat = _pngs(tmp_path / "flat", classes=False, n=4)
    r = run_cli("bench", tmp_path / "cnn.pt", "--eval-images", flat, "--image-size", "16,16", "--json", *FAST_BENCH)
    assert r.code == 0, r.stderr
    rep = _valid(r.report)
    assert "accuracy" not in rep
    assert any("has no labels" in w and "subfolder per class" in w for w in rep["warnings"])
    msg = _err(run_cli("quantize", tmp_path / "cnn.pt", "--eval-images", flat, "--image-size", "16",
                       "--max-accuracy-drop", "1"))
    assert "needs labels" in msg


def test_image_errors(tmp_path):
    torch.save(_cnn(), tmp_path / "cnn.pt")
    good = _pngs(tmp_path / "good", classes=True, n=2)
    msg = _err(run_cli("quantize", tmp_path / "cnn.pt", "--calibration-images", good, "-o", tmp_path / "q.onnx"))
    assert "--image-size" in msg
    (good / "dog" / "broken.jpg").write_bytes(b"this is not a jpeg")
    msg = _err(run_cli("quantize", tmp_path / "cnn.pt", "--calibration-images", good, "--image-size", "16",
                       "-o", tmp_path / "q.onnx"))
    assert "cannot read image" in msg and str(good / "dog" / "broken.jpg") in msg
    empty = tmp_path / "empty"
    (empty / "cat").mkdir(parents=True)
    msg = _err(run_cli("quantize", tmp_path / "cnn.pt", "--calibration-images", empty, "--image-size", "16"))
    assert "holds no images" in msg
    msg = _err(run_cli("quantize", tmp_path / "cnn.pt", "--calibration-images", good, "--image-size", "16",
                       "--mean", "0.5,0.5"))
    assert "--mean has 2 values" in msg
    msg = _err(run_cli("quantize", tmp_path / "cnn.pt", "--calibration-images", good, "--image-size", "x"))
    assert "--image-size must be whole numbers" in msg
    assert not (tmp_path / "q.onnx").exists()


def test_image_processor_of_a_model_folder_preprocesses(tmp_path):
    from transformers import ViTImageProcessor

    from compressor.artifact import IOSpec, TensorSpec
    from compressor.hf import load_image_processor
    from compressor.image_data import image_sample_data

    folder = tmp_path / "hfmodel"
    ViTImageProcessor(size={"height": 12, "width": 12}, image_mean=[0.5] * 3, image_std=[0.5] * 3
                      ).save_pretrained(str(folder))
    proc = load_image_processor(folder)
    images = _pngs(tmp_path / "imgs", classes=True, n=3)
    io = IOSpec(inputs=(TensorSpec("pixel_values", "float32", ("batch", 3, "height", "width")),))
    data, notes = image_sample_data(images, io=io, processor=proc)
    x = data.arrays["pixel_values"]
    assert x.shape == (6, 3, 12, 12) and x.dtype == np.float32 and data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert notes["preprocessing"].startswith("image processor ViTImageProcessor") and notes["size"] == [12, 12]
    assert -1.0 <= x.min() and x.max() <= 1.0  # (pixel / 255 - 0.5) / 0.5
    # flags replace the processor
    data, notes = image_sample_data(images, io=io, processor=proc, image_size=(8, 10))
    assert data.arrays["pixel_values"].shape == (6, 3, 8, 10) and "bilinear resize to 8x10" in notes["preprocessing"]
    assert "mean 0.5,0.5,0.5, std 0.5,0.5,0.5" in notes["preprocessing"]  # the processor's, as no flag gives them


def test_image_settings_round_trip_through_a_recipe(tmp_path):
    import tomllib

    torch.save(_cnn(), tmp_path / "cnn.pt")
    _pngs(tmp_path / "calib", classes=False, n=2)
    r = run_cli("quantize", tmp_path / "cnn.pt", "--calibration-images", tmp_path / "calib", "--image-size", "16,12",
                "--mean", "0.5", "--std", "0.25", "--save-recipe", tmp_path / "r.toml", "--dry-run", "--json")
    assert r.code == 0, r.stderr
    saved = tomllib.loads((tmp_path / "r.toml").read_text())
    assert saved["calibration_images"] == "calib" and saved["image_size"] == [16, 12]
    assert saved["mean"] == [0.5] and saved["std"] == [0.25]
    r = run_cli("run", tmp_path / "r.toml", "--dry-run", "--json")
    assert r.code == 0, r.stderr
    assert r.report["model"]["inputs"][0]["shape"] == ["batch", 3, 16, 12]
    import tomli_w

    (tmp_path / "bad.toml").write_text(tomli_w.dumps({**saved, "image_size": [16, 12, 3]}))
    msg = _err(run_cli("run", tmp_path / "bad.toml", "--dry-run"))
    assert "image_size in" in msg and "H or H,W" in msg


def test_label_names_from_the_model_folders_label2id(tmp_path):
    from compressor.text_data import read_text_examples

    f = tmp_path / "e.jsonl"
    f.write_text('{"text": "good", "label": "POSITIVE"}\n{"text": "bad", "label": 0}\n')
    ex = read_text_examples(f, label2id={"NEGATIVE": 0, "POSITIVE": 1})
    assert ex.labels.tolist() == [1, 0] and ex.line_numbers == [1, 2]
    f.write_text('{"text": "good", "label": "neutral"}\n')
    with pytest.raises(UsageError, match="not a class of the model.*POSITIVE"):
        read_text_examples(f, label2id={"NEGATIVE": 0, "POSITIVE": 1})

"""Pruning cases of issue 15 (R2, R12-R14, R27-R30 of ../shared/cases): each as a test with the right value.

The models come from tests/zoo_structures.py (seeded, tiny); the slow zoo test runs every pass over all of them.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from tests import zoo_structures as zoo
from tests.conftest import run_cli

BENCH = ["--runs", "3", "--warmup", "1", "--no-measure-memory"]


def _src(tmp_path, model):
    path = tmp_path / f"{type(model).__name__}.pt"
    torch.manual_seed(0)
    torch.save(model.eval(), path)
    return path


def _prune(tmp_path, entry: zoo.ZooEntry, *args, out_name="p.onnx"):
    out = tmp_path / out_name
    r = run_cli("prune", _src(tmp_path, entry.model()), "--trust-pickle", *entry.shape_flags(), *args, "-o", out,
                "--json", *BENCH)
    return r, out


def _entry(name: str) -> zoo.ZooEntry:
    return next(e for e in zoo.ZOO if e.name == name)


def _layers(r):
    return {la["name"]: la for la in r.report["pruning"]["layers"]}


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------- ratios that cannot be met exactly (R2, R29)


def test_r2_groupnorm_keeps_group_multiples_and_reports_ratio(tmp_path):
    r, out = _prune(tmp_path, _entry("groupnorm"), "--ratio", "0.5")
    assert r.code == 0, r.stderr
    layers = _layers(r)
    for name in ("conv1", "conv2"):
        la = layers[name]
        # 6 of 12 channels cannot be removed with 4 groups: 4 or 8 are the nearest feasible counts (a tie keeps more)
        assert la["channels_after"] == 8 and la["channel_step"] == 4
        assert la["pruning_ratio"] == pytest.approx(1 / 3, abs=1e-3) and la["target_ratio"] == 0.5
    assert layers["fc"]["channels_after"] == 10 and layers["fc"]["kept_because"]
    warn = [line for line in r.error_lines if "could not be met exactly" in line]
    assert len(warn) == 1 and "conv1 12->8" in warn[0] and "asked 0.50" in warn[0]
    assert r.report["pruning"]["achieved_ratio"] == pytest.approx(1 / 3, abs=1e-3)
    sess = _session(out)
    assert sess.run(None, {sess.get_inputs()[0].name: np.zeros((2, 3, 16, 16), np.float32)})[0].shape == (2, 10)


def test_r2_groupnorm_ratio_0_8_prunes_instead_of_nothing(tmp_path):
    r, _ = _prune(tmp_path, _entry("groupnorm"), "--ratio", "0.8")
    assert r.code == 0, r.stderr
    assert _layers(r)["conv1"]["channels_after"] == 4  # 9.6 of 12 asked; 8 is the nearest multiple of 4 groups
    assert any("could not be met exactly" in line for line in r.error_lines)
    # the cap wins over the nearest count: at most half may go, so 4 of 12 are removed
    r, _ = _prune(tmp_path, _entry("groupnorm"), "--ratio", "0.8", "--max-layer-ratio", "0.5", out_name="q.onnx")
    assert r.code == 0, r.stderr
    assert _layers(r)["conv1"]["channels_after"] == 8


def test_r2_ratio_below_one_group_says_the_smallest_step(tmp_path):
    r, _ = _prune(tmp_path, _entry("groupnorm"), "--ratio", "0.1")
    assert r.code == 1
    assert len(r.error_lines) == 1 and "removed no channel" in r.stderr and "--ratio 0.33" in r.stderr


def test_r29_three_wide_linear_reports_the_ratio_removed(tmp_path):
    r, _ = _prune(tmp_path, _entry("narrow_mlp"), "--ratio", "0.5")
    assert r.code == 0, r.stderr
    la = _layers(r)["fc1"]
    assert (la["channels_before"], la["channels_after"]) == (3, 2)  # 1.5 asked: a tie keeps more (was 3 -> 1)
    assert la["pruning_ratio"] == pytest.approx(1 / 3, abs=1e-3) and la["target_ratio"] == 0.5
    r, _ = _prune(tmp_path, _entry("narrow_mlp"), "--ratio", "0.7", out_name="q.onnx")
    assert r.code == 0, r.stderr
    assert _layers(r)["fc1"]["channels_after"] == 1 and _layers(r)["fc1"]["pruning_ratio"] == pytest.approx(2 / 3, 1e-3)


def test_r29_feasible_count_rule():
    from compressor.passes.prune import _feasible_kept

    assert _feasible_kept(3, 0.5, max_ratio=0.9, step=4, round_to=None) == 2  # tie: keep more
    assert _feasible_kept(3, 0.8, max_ratio=0.9, step=4, round_to=None) == 1
    assert _feasible_kept(3, 0.8, max_ratio=0.5, step=4, round_to=None) == 2  # never above --max-layer-ratio
    assert _feasible_kept(3, 0.1, max_ratio=0.9, step=4, round_to=None) == 3  # nearest is nothing
    assert _feasible_kept(16, 0.3, max_ratio=0.9, step=1, round_to=4) == 12  # 11.2 kept -> nearest multiple of 4
    assert _feasible_kept(64, 0.5, max_ratio=0.9, step=1, round_to=None) == 32


# ----------------------------------------------------------------------- interface: inputs and outputs (R12, R13, R27)


def test_r12_two_inputs_one_concat(tmp_path):
    r, out = _prune(tmp_path, _entry("two_input_concat"))
    assert r.code == 0, r.stderr
    layers = _layers(r)
    assert layers["fa"]["channels_after"] == 16 and layers["fb"]["channels_after"] == 16
    assert layers["head"]["channels_after"] == 10
    sess = _session(out)
    assert [i.name for i in sess.get_inputs()] == ["a", "b"]
    y = sess.run(None, {"a": np.ones((3, 16), np.float32), "b": np.ones((3, 8), np.float32)})
    assert len(y) == 1 and y[0].shape == (3, 10)
    assert r.report["fidelity"]["cosine_mean"] > 0


def test_r12_inputs_given_in_another_order_stop_with_one_line(tmp_path):
    e = _entry("two_input_concat")
    r = run_cli("prune", _src(tmp_path, e.model()), "--trust-pickle", "--input-shape", "b:1x8", "--input-shape",
                "a:1x16", "-o", tmp_path / "p.onnx", *BENCH)
    assert r.code == 2 and len(r.error_lines) == 1 and "Traceback" not in r.stderr


def test_r13_every_head_of_a_dict_output_keeps_its_outputs(tmp_path):
    r, out = _prune(tmp_path, _entry("two_heads_dict"))
    assert r.code == 0, r.stderr
    layers = _layers(r)
    assert layers["head_a"]["channels_after"] == 5 and layers["head_b"]["channels_after"] == 3
    assert layers["body1"]["channels_after"] == 16 and layers["body2"]["channels_after"] == 16
    kept = {d["name"]: d["reason"] for d in r.report["pruning"]["left_unpruned"]}
    assert "model output" in kept["head_a"] and "model output" in kept["head_b"]
    y = _session(out).run(None, {_session(out).get_inputs()[0].name: np.ones((4, 16), np.float32)})
    assert sorted(o.shape for o in y) == [(4, 3), (4, 5)]


def test_r27_all_activations_returned_removes_no_channel(tmp_path):
    r, _ = _prune(tmp_path, _entry("multi_io_fc"))
    assert r.code == 1
    assert len(r.error_lines) == 1 and "removed no channel" in r.stderr
    assert all(n in r.stderr for n in ("fc1", "fc2", "fc3")) and "model output" in r.stderr


def test_r27_split_with_reused_block(tmp_path):
    r, out = _prune(tmp_path, _entry("split_reuse"))
    assert r.code == 0, r.stderr
    p = r.report["pruning"]
    assert (p["torch_parameters_before"], p["torch_parameters_after"]) == (680, 508)
    layers = _layers(r)
    assert layers["block1.0"]["channels_after"] == 4
    assert all(layers[n]["channels_after"] == layers[n]["channels_before"] for n in ("block1.3", "block2_1.0", "block2_2.0"))
    y = _session(out).run(None, {_session(out).get_inputs()[0].name: np.ones((2, 8, 4, 4), np.float32)})
    assert [o.shape for o in y] == [(2, 8, 4, 4)] * 3


def test_channel_flow_finds_every_output_layer():
    from compressor.passes.prune import channel_flow

    m = zoo.TwoHeadsDict().eval()
    flow = channel_flow(m, (torch.zeros(1, 16),))
    assert set(flow.output_layers) == {m.head_a, m.head_b}
    m = zoo.MultiIOFC().eval()
    flow = channel_flow(m, (torch.zeros(1, 16), torch.zeros(1, 8)))
    assert set(flow.output_layers) == {m.fc1, m.fc2, m.fc3}
    m = zoo.ShuffleNetBlock().eval()
    flow = channel_flow(m, (torch.zeros(1, 3, 8, 8),))
    assert set(flow.structures) == {m.stem[0], m.branch[5]} and flow.output_layers == [m.fc]
    m = zoo.FusedQKVViTBlock().eval()
    flow = channel_flow(m, (torch.zeros(1, 8, 32),))
    assert flow.fused_qkv == [m.attn.qkv]


# ------------------------------------------------------- layers and structures the pruner cannot follow (R14, R28)


def test_r14_structured_names_unsupported_layer_types_up_front(tmp_path):
    r, _ = _prune(tmp_path, _entry("emb_lstm"))
    assert r.code == 2
    assert len(r.error_lines) == 1
    assert "LSTM" in r.stderr and "Embedding" in r.stderr and "--method unstructured" in r.stderr
    assert "IndexError" not in r.stderr


def test_r14_unstructured_covers_embedding_and_recurrent_weights(tmp_path):
    r, _ = _prune(tmp_path, _entry("emb_lstm"), "--method", "unstructured")
    assert r.code == 0, r.stderr
    p = r.report["pruning"]
    assert set(p["pruned_tensors"]) == {"emb.weight", "lstm.weight_ih_l0", "lstm.weight_hh_l0", "lstm.weight_ih_l1",
                                        "lstm.weight_hh_l1", "fc.weight"}
    assert p["skipped_tensors"] == [] and p["weights_total"] == 32000 + 4 * 4096 + 192
    assert p["achieved_sparsity"] == pytest.approx(0.5, abs=0.001)
    assert r.report["result"]["sparsity"] == pytest.approx(0.5, abs=0.01)  # measured on the ONNX output, all weights


def test_r14_unstructured_onnx_covers_lstm_and_embedding_initializers(tmp_path):
    e = _entry("emb_lstm")
    onnx_path = tmp_path / "el.onnx"
    r = run_cli("export", _src(tmp_path, e.model()), "--trust-pickle", *e.shape_flags(), "-o", onnx_path)
    assert r.code == 0, r.stderr
    r = run_cli("prune", onnx_path, *e.shape_flags(), "--method", "unstructured", "--ratio", "0.6",
                "-o", tmp_path / "p.onnx", "--json", *BENCH)
    assert r.code == 0, r.stderr
    p = r.report["pruning"]
    assert len(p["pruned_tensors"]) == 6 and "emb.weight" in p["pruned_tensors"]  # table, 2 x (W, R) of LSTM, fc
    assert p["skipped_tensors"] == []  # the LSTMs' [1, 256] biases are not weight matrices
    assert p["achieved_sparsity"] == pytest.approx(0.6, abs=0.001)
    assert r.report["result"]["sparsity"] == pytest.approx(0.6, abs=0.001)


def test_r14_prunes_around_a_recurrent_layer(tmp_path):
    r, out = _prune(tmp_path, _entry("mlp_lstm_mlp"))
    assert r.code == 0, r.stderr
    layers = _layers(r)
    assert layers["pre1"]["channels_after"] == 16 and layers["post1"]["channels_after"] == 32  # pruned
    assert layers["pre2"]["channels_after"] == 32 and "LSTM 'lstm'" in layers["pre2"]["kept_because"]
    assert r.report["pruning"]["unsupported_layers"] == [{"name": "lstm", "type": "LSTM"}]
    assert any("LSTM" in line and "pre2" in line for line in r.error_lines)
    sess = _session(out)
    assert sess.run(None, {sess.get_inputs()[0].name: np.ones((2, 5, 16), np.float32)})[0].shape == (2, 6)


def test_r14_weights_left_dense_are_named_and_measured(tmp_path):
    class WithMatrix(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(16, 16)
            self.mix = torch.nn.Parameter(torch.randn(16, 16))

        def forward(self, x):
            return self.fc(x) @ self.mix

    from compressor.artifact import ModelFormat
    from compressor.passes.configs import PruneConfig
    from compressor.passes.prune import _torch_weight_params, _unstructured_details

    torch.manual_seed(0)
    covered, left = _torch_weight_params(WithMatrix(), ModelFormat.TORCH_MODULE)
    assert [n for n, _ in covered] == ["fc.weight"] and [n for n, _ in left] == ["mix"]
    ctx = _ctx()
    d = _unstructured_details(PruneConfig(method="unstructured"), [("fc.weight", 128, 256)], [("mix", 0, 256)], ctx)
    assert d["achieved_sparsity"] == 0.25 and d["pruned_tensors_sparsity"] == 0.5  # measured over all 512 weights
    assert d["skipped_tensors"] == [{"name": "mix", "elements": 256}]
    assert len(ctx.warnings) == 1 and "mix" in ctx.warnings[0] and "0.250" in ctx.warnings[0]


@pytest.mark.parametrize(("name", "left", "pruned"), [
    ("channel_shuffle", {"stem.0", "branch.5"}, {"branch.0", "conv.0"}),
    ("pixel_shuffle", {"conv1"}, {"conv2"}),
    ("fused_qkv_vit", {"attn.qkv"}, {"fc1"}),
])
def test_r28_prunes_around_structures_it_cannot_follow(tmp_path, name, left, pruned):
    e = _entry(name)
    r, out = _prune(tmp_path, e)
    assert r.code == 0, r.stderr
    layers = _layers(r)
    kept = {d["name"]: d["reason"] for d in r.report["pruning"]["left_unpruned"]}
    for n in left:
        assert layers[n]["channels_after"] == layers[n]["channels_before"] and n in kept
        assert any(n in line and "unpruned" in line for line in r.error_lines), r.stderr
    for n in pruned:
        assert layers[n]["channels_after"] < layers[n]["channels_before"]
    assert r.report["pruning"]["torch_parameters_after"] < r.report["pruning"]["torch_parameters_before"]
    shape = [int(d) for d in e.input_shapes[0].split(",")]
    sess = _session(out)
    assert sess.run(None, {sess.get_inputs()[0].name: np.zeros([3, *shape[1:]], np.float32)})[0].shape == (3, 10)


def test_r28_fused_qkv_attention_keeps_its_width(tmp_path):
    r, _ = _prune(tmp_path, _entry("fused_qkv_vit"))
    assert r.code == 0, r.stderr
    layers = _layers(r)
    assert layers["attn.qkv"]["channels_after"] == 96 and layers["attn.proj"]["channels_after"] == 32
    assert layers["fc1"]["channels_after"] == 32 and layers["fc2"]["channels_after"] == 32
    assert "fused-qkv" in {d["name"]: d["reason"] for d in r.report["pruning"]["left_unpruned"]}["attn.qkv"]
    r, _ = _prune(tmp_path, _entry("fused_qkv_vit"), "--heads", "0.5", out_name="h.onnx")
    assert r.code == 2 and "fused-qkv" in r.stderr and len(r.error_lines) == 1


class _HardCodedWidth(torch.nn.Module):
    """conv 3->16 -> conv 16->16 -> a reshape to a hard-coded 16 channels -> Linear: nothing the channel-flow trace
    names, so only running the pruned model shows that pruning conv2 breaks it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.fc = torch.nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(y.reshape(y.shape[0], 16, -1).mean(-1))


def test_r28_guard_runs_the_pruned_model_and_prunes_around_what_breaks():
    from compressor.passes.configs import PruneConfig
    from compressor.passes.prune import _Attempt, _output_signature

    torch.manual_seed(0)
    model = _HardCodedWidth().eval()
    example = (torch.randn(2, 3, 8, 8),)
    attempt = _Attempt(example=example, reference=_output_signature(model(*example)), config=PruneConfig(),
                       num_heads_names={}, ctx=_ctx())
    pruned, _plan, broken = attempt.run_guarded(model, ["fc"])
    assert list(broken) == ["conv2"] and "mat1 and mat2" in broken["conv2"]
    assert pruned.conv1.out_channels == 8 and pruned.conv2.out_channels == 16  # pruned around conv2
    assert pruned(torch.randn(3, 3, 8, 8)).shape == (3, 10)


def _ctx():
    """A run context for calling the pass's helpers directly (they only warn through it)."""
    from pathlib import Path

    from compressor.context import RunContext

    return RunContext(io=None, data=None, workdir=Path("."))


# ------------------------------------------------------------------------------------------- sparsity in scope (R30)


def test_r30_unstructured_covers_multihead_attention_projections(tmp_path):
    r, _ = _prune(tmp_path, _entry("mha"), "--method", "unstructured")
    assert r.code == 0, r.stderr
    p = r.report["pruning"]
    assert "attn.in_proj_weight" in p["pruned_tensors"] and "attn.out_proj.weight" in p["pruned_tensors"]
    assert p["achieved_sparsity"] == pytest.approx(0.5, abs=0.001)
    assert r.report["result"]["sparsity"] == pytest.approx(0.5, abs=0.01)  # was 0.347 with in_proj_weight dense


def test_unstructured_global_ranking_never_empties_a_tensor():
    from compressor.passes.prune import _global_magnitude_masks

    torch.manual_seed(0)
    big, small = torch.randn(1000, 32), torch.randn(6, 32) * 0.01  # an embedding table and a small-init head
    out = _global_magnitude_masks([big, small], 0.5, max_ratio=0.9)
    zeros = [int((t == 0).sum()) for t in out]
    assert zeros[1] == round(0.9 * small.numel())  # capped, not emptied (plain global ranking zeroes all of it)
    assert sum(zeros) == round(0.5 * (big.numel() + small.numel()))  # the total still meets the target
    assert out[0].dtype == big.dtype and torch.equal(out[0] != 0, (out[0] != 0) & (big != 0))


def test_recover_distills_every_output_of_a_multi_head_model(tmp_path):
    """Recovery learns every float output, not the first only (a second head used to drift, unwarned)."""
    entry = _entry("two_heads_dict")
    calib = tmp_path / "calib.npz"
    np.savez(calib, x=np.random.default_rng(0).standard_normal((128, 16)).astype(np.float32))
    common = ["--ratio", "0.5", "--calibration-data", calib]
    plain, _ = _prune(tmp_path, entry, *common, out_name="plain.onnx")
    recovered, _ = _prune(tmp_path, entry, *common, "--recover", "--recover-steps", "150", out_name="rec.onnx")
    assert plain.code == 0 and recovered.code == 0, recovered.stderr
    before = {o["name"]: o["cosine_mean"] for o in plain.report["fidelity"]["outputs"]}
    after = {o["name"]: o["cosine_mean"] for o in recovered.report["fidelity"]["outputs"]}
    assert len(after) == 2
    for name, cos in after.items():  # each head closer to the original model after recovery
        assert cos >= before[name] - 1e-3, (before, after)

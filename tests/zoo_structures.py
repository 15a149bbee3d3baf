"""A small zoo of structures that pruning must keep correct (cases R2, R12-R14, R27-R30 of ../shared/cases).

Each entry builds a tiny seeded ``nn.Module`` and says which inputs it takes; the classes live here (importable)
so that ``torch.save(model)`` pickles of them load with ``--trust-pickle``. ``ZOO`` is what the slow suite runs
every pass over (tests/test_zoo_structures_slow.py); the fast case tests (tests/test_cases_prune.py) use the
same builders.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn


class GroupNormNet(nn.Module):
    """R2/R29: Conv(3,12) -> GroupNorm(4,12) -> ReLU -> Conv(12,12) -> GroupNorm(4,12) -> ReLU -> pool -> Linear(12,10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 12, 3, padding=1)
        self.gn1 = nn.GroupNorm(4, 12)
        self.conv2 = nn.Conv2d(12, 12, 3, padding=1)
        self.gn2 = nn.GroupNorm(4, 12)
        self.fc = nn.Linear(12, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.gn1(self.conv1(x)))
        x = torch.relu(self.gn2(self.conv2(x)))
        return self.fc(x.mean(dim=(2, 3)))


class NarrowMLP(nn.Module):
    """R29: Linear(8,3) -> ReLU -> Linear(3,4): a 3-wide hidden layer cannot lose exactly half its units."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(8, 3)
        self.fc2 = nn.Linear(3, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class TwoInputConcat(nn.Module):
    """R12: one branch per input (16 and 8 features), concatenated, then Linear; returns a tuple."""

    def __init__(self) -> None:
        super().__init__()
        self.fa = nn.Linear(16, 32)
        self.fb = nn.Linear(8, 32)
        self.head = nn.Linear(64, 10)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor]:
        h = torch.cat([torch.relu(self.fa(a)), torch.relu(self.fb(b))], dim=1)
        return (self.head(h),)


class TwoHeadsDict(nn.Module):
    """R13: a shared body (Linear 16->32->32) with two Linear heads (5 and 3 outputs) returned as a dict."""

    def __init__(self) -> None:
        super().__init__()
        self.body1 = nn.Linear(16, 32)
        self.body2 = nn.Linear(32, 32)
        self.head_a = nn.Linear(32, 5)
        self.head_b = nn.Linear(32, 3)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.relu(self.body2(torch.relu(self.body1(x))))
        return {"a": self.head_a(h), "b": self.head_b(h)}


class MultiIOFC(nn.Module):
    """R27 (first model, Torch-Pruning's test_multiple_inputs_and_outputs): fc1 16->8, fc2 8->8, cat, fc3 16->10;
    all three activations are outputs, so no layer may lose an output."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 8)
        self.fc2 = nn.Linear(8, 8)
        self.fc3 = nn.Linear(16, 10)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x1 = torch.relu(self.fc1(x1))
        x2 = torch.relu(self.fc2(x2))
        return x1, x2, torch.relu(self.fc3(torch.cat([x1, x2], dim=1)))


class SplitReuse(nn.Module):
    """R27 (second model, Torch-Pruning's test_split with in_dim 8): a block to 32 channels split 8/8/16, one block
    reused on both 8-channel pieces; three outputs. 680 parameters."""

    def __init__(self, in_dim: int = 8) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(in_dim, in_dim, 1), nn.BatchNorm2d(in_dim), nn.GELU(),
                                    nn.Conv2d(in_dim, in_dim * 4, 1), nn.BatchNorm2d(in_dim * 4))
        self.block2_1 = nn.Sequential(nn.Conv2d(in_dim, in_dim, 1), nn.BatchNorm2d(in_dim))
        self.block2_2 = nn.Sequential(nn.Conv2d(2 * in_dim, in_dim, 1), nn.BatchNorm2d(in_dim))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.block1(x)
        c1, c2 = self.block2_1[0].in_channels, self.block2_2[0].in_channels
        x1, x2, x3 = torch.split(x, [c1, c1, c2], dim=1)
        return self.block2_1(x1), self.block2_1(x2), self.block2_2(x3)


class EmbLSTM(nn.Module):
    """R14/R28: Embedding(1000, 32) -> 2-layer LSTM(32, 32) -> Linear(32, 6) on the last step (48,768 weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(1000, 32)
        self.lstm = nn.LSTM(32, 32, num_layers=2, batch_first=True)
        self.fc = nn.Linear(32, 6)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.emb(ids))
        return self.fc(out[:, -1])


class MLPLSTMMLP(nn.Module):
    """R14: Linear 16->32->32 feeding an LSTM(32, 32), then Linear 32->64->6 on the last step: the Linear feeding the
    LSTM keeps its width; the others can be pruned."""

    def __init__(self) -> None:
        super().__init__()
        self.pre1 = nn.Linear(16, 32)
        self.pre2 = nn.Linear(32, 32)
        self.lstm = nn.LSTM(32, 32, batch_first=True)
        self.post1 = nn.Linear(32, 64)
        self.post2 = nn.Linear(64, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(torch.relu(self.pre2(torch.relu(self.pre1(x)))))
        return self.post2(torch.relu(self.post1(out[:, -1])))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's channel shuffle: view [N, g, C/g, H, W], swap the group axes, view back."""
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


class ShuffleNetBlock(nn.Module):
    """R28: a ShuffleNetV2-style unit: stem conv 3->16, chunk in two, a branch on one half, cat, channel shuffle,
    conv 16->16, pool, Linear(16, 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.branch = nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8), nn.ReLU(),
                                    nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8),
                                    nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8), nn.ReLU())
        self.conv = nn.Sequential(nn.Conv2d(16, 16, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.fc = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = self.stem(x).chunk(2, dim=1)
        x = channel_shuffle(torch.cat([x1, self.branch(x2)], dim=1), 2)
        return self.fc(self.conv(x).mean(dim=(2, 3)))


class PixelShuffleNet(nn.Module):
    """R28: conv 3->16 -> PixelShuffle(2) (16 channels become 4 at twice the resolution) -> conv 4->8 -> pool -> Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.shuffle(torch.relu(self.conv1(x))))
        return self.fc(torch.relu(x).mean(dim=(2, 3)))


class FusedQKVAttention(nn.Module):
    """timm's ``Attention``: one fused qkv Linear, reshaped to [3, B, heads, N, head_dim] and unbound."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, c))


class FusedQKVViTBlock(nn.Module):
    """R28: a timm-style transformer block (pre-norm, fused-qkv attention, MLP 32->64->32) and a mean-pooled head."""

    def __init__(self, dim: int = 32, num_heads: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = FusedQKVAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        x = x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm2(x))))
        return self.head(x.mean(dim=1))


class MHABlock(nn.Module):
    """R30: nn.MultiheadAttention(32, 4) over [N, 8, 32] tokens, then MLP 32->64->32 and a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 32)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x, x, x, need_weights=False)[0]
        x = x + self.fc2(torch.relu(self.fc1(x)))
        return self.head(x.mean(dim=1))


@dataclass(frozen=True)
class ZooEntry:
    """One structure: how to build it (seeded) and the ``--input-shape`` flags that describe its inputs."""

    name: str
    build: Callable[[], nn.Module]
    input_shapes: tuple[str, ...]
    cases: str

    def model(self) -> nn.Module:
        """The model, built with ``torch.manual_seed(0)``, in eval mode."""
        torch.manual_seed(0)
        return self.build().eval()

    def shape_flags(self) -> list[str]:
        """``--input-shape`` flags for the CLI."""
        return [a for s in self.input_shapes for a in ("--input-shape", s)]


ZOO: tuple[ZooEntry, ...] = (
    ZooEntry("groupnorm", GroupNormNet, ("1,3,16,16",), "R2 R29"),
    ZooEntry("narrow_mlp", NarrowMLP, ("1,8",), "R29"),
    ZooEntry("two_input_concat", TwoInputConcat, ("a:1x16", "b:1x8"), "R12"),
    ZooEntry("two_heads_dict", TwoHeadsDict, ("1,16",), "R13"),
    ZooEntry("multi_io_fc", MultiIOFC, ("x1:1x16", "x2:1x8"), "R27"),
    ZooEntry("split_reuse", SplitReuse, ("1,8,4,4",), "R27"),
    ZooEntry("emb_lstm", EmbLSTM, ("ids:1x10:int64",), "R14 R28"),
    ZooEntry("mlp_lstm_mlp", MLPLSTMMLP, ("1,5,16",), "R14"),
    ZooEntry("channel_shuffle", ShuffleNetBlock, ("1,3,16,16",), "R28"),
    ZooEntry("pixel_shuffle", PixelShuffleNet, ("1,3,8,8",), "R28"),
    ZooEntry("fused_qkv_vit", FusedQKVViTBlock, ("1,8,32",), "R28"),
    ZooEntry("mha", MHABlock, ("1,8,32",), "R30"),
)


def _flatten(out: object) -> list[torch.Tensor]:
    """The tensors of a model output (tensor, tuple, list or dict), in order: the ONNX outputs' order."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _flatten(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _flatten(v)]
    return []

"""Small seeded PyTorch models for the fidelity and data cases (R3, R4, R5, R9, R17, R24) of ../shared/cases.

Importable, so that full-module pickles of them load with ``--trust-pickle``.
"""

from __future__ import annotations

import torch


class TwoHeads(torch.nn.Module):
    """Case R3: body Linear(8,32)+ReLU -> h; head 1 Linear(32,3)(h); head 2 Linear(64,2)(cat(h*1e-3, h*100)).

    Head 2's weights are large on the first (tiny) half of its input and tiny on the second (large) half,
    so per-tensor int8 activations lose what head 2 depends on while head 1 stays exact.
    """

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.body = torch.nn.Linear(8, 32)
        self.head1 = torch.nn.Linear(32, 3)
        self.head2 = torch.nn.Linear(64, 2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
            self.head2.weight[:, :32].mul_(100.0)
            self.head2.weight[:, 32:].mul_(1e-3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.relu(self.body(x))
        return self.head1(h), self.head2(torch.cat([h * 1e-3, h * 100.0], dim=1))


class PaddedEncoder(torch.nn.Module):
    """Case R4: ids -> Embedding -> Linear -> LayerNorm -> + mean over real tokens -> Linear, padding id 0.

    The padding row of the table lies in the null space of the first Linear, whose bias is nearly constant:
    at padded positions LayerNorm normalises a vector of almost no variance, so int8 rounding there turns
    into noise, as on the padded positions of a real sentence encoder; real tokens stay accurate.
    """

    def __init__(self, vocab: int = 30, dim: int = 32) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.emb = torch.nn.Embedding(vocab, dim)
        self.lin = torch.nn.Linear(dim, dim)
        self.ln = torch.nn.LayerNorm(dim)
        self.head = torch.nn.Linear(dim, dim)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
            self.ln.weight.fill_(1.0)
            a, b = torch.randn(dim, 24, generator=g), torch.randn(24, dim, generator=g)
            self.lin.weight.copy_(a @ b / 24)  # rank 24: has a null space
            null = torch.linalg.svd(self.lin.weight).Vh[-1]
            self.emb.weight[1:] = torch.randn(vocab - 1, dim, generator=g)
            self.emb.weight[0] = 4.0 * null / null.norm()
            self.lin.bias.copy_(0.5 + 1e-3 * torch.randn(dim, generator=g))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        h = self.ln(self.lin(self.emb(input_ids)))
        m = attention_mask.unsqueeze(-1).to(h.dtype)
        context = (h * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)
        return self.head(h + context)


class Branchy(torch.nn.Module):
    """Case R9: forward scales x down when its largest magnitude exceeds 3 (a Python ``if`` on a tensor
    value), then an MLP 16->32->4."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.abs().max() > 3:
            x = x / 4
        return self.mlp(x)


class Mlp(torch.nn.Module):
    """Cases R5, R17: a seeded MLP classifier 16 -> 64 -> 64 -> 4."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1 = torch.nn.Linear(16, 64)
        self.fc2 = torch.nn.Linear(64, 64)
        self.fc3 = torch.nn.Linear(64, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class SmallVocab(torch.nn.Module):
    """Case R24: Embedding(20, 8) on int64 ids, mean over the sequence, Linear(8, 3)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(20, 8)
        self.fc = torch.nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.fc(self.emb(ids).mean(dim=1))

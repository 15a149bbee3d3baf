"""Small seeded models for the failure cases in ../shared/cases (importable, so pickles of them load)."""

from __future__ import annotations

import torch


class BatchedMatMul(torch.nn.Module):
    """Case Q2: x [1,4,8,16] @ constant w [4,16,32]."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.randn(4, 16, 32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.matmul(x, self.w)


class TiedLM(torch.nn.Module):
    """Case Q3: Embedding(1000, 64) on int64 ids, Linear 64->64, output Linear tied to the embedding."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = torch.nn.Embedding(1000, 64)
        self.lin = torch.nn.Linear(64, 64)
        self.out = torch.nn.Linear(64, 1000, bias=False)
        self.out.weight = self.emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.lin(self.emb(ids))))


class MeanFlatten(torch.nn.Module):
    """Case Q4: conv, mean over axes (-1, -2), flatten, Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.conv(x).mean(dim=(-1, -2)), 1))


def conv_net_q6() -> torch.nn.Sequential:
    """Case Q6: conv 3->32->32, global pool, Linear; input [N,3,64,64]."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10),
    )


class TinyBert(torch.nn.Module):
    """A 2-layer BERT-style encoder (Hugging Face BertModel, random init) returning last_hidden_state."""

    def __init__(self, layers: int = 2, hidden: int = 64, heads: int = 4) -> None:
        super().__init__()
        from transformers import BertConfig, BertModel

        cfg = BertConfig(vocab_size=200, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         intermediate_size=4 * hidden, max_position_embeddings=64)
        self.bert = BertModel(cfg, add_pooling_layer=False).eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


def trained_tied_lm(steps: int = 300) -> TiedLM:
    """A :class:`TiedLM` trained briefly (seeded) to map token i to (7i + 3) mod 1000.

    A random-init model has near-tied logits over 1000 classes (median top-2 gap 0.2 std), so
    any int8 rounding flips argmaxes; a trained model has margins like a real language model.
    """
    torch.manual_seed(0)
    model = TiedLM()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        ids = torch.randint(0, 1000, (64, 12), generator=gen)
        loss = torch.nn.functional.cross_entropy(model(ids).reshape(-1, 1000), ((ids * 7 + 3) % 1000).reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def p1_one_output_conv() -> torch.nn.Sequential:
    """Case P1: conv 3->16, conv 16->64 (k2, s2), conv 64->1, each with BatchNorm and ReLU."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 64, 2, stride=2), torch.nn.BatchNorm2d(64), torch.nn.ReLU(),
        torch.nn.Conv2d(64, 1, 1), torch.nn.BatchNorm2d(1), torch.nn.ReLU(),
    )


def p2_frozen_cnn() -> torch.nn.Sequential:
    """Case P2: conv 3->16->32 with BatchNorm, every parameter requires_grad=False."""
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.BatchNorm2d(32), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 10),
    )
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def p3_mnist_cnn() -> torch.nn.Sequential:
    """Case P3: (conv -> BatchNorm -> ReLU -> pool) twice, then Linear; BN betas made non-zero."""
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(16 * 7 * 7, 10),
    )
    with torch.no_grad():
        for m in model:
            if isinstance(m, torch.nn.BatchNorm2d):
                m.bias.uniform_(0.1, 0.5)
    return model


class P4MLP(torch.nn.Module):
    """Case P4: MLP 784 -> 300 -> 100 -> 10."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(784, 300)
        self.fc2 = torch.nn.Linear(300, 100)
        self.fc3 = torch.nn.Linear(100, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class BasicBlock(torch.nn.Module):
    """ResNet basic block (He et al. 2016)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(cout)
        self.conv2 = torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 1, stride, bias=False), torch.nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


class ResNet18(torch.nn.Module):
    """ResNet-18 shape (He et al. 2016), random init, 1000 classes, input [N,3,224,224]."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 64, 7, 2, 3, bias=False), torch.nn.BatchNorm2d(64),
                                        torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2, 1))
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = torch.nn.Sequential(*layers)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(512, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))

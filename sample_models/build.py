#!/usr/bin/env python
"""Deterministically rebuild the sample models and data files in this folder.

Usage (from any working directory)::

    python sample_models/build.py

Data: scikit-learn's bundled ``load_digits`` (1797 real 8x8 handwritten digits,
no download). Inputs are ``images / 16`` as float32 ``[N, 1, 8, 8]``, labels
int64 ``[N]``. Split: ``train_test_split(test_size=0.25, random_state=0,
stratify=y)`` -> 1347 train / 450 test.

Outputs (written next to this script):

* ``digits_cnn.pt``     - ``torch.save`` of the full ``nn.Sequential`` (full-module pickle).
* ``digits_resnet.pt``  - ``torch.save`` of ``DigitsResNet().state_dict()``.
* ``digits_mlp.pt2``    - ``torch.export.save`` of ``DigitsMLP`` with a dynamic batch axis.
* ``digits_calib.npz``  - key ``x``: 256 unlabeled training inputs, float32 ``[256, 1, 8, 8]``.
* ``digits_eval.npz``   - keys ``x`` float32 ``[450, 1, 8, 8]`` and ``labels`` int64 ``[450]``.
"""

from __future__ import annotations

import io
import os
import random
import sys
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from torch import nn  # noqa: E402

from sample_models.digits_nets import DigitsMLP, DigitsResNet, build_digits_cnn  # noqa: E402

SEED = 0
BATCH_SIZE = 32
N_CALIB = 256


def set_determinism(seed: int = SEED) -> None:
    """Seed every RNG and force deterministic single-threaded kernels."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)


def load_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return ``(x_train, x_test, y_train, y_test)``; x float32 [N,1,8,8], y int64 [N]."""
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    return (np.ascontiguousarray(x_tr), np.ascontiguousarray(x_te),
            np.ascontiguousarray(y_tr), np.ascontiguousarray(y_te))


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int, lr: float,
          seed: int) -> nn.Module:
    """Train with Adam + cross-entropy on seeded shuffles; return the model in eval() mode."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    loss_fn = nn.CrossEntropyLoss()
    n = x.shape[0]
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, BATCH_SIZE):
            idx = perm[i:i + BATCH_SIZE]
            opt.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def accuracy(model, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy of ``model`` (an nn.Module or exported module) on ``x``/``y``."""
    return (model(x).argmax(dim=1) == y).float().mean().item()


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """Write an uncompressed ``.npz`` (readable by ``np.load``) with fixed zip
    timestamps, so the file is byte-identical across rebuilds (``np.savez``
    embeds the current time)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def main() -> None:
    t0 = time.perf_counter()
    set_determinism()
    x_tr_np, x_te_np, y_tr_np, y_te_np = load_data()
    x_tr, y_tr = torch.from_numpy(x_tr_np), torch.from_numpy(y_tr_np)
    x_te, y_te = torch.from_numpy(x_te_np), torch.from_numpy(y_te_np)
    print(f"train {tuple(x_tr.shape)}  test {tuple(x_te.shape)}")

    # --- data files -------------------------------------------------------
    calib_idx = np.sort(np.random.default_rng(SEED).choice(len(x_tr_np), N_CALIB, replace=False))
    save_npz(HERE / "digits_calib.npz", x=x_tr_np[calib_idx])
    save_npz(HERE / "digits_eval.npz", x=x_te_np, labels=y_te_np)

    results: dict[str, float] = {}

    # --- CNN: full-module pickle -------------------------------------------
    torch.manual_seed(SEED)
    cnn = train(build_digits_cnn(), x_tr, y_tr, epochs=30, lr=3e-3, seed=SEED)
    results["digits_cnn.pt"] = accuracy(cnn, x_te, y_te)
    torch.save(cnn, HERE / "digits_cnn.pt")

    # --- ResNet: state_dict ----------------------------------------------------
    torch.manual_seed(SEED)
    resnet = train(DigitsResNet(), x_tr, y_tr, epochs=30, lr=3e-3, seed=SEED)
    results["digits_resnet.pt"] = accuracy(resnet, x_te, y_te)
    torch.save(resnet.state_dict(), HERE / "digits_resnet.pt")

    # --- MLP: torch.export program with dynamic batch --------------------------
    torch.manual_seed(SEED)
    mlp = train(DigitsMLP(), x_tr, y_tr, epochs=60, lr=1e-3, seed=SEED)
    batch = torch.export.Dim("batch", min=1, max=4096)
    example = x_tr[:4].clone()
    ep = torch.export.export(mlp, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(ep, HERE / "digits_mlp.pt2")
    results["digits_mlp.pt2"] = accuracy(ep.module(), x_te, y_te)

    print()
    for name, acc in results.items():
        print(f"{name:<18} test acc {acc * 100:6.2f}%")
    print()
    total = 0
    for name in ["digits_cnn.pt", "digits_resnet.pt", "digits_mlp.pt2",
                 "digits_calib.npz", "digits_eval.npz"]:
        size = os.path.getsize(HERE / name)
        total += size
        print(f"{name:<18} {size / 1024:8.1f} KiB")
    print(f"{'total':<18} {total / 1024:8.1f} KiB")
    print(f"\nbuilt in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()

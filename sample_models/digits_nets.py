"""Tiny reference networks for scikit-learn's 8x8 handwritten digits.

All models take a float32 tensor of shape ``[N, 1, 8, 8]`` (pixel values scaled
to ``[0, 1]``, i.e. ``load_digits().images / 16``) and return float32 logits of
shape ``[N, 10]`` (one per digit class 0-9).

Only standard ``torch.nn`` layers are used, so the models are easy to
quantize, prune, trace and export. Importing this module does no work besides
importing ``torch``.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["build_digits_cnn", "DigitsResNet", "DigitsMLP", "BasicBlock"]

NUM_CLASSES = 10
IMAGE_SHAPE = (1, 8, 8)


def build_digits_cnn() -> nn.Sequential:
    """Build a small plain CNN as a flat ``nn.Sequential``.

    Layout: 3x [Conv2d 3x3 -> BatchNorm2d -> ReLU] (16, 32, 64 channels) with a
    2x2 max-pool after the second block, then global average pooling, a
    64-unit hidden ``Linear`` layer and the 10-way classifier (~28k parameters).

    Input:
        float32 tensor ``[N, 1, 8, 8]``.

    Output:
        float32 logits ``[N, 10]``.

    Returns:
        nn.Sequential: The freshly initialised (untrained) network.
    """
    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, padding=1),   # [N,16,8,8]
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.Conv2d(16, 32, kernel_size=3, padding=1),  # [N,32,8,8]
        nn.BatchNorm2d(32),
        nn.ReLU(),
        nn.MaxPool2d(2),                              # [N,32,4,4]
        nn.Conv2d(32, 64, kernel_size=3, padding=1),  # [N,64,4,4]
        nn.BatchNorm2d(64),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),                      # [N,64,1,1]
        nn.Flatten(),                                 # [N,64]
        nn.Linear(64, 64),
        nn.ReLU(),
        nn.Linear(64, NUM_CLASSES),                   # [N,10]
    )


class BasicBlock(nn.Module):
    """ResNet basic block with an identity skip connection.

    ``relu(bn2(conv2(relu(bn1(conv1(x))))) + x)``; spatial size and channel
    count are preserved.

    Args:
        channels: Number of input and output channels ``C``.

    Input/Output:
        float32 tensor ``[N, C, H, W]`` -> float32 tensor ``[N, C, H, W]``.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu2 = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        """Apply the block.

        Args:
            x: float32 tensor ``[N, C, H, W]``.

        Returns:
            Tensor: float32 tensor ``[N, C, H, W]``.
        """
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + x  # residual add
        return self.relu2(out)


class DigitsResNet(nn.Module):
    """Tiny ResNet for 8x8 digits.

    Layout: stem (Conv2d 3x3 -> BatchNorm2d -> ReLU) at ``[N, width, 8, 8]``,
    residual ``block1``, a stride-2 downsampling Conv2d+BN+ReLU to
    ``[N, width, 4, 4]``, residual ``block2``, global average pooling,
    Flatten and ``Linear(width, num_classes)``.

    Args:
        width: Number of channels used throughout the network.
        num_classes: Number of output logits.
    """

    def __init__(self, width: int = 32, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        self.block1 = BasicBlock(width)
        self.down = nn.Sequential(
            nn.Conv2d(width, width, kernel_size=3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
        )
        self.block2 = BasicBlock(width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Classify a batch of digits.

        Args:
            x: float32 tensor ``[N, 1, 8, 8]``.

        Returns:
            Tensor: float32 logits ``[N, num_classes]``.
        """
        x = self.stem(x)     # [N,W,8,8]
        x = self.block1(x)   # [N,W,8,8]
        x = self.down(x)     # [N,W,4,4]
        x = self.block2(x)   # [N,W,4,4]
        x = self.pool(x)     # [N,W,1,1]
        x = self.flatten(x)  # [N,W]
        return self.fc(x)    # [N,num_classes]


class DigitsMLP(nn.Module):
    """Three-layer MLP: Flatten -> 64-128-64-10 with ReLU activations.

    Input:
        float32 tensor ``[N, 1, 8, 8]`` (flattened to ``[N, 64]``).

    Output:
        float32 logits ``[N, 10]``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(64, 128)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(128, 64)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(64, NUM_CLASSES)

    def forward(self, x: Tensor) -> Tensor:
        """Classify a batch of digits.

        Args:
            x: float32 tensor ``[N, 1, 8, 8]``.

        Returns:
            Tensor: float32 logits ``[N, 10]``.
        """
        x = self.flatten(x)
        x = self.relu1(self.fc1(x))
        x = self.relu2(self.fc2(x))
        return self.fc3(x)

"""Built-in tiny architectures, usable as checkpoint factories.

`"regress_action.zoo:tiny_lm"` and `"regress_action.zoo:tiny_cnn"` rebuild these modules for a
safetensors / state-dict checkpoint. Both are fast on a CPU and work with `torch.jit.trace`,
`torch.jit.script` and `torch.export` (no data-dependent control flow, no Python-side shapes).
Imports torch only (never SQLAlchemy, PyGithub or jinja2).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CausalConvBlock(nn.Module):
    """A residual block: a left-padded dilated convolution (no token sees its future) + MLP."""

    def __init__(self, dim: int, dilation: int, kernel_size: int) -> None:
        super().__init__()
        self.left_pad = dilation * (kernel_size - 1)
        self.conv = nn.Conv1d(dim, dim, kernel_size, dilation=dilation)
        self.mix = nn.Conv1d(dim, dim, 1)

    def forward(self, x: Tensor) -> Tensor:  # x: (B, dim, T)
        h = self.conv(F.pad(x, (self.left_pad, 0)))
        mixed: Tensor = self.mix(F.gelu(h))
        return x + mixed


class Standardize(nn.Module):
    """Per-image, per-channel standardisation (InstanceNorm2d without parameters).

    Written out because nn.InstanceNorm2d checks its input size with a Python `if` on a tensor,
    which torch.jit.trace warns about.
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:  # (B, C, H, W)
        mean = x.mean(dim=(-2, -1), keepdim=True)
        var = x.var(dim=(-2, -1), keepdim=True, unbiased=False)
        return (x - mean) * torch.rsqrt(var + self.eps)


class TinyLM(nn.Module):
    """Byte-level causal LM: embedding, dilated causal convolutions, a linear head.

    `context` is the receptive field: position t sees tokens t - context + 1 .. t.
    """

    def __init__(self, vocab_size: int, dim: int, context: int, kernel_size: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        blocks: list[nn.Module] = []
        reach, dilation = 1, 1
        while reach < context:  # double the dilation until the receptive field covers `context`
            blocks.append(CausalConvBlock(dim, dilation, kernel_size))
            reach += dilation * (kernel_size - 1)
            dilation *= kernel_size
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)

    def forward(self, input_ids: Tensor) -> Tensor:  # (B, T) int64 -> (B, T, V) logits
        h = self.blocks(self.embed(input_ids).transpose(1, 2))
        logits: Tensor = self.head(self.norm(h.transpose(1, 2)))
        return logits


def tiny_lm(
    vocab_size: int = 256, dim: int = 64, context: int = 32, kernel_size: int = 2
) -> nn.Module:
    """A causal LM mapping input_ids (B, T) to next-token logits (B, T, vocab_size)."""
    if vocab_size < 2 or dim < 1 or context < 1 or kernel_size < 2:
        raise ValueError("tiny_lm needs vocab_size >= 2, dim >= 1, context >= 1, kernel_size >= 2")
    return TinyLM(vocab_size, dim, context, kernel_size)


def tiny_cnn(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> nn.Module:
    """A small CNN mapping images (B, C, H, W) of any size >= 4 to logits (B, num_classes)."""
    if num_classes < 2 or in_channels < 1 or width < 1:
        raise ValueError("tiny_cnn needs num_classes >= 2, in_channels >= 1, width >= 1")
    return nn.Sequential(
        # Per-image, per-channel standardisation: removes the background colour and contrast,
        # so the convolutions only have to learn shapes (training converges several times faster).
        Standardize(),
        nn.Conv2d(in_channels, width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1),
        nn.ReLU(),
        # Global pooling keeps the head independent of the image size.
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, num_classes),
    )

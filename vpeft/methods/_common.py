"""Small building blocks shared by the methods."""

from __future__ import annotations

import math

import torch
from torch import nn


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class NewGELU(nn.Module):
    """GELU's tanh approximation as Hugging Face's ``gelu_new`` writes it (T5's and ATTEMPT's adapters)."""

    def forward(self, x):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


ACTIVATIONS = {
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "quick_gelu": QuickGELU,
    "silu": nn.SiLU,
    "gelu_new": NewGELU,
    "identity": nn.Identity,
}


def init_linear(layer: nn.Linear, kind: str) -> None:
    """``trunc_normal`` (timm ViT init, GIST/iDAT), ``zero`` or ``kaiming`` (nn.Linear default), ``xavier`` (NOAH)."""
    if kind == "trunc_normal":
        nn.init.trunc_normal_(layer.weight, std=0.02)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    elif kind == "zero":
        nn.init.zeros_(layer.weight)
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    elif kind == "kaiming":
        nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5))
        if layer.bias is not None:
            nn.init.zeros_(layer.bias)
    elif kind == "xavier":
        nn.init.xavier_uniform_(layer.weight)
        if layer.bias is not None:
            nn.init.normal_(layer.bias, std=1e-6)
    else:
        raise ValueError(f"unknown init {kind!r}")


class Bottleneck(nn.Module):
    """``scale * up(dropout(act(down(x))))``: the adapter module of every adapter variant."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        act: str,
        bias: bool,
        init: str,
        scale: float,
        dropout: float = 0.0,
        channels_first: bool = False,
    ):
        super().__init__()
        self.channels_first = channels_first
        self.down = nn.Linear(dim, hidden, bias=bias)
        self.act = ACTIVATIONS[act]()
        self.drop = nn.Dropout(dropout)
        self.up = nn.Linear(hidden, dim, bias=bias)
        self.scale = scale
        if init == "zero_up":
            init_linear(self.down, "kaiming")
            init_linear(self.up, "zero")
        elif init == "default":  # nn.Linear's own (ATTEMPT's adapters)
            pass
        else:
            init_linear(self.down, init)
            init_linear(self.up, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_first:  # NCHW maps (ConvNeXt): project the channel dimension
            x = x.movedim(1, -1)
        out = self.up(self.drop(self.act(self.down(x))))
        out = out * self.scale if self.scale != 1.0 else out
        return out.movedim(-1, 1) if self.channels_first else out

"""The grokking tasks and the toy transformer trained on them.

- **modular addition** (Power et al. 2022; Nanda et al. 2023): inputs ``[a, b, =]`` with a, b ∈ [0, p),
  label (a + b) mod p; a seeded random fraction of the p² pairs is the training set, the rest the test set.
- **sparse parity** (Barak et al. 2022): n random bits ``[x₁ … x_n, =]``, label the parity of the first k
  bits; the claim says the CKA signal is absent here.

The model is a decoder-only transformer without LayerNorm (as in Nanda et al.), learned positions,
causal attention, read out at the last position (the ``=`` token). Its blocks are ``blocks.0``,
``blocks.1``, ...; the residual stream after each block is what the CKA monitor hooks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Split:
    """A task's data. x_*: (n, seq) int64 tokens; y_*: (n,) int64 labels; vocab and classes are sizes."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    vocab: int
    classes: int


def modular_addition(p: int, train_fraction: float, seed: int) -> Split:
    """All p² pairs ``[a, b, p]`` → (a + b) mod p, split at random (seeded) into train/test."""
    a, b = torch.meshgrid(torch.arange(p), torch.arange(p), indexing="ij")
    x = torch.stack([a.flatten(), b.flatten(), torch.full((p * p,), p)], dim=1)  # (p², 3)
    y = (x[:, 0] + x[:, 1]) % p
    perm = torch.randperm(p * p, generator=torch.Generator().manual_seed(seed))
    n_train = round(train_fraction * p * p)
    tr, te = perm[:n_train], perm[n_train:]
    return Split(x[tr], y[tr], x[te], y[te], vocab=p + 1, classes=p)


def sparse_parity(n_bits: int, k: int, n_train: int, seed: int) -> Split:
    """All 2ⁿ bit strings ``[x₁ … x_n, 2]`` → parity of x₁ … x_k; a seeded random ``n_train`` of them train, the rest test."""
    codes = torch.arange(2**n_bits)
    bits = (codes[:, None] >> torch.arange(n_bits)) & 1  # (2ⁿ, n_bits)
    x = torch.cat([bits, torch.full((2**n_bits, 1), 2)], dim=1)  # (2ⁿ, n_bits + 1)
    y = bits[:, :k].sum(1) % 2
    perm = torch.randperm(2**n_bits, generator=torch.Generator().manual_seed(seed))
    tr, te = perm[:n_train], perm[n_train:]
    return Split(x[tr], y[tr], x[te], y[te], vocab=3, classes=2)


class Block(nn.Module):
    """Pre-residual attention + MLP block without LayerNorm: h ← h + attn(h); h ← h + mlp(h)."""

    def __init__(self, d_model: int, n_heads: int, d_mlp: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=False)
        self.out = nn.Linear(d_model, d_model, bias=False)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_mlp), nn.ReLU(), nn.Linear(d_mlp, d_model))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        B, T, D = h.shape
        q, k, v = self.qkv(h).view(B, T, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)  # (B, nh, T, hs)
        a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        h = h + self.out(a.transpose(1, 2).reshape(B, T, D))
        return h + self.mlp(h)


class ToyTransformer(nn.Module):
    """Decoder-only transformer for the grokking tasks; returns logits (B, classes) at the last position."""

    def __init__(self, vocab: int, classes: int, seq_len: int, *, d_model: int = 128, n_heads: int = 4,
                 d_mlp: int = 512, n_layers: int = 2) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.pos = nn.Parameter(torch.randn(seq_len, d_model) / d_model**0.5)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, d_mlp) for _ in range(n_layers))
        self.unembed = nn.Linear(d_model, classes, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) + self.pos[: x.shape[1]]  # (B, T, D)
        for block in self.blocks:
            h = block(h)
        return self.unembed(h[:, -1])  # (B, classes)


def last_position(h: torch.Tensor) -> torch.Tensor:
    """The monitor's representation: a block's residual stream (B, T, D) at the ``=`` position, (B, D)."""
    return h[:, -1]

"""The settings of a sinks measurement (``gammalens sinks``): :class:`SinkConfig`."""

from __future__ import annotations

from dataclasses import dataclass

from gammalens.errors import GammalensError


@dataclass
class SinkConfig:
    """Settings of the sink measures; CLI flags map one-to-one onto these fields.

    Attributes
    ----------
    ks : tuple of int
        The k of "attention mass on the first k tokens" (each ≥ 1); the fit's ``sink_tokens`` is added.
    eps : float
        ε of the sink rate: a head sinks when its first-key share exceeds ε (Gu et al. 2024: 0.3).
    massive_abs : float
        Smallest |value| of a massive activation (Sun et al. 2024: 100).
    massive_ratio : float
        Smallest multiple of the layer's median |value| for a massive activation (Sun et al.: 1000).
    ablate : str or None
        ``'zero'`` or ``'mean'``: ablate the massive activations where they arise and re-measure;
        None: no causal test.
    bos_variant : bool
        Also measure the windows without the BOS (or with one, for a tokenizer that adds none).
    """

    ks: tuple[int, ...] = (1, 4)
    eps: float = 0.3
    massive_abs: float = 100.0
    massive_ratio: float = 1000.0
    ablate: str | None = "zero"
    bos_variant: bool = True

    def __post_init__(self) -> None:
        self.ks = tuple(sorted({int(k) for k in self.ks}))
        if not self.ks or self.ks[0] < 1:
            raise GammalensError(f"sink token counts k must be ≥ 1 (got {list(self.ks)})")
        if not 0 < self.eps < 1:
            raise GammalensError(f"--sink-eps must be in (0, 1) (got {self.eps})")
        if not self.massive_abs > 0:
            raise GammalensError(f"--massive-abs must be > 0 (got {self.massive_abs}); Sun et al. use 100")
        if not self.massive_ratio > 0:
            raise GammalensError(f"--massive-ratio must be > 0 (got {self.massive_ratio}); Sun et al. use 1000")
        if self.ablate == "none":
            self.ablate = None
        if self.ablate not in (None, "zero", "mean"):
            raise GammalensError(f"--ablate-massive must be zero, mean or none (got {self.ablate!r})")

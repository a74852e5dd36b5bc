"""The settings of a retrieval measurement (``gammalens measure --retrieval``): :class:`RetrievalConfig`."""

from __future__ import annotations

from dataclasses import dataclass

from gammalens.errors import GammalensError


@dataclass
class RetrievalConfig:
    """Settings of the echo / induction pass and of the far mass; CLI flags map one-to-one onto these fields
    (``--retrieval-length`` → ``length`` …).

    Attributes
    ----------
    length : int
        L, tokens of the random sequence; the probe input is the tokenizer's prefix (BOS) then the sequence twice,
        P + 2L tokens (P: prefix length), so P + 2L must fit the model's positions.
    sequences : int
        Random sequences averaged over (each its own draw of the run's seed).
    skip : int
        Second-copy queries left out at the start of the copy: query L + i counts for i ≥ ``skip``. Right after the
        copy boundary the pair (x_{L−1}, x_0) has no earlier occurrence, so an induction head has nothing to match
        yet; 4 keeps those boundary queries out (RazorAttention scores the whole copy; at L = 256 the difference
        is ≤ 4 of 256 queries).
    far_distance : int or None
        D of the far mass: the share of a head's non-sink mass at query–key distances > D in the run's ordinary
        profile. None: context // 2, the window a γ cache holds at compression ratio 0.5.
    """

    length: int = 256
    sequences: int = 8
    skip: int = 4
    far_distance: int | None = None

    def __post_init__(self) -> None:
        if self.length < 2:
            raise GammalensError(f"--retrieval-length must be at least 2 tokens (got {self.length})")
        if self.sequences < 1:
            raise GammalensError(f"--retrieval-sequences must be at least 1 (got {self.sequences})")
        if self.skip < 0:
            raise GammalensError(f"--retrieval-skip must be ≥ 0 (got {self.skip})")
        if self.skip >= self.length:
            raise GammalensError(f"--retrieval-skip {self.skip} leaves no query of a {self.length}-token copy; "
                                 f"lower it below --retrieval-length")
        if self.far_distance is not None and self.far_distance < 0:
            raise GammalensError(f"--retrieval-far-distance must be ≥ 0 (got {self.far_distance})")

    def resolve_far_distance(self, context: int) -> int:
        """D for a run of ``context`` tokens: ``far_distance`` if set, else ``context // 2``."""
        if self.far_distance is not None and self.far_distance >= context - 1:
            raise GammalensError(f"--retrieval-far-distance {self.far_distance} leaves no distance of a "
                                 f"{context}-token context beyond it; lower it below {context - 1}")
        return self.far_distance if self.far_distance is not None else context // 2

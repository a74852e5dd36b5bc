"""Architecture facts from a config: moved to :mod:`gammalens.architecture` (one Architecture for the card and
for measured models); these names stay importable from here."""

from gammalens.architecture import (
    ALIBI_TYPES,
    LEARNED_POSITION_TYPES,
    NO_ATTENTION_TYPES,
    Architecture,
    architecture,
    from_model,
    load_config,
    model_facts,
    quiet_transformers,
)

__all__ = ["ALIBI_TYPES", "LEARNED_POSITION_TYPES", "NO_ATTENTION_TYPES", "Architecture", "architecture", "from_model",
           "load_config", "model_facts", "quiet_transformers"]

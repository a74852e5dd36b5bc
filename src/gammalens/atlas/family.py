"""Model family: the leading word of a model's name, used to group and filter the atlas.

>>> [family_of(m) for m in ("Qwen/Qwen2.5-7B", "EleutherAI/pythia-160m", "meta-llama/Meta-Llama-3-8B")]
['qwen', 'pythia', 'llama']
"""

from __future__ import annotations

import re

# words that start a name without naming the family (Meta-Llama-3 is a llama, all-MiniLM-L6-v2 a minilm)
_PREFIXES = {"meta", "all"}


def family_of(model_id: str) -> str:
    """The family of a model id, hub id or local path: the first alphabetic word of its last path part.

    Parameters
    ----------
    model_id : str
        ``org/name``, a short name or a local path.

    Returns
    -------
    str
        Lower-case family (``'unknown'`` when the name has no letters).
    """
    name = model_id.rstrip("/").replace("\\", "/").split("/")[-1].lower()
    words = [w for w in re.findall(r"[a-z]+", name) if w not in _PREFIXES]
    return words[0] if words else "unknown"

"""Predictions from a config alone, no weights: the config card (``gammalens card``), parameter counts and KV-cache
bytes. Sizes are built from the model's architecture (:mod:`gammalens.model.architecture`, counted on the meta device
where no closed form exists); the formulas they quote (γ_Padé, D_f, RoPE scales) live in :mod:`gammalens.theory`.
"""

"""The framework's formulas: pure functions of γ, θ, T and the model's geometry (no torch at import).

One module per concept: ``rope`` (frequencies, wavelengths, aliasing scales), ``pade`` (γ_Padé, d_horizon,
θ_eff, η, regime), ``kv_window`` (D_f, KV budget), ``phases``, ``thermo`` (Z, C_V, Fisher information),
``fractional`` (Lévy index), ``annotate`` (the theory columns of every measured γ). This package imports no
other gammalens package; predictions from a config (``gammalens card``) are :mod:`gammalens.card`, built on it.
Derivations: ``docs/theory.md``.
"""

"""The framework's formulas: pure functions of γ, θ, T and the model's geometry (no torch at import)."""

"""gammalens's version, in one place (``pyproject.toml`` holds the same string; a test keeps them equal)."""

__version__ = "0.1.0"

"""Models: resolve what the user named (short name, path, hub id, GGUF), load it, and read its architecture.

:mod:`~gammalens.model.load` resolves and loads; :mod:`~gammalens.model.architecture` holds
:class:`~gammalens.model.architecture.Architecture`, the one form of a model's facts; :mod:`~gammalens.model.gguf_cache`
dequantises GGUF checkpoints once per file; :mod:`~gammalens.model.hub` fetches hub ids; :mod:`~gammalens.model.hashing`
hashes weights once per process.
"""

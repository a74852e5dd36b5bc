"""The run format — one concept, one package: ``schema`` (the version, file names and the one typed column table
of ``fits.csv``), ``writer`` (the atomic run directory) and ``reader`` (reading and checking it back).

Nothing is imported here, so the low layers (probe, fit) can use the schema without loading the writer or reader.
"""

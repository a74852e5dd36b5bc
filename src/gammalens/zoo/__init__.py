"""The zoo: small RoPE language models trained here, measured, and checked against γ_Padé and our predictor.

The file list is the pipeline (``docs/zoo.md``):

- ``data.py``       the stdlib text, split into training and held-out files; the token stream and its segments
- ``tokenizer.py``  the byte-level BPE tokenizer (Hugging Face ``tokenizers``)
- ``train.py``      one small ``LlamaForCausalLM``: config, deterministic training, checkpoint, loss curves
- ``grid.py``       the θ × T grid — ``gammalens zoo train``
- ``predictor.py``  our training-free predictor of γ from the RoPE kernel (``docs/predictor.md``)
- ``measure.py``    measuring every zoo model, with γ_Padé and our predictions — ``gammalens zoo measure``
- ``rescale.py``    the within-model θ-rescale control — ``gammalens zoo rescale``
- ``report.py``     ``docs/zoo.md`` and its CSVs
- ``gammalens-tiny/`` the shipped default model (a Hugging Face directory)

Nothing is imported here: torch, transformers and tokenizers load only when a zoo command runs.
"""

"""The retrieval pass: one probed forward over repeated random tokens (:func:`measure_retrieval`), and the measurement
behind ``gammalens measure --retrieval`` (:func:`measure_with_retrieval`): the ordinary run, then that pass on the
same loaded model, with ``echo``, ``induction`` and ``far_mass`` added to the head rows of ``fits.csv``.

>>> from gammalens.retrieval.run import measure_with_retrieval
>>> r = measure_with_retrieval(MeasureConfig(model="smollm2", context=512), RetrievalConfig())   # doctest: +SKIP
>>> r.to_pandas().nlargest(5, "induction")[["name", "induction", "echo", "far_mass"]]            # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from gammalens.errors import GammalensError
from gammalens.measuring.config import MeasureConfig, MeasureResult
from gammalens.measuring.pipeline import measure, only_last_logits
from gammalens.model.load import arch_facts, execution_device, load_model, resolve_model
from gammalens.probe.accumulate import BatchLayout, ProfileAccumulator
from gammalens.probe.backend import DistanceProbe, probing
from gammalens.retrieval.config import RetrievalConfig
from gammalens.retrieval.observer import RetrievalObserver
from gammalens.retrieval.scores import RetrievalScores, far_mass, with_retrieval_columns
from gammalens.retrieval.sequences import RepeatedTokens, repeated_random


def measure_retrieval(net: Any, tokenizer: Any = None, config: RetrievalConfig | None = None, *, seed: int = 0,
                      tokens: RepeatedTokens | None = None, batch_size: int = 4, chunk_size: int | None = None,
                      **settings: Any) -> RetrievalScores:
    """Echo and induction scores of every head of ``net``, exact (fp32 probabilities, float64 sums).

    Parameters
    ----------
    net : transformers.PreTrainedModel
        A loaded model whose attention goes through transformers' ``AttentionInterface``.
    tokenizer : PreTrainedTokenizerBase, optional
        Draws the random sequences and gives the prefix (BOS); not needed with ``tokens``.
    config : RetrievalConfig, optional
        ``length``, ``sequences``, ``skip``; otherwise its fields among ``settings``.
    seed : int
        Seed of the random draw.
    tokens : RepeatedTokens, optional
        The sequences to measure instead of drawing them (their length and count replace the config's).
    batch_size : int
        Sequences per forward pass.
    chunk_size : int or None
        Queries per probe chunk (None: the probe's budget).

    Returns
    -------
    RetrievalScores
        (N, L, H) per-sequence scores; ``.echo`` and ``.induction`` are (L, H).

    Raises
    ------
    GammalensError
        The sequences do not fit the model's positions, or the probe does not see every layer.

    Examples
    --------
    >>> s = measure_retrieval(net, tokenizer, length=256, sequences=8, seed=0)   # doctest: +SKIP
    >>> s.top("induction", 3)                                                    # doctest: +SKIP
    """
    config = config if config is not None else RetrievalConfig(**settings)
    if tokens is None:
        if tokenizer is None:
            raise GammalensError("measure_retrieval needs the model's tokenizer, or the sequences as tokens=")
        tokens = repeated_random(tokenizer, config.length, config.sequences, seed)
    RetrievalConfig(length=tokens.length, sequences=len(tokens.input_ids), skip=config.skip)  # checks the skip
    arch = arch_facts(net)
    check_positions(tokens, arch.get("max_positions"))
    n_layers, n_heads, n_docs, n = arch["n_layers"], arch["n_heads"], len(tokens.input_ids), tokens.n_tokens
    dev = execution_device(net)
    # the accumulator is the probe's own bookkeeping here; its profile of repeated random tokens is not kept
    acc = ProfileAccumulator(n_layers, n_heads, n_docs, n - 1, 1, 0, dev)
    observer = RetrievalObserver(n_layers, n_heads, n_docs, tokens.length, tokens.prefix_len, config.skip, dev)
    probe = DistanceProbe(acc, chunk_size=chunk_size, observers=[observer], backend="chunked")
    ids = torch.tensor(tokens.input_ids, dtype=torch.long)  # (N, P + 2L), a copy: the ids are read-only
    extra = only_last_logits(net)
    with torch.inference_mode(), probing(net, probe):
        for b0 in range(0, n_docs, batch_size):
            batch = ids[b0:b0 + batch_size].to(dev)
            probe.set_layout(BatchLayout.full(len(batch), n, first_doc=b0, device=dev))
            net(input_ids=batch, attention_mask=torch.ones_like(batch), **extra)
    if len(probe.layer_of) != n_layers:
        raise GammalensError(f"{arch.get('model_type')}: the probe saw {len(probe.layer_of)} of {n_layers} attention "
                             "layers; this architecture does not route all its attention through AttentionInterface")
    queries = observer.queries.clamp(min=1.0)[:, :, None]  # (N, L, 1)
    return RetrievalScores(length=tokens.length, prefix_len=tokens.prefix_len, skip=config.skip, seed=tokens.seed,
                           doc_echo=(observer.echo_sum / queries).cpu().numpy(),
                           doc_induction=(observer.induction_sum / queries).cpu().numpy())


def check_positions(tokens: RepeatedTokens, max_positions: int | None) -> None:
    """Refuse sequences longer than the model's positions (P + 2L tokens): the scores would measure extrapolation."""
    if max_positions and tokens.n_tokens > max_positions:
        most = (max_positions - tokens.prefix_len) // 2
        raise GammalensError(f"--retrieval-length {tokens.length}: the repeated sequence holds {tokens.n_tokens} "
                             f"tokens, more than the model's {max_positions} positions; use at most {most}")


def measure_with_retrieval(config: MeasureConfig, retrieval: RetrievalConfig, *, progress: bool = False,
                           loaded: tuple[Any, Any] | None = None) -> MeasureResult:
    """:func:`gammalens.measuring.pipeline.measure`, then the retrieval pass on the same model, in one result.

    Parameters
    ----------
    config : MeasureConfig
        The measurement; its ``seed``, ``batch_size`` and ``chunk_size`` also drive the retrieval pass.
    retrieval : RetrievalConfig
        Length, sequences, skip and the far-mass distance.
    progress : bool
        The measurement's progress bar.
    loaded : (model, tokenizer), optional
        The already loaded ``config.model``.

    Returns
    -------
    MeasureResult
        Its head rows carry ``echo``, ``induction`` (probability, 0–1) and ``far_mass`` (share of non-sink mass
        beyond ``far_distance``), its manifest a ``retrieval`` block (settings, the sequences' digest, the time).
    """
    net, tokenizer = loaded if loaded is not None else load_model(resolve_model(config.model, config.gguf_file),
                                                                    config.dtype, config.device)
    arch = arch_facts(net)
    distance = retrieval.resolve_far_distance(config.resolve_context(arch["max_positions"]))
    tokens = repeated_random(tokenizer, retrieval.length, retrieval.sequences, config.seed)
    check_positions(tokens, arch["max_positions"])  # before the measurement: bad input costs no forward
    result = measure(config=config, loaded=(net, tokenizer), progress=progress)
    t0 = time.perf_counter()
    scores = measure_retrieval(net, config=retrieval, tokens=tokens, batch_size=config.batch_size,
                               chunk_size=config.chunk_size)
    seconds = round(time.perf_counter() - t0, 4)
    fits = with_retrieval_columns(result.fits, scores, far_mass(result.profile.mass, distance))
    manifest = result.manifest | {
        "retrieval": {"length": tokens.length, "sequences": scores.n_sequences, "skip": scores.skip,
                      "seed": config.seed, "prefix_len": tokens.prefix_len, "far_distance": distance,
                      "sha256": tokens.sha256()},
        "timings": result.manifest["timings"] | {"retrieval_s": seconds},
    }
    return dataclasses.replace(result, fits=fits, manifest=manifest)

"""``gammalens card``: predict attention type, γ_Padé, regime, KV cache and GPU fit from a config alone.

Flags are checked before the config is read: ``--batch``, ``--gpu-mem`` and ``--activation-gib`` by their options'
ranges; ``--context`` (≥ 1 token), ``--eps`` (in (0, 1)), a finite ``--gpu-mem`` and an activation allowance below it by
:func:`~gammalens.card.config_card.build_card`, whose first lines they are.
"""

from __future__ import annotations

from typing import Annotated

import typer

from gammalens.cli.failure import ctrl_c_is_an_error
from gammalens.cli.options import within


def card(
    model: Annotated[str, typer.Argument(help="A config.json, a directory holding one, or a hub id (online).")],
    context: Annotated[int | None, typer.Option(help="Context length T in tokens. Default: the config's "
                                                "max_position_embeddings.")] = None,
    dtype: Annotated[str | None, typer.Option(help="Weights dtype: fp32, bf16, fp16, fp8, int8 or int4. "
                                              "Default: the config's torch_dtype, else bf16.")] = None,
    kv_dtype: Annotated[str | None, typer.Option(help="KV-cache dtype. Default: the weights dtype.")] = None,
    batch: Annotated[int, typer.Option(min=1, help="Sequences held in the KV cache at once.")] = 1,
    gpu_mem: Annotated[float, typer.Option(callback=within(0, low_open=True), help="GPU memory in GiB (> 0).")] = 80.0,
    activation_gib: Annotated[float | None, typer.Option(min=0.0, help="Memory kept for activations, CUDA context and "
                                                         "fragmentation, in GiB. Default: 10% of --gpu-mem.")] = None,
    eps: Annotated[float, typer.Option(help="Mass fraction outside the predicted KV window D_f.")] = 0.05,
    as_json: Annotated[bool, typer.Option("--json", help="Print the card as JSON.")] = False,
) -> None:
    """Predict from a config alone: attention type, RoPE scales, γ_Padé, regime, KV cache and GPU fit."""
    import json

    from gammalens.card.config_card import build_card, render

    with ctrl_c_is_an_error():
        result = build_card(model, context=context, dtype=dtype, kv_dtype=kv_dtype, batch=batch,
                            gpu_mem_gib=gpu_mem, activation_gib=activation_gib, eps=eps)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, ensure_ascii=False))
    else:
        render(result)


def register(app: typer.Typer) -> None:
    """Add ``card`` to APP."""
    app.command()(card)

"""Planning a sweep: each cell's settings as its run will record them, its settings hash, and what is done.

A cell is identified by the ``settings`` its manifest will hold — the :class:`MeasureConfig` fields with
the context and fit range resolved — and by their hash, the 8 hex digits that end its run directory's
name. A cell is done when a run with those settings is in the atlas or in the output folder.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from gammalens.atlas.store import connect, resolve_atlas_path
from gammalens.errors import GammalensError
from gammalens.measuring.config import MeasureConfig
from gammalens.model.load import embedded_models, quiet_transformers

# settings that `measure` fills in from the model argument alone when they are None
FILLED_BY_MEASURE = ("gguf_file",)


@dataclass(frozen=True)
class PlannedCell:
    """One cell of a sweep, resolved.

    Attributes
    ----------
    index : int
        1-based position in the spec (grid cells first, then ``[[cells]]`` rows).
    config : MeasureConfig
        The cell's settings with ``context`` and ``fit_range`` made explicit.
    settings : dict
        The settings its run's manifest will record (JSON values).
    key : str
        The settings hash: 8 hex digits of sha256 over ``settings``, as in the run directory's name.
    error : str or None
        Why the cell cannot be measured as given (e.g. its fit range does not fit its context).
    """

    index: int
    config: MeasureConfig
    settings: dict[str, Any]
    key: str
    error: str | None = None

    @property
    def label(self) -> str:
        """``model · corpus · T=context · seed`` for tables and logs."""
        c = self.config
        return f"{Path(str(c.model)).name} · {c.corpus} · T={c.context} · seed {c.seed}"


def canonical(settings: dict[str, Any]) -> str:
    """The settings as sorted JSON: equal strings ⇔ the same measurement."""
    return json.dumps(json.loads(json.dumps(settings, default=str)), sort_keys=True)


def settings_hash(settings: dict[str, Any]) -> str:
    """8 hex digits of sha256 over the sorted-JSON settings (the suffix of a run directory's name)."""
    return hashlib.sha256(canonical(settings).encode()).hexdigest()[:8]


@functools.lru_cache(maxsize=256)
def default_context(model: str) -> int:
    """The context ``measure`` uses when none is given: 512, or the model's maximum positions if smaller.

    Reads only the model's config (no weights). Raises :class:`GammalensError` when it cannot be read.
    """

    path = embedded_models().get(model) or Path(model).expanduser()
    try:
        from transformers import AutoConfig

        with quiet_transformers():
            cfg = AutoConfig.from_pretrained(str(path) if Path(path).is_dir() else model)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:160]
        raise GammalensError(f"cannot read the config of {model!r} to find its default context ({first}); "
                             "give `contexts` explicitly in the spec") from None
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    max_positions = int(getattr(text, "max_position_embeddings", 0) or 0) or None
    return MeasureConfig(context=None).resolve_context(max_positions)


def plan_cell(index: int, config: MeasureConfig) -> PlannedCell:
    """Resolve one cell's context and fit range the way ``measure`` does, without loading weights."""
    error = None
    try:
        context = config.context or default_context(str(config.model))
        d_min, d_max = config.parse_fit_range(context)
        config = replace(config, context=context, fit_range=f"{d_min}:{d_max}")
    except GammalensError as err:
        error = str(err)
    settings = json.loads(canonical(asdict(config)))
    return PlannedCell(index=index, config=config, settings=settings, key=settings_hash(settings), error=error)


class RunIndex:
    """Finished runs by settings; :meth:`find` matches a cell's settings the way ``measure`` fills them in.

    A setting in :data:`FILLED_BY_MEASURE` that the cell leaves ``None`` is resolved by ``measure`` from the
    model argument alone (e.g. the GGUF file of ``smollm2``), so it matches whatever the run recorded. A
    setting that a run lacks (it was measured before the setting existed) counts as its default.
    """

    def __init__(self) -> None:
        self._by_rest: dict[str, list[tuple[dict[str, Any], Any]]] = {}
        self._defaults = json.loads(canonical(asdict(MeasureConfig())))

    def add(self, settings: dict[str, Any], value: Any) -> None:
        settings = self._defaults | settings
        rest = {k: v for k, v in settings.items() if k not in FILLED_BY_MEASURE}
        self._by_rest.setdefault(canonical(rest), []).append((settings, value))

    def find(self, settings: dict[str, Any]) -> Any:
        """The value of the first run whose settings match ``settings``; None if there is none."""
        rest = {k: v for k, v in settings.items() if k not in FILLED_BY_MEASURE}
        for theirs, value in self._by_rest.get(canonical(rest), []):
            if all(settings.get(k) is None or settings.get(k) == theirs.get(k) for k in FILLED_BY_MEASURE):
                return value
        return None

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_rest.values())


def runs_in_folder(out: Path) -> RunIndex:
    """Finished run directories under ``out`` (hidden partial folders skipped) → their paths."""
    found = RunIndex()
    if not out.is_dir():
        return found
    for run_dir in sorted(out.iterdir()):
        manifest = run_dir / "manifest.json"
        if run_dir.name.startswith(".") or not manifest.is_file() or not (run_dir / "fits.csv").is_file():
            continue
        try:
            settings = json.loads(manifest.read_text(encoding="utf-8")).get("settings")
        except (OSError, ValueError):
            continue
        if isinstance(settings, dict):
            found.add(settings, run_dir)
    return found


def runs_in_atlas(atlas: Path | None) -> RunIndex:
    """Runs recorded in the atlas → (run id, model γ); empty when there is no atlas file yet."""

    found = RunIndex()
    if not resolve_atlas_path(atlas).exists():
        return found
    with connect(atlas, read_only=True) as con:
        for run_id, manifest, gamma in con.execute("SELECT run_id, manifest, gamma FROM runs").fetchall():
            try:
                settings = json.loads(manifest).get("settings")
            except (TypeError, ValueError):
                continue
            if isinstance(settings, dict):
                found.add(settings, (run_id, gamma))
    return found

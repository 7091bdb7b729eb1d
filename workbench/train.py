"""Fine-tuning with a RoPE spec applied, through accelerate: one process, several (``accelerate launch``),
or GPUs with the user's DeepSpeed / FSDP configs.

- Packing: documents are packed into rows of ``seq_len`` tokens; position ids restart at every document
  and attention never crosses documents (an explicit block-diagonal causal mask with SDPA; position ids
  only with flash-attn, whose varlen kernels read them). The first token of each document is never a
  target, so a packed row's loss is exactly its documents' losses (tested).
- Mixed context window training (LongRoPE2): a micro-batch is either packed short documents (every
  position below L0: the spec's short factors apply) or long rows (beyond L0: long factors), so one run
  trains both — the patched rotary switches by length exactly as transformers' ``longrope`` does.
- AdamW (lr 2e-5, betas 0.9 / 0.95, weight decay 0, clip 1.0), 40 warm-up steps then cosine (LongRoPE2),
  or linear decay (LongRoPE); bf16 where this machine is fast at it; gradient checkpointing;
  accumulation.
- Checkpoints every N steps (model, optimizer, scheduler position); the data order is a pure function of
  (seed, step, process), so a run killed at any moment and resumed from its last checkpoint ends, on CPU,
  with the same weights as an uninterrupted run (tested with SIGKILL).
"""

from __future__ import annotations

import json
import math
import pickle
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import distributed
from .data import split_documents, tokenized
from .events import Event, Sink, fan_out, null_sink
from .finetuned import save_model
from .models import atomic_dir
from .patch import patch
from .rope import RopeSpec

SCHEDULES = ("cosine", "linear")


class TrainError(ValueError):
    """A fine-tuning request is invalid or cannot resume; the message says what and why."""


@dataclass(frozen=True)
class TrainConfig:
    """Fine-tuning parameters (the LongRoPE / LongRoPE2 papers' defaults); ``corpora``: their train split only."""

    seq_len: int
    steps: int = 400
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 2e-5
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.0
    warmup: int = 40
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    clip: float = 1.0
    dtype: str = "auto"
    gradient_checkpointing: bool = False
    checkpoint_every: int = 50
    corpora: tuple[str, ...] = ("shakespeare", "bible", "stdlib")
    mixed: bool = False
    short_every: int = 2  # mixed: every k-th micro-batch is packed short documents
    attn: str = "auto"  # auto, sdpa, flash_attention_2 (insisting: refuse if unavailable)
    seed: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, allowed: str) -> None:
            raise TrainError(f"{name}={getattr(self, name)!r} is not allowed: {allowed}")

        for name in ("seq_len", "steps", "batch_size", "grad_accum", "checkpoint_every", "short_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
                bad(name, "a positive integer")
        if self.seq_len < 2:
            bad("seq_len", "at least 2 tokens")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            bad("lr", "a finite number > 0")
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            bad("warmup", "an integer >= 0 (steps of linear warm-up)")
        if not (isinstance(self.clip, (int, float)) and not isinstance(self.clip, bool) and self.clip >= 0):
            bad("clip", "a number >= 0 (the gradient-norm limit; 0: no clipping; a negative one would flip the "
                        "gradient)")
        try:
            b1, b2 = self.betas
            ok = all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in (b1, b2))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            bad("betas", "two numbers in [0, 1), e.g. (0.9, 0.95)")
        if not (isinstance(self.weight_decay, (int, float)) and not isinstance(self.weight_decay, bool)
                and math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            bad("weight_decay", "a finite number >= 0")
        if not (isinstance(self.min_lr_ratio, (int, float)) and not isinstance(self.min_lr_ratio, bool)
                and 0 <= self.min_lr_ratio <= 1):
            bad("min_lr_ratio", "a number in [0, 1] (the final learning rate as a fraction of lr)")
        if self.schedule not in SCHEDULES:
            bad("schedule", f"one of {SCHEDULES}")
        if self.dtype not in ("auto", "fp32", "bf16"):
            bad("dtype", "auto, fp32 or bf16")
        if self.attn not in ("auto", "sdpa", "flash_attention_2"):
            bad("attn", "auto, sdpa or flash_attention_2")
        if not self.corpora:
            bad("corpora", "at least one corpus")
        object.__setattr__(self, "betas", tuple(self.betas))
        object.__setattr__(self, "corpora", tuple(self.corpora))

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up to ``lr``, then cosine (or linear) decay to ``min_lr_ratio * lr`` at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    shape = 0.5 * (1 + math.cos(math.pi * t)) if cfg.schedule == "cosine" else 1 - t
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * shape)


# ---- packing ---------------------------------------------------------------------------------------
@dataclass
class PackedBatch:
    """Rows of packed documents: ids, per-row position ids restarting at each document, document ids."""

    input_ids: torch.Tensor  # (batch, seq)
    position_ids: torch.Tensor  # (batch, seq)
    doc_ids: torch.Tensor  # (batch, seq): which document of the row each token belongs to
    labels: torch.Tensor  # (batch, seq): -100 where a token starts a document (nothing before it to predict from)
    long: bool  # rows of one long document (beyond L0), or packed short documents

    def attention_mask(self) -> torch.Tensor:
        """(batch, 1, seq, seq) bool: causal and within the same document."""
        n = self.input_ids.shape[1]
        causal = torch.ones(n, n, dtype=torch.bool).tril()  # (seq, seq)
        same = self.doc_ids[:, :, None] == self.doc_ids[:, None, :]  # (batch, seq, seq)
        return (same & causal)[:, None]


def pack(documents: list[torch.Tensor], seq_len: int, long: bool = False) -> PackedBatch:
    """Pack token sequences into rows of exactly ``seq_len``, greedily in order (a document that does not fit
    continues, as a new document, in the next row). The documents must fill whole rows."""
    rows_ids, rows_pos, rows_doc = [], [], []
    ids: list[int] = []
    pos: list[int] = []
    doc: list[int] = []
    k = 0
    for d in documents:
        d = d[:seq_len].tolist()
        while d:
            room = seq_len - len(ids)
            piece, d = d[:room], d[room:]
            ids += piece
            pos += list(range(len(piece)))
            doc += [k] * len(piece)
            k += 1
            if len(ids) == seq_len:
                rows_ids.append(ids)
                rows_pos.append(pos)
                rows_doc.append(doc)
                ids, pos, doc = [], [], []
    if ids:
        raise TrainError("pack() needs documents that fill whole rows; the last row is incomplete")
    input_ids = torch.tensor(rows_ids, dtype=torch.long)
    position_ids = torch.tensor(rows_pos, dtype=torch.long)
    labels = input_ids.clone()
    labels[position_ids == 0] = -100  # a document's first token has no context in its document
    return PackedBatch(input_ids, position_ids, torch.tensor(rows_doc, dtype=torch.long), labels, long)


class PackedData:
    """Train-split token stream of the chosen corpora; micro-batches are a pure function of (seed, step, rank)."""

    def __init__(self, tokenizer: Any, cfg: TrainConfig, original_length: int) -> None:
        eos = tokenizer.eos_token_id
        streams = []
        for source in cfg.corpora:
            corpus = tokenized(tokenizer, source, progress=False)
            for d in split_documents(source, "train"):
                ids = np.asarray(corpus.doc(d.name), dtype=np.int64)
                streams.append(ids)
                if eos is not None:
                    streams.append(np.array([eos], dtype=np.int64))
        self.stream = torch.from_numpy(np.concatenate(streams))
        longest = max(len(s) for s in streams)
        if cfg.seq_len > len(self.stream):
            raise TrainError(f"seq_len={cfg.seq_len} is not allowed: the train split of {list(cfg.corpora)} holds only "
                             f"{len(self.stream)} tokens")
        if cfg.seq_len > longest and not cfg.mixed:
            warnings.warn(f"seq_len={cfg.seq_len} exceeds every single train document (longest {longest} tokens); "
                          "rows are cut from the concatenated stream", stacklevel=2)
        self.cfg, self.L0 = cfg, original_length
        # mixed training draws short documents (16 .. L0 tokens) from the starts of the train documents
        self.short_docs = [torch.from_numpy(s[:original_length]) for s in streams if len(s) > 16]

    def batch(self, step: int, micro: int, rank: int = 0, world: int = 1) -> PackedBatch:
        """The micro-batch ``micro`` of optimizer step ``step`` for process ``rank`` (deterministic)."""
        cfg = self.cfg
        gen = torch.Generator().manual_seed(((cfg.seed * 1_000_003 + step) * 1009 + micro) * 131 + rank)
        n = cfg.seq_len
        if cfg.mixed and (step * cfg.grad_accum + micro) % cfg.short_every == 0:
            docs: list[torch.Tensor] = []
            need = cfg.batch_size * n
            while sum(len(d) for d in docs) < need:  # random short documents of random lengths below L0
                d = self.short_docs[int(torch.randint(0, len(self.short_docs), (1,), generator=gen))]
                length = int(torch.randint(16, min(self.L0, len(d)) + 1, (1,), generator=gen))
                start = int(torch.randint(0, len(d) - length + 1, (1,), generator=gen))
                docs.append(d[start:start + length])
            docs[-1] = docs[-1][: len(docs[-1]) - (sum(len(d) for d in docs) - need)]
            if len(docs[-1]) == 0:
                docs.pop()
            return pack(docs, n, long=False)
        starts = torch.randint(0, len(self.stream) - n, (cfg.batch_size,), generator=gen)
        return pack([self.stream[s:s + n] for s in starts.tolist()], n, long=True)


# ---- the trainer ---------------------------------------------------------------------------------------
def _attention_implementation(cfg: TrainConfig) -> str:
    from .models import ModelError, attention_implementation

    if cfg.attn == "flash_attention_2":
        try:
            return attention_implementation("flash_attention_2")
        except ModelError as e:
            raise TrainError(f"attn='flash_attention_2' was insisted on but is not usable here: {e}") from None
    impl = attention_implementation("auto")
    if cfg.attn == "auto" and impl == "sdpa" and torch.cuda.is_available():
        warnings.warn("flash-attn is not importable: training with SDPA", stacklevel=2)
    return impl if cfg.attn == "auto" else cfg.attn


def _identity(model: Any, spec: RopeSpec, cfg: TrainConfig, model_name: str) -> dict[str, Any]:
    from .runs import model_fingerprint

    return {"model": model_name, "model_fingerprint": model_fingerprint(model), "spec": spec.to_dict(),
            "config": cfg.to_dict()}


@dataclass
class TrainResult:
    steps: int
    history: list[dict[str, float]]
    seconds: float
    tokens: int
    final_dir: str | None
    resumed_from: int | None
    stopped: bool
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _open_run_folder(folder: Path, model: Any, spec: RopeSpec, cfg: TrainConfig, model_name: str,
                     resume: bool) -> Any:
    """The fine-tune's run folder, new or resumed (checked on the main process, every process told).

    Raises:
        TrainError: the folder holds another kind of run, a fine-tune with other settings, or nothing to resume.
    """
    from .runs import RunFolder, RunFolderError

    try:
        return RunFolder.open(folder, "finetune", _identity(model, spec, cfg, model_name), resume, spec=spec)
    except RunFolderError as e:
        raise TrainError(str(e).replace("it was made with different settings", "its checkpoints are from other "
                                                                                "settings")) from None


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    """A fine-tune run folder's checkpoints as (step, folder), oldest first."""
    out = []
    for p in (folder / "checkpoints").glob("step-*"):
        try:
            out.append((int(p.name.split("-")[1]), p))
        except ValueError:
            continue
    return sorted(out)


def _check_and_set_attention(model: Any, spec: RopeSpec, cfg: TrainConfig) -> str:
    """Refuse a mixed-length run the spec or length cannot serve; set and return the attention implementation."""
    L0 = spec.original_max_position_embeddings
    if cfg.mixed and not spec.is_length_dependent:
        raise TrainError("mixed=True needs a spec with different short and long factors (LongRoPE / LongRoPE2)")
    if cfg.mixed and cfg.seq_len <= L0:
        raise TrainError(f"mixed=True needs seq_len above L0={L0} for its long rows; got {cfg.seq_len}")
    impl = _attention_implementation(cfg)
    if model.config._attn_implementation != impl:
        model.set_attn_implementation(impl)
    return impl


def finetune(model: Any, tokenizer: Any, spec: RopeSpec, cfg: TrainConfig, run_dir: str | Path, *,
             resume: bool = False, sink: Sink = null_sink, stop: Any = lambda: False, progress: bool = True,
             model_name: str = "model", accelerator: Any = None) -> TrainResult:
    """Fine-tune ``model`` in place with ``spec`` applied; checkpoints, events and the final model go to ``run_dir``.

    Raises:
        TrainError: bad configuration, data too short for ``seq_len``, or a resume that does not match.
    """
    from tqdm.auto import tqdm

    from .evaluate import resolve_dtype

    folder = Path(run_dir)
    L0 = spec.original_max_position_embeddings
    impl = _check_and_set_attention(model, spec, cfg)
    bf16 = resolve_dtype(cfg.dtype) == "bf16"
    acc = _accelerator(accelerator, cfg)
    world = acc.num_processes
    data = PackedData(tokenizer, cfg, L0)

    run = _open_run_folder(folder, model, spec, cfg, model_name, resume)
    with run.hold("a fine-tune"):  # one fine-tune works in a folder at a time (taken before checkpoints are read)
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
        resumed_from = _restore(model, opt, folder, sink) if resume else None
        start_step = resumed_from or 0
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable()
        model.train()
        events = fan_out([sink, run.sink])
        if start_step and acc.is_main_process:
            events(Event("train.resume", {"step": start_step, "steps": cfg.steps}))
        history: list[dict[str, float]] = []
        t0, tokens, stopped = time.time(), 0, False
        use_mask = impl != "flash_attention_2"  # flash-attn packs by position ids, SDPA needs the document mask
        with patch(model, spec):  # patch before prepare, so a DDP wrapper sees the final module tree
            prepared, opt = acc.prepare(model, opt)
            bar = tqdm(range(start_step, cfg.steps), desc="fine-tuning", disable=not (progress and acc.is_main_process),
                       initial=start_step, total=cfg.steps)
            for step in bar:
                if distributed.broadcast(bool(stop())):  # process 0's answer: every process stops at the same step
                    stopped = True
                    break
                loss, n_tok, long_rows = _step(prepared, opt, acc, data, cfg, step, bf16, use_mask)
                tokens += n_tok * world
                loss = distributed.all_mean(loss)
                row = {"step": step + 1, "loss": loss, "lr": lr_at(step, cfg), "seconds": time.time() - t0,
                       "long_micro_batches": long_rows, "tokens": tokens}
                history.append(row)
                if acc.is_main_process:
                    events(Event("train.step", row))
                    bar.set_postfix(loss=f"{loss:.3f}")
                if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps:
                    acc.wait_for_everyone()
                    if acc.is_main_process:
                        _save_checkpoint(folder, step + 1, acc.unwrap_model(prepared), opt, events)
                    acc.wait_for_everyone()
    final = _finish(acc, prepared, tokenizer, spec, folder / "model", None if stopped else events, cfg.steps, t0)
    return TrainResult(steps=len(history) + start_step, history=history, seconds=time.time() - t0, tokens=tokens,
                       final_dir=final, resumed_from=resumed_from, stopped=stopped)


def _finish(acc: Any, prepared: Any, tokenizer: Any, spec: RopeSpec, target: Path, events: Sink | None, steps: int,
            t0: float) -> str | None:
    """Unwrap the model for the caller and (main process, unless stopped: ``events`` None) save it to ``target``.

    An accelerator configured for mixed precision (accelerate launch --mixed_precision, or one passed in) wraps
    the model's own forward in autocast in prepare(): unwrapping undoes that, or the caller's model would go on
    computing in bf16 after fine-tuning.
    """
    model = acc.unwrap_model(prepared, keep_fp32_wrapper=False)
    model.eval()
    final = None
    if events is not None and acc.is_main_process:
        final = str(save_model(model, tokenizer, spec, target))
        events(Event("train.done", {"steps": steps, "final_dir": final, "seconds": time.time() - t0}))
    acc.wait_for_everyone()
    return final


def _accelerator(accelerator: Any, cfg: TrainConfig) -> Any:
    """The given Accelerator, or one for this machine (it joins the process group under accelerate launch).

    bf16 goes through our own autocast, not Accelerator(mixed_precision=...): accelerate keeps that setting
    in a process-wide state, so a kernel that fine-tuned once in fp32 could never switch to bf16.
    """
    from accelerate import Accelerator

    acc = accelerator or Accelerator(gradient_accumulation_steps=cfg.grad_accum, cpu=not torch.cuda.is_available())
    acc.gradient_accumulation_steps = cfg.grad_accum
    return acc


def _step(prepared: Any, opt: Any, acc: Any, data: PackedData, cfg: TrainConfig, step: int, bf16: bool,
          use_mask: bool) -> tuple[float, int, int]:
    """One optimizer step of ``grad_accum`` micro-batches: (this process's mean loss, tokens, long micro-batches)."""
    for group in opt.param_groups:
        group["lr"] = lr_at(step, cfg)
    loss_sum, n_tok, long_rows = 0.0, 0, 0
    for micro in range(cfg.grad_accum):
        b = data.batch(step, micro, acc.process_index, acc.num_processes)
        long_rows += b.long
        with acc.accumulate(prepared):
            with torch.autocast(acc.device.type, dtype=torch.bfloat16, enabled=bf16):
                out = prepared(input_ids=b.input_ids.to(acc.device), position_ids=b.position_ids.to(acc.device),
                               attention_mask=b.attention_mask().to(acc.device) if use_mask else None,
                               labels=b.labels.to(acc.device), use_cache=False)
            acc.backward(out.loss)
            if acc.sync_gradients and cfg.clip:
                acc.clip_grad_norm_(prepared.parameters(), cfg.clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
        loss_sum += float(out.loss.detach())
        n_tok += int(b.input_ids.numel())
    return loss_sum / cfg.grad_accum, n_tok, long_rows


def _restore(model: Any, opt: Any, folder: Path, sink: Sink) -> int | None:
    """Load the newest loadable checkpoint into ``model`` and ``opt``; the step it was taken at (None: none)."""
    loaded = _load_latest_checkpoint(folder, sink)
    if loaded is None:
        return None
    step, state = loaded
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    return step


KEEP_CHECKPOINTS = 2  # the newest and the one before it, to fall back on if the newest is damaged


def load_checkpoint_state(path: Path) -> dict[str, Any]:
    """A checkpoint's tensors and plain values, never code.

    ``weights_only=True`` makes torch's unpickler refuse anything but tensors, containers and numbers, so a
    run folder from someone else cannot execute code on ``--resume``.

    Raises:
        TrainError: the file is missing, damaged, or holds something other than a checkpoint.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise TrainError(f"{path} is not a loadable checkpoint: it holds objects other than tensors and plain "
                         "values, and loading those could run code; it was refused") from None
    except Exception as e:  # noqa: BLE001 (torch raises RuntimeError, EOFError, ... for damaged files)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise TrainError(f"{path} is not a loadable checkpoint ({type(e).__name__}: {first[:160]})") from None
    if not isinstance(state, dict) or not {"model", "optimizer", "step"} <= set(state):
        raise TrainError(f"{path} is not a workbench checkpoint (expected model, optimizer and step)")
    return state


def _load_latest_checkpoint(folder: Path, sink: Sink) -> tuple[int, dict[str, Any]] | None:
    """The newest checkpoint that loads, falling back to an older one (with a warning event) if it is damaged."""
    errors = []
    for step, ck in reversed(list_checkpoints(folder)):
        try:
            state = load_checkpoint_state(ck / "state.pt")
        except TrainError as e:
            errors.append(str(e))
            warnings.warn(f"{e}; falling back to an earlier checkpoint", stacklevel=2)
            sink(Event("train.warning", {"message": f"{e}; falling back to an earlier checkpoint"}))
            continue
        return step, state
    if errors:
        raise TrainError("no checkpoint of this run loads: " + "; ".join(errors)
                         + ". Start again in a new folder (or remove the damaged checkpoints)")
    return None


def _save_checkpoint(folder: Path, step: int, model: Any, opt: Any, events: Sink) -> None:
    """Atomic: a checkpoint folder exists complete or not at all; all but the newest two are pruned after."""
    target = folder / "checkpoints" / f"step-{step}"
    with atomic_dir(target) as tmp:
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step}, tmp / "state.pt")
    for _, p in list_checkpoints(folder)[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(p, ignore_errors=True)
    events(Event("train.checkpoint", {"step": step, "path": str(target)}))

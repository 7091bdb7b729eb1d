"""Apply a RoPE spec to a loaded transformers model in place, and undo it.

transformers computes RoPE once per forward in a model-level ``rotary_emb`` module (Llama, Mistral,
Qwen2, Phi-3 families) and hands ``(cos, sin)`` to every attention layer. We swap that module for one
that computes cos/sin from a :class:`~workbench.rope.RopeSpec` (including LongRoPE's start window
``n_hat`` and the attention factor) and put the original back on undo. No weights are touched.

Length-dependent specs (LongRoPE short/long factors, dynamic NTK, dynamic YaRN) change frequencies
as a sequence grows. With a KV cache, everything stored was computed with the old frequencies —
not only the keys' rotation but, from the second layer on, the keys and values themselves. By
default the patch therefore re-runs the whole sequence (re-prefill) when the frequencies change, so
cached generation gives exactly what recomputing from scratch gives; see :class:`RopePatch`.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from .hf import load_config_dict, model_geometry
from .rope import RopeFrequencies, RopeSpec, SpecError


class NoRotaryError(ValueError):
    """The model has no (supported) rotary embedding module."""


PAIRINGS = ("halves", "interleaved")


def pair_angles(angles: torch.Tensor, pairing: str) -> torch.Tensor:
    """Per-pair angles ``(..., D)`` laid out over the rotary dimensions ``(..., 2D)`` as the model pairs them:
    "halves" (dimension i with i + D, Llama's ``rotate_half``) or "interleaved" (2i with 2i + 1, GPT-J, Cohere)."""
    if pairing == "interleaved":
        return torch.repeat_interleave(angles, 2, dim=-1)
    return torch.cat((angles, angles), dim=-1)


def _rotate(x: torch.Tensor, pairing: str) -> torch.Tensor:
    """The rotation's partner of every dimension (``x * cos + _rotate(x) * sin`` rotates each pair)."""
    if pairing == "interleaved":
        pairs = x.unflatten(-1, (-1, 2))  # (..., D, 2)
        return torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rescaled_layer_type(model: nn.Module) -> str | None:
    """The layer type whose RoPE the workbench rescales when the model keys RoPE by layer type (Gemma 3, OLMo 3:
    its full-attention layers); None when one RoPE serves every layer."""
    from .hf import RESCALED_TYPE, ConfigError, read_layout

    try:
        return RESCALED_TYPE if read_layout(load_config_dict(model)).kept_types else None
    except ConfigError:
        return None


def _inv_freq(module: nn.Module, layer_type: str | None) -> torch.Tensor | None:
    """A rotary module's inverse frequencies (of ``layer_type``'s layers where it keeps one set per type)."""
    return getattr(module, "inv_freq" if layer_type is None else f"{layer_type}_inv_freq", None)


def rotary_pairing(model: nn.Module, module: nn.Module) -> str:
    """How ``model``'s own rotary ``module`` lays its cos/sin out over the rotary dimensions: "halves" (pair i is
    dimensions i and i + D) or "interleaved" (2i and 2i + 1), found by calling it and reading which dimensions
    repeat each other.

    Raises:
        NoRotaryError: the module cannot be called as ``forward(x, position_ids) -> (cos, sin)``, its width is
            not the rotary dimension the config gives, or its cos/sin repeat in neither layout: the patch would
            not reproduce it, so it refuses.
    """
    from .hf import ConfigError, model_geometry

    kind = type(model).__name__
    try:
        rotary = model_geometry(model).head_dim
    except ConfigError as e:
        raise NoRotaryError(f"{kind}: its RoPE settings cannot be read ({e})") from None
    layer_type = rescaled_layer_type(model)
    extra = () if layer_type is None else (layer_type,)  # forward(x, position_ids, layer_type)
    inv_freq = _inv_freq(module, layer_type)
    if layer_type is not None and inv_freq is None:
        raise NoRotaryError(f"{kind}: none of its layers is of type {layer_type!r} (config.layer_types), the layers "
                            "whose RoPE the workbench rescales; the windowed layer types keep theirs")
    if inv_freq is None or 2 * inv_freq.numel() != rotary:
        width = "no inv_freq" if inv_freq is None else f"{2 * inv_freq.numel()} rotary dimensions"
        raise NoRotaryError(f"{kind}: its rotary module has {width}, its config gives {rotary}; the workbench does not "
                            "know how this architecture splits the head")
    n, D = 16, inv_freq.numel()
    positions = torch.arange(n, device=inv_freq.device)[None]  # (1, n), inside any trained context
    try:
        with torch.no_grad():
            cos, sin = module(torch.zeros(1, n, 1, device=inv_freq.device), positions, *extra)
        cos, sin = cos.float().reshape(n, -1), sin.float().reshape(n, -1)  # (n, rotary_dim)
    except Exception as e:  # noqa: BLE001 - any failure means the module is not the (cos, sin) kind we reproduce
        raise NoRotaryError(f"{kind}: its rotary module is not called as forward(x, position_ids) -> (cos, sin) "
                            f"({type(e).__name__}: {e}); not supported") from None
    if cos.shape[-1] != 2 * D or not bool((sin[0] == 0).all()):
        raise NoRotaryError(f"{kind}: its rotary module's output is not cos/sin over the {2 * D} rotary dimensions "
                            "with angle 0 at position 0; not supported")
    layouts = {"halves": (cos[:, :D], cos[:, D:], sin[:, :D], sin[:, D:]),
               "interleaved": (cos[:, 0::2], cos[:, 1::2], sin[:, 0::2], sin[:, 1::2])}
    found = [name for name, (c1, c2, s1, s2) in layouts.items() if torch.equal(c1, c2) and torch.equal(s1, s2)]
    if len(found) != 1:
        raise NoRotaryError(f"{kind}: its rotary module's cos/sin repeat in {'neither' if not found else 'both'} of "
                            "the layouts the workbench reproduces (halves, interleaved pairs); not supported")
    return found[0]


def config_pairing(source: Any) -> str | None:
    """How a model of this config pairs its rotary dimensions ("halves" or "interleaved"), read from its own rotary
    module built alone from the config (no weights, the model itself on the meta device); None where transformers
    cannot build it or the module is not one the patch reproduces."""
    from transformers import AutoModelForCausalLM

    from .hf import hf_config_from_dict

    try:
        config = hf_config_from_dict(load_config_dict(source))
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        _, _, module = find_rotary(model)
        with torch.device("cpu"):
            module = type(module)(config=config)
        return rotary_pairing(model, module)
    except Exception:  # noqa: BLE001 - unknown here: the patch reads it from the loaded model
        return None


def find_rotary(model: nn.Module) -> tuple[nn.Module, str, nn.Module]:
    """(owner, attribute name, module) of the model-level rotary embedding.

    Raises:
        NoRotaryError: none found, or several (per-layer rotary modules are not supported).
    """
    found = []
    for owner_name, owner in model.named_modules():
        for name, child in owner.named_children():
            if isinstance(child, WorkbenchRotaryEmbedding) or (
                type(child).__name__.endswith("RotaryEmbedding")
                and any(n == "inv_freq" or n.endswith("_inv_freq") for n, _ in child.named_buffers(recurse=False))
            ):
                found.append((owner_name, owner, name, child))
    if not found:
        raise NoRotaryError(
            f"{type(model).__name__} has no rotary embedding module (no *RotaryEmbedding with inv_freq): "
            "not a RoPE model, or one this workbench does not support"
        )
    if len(found) > 1:
        where = ", ".join(f"{o}.{n}".lstrip(".") for o, _, n, _ in found[:4])
        raise NoRotaryError(
            f"{type(model).__name__} has {len(found)} rotary modules ({where}); patch supports models with "
            "one model-level rotary embedding (Llama, Mistral, Qwen2, Phi-3 families)"
        )
    _, owner, name, child = found[0]
    return owner, name, child


def rotary_angles(positions: torch.Tensor, inv_freq: torch.Tensor, theta: torch.Tensor, n_hat: int) -> torch.Tensor:
    """Angles ``(..., D)`` for integer ``positions``: ``n * theta`` below n_hat, ``n * inv_freq`` from it.

    float32, in transformers' op order (a product per element, no summation).
    """
    pos = positions[..., None].float()  # (..., 1)
    angles = pos * inv_freq.to(device=positions.device, dtype=torch.float)  # (..., D)
    if n_hat > 0:
        original = pos * theta.to(device=positions.device, dtype=torch.float)
        angles = torch.where(positions[..., None] < n_hat, original, angles)
    return angles


class WorkbenchRotaryEmbedding(nn.Module):
    """Drop-in for a transformers ``*RotaryEmbedding``: ``forward(x, position_ids) -> (cos, sin)``.

    With RoPE per layer type, ``forward(x, position_ids, layer_type)``: the spec serves ``layer_type`` (the
    full-attention layers); the other (windowed) types get the original module's cos/sin unchanged.
    """

    def __init__(self, spec: RopeSpec, original: nn.Module | None = None, length: int | None = None,
                 pairing: str = "halves", layer_type: str | None = None) -> None:
        super().__init__()
        self.spec = spec
        self.pairing = pairing
        self.layer_type = layer_type
        if getattr(original, "layer_types", None) is not None:
            self.layer_types = original.layer_types  # some models loop over the rotary module's layer types
        self.length = length  # frequencies as for a sequence of this length, whatever is read (chunked windows)
        self.config = getattr(original, "config", None)
        self.rope_type = f"workbench:{spec.method}"
        self.register_buffer("theta", spec.original_inv_freq(), persistent=False)
        self._by_key: OrderedDict[Any, RopeFrequencies] = OrderedDict()
        base = self.frequencies(spec.original_max_position_embeddings)
        # attributes some transformers code reads from a rotary module
        self.register_buffer("inv_freq", base.inv_freq.clone(), persistent=False)
        self.attention_scaling = base.attention_factor

    def frequency_key(self, seq_len: int) -> Any:
        """Equal keys mean equal frequencies; used to decide when cached keys must be re-rotated."""
        spec = self.spec
        seq_len = self.length or seq_len
        if not spec.is_length_dependent:
            return "static"
        if hasattr(spec, "uses_long"):
            return "long" if spec.uses_long(seq_len) else "short"
        return max(seq_len, spec.original_max_position_embeddings)  # dynamic: default RoPE up to L0

    def frequencies(self, seq_len: int) -> RopeFrequencies:
        key = self.frequency_key(seq_len)
        if key not in self._by_key:
            self._by_key[key] = self.spec.frequencies(self.length or seq_len)
            if len(self._by_key) > 8:
                self._by_key.popitem(last=False)
        return self._by_key[key]

    def angles(self, positions: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, float]:
        f = self.frequencies(seq_len)
        return rotary_angles(positions, f.inv_freq, self.theta, self.spec.n_hat), f.attention_factor

    @torch.no_grad()
    def forward(self, x: torch.Tensor, position_ids: torch.Tensor, layer_type: str | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        if layer_type is not None and layer_type != self.layer_type:
            return self.original(x, position_ids, layer_type)  # a windowed layer type keeps its RoPE
        if position_ids.dim() == 3:  # (sections, batch, seq): multimodal RoPE; text alone repeats one position row
            if not bool((position_ids == position_ids[:1]).all()):
                raise NoRotaryError("this input has positions in several dimensions (multimodal RoPE sections that "
                                    "differ): the workbench rescales one position per token; not supported")
            position_ids = position_ids[0]
        seq_len = int(position_ids.max()) + 1
        freqs, attention = self.angles(position_ids, seq_len)  # (batch, seq, D)
        emb = pair_angles(freqs, self.pairing)  # (batch, seq, rotary_dim)
        cos = emb.cos() * attention
        sin = emb.sin() * attention
        return cos.to(dtype=x.dtype), sin.to(dtype=x.dtype)


CACHE_POLICIES = ("reprefill", "rerotate", "stale")
STAMP = "_workbench_frequencies"  # set on a cache filled with pinned frequencies: (spec, length)


@dataclass
class _CacheRecord:
    """What a patch knows about one KV cache: the tokens and positions it holds, and their frequencies."""

    tokens: torch.Tensor  # (batch, tokens) ids, or (batch, tokens, hidden) embeddings
    positions: torch.Tensor  # (batch, tokens)
    key: Any  # frequency_key the stored keys were computed with
    seq_len: int


def _cat_time(stored: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """Concatenate along time (dim 1), broadcasting a batch of 1 (e.g. after beam expansion)."""
    new = new.to(stored.device)
    batch = max(stored.shape[0], new.shape[0])
    shape = (batch,) + (-1,) * (stored.dim() - 1)
    return torch.cat([stored.expand(*shape), new.expand(*shape)], dim=1)


@dataclass
class RopePatch:
    """A spec applied to a model. Undo with :meth:`undo` or by leaving the ``with`` block.

    ``cache_policy`` says what happens to a KV cache when the frequencies change with length:

    - ``"reprefill"`` (default): the cache is cleared and the whole sequence is run again with the
      new frequencies, so cached generation equals recomputing from scratch. For LongRoPE that
      happens once, when the sequence first exceeds L0; for dynamic NTK / dynamic YaRN it happens
      at every step beyond L0 (exactly what a full recompute costs).
    - ``"rerotate"``: stored keys are rotated by the angle difference. Cheaper, but exact only for
      the first layer: deeper layers' keys and values were computed from hidden states that
      depended on the old rotation.
    - ``"stale"``: keep the old keys, which is what stock transformers does.
    """

    model: nn.Module
    spec: RopeSpec
    owner: nn.Module
    name: str
    original: nn.Module
    rotary: WorkbenchRotaryEmbedding
    cache_policy: str = "reprefill"
    active: bool = True
    reprefills: int = 0
    rerotations: int = 0
    _hooks: list = field(default_factory=list)
    _records: weakref.WeakKeyDictionary = field(default_factory=weakref.WeakKeyDictionary)
    _keep_last: int | None = None
    _call: _CacheRecord | None = None
    _previous: Any = None

    def __enter__(self) -> RopePatch:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.undo()

    def undo(self) -> None:
        """Put the original rotary module back (idempotent)."""
        if not self.active:
            return
        if getattr(self.owner, self.name) is not self.rotary:
            raise RuntimeError(
                "the rotary module was replaced again after this patch; undo the later patch first"
            )
        setattr(self.owner, self.name, self.original)
        for hook in self._hooks:
            hook.remove()
        if getattr(self.model, "_workbench_patch", None) is self:
            self.model._workbench_patch = self._previous
        self.active = False

    # ---- KV-cache consistency ----------------------------------------------------------------
    def _pre_forward(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict] | None:
        self._call = None
        kwargs = dict(kwargs)
        if args:  # input_ids given positionally
            kwargs["input_ids"], args = args[0], args[1:]
        embeds = kwargs.get("inputs_embeds")
        tokens = kwargs.get("input_ids") if embeds is None else embeds
        if tokens is None:
            return args, kwargs
        cache = _cache_of(kwargs)
        if cache is not None and not hasattr(cache, "layers"):
            raise RuntimeError(f"the RoPE patch supports transformers Cache objects, not {type(cache).__name__}")
        stored = cache.get_seq_length() if cache is not None else 0
        position_ids = kwargs.get("position_ids")
        if position_ids is None:
            position_ids = torch.arange(stored, stored + tokens.shape[1], device=tokens.device)[None]  # (1, new)
        seq_len = int(position_ids.max()) + 1
        key = self.rotary.frequency_key(seq_len)
        self._call = _CacheRecord(tokens.detach(), position_ids.detach(), key, seq_len)
        if cache is None:
            return args, kwargs
        record = self._records.get(cache)
        if record is None:
            if stored > 0 and self.rotary.length is not None and self._stamp() == getattr(cache, STAMP, None):
                return args, kwargs  # filled under another patch with these very frequencies (a paused window)
            if stored > 0:
                raise RuntimeError(
                    "this KV cache was filled before the RoPE patch was applied; its keys were rotated "
                    "with other frequencies. Start generation with a fresh cache."
                )
            return args, kwargs  # registered after the forward
        if tokens.dim() != record.tokens.dim():
            raise RuntimeError("mixing input_ids and inputs_embeds on one cache is not supported by the RoPE patch")
        if stored > 0 and key != record.key:
            if self.cache_policy == "reprefill":
                cache.reset()
                self._keep_last = tokens.shape[1]
                tokens, position_ids = _cat_time(record.tokens, tokens), _cat_time(record.positions, position_ids)
                kwargs["inputs_embeds" if embeds is not None else "input_ids"] = tokens
                kwargs["position_ids"] = position_ids
                self.reprefills += 1
                record.tokens, record.positions = tokens.detach(), position_ids.detach()
                record.key, record.seq_len = key, seq_len
                return args, kwargs
            if self.cache_policy == "rerotate":
                self._rerotate(cache, record, seq_len)
        record.tokens = _cat_time(record.tokens, tokens.detach())
        record.positions = _cat_time(record.positions, position_ids.detach())
        record.key, record.seq_len = key, seq_len
        return args, kwargs

    def _post_forward(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        """Register caches this forward filled; after a re-prefill return only the new tokens' states."""
        call, self._call = self._call, None
        cache = _cache_of(output)
        if cache is not None and self.rotary.length is not None:
            setattr(cache, STAMP, self._stamp())
        if cache is not None and call is not None and hasattr(cache, "layers") and cache not in self._records:
            self._records[cache] = call  # a cache created or first filled by the patched model
            self._track_reorder(cache)
        k, self._keep_last = self._keep_last, None
        if k is None:
            return output
        output.last_hidden_state = output.last_hidden_state[:, -k:]
        if getattr(output, "hidden_states", None) is not None:
            output.hidden_states = tuple(h[:, -k:] for h in output.hidden_states)
        return output

    def _stamp(self) -> tuple[RopeSpec, int | None]:
        """What a cache filled under this patch was rotated with, when the frequencies are pinned to a length."""
        return self.spec, self.rotary.length

    def _track_reorder(self, cache: Any) -> None:
        """Keep our token history in step when beam search reorders the cache's batch."""
        reorder = getattr(cache, "reorder_cache", None)
        if reorder is None:
            return
        records = self._records

        def reorder_with_history(beam_idx: torch.LongTensor) -> None:
            reorder(beam_idx)
            record = records.get(cache)
            if record is not None:
                record.tokens = record.tokens.index_select(0, beam_idx.to(record.tokens.device))
                record.positions = record.positions.index_select(0, beam_idx.to(record.positions.device))

        cache.reorder_cache = reorder_with_history

    def _rerotate(self, cache: Any, record: _CacheRecord, seq_len: int) -> None:
        """Rotate every stored key from the record's frequencies to those of ``seq_len``."""
        rotary = self.rotary
        types = getattr(getattr(self.model, "config", None), "layer_types", None) if rotary.layer_type else None
        for i, layer in enumerate(cache.layers):
            keys = getattr(layer, "keys", None)
            if keys is None or keys.numel() == 0 or (types is not None and types[i] != rotary.layer_type):
                continue  # empty, or a windowed layer type whose RoPE the patch keeps
            n = keys.shape[-2]
            positions = record.positions[..., -n:]  # sliding-window layers keep only the newest keys
            old, m_old = rotary.angles(positions, record.seq_len)
            new, m_new = rotary.angles(positions, seq_len)
            delta = new.double() - old.double()  # (batch or 1, n, D): exact difference of the float32 angles
            emb = pair_angles(delta, rotary.pairing)[:, None]  # (batch, 1, n, rotary_dim)
            rd = emb.shape[-1]
            k = keys[..., :rd].double()
            rotated = (k * emb.cos() + _rotate(k, rotary.pairing) * emb.sin()) * (m_new / m_old)
            keys[..., :rd] = rotated.to(keys.dtype)
        self.rerotations += 1


def _cache_of(source: dict | Any) -> Any:
    """The KV cache in a forward's keyword arguments or output: transformers 5.24 renamed
    ``past_key_values`` to ``cache`` (the old keyword still works until 5.40), so look for both."""
    fields = getattr(source, "__dataclass_fields__", None)
    if fields is not None:  # a ModelOutput (a dict too): with a cache field (5.24+) ask only for that,
        # since its past_key_values alias logs a deprecation warning
        return source.cache if "cache" in fields else getattr(source, "past_key_values", None)
    return source["cache"] if "cache" in source else source.get("past_key_values")


def patch(model: nn.Module, spec: RopeSpec, *, cache_policy: str = "reprefill", length: int | None = None
          ) -> RopePatch:
    """Apply ``spec`` to ``model`` in place; returns a handle usable as a context manager.

    Args:
        cache_policy: "reprefill" (exact), "rerotate" (approximate) or "stale" (stock
            transformers); see :class:`RopePatch`.
        length: use the frequencies of a sequence of this many tokens at every step, as a window of that
            length read in one forward would (a long window evaluated chunk by chunk with a KV cache);
            None: the frequencies follow the current length.

    Raises:
        NoRotaryError: the model has no supported rotary embedding.
        SpecError: the spec's head_dim or rope_theta does not match the model.
    """
    if not isinstance(spec, RopeSpec):
        raise SpecError(f"spec must be a RopeSpec, got {type(spec).__name__}")
    if cache_policy not in CACHE_POLICIES:
        raise SpecError(f"cache_policy={cache_policy!r} is not allowed: one of {CACHE_POLICIES}")
    if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
        raise SpecError(f"length={length!r} is not allowed: None or a positive number of tokens")
    owner, name, current = find_rotary(model)
    g = model_geometry(model)
    if spec.head_dim != g.head_dim:
        raise SpecError(
            f"spec head_dim={spec.head_dim} does not match the model's rotary dimension {g.head_dim}; build the "
            "spec with workbench.hf.spec_for_model(model, ...)"
        )
    if abs(spec.rope_theta - g.rope_theta) > 1e-6 * g.rope_theta:
        raise SpecError(
            f"spec rope_theta={spec.rope_theta:g} does not match the model's rope_theta={g.rope_theta:g}; build "
            "the spec with workbench.hf.spec_for_model(model, ...) (NTK-style base changes are methods)"
        )
    original = current.original if isinstance(current, WorkbenchRotaryEmbedding) else current
    pairing = current.pairing if isinstance(current, WorkbenchRotaryEmbedding) else rotary_pairing(model, current)
    device = next((b.device for b in current.buffers()), torch.device("cpu"))
    rotary = WorkbenchRotaryEmbedding(spec, original, length, pairing, rescaled_layer_type(model)).to(device)
    object.__setattr__(rotary, "original", original)  # kept for re-patching, not as a submodule
    setattr(owner, name, rotary)
    handle = RopePatch(model, spec, owner, name, current, rotary, cache_policy=cache_policy,
                       _previous=getattr(model, "_workbench_patch", None))
    handle._hooks = [owner.register_forward_pre_hook(handle._pre_forward, with_kwargs=True),
                     owner.register_forward_hook(handle._post_forward, with_kwargs=True)]
    model._workbench_patch = handle
    return handle


def current_spec(model: nn.Module) -> RopeSpec | None:
    """The spec a model is patched with, or None."""
    handle = getattr(model, "_workbench_patch", None)
    return handle.spec if handle is not None and handle.active else None

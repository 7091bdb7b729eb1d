"""Which transformers architectures the workbench patches and exports exactly, checked on tiny random models.

Every causal-LM model type of the installed transformers is discovered from its auto mapping; a tiny random
model is built from its config class's defaults with small sizes (nothing is listed by hand). For each RoPE
method the model is patched in place, the spec is exported into its config, a stock model is built from that
config with the same weights, and the two models' logits are compared below and above L0. A case passes when
they agree (max |delta logit| <= 1e-5, fp32), or when the workbench refuses it with its own error naming the
reason; anything else — a mismatch, an exception from inside transformers or torch — is a failure.

``python -m workbench architectures`` prints the table; ``--markdown`` writes the README's table.
"""

from __future__ import annotations

import contextlib
import io
import json
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import torch

from .hf import (
    ConfigError,
    NotExpressibleError,
    example_spec_for_model,
    export_config,
    hf_config_from_dict,
    spec_from_hf,
)
from .patch import NoRotaryError, patch
from .rope import SpecError

METHODS = ("default", "linear", "ntk", "dynamic", "yarn", "llama3", "longrope")
TOLERANCE = 1e-5
REFUSALS = (NoRotaryError, NotExpressibleError, ConfigError, SpecError)  # the workbench's own errors
L0 = 64
# small sizes under the names config classes use; a name a class does not have is not passed
TINY = {
    "hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "vocab_size": 128, "max_position_embeddings": L0, "original_max_position_embeddings": L0, "intermediate_size": 128,
    "num_experts": 4, "num_local_experts": 4, "n_routed_experts": 4, "num_experts_per_tok": 2,
    "moe_intermediate_size": 32, "shared_expert_intermediate_size": 32, "n_shared_experts": 1,
    "n_group": 1, "topk_group": 1, "first_k_dense_replace": 1,
    "q_lora_rank": 32, "kv_lora_rank": 16, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8, "v_head_dim": 16,
    "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2, "rotary_dim": 8,
}


@dataclass
class Case:
    """One (model type, method): "exact", "refused" (with the workbench's reason), or a failure: "mismatch"
    (max |delta logit| in ``delta``) or "error" (an exception from outside the workbench)."""

    model_type: str
    method: str
    status: str
    detail: str = ""
    delta: float | None = None

    @property
    def ok(self) -> bool:
        return self.status in ("exact", "refused")


def causal_lm_types() -> list[str]:
    """Every causal-LM model type of the installed transformers (its auto mapping)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def _tiny_config(model_type: str, extra: dict[str, Any] | None = None, unset_too: bool = False) -> Any:
    """The config class's defaults with the small sizes of :data:`TINY` it knows; composite (multimodal) configs
    are not built (their text model type is checked on its own)."""
    from transformers import CONFIG_MAPPING

    cls = CONFIG_MAPPING[model_type]
    default = cls()
    if getattr(cls, "sub_configs", None):
        raise ConfigError(f"{model_type} is a composite config ({', '.join(cls.sub_configs)}); its text model type "
                          "is checked on its own where transformers has one")
    attribute_map = getattr(cls, "attribute_map", {}) or {}
    kwargs = {}
    for name, value in {**TINY, **(extra or {})}.items():
        name = attribute_map.get(name, name)
        if not hasattr(default, name) or isinstance(getattr(default, name), bool) or _read_only(cls, name):
            continue
        if getattr(default, name) is not None or unset_too or name in ("head_dim", "num_key_value_heads"):
            # None: a feature off, set only on the last try (some defaults leave a needed size unset)
            kwargs[name] = value
    rope = getattr(default, "rope_parameters", None)
    if isinstance(rope, dict) and "original_max_position_embeddings" in rope:  # L0 as small as the model
        kwargs["rope_parameters"] = {**rope, "original_max_position_embeddings": L0}
    pattern = getattr(default, "layer_types", None)
    types_name = attribute_map.get("layer_types", "layer_types")
    if isinstance(pattern, list) and pattern and "num_hidden_layers" in kwargs and not _read_only(cls, types_name):
        kinds = list(dict.fromkeys(pattern))  # every layer type present
        layers = max(kwargs["num_hidden_layers"], len(kinds))
        kwargs.update({"num_hidden_layers": layers, types_name: kinds + kinds[-1:] * (layers - len(kinds))})
    if getattr(default, "qk_rope_head_dim", None) is not None:  # MLA attention: the rotary part is its own width
        kwargs.update(head_dim=TINY["qk_rope_head_dim"], num_key_value_heads=TINY["num_attention_heads"])
    return cls(**kwargs)


def _read_only(cls: type, name: str) -> bool:
    """A config attribute computed from others (a property without a setter): not passed."""
    attr = getattr(cls, name, None)
    return isinstance(attr, property) and attr.fset is None


def tiny_model(model_type: str) -> Any:
    """A tiny random causal LM of ``model_type`` (fp32, SDPA where the architecture has it, else eager).

    Raises:
        Exception: whatever the config class or model raises when it cannot be built this small.
    """
    failure: Exception | None = None
    tries = (({}, False), ({"num_hidden_layers": 4}, False), ({"num_hidden_layers": 4}, True))
    for extra, unset_too in tries:  # hybrids put their first attention layer after linear ones
        try:
            model = _built(_tiny_config(model_type, extra, unset_too))
            with torch.no_grad():
                model(torch.arange(3, 43)[None])  # the stock tiny model must run before anything is compared
            return model
        except Exception as e:  # noqa: BLE001 - tried again, then reported as not built
            failure = e
    raise failure


def _built(config: Any) -> Any:
    """A random model of ``config`` in eval mode: SDPA attention where the architecture has it, else eager."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    try:
        return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    except ValueError as e:
        if "sdpa" not in str(e).lower() and "scaled_dot_product" not in str(e):
            raise
        return AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()


def _stock(model: Any, full: dict[str, Any]) -> Any:
    """A stock model from the exported config with ``model``'s weights (rotary buffers left as it computes them)."""
    from transformers import AutoModelForCausalLM

    attn = model.config._attn_implementation
    stock = AutoModelForCausalLM.from_config(hf_config_from_dict(full), attn_implementation=attn).eval()
    weights = {k: v for k, v in model.state_dict().items() if "rotary" not in k and "inv_freq" not in k}
    stock.load_state_dict(weights, strict=False)
    return stock


def check_case(model: Any, model_type: str, method: str) -> Case:
    """Patch ``model`` with ``method`` at 4x its L0, export, build a stock model from the export, compare."""
    ids = torch.randint(3, 100, (1, 4 * L0), generator=torch.Generator().manual_seed(1))
    try:
        spec = example_spec_for_model(model, method, target_length=4 * L0)
        own_default = spec_from_hf(model).method == "default"  # then patching "default" must change nothing
        delta = 0.0
        for n in (L0 // 2 + 8, 3 * L0):  # below and above L0
            with torch.no_grad():
                with patch(model, spec):
                    got = model(ids[:, :n]).logits
                if method == "default" and own_default:
                    delta = max(delta, float((got - model(ids[:, :n]).logits).abs().max()))
                full, _ = export_config(spec, model.config)
                expected = _stock(model, full)(ids[:, :n]).logits  # dynamic NTK is stateful: a fresh one per length
            delta = max(delta, float((got - expected).abs().max()))
    except REFUSALS as e:
        return Case(model_type, method, "refused", str(e))
    except Exception as e:  # noqa: BLE001 - a failure of the check: reported, not raised
        return Case(model_type, method, "error", f"{type(e).__name__}: {e}"[:400])
    if delta <= TOLERANCE:
        return Case(model_type, method, "exact", delta=delta)
    return Case(model_type, method, "mismatch", f"max |delta logit| {delta:.3g}", delta)


def check_architectures(model_types: list[str] | None = None, methods: tuple[str, ...] = METHODS) -> dict[str, Any]:
    """Every case of every discovered model type: ``{"transformers", "built": {type: [Case...]}, "not_built":
    {type: reason}, "no_rope": [types]}``."""
    import transformers

    built: dict[str, list[Case]] = {}
    not_built: dict[str, str] = {}
    no_rope: list[str] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: one thread is faster, and kinder to a busy machine
    try:
        for model_type in model_types or causal_lm_types():
            _check_type(model_type, methods, built, not_built, no_rope)
    finally:
        torch.set_num_threads(threads)
    return {"transformers": transformers.__version__, "methods": list(methods), "built": built,
            "not_built": not_built, "no_rope": no_rope}


def _check_type(model_type: str, methods: tuple[str, ...], built: dict[str, list[Case]], not_built: dict[str, str],
                no_rope: list[str]) -> None:
    """Build ``model_type`` tiny and check every method; record the cases, or why it was not built."""
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            model = tiny_model(model_type)
    except Exception as e:  # noqa: BLE001 - recorded: this type is not covered here
        not_built[model_type] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
        return
    if not any(type(m).__name__.endswith("RotaryEmbedding") for m in model.modules()):
        no_rope.append(model_type)
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built[model_type] = [check_case(model, model_type, m) for m in methods]


def to_json(result: dict[str, Any]) -> str:
    return json.dumps({**result, "built": {k: [asdict(c) for c in v] for k, v in result["built"].items()}}, indent=1)


def markdown(result: dict[str, Any]) -> str:
    """The README's table: a row per architecture, a cell per method (exact / refused / failure)."""
    mark = {"exact": "exact", "refused": "refused", "mismatch": "**MISMATCH**", "error": "**ERROR**"}
    methods = result["methods"]
    lines = [f"| model type ({len(result['built'])} with RoPE, transformers {result['transformers']}) | "
             + " | ".join(methods) + " | why refused |", "|---" * (len(methods) + 2) + "|"]
    for model_type, cases in sorted(result["built"].items()):
        reasons = sorted({_reason(c.detail) for c in cases if c.status == "refused"})
        lines.append(f"| {model_type} | " + " | ".join(mark[c.status] for c in cases) + " | "
                     + "; ".join(reasons) + " |")
    if result["not_built"]:
        lines.append("")
        lines.append("Not checked (no tiny model could be built from its config class's defaults, so whether it "
                     "has RoPE was not looked at): "
                     + ", ".join(sorted(result["not_built"])) + ".")
    return "\n".join(lines) + "\n"


def _reason(detail: str) -> str:
    """A short form of a refusal for the table (its first clause)."""
    for cut in (": its", " (", "; "):
        if cut in detail[12:]:
            detail = detail[: 12 + detail[12:].index(cut)]
    return detail.replace("|", "/")[:90]

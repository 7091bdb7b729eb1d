"""patch: in place, undoable, every supported family, n_hat, and cached generation across L0."""

from __future__ import annotations

import inspect

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaForCausalLM

from workbench.hf import spec_for_model
from workbench.patch import (
    NoRotaryError,
    WorkbenchRotaryEmbedding,
    current_spec,
    find_rotary,
    patch,
)
from workbench.rope import SpecError, make_spec, ramp_factors

# transformers 5.24 renamed the forward's past_key_values to cache (the old name warns until 5.40)
CACHE = "cache" if "cache" in inspect.signature(LlamaForCausalLM.forward).parameters else "past_key_values"

IDS = torch.randint(3, 128, (1, 160), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "phi3"])
def test_patch_and_undo_restore_the_original_model(tiny_model_factory, family):
    model = tiny_model_factory(family)
    weights = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        before = model(IDS).logits
    _, _, original = find_rotary(model)
    spec = spec_for_model(model, "linear", target_length=256)
    with patch(model, spec) as p:
        assert isinstance(find_rotary(model)[2], WorkbenchRotaryEmbedding)
        assert current_spec(model) == spec
        with torch.no_grad():
            during = model(IDS).logits
        assert p.active
    assert find_rotary(model)[2] is original and current_spec(model) is None
    with torch.no_grad():
        after = model(IDS).logits
    assert torch.equal(before, after)
    assert not torch.allclose(before, during)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())  # weights untouched


def test_patch_handle_without_context_and_repatch(tiny_llama):
    s1 = spec_for_model(tiny_llama, "linear", target_length=128)
    s2 = spec_for_model(tiny_llama, "ntk", target_length=256)
    p1 = patch(tiny_llama, s1)
    p2 = patch(tiny_llama, s2)
    assert current_spec(tiny_llama) == s2
    with pytest.raises(RuntimeError, match="undo the later patch first"):
        p1.undo()
    p2.undo()
    assert current_spec(tiny_llama) == s1
    p1.undo()
    p1.undo()  # idempotent
    assert current_spec(tiny_llama) is None


def test_n_hat_keeps_original_rotation_below_window(tiny_llama):
    """Tokens before n_hat see exactly the unscaled model (causal attention, same angles)."""
    lam = ramp_factors(8, 1, 7, 1.0, 8.0)
    attention = dict(attention_policy="constant", attention_factor=1.0)
    with_window = spec_for_model(tiny_llama, "longrope", target_length=256, long_factor=lam, n_hat=48, **attention)
    no_window = spec_for_model(tiny_llama, "longrope", target_length=256, long_factor=lam, **attention)
    with torch.no_grad():
        plain = tiny_llama(IDS).logits
        with patch(tiny_llama, with_window):
            windowed = tiny_llama(IDS).logits
        with patch(tiny_llama, no_window):
            scaled = tiny_llama(IDS).logits
    assert torch.allclose(windowed[:, :48], plain[:, :48], atol=1e-6)
    assert not torch.allclose(windowed[:, 48:], plain[:, 48:], atol=1e-3)
    assert not torch.allclose(windowed[:, :48], scaled[:, :48], atol=1e-3)


def test_attention_factor_scales_cos_and_sin(tiny_llama):
    lam = (1.0,) * 8
    spec = spec_for_model(tiny_llama, "longrope", target_length=256, long_factor=lam,
                          attention_policy="constant", attention_factor=1.5)
    with patch(tiny_llama, spec) as p:
        cos, sin = p.rotary(torch.zeros(1, dtype=torch.float32), torch.arange(10)[None])
    assert torch.allclose(cos[0, 0], torch.full((16,), 1.5))
    assert torch.allclose(cos**2 + sin**2, torch.full_like(cos, 2.25), atol=1e-5)


def _greedy_full_recompute(model, prompt, steps):
    ids = prompt.clone()
    logits_per_step = []
    for _ in range(steps):
        with torch.no_grad():
            logits = model(ids).logits[:, -1]
        logits_per_step.append(logits)
        ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    return ids, torch.stack(logits_per_step, 1)


def _greedy_cached(model, prompt, steps):
    out = model.generate(prompt, max_new_tokens=steps, do_sample=False, eos_token_id=None, pad_token_id=0,
                         output_logits=True, return_dict_in_generate=True)
    return out.sequences, torch.stack(out.logits, 1)


@pytest.mark.parametrize("family", ["llama", "phi3"])
@pytest.mark.parametrize("method,params", [
    ("longrope", dict(long_factor=ramp_factors(8, 1, 7, 1.0, 8.0), n_hat=4)),
    ("dynamic", {}),
    ("yarn", dict(dynamic=True)),
])
def test_generation_crossing_L0_equals_full_recompute(tiny_model_factory, family, method, params):
    model = tiny_model_factory(family, max_position_embeddings=32)
    spec = spec_for_model(model, method, target_length=128, **params)
    prompt = torch.randint(3, 128, (1, 20), generator=torch.Generator().manual_seed(5))
    steps = 40  # 20 + 40 tokens: crosses L0 = 32
    with patch(model, spec) as p:
        ref_ids, ref_logits = _greedy_full_recompute(model, prompt, steps)
        ids, logits = _greedy_cached(model, prompt, steps)
        # forwards see lengths 21..59 after the prefill; frequencies change at each length > 32 (dynamic).
        # Phi-3's own prepare_inputs_for_generation already drops the cache at the first step beyond L0.
        expected = (1 if method == "longrope" else 59 - 32) - (family == "phi3")
        assert p.reprefills == expected
    assert torch.equal(ids, ref_ids)
    assert torch.allclose(logits, ref_logits, atol=1e-5)
    beyond = slice(32 - 20, None)
    # Keeping the old cache (stock transformers) or only re-rotating keys is measurably different.
    if family == "phi3" and method == "longrope":
        return  # Phi-3's generate re-prefills at the switch itself, so even "stale" is exact here
    errors = {}
    for policy in ("stale", "rerotate"):
        with patch(model, spec, cache_policy=policy):
            _, other = _greedy_cached(model, prompt, steps)
        errors[policy] = (other[:, beyond] - ref_logits[:, beyond]).abs().max().item()
    assert errors["stale"] > 1e-3 and errors["rerotate"] > 1e-5
    assert errors["rerotate"] < errors["stale"]


def test_rerotation_is_exact_for_the_first_layer_only(tiny_llama):
    """Why re-prefill is the default: deeper layers' cached states depend on the old rotation."""
    from transformers import DynamicCache

    spec = spec_for_model(tiny_llama, "longrope", target_length=256, long_factor=ramp_factors(8, 1, 7, 1.0, 8.0))
    ids = IDS[:, :65]
    with torch.no_grad():
        with patch(tiny_llama, spec, cache_policy="rerotate"):
            rotated = DynamicCache(config=tiny_llama.config)
            tiny_llama(ids[:, :64], **{CACHE: rotated}, use_cache=True)  # short factors
            tiny_llama(ids[:, 64:], **{CACHE: rotated}, use_cache=True)  # crosses L0: long factors
        with patch(tiny_llama, spec):
            fresh = DynamicCache(config=tiny_llama.config)
            tiny_llama(ids, **{CACHE: fresh}, use_cache=True)
    assert torch.allclose(rotated.layers[0].keys, fresh.layers[0].keys, atol=1e-6)
    assert not torch.allclose(rotated.layers[1].keys, fresh.layers[1].keys, atol=1e-4)


def test_reprefill_keeps_output_shape_for_manual_cache_use(tiny_llama):
    from transformers import DynamicCache

    spec = spec_for_model(tiny_llama, "longrope", target_length=256, long_factor=ramp_factors(8, 1, 7, 1.0, 8.0))
    with torch.no_grad(), patch(tiny_llama, spec) as p:
        cache = DynamicCache(config=tiny_llama.config)
        tiny_llama(IDS[:, :64], **{CACHE: cache}, use_cache=True)
        out = tiny_llama(IDS[:, 64:66], **{CACHE: cache}, use_cache=True)
        full = tiny_llama(IDS[:, :66]).logits
    assert p.reprefills == 1 and out.logits.shape == (1, 2, 128) and cache.get_seq_length() == 66
    assert torch.allclose(out.logits, full[:, 64:66], atol=1e-5)


def test_cache_filled_before_patch_is_refused(tiny_llama):
    from transformers import DynamicCache

    cache = DynamicCache(config=tiny_llama.config)
    with torch.no_grad():
        tiny_llama(IDS[:, :10], **{CACHE: cache}, use_cache=True)
    spec = spec_for_model(tiny_llama, "dynamic", target_length=256)
    with patch(tiny_llama, spec), pytest.raises(RuntimeError, match="filled before the RoPE patch"):
        tiny_llama(IDS[:, 10:12], **{CACHE: cache}, use_cache=True)


def test_model_without_rotary_embeddings():
    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=50, n_positions=64))
    spec = make_spec("linear", head_dim=16, rope_theta=10000.0, original_max_position_embeddings=64, factor=2.0)
    with pytest.raises(NoRotaryError, match="GPT2LMHeadModel has no rotary embedding module"):
        patch(gpt2, spec)


def test_spec_that_does_not_fit_the_model(tiny_llama):
    wrong_dim = make_spec("linear", head_dim=32, rope_theta=1000.0, original_max_position_embeddings=64, factor=2.0)
    with pytest.raises(SpecError, match="head_dim=32 does not match the model's rotary dimension 16"):
        patch(tiny_llama, wrong_dim)
    wrong_theta = make_spec("linear", head_dim=16, rope_theta=10000.0, original_max_position_embeddings=64, factor=2.0)
    with pytest.raises(SpecError, match="rope_theta=10000 does not match the model's rope_theta=1000"):
        patch(tiny_llama, wrong_theta)


def test_smollm2_patched_equals_stock_model_from_exported_config():
    """Parity on the real default model, beyond its 8k training length is too slow for a test: 600 tokens."""
    from transformers import AutoModelForCausalLM

    from workbench.hf import export_config, hf_config_from_dict
    from workbench.models import load_model

    lm = load_model("smollm2")
    spec = spec_for_model(lm.model, "longrope", target_length=16384,
                          long_factor=ramp_factors(32, 9.6, 31, 1.0, 3.0), short_factor=[1.0] * 30 + [1.05, 1.1])
    full, _ = export_config(spec, lm.model.config)
    stock = AutoModelForCausalLM.from_config(hf_config_from_dict(full), attn_implementation="sdpa").eval()
    stock.load_state_dict(lm.model.state_dict())
    ids = torch.randint(0, 49152, (1, 600), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = stock(ids).logits
        with patch(lm.model, spec):
            got = lm.model(ids).logits
    assert torch.equal(got, expected)


def test_patched_forwards_and_generation_log_no_deprecation(tiny_llama):
    """The patch reads the KV cache under whichever name this transformers uses, without the old name's warning."""
    import logging

    from transformers.utils import logging as hf_logging

    logging.Logger.warning_once.cache_clear()  # warnings already logged once in this process would hide it
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    library = hf_logging.get_logger("transformers")
    library.addHandler(handler)
    spec = spec_for_model(tiny_llama, "yarn", target_length=256)
    try:
        with torch.no_grad(), patch(tiny_llama, spec):
            tiny_llama(IDS[:, :40], use_cache=False)
            tiny_llama.generate(IDS[:, :10], max_new_tokens=4, do_sample=False)
    finally:
        library.removeHandler(handler)
    assert not [r.getMessage() for r in records if "deprecated" in r.getMessage()]

"""Fine-tuning: packing equivalence, the mixed-window switch, a loadable final model, bad input."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from workbench.hf import spec_for_model
from workbench.models import load_model
from workbench.patch import patch
from workbench.rope import ramp_factors
from workbench.train import PackedData, TrainConfig, TrainError, finetune, lr_at, pack


def _doc_losses(model, docs):
    total, n = 0.0, 0
    for d in docs:
        with torch.no_grad():
            logits = model(d[None]).logits[0, :-1]
        total += float(F.cross_entropy(logits, d[1:], reduction="sum"))
        n += len(d) - 1
    return total, n


@pytest.mark.parametrize("with_spec", [False, True])
def test_packed_row_loss_equals_its_documents_run_separately(tiny_llama, with_spec):
    g = torch.Generator().manual_seed(0)
    docs = [torch.randint(3, 128, (n,), generator=g) for n in (10, 25, 29)]
    batch = pack(docs, 64)
    assert batch.input_ids.shape == (1, 64) and batch.position_ids[0, 10] == 0 and batch.position_ids[0, 35] == 0
    spec = spec_for_model(tiny_llama, "yarn", target_length=256) if with_spec else None
    with patch(tiny_llama, spec) if spec is not None else torch.no_grad():
        with torch.no_grad():
            out = tiny_llama(input_ids=batch.input_ids, position_ids=batch.position_ids,
                             attention_mask=batch.attention_mask(), labels=batch.labels, use_cache=False)
        total, n = _doc_losses(tiny_llama, docs)
    assert int((batch.labels != -100).sum()) == n  # every document's first token is excluded (no context)
    assert float(out.loss) == pytest.approx(total / n, rel=1e-5)
    # and the logits of each document's tokens are the ones it gets on its own
    with patch(tiny_llama, spec) if spec is not None else torch.no_grad(), torch.no_grad():
        packed_logits = tiny_llama(input_ids=batch.input_ids, position_ids=batch.position_ids,
                                   attention_mask=batch.attention_mask(), use_cache=False).logits[0]
        alone = tiny_llama(docs[1][None]).logits[0]
    assert torch.allclose(packed_logits[10:35], alone, atol=1e-5)


def test_mixed_window_batches_switch_short_and_long_factors(teaching_ci):
    lm = teaching_ci
    spec = spec_for_model(lm.model, "longrope", target_length=1024, long_factor=ramp_factors(32, 10, 31, 1.0, 5.0))
    data = PackedData(lm.tokenizer, TrainConfig(seq_len=1024, mixed=True, batch_size=2, short_every=2), 256)
    short, long = data.batch(0, 0), data.batch(1, 0)
    assert not short.long and long.long
    assert int(short.position_ids.max()) < 256 and int(long.position_ids.max()) == 1023
    assert short.input_ids.shape == long.input_ids.shape == (2, 1024)
    with patch(lm.model, spec) as p:
        assert p.rotary.frequency_key(int(short.position_ids.max()) + 1) == "short"
        assert p.rotary.frequency_key(int(long.position_ids.max()) + 1) == "long"


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])  # bf16: accelerate wraps the model's forward in autocast
def test_finetune_saves_a_model_stock_transformers_loads(tmp_path, dtype):
    from transformers import AutoModelForCausalLM

    lm = load_model("teaching-ci")
    spec = spec_for_model(lm.model, "longrope", target_length=512, long_factor=ramp_factors(32, 10, 31, 1.0, 2.5),
                          short_factor=[1.0] * 28 + [1.05, 1.1, 1.15, 1.2])
    cfg = TrainConfig(seq_len=512, steps=3, batch_size=2, lr=1e-3, warmup=1, checkpoint_every=2, mixed=True,
                      dtype=dtype)
    result = finetune(lm.model, lm.tokenizer, spec, cfg, tmp_path / "ft", progress=False, model_name="teaching-ci")
    assert result.steps == 3 and len(result.history) == 3 and not result.stopped
    assert [h["long_micro_batches"] for h in result.history] == [0, 1, 0]  # mixed: short, long, short
    events = [json.loads(x)["kind"] for x in (tmp_path / "ft" / "events.jsonl").read_text().splitlines()]
    assert events.count("train.step") == 3 and "train.checkpoint" in events and events[-1] == "train.done"
    stock = AutoModelForCausalLM.from_pretrained(result.final_dir).eval()
    rp = stock.config.rope_parameters
    assert rp["rope_type"] == "longrope" and rp["short_factor"][-1] == 1.2 and rp["long_factor"][-1] == 2.5
    ids = torch.randint(0, 4096, (1, 400), generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), patch(lm.model, spec):
        ours = lm.model(ids).logits
    with torch.no_grad():  # equal in fp32: the fine-tuned model computes in fp32 again, as handed in
        assert torch.allclose(stock(ids).logits, ours, atol=1e-5)


def test_schedule():
    cfg = TrainConfig(seq_len=8, steps=100, lr=1.0, warmup=10)
    assert lr_at(0, cfg) == pytest.approx(0.1) and lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(55, cfg) == pytest.approx(0.5) and lr_at(99, cfg) < 0.01
    linear = TrainConfig(seq_len=8, steps=100, lr=1.0, warmup=0, schedule="linear")
    assert lr_at(50, linear) == pytest.approx(0.5)


@pytest.mark.parametrize("kwargs,message", [
    (dict(batch_size=0), "batch_size=0 is not allowed: a positive integer"),
    (dict(grad_accum=-1), "grad_accum=-1 is not allowed"),
    (dict(steps=0), "steps=0 is not allowed"),
    (dict(schedule="step"), "schedule='step' is not allowed"),
])
def test_config_errors(kwargs, message):
    with pytest.raises(TrainError, match=message):
        TrainConfig(seq_len=64, **kwargs)


def test_data_errors_and_refusals(tmp_path):
    lm = load_model("teaching-ci")
    with pytest.raises(TrainError, match="seq_len=99999999 is not allowed: the train split of \\['bible'\\] holds only"):
        PackedData(lm.tokenizer, TrainConfig(seq_len=99_999_999, corpora=("bible",)), 256)
    with pytest.raises(TrainError, match="flash_attention_2' was insisted on but is not usable here"):
        finetune(lm.model, lm.tokenizer, spec_for_model(lm.model, "yarn", target_length=512),
                 TrainConfig(seq_len=512, steps=1, attn="flash_attention_2"), tmp_path / "x", progress=False)
    spec = spec_for_model(lm.model, "yarn", target_length=512)
    cfg = TrainConfig(seq_len=512, steps=2, batch_size=1, lr=1e-4, warmup=0, checkpoint_every=1)
    finetune(lm.model, lm.tokenizer, spec, cfg, tmp_path / "a", progress=False)
    with pytest.raises(TrainError, match="already holds a fine-tuning run"):
        finetune(lm.model, lm.tokenizer, spec, cfg, tmp_path / "a", progress=False)
    other = spec_for_model(lm.model, "linear", target_length=512)
    with pytest.raises(TrainError, match="checkpoints are from other settings: .*spec.method"):
        finetune(lm.model, lm.tokenizer, other, cfg, tmp_path / "a", resume=True, progress=False)
    with pytest.raises(TrainError, match="mixed=True needs a spec with different short and long factors"):
        finetune(lm.model, lm.tokenizer, spec, TrainConfig(seq_len=512, mixed=True), tmp_path / "b", progress=False)

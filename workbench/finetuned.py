"""A fine-tuned model on disk: weights, tokenizer and a config whose ``rope_parameters`` carry its RoPE setting
(stock transformers loads it), with ``workbench_rope.json`` keeping the exact spec; and loaded back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .hf import export_config, hf_config_from_dict, spec_from_hf
from .models import atomic_dir, quiet_loading
from .rope import RopeSpec, spec_from_dict


def save_model(model: Any, tokenizer: Any, spec: RopeSpec, target: str | Path) -> Path:
    """Save weights, tokenizer and a config whose ``rope_parameters`` carry ``spec`` (stock transformers loads it).

    ``workbench_rope.json`` keeps the exact spec (including what transformers cannot express, like n_hat).
    """
    from .hf import to_hf

    target = Path(target)
    exp = to_hf(spec, allow_lossy=True)
    full, notes = export_config(spec, model.config, allow_lossy=True)
    with atomic_dir(target) as tmp, quiet_loading():  # no transformers progress bars (widgets in a notebook)
        model.config = hf_config_from_dict(full)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "workbench_rope.json").write_text(json.dumps({"spec": spec.to_dict(), "notes": list(notes),
                                                             "rope_parameters": exp.rope_parameters}, indent=1))
    return target


def load_finetuned(folder: str | Path) -> tuple[Any, Any, RopeSpec]:
    """A saved fine-tuned model, its tokenizer, and the exact spec it was trained with."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder)
    with quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="sdpa").eval()
        tokenizer = AutoTokenizer.from_pretrained(folder)
    meta = folder / "workbench_rope.json"
    spec = spec_from_dict(json.loads(meta.read_text())["spec"]) if meta.exists() else spec_from_hf(model.config)
    return model, tokenizer, spec

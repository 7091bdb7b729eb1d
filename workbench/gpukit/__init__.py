"""The GPU kit: everything an offline GPU host needs, and one time-boxed run there.

    make gpu-pack                             # with pip and an index: the bundle .gpukit/ (tools/gpu_pack.py)
    python3 -m workbench.gpukit receive       # on the GPU host: verify what arrived, install the wheels
    make gpu-run OUT=out WORK=.gpukit/work    # on the GPU host (or: python3 -m workbench.gpukit run ...)
    make gpu-run GPU_TINY=1 OUT=runs/gpu-tiny # the same steps on a CPU with the teaching model

Steps, each time-boxed: setup (reassemble and verify, install wheels), probe (GPU, SDPA kernels,
flash-attn), parity (bf16 on the GPU against the recorded CPU fp32 perplexity), scale (seconds and
memory at 8k-64k), search (SmolLM2 8k -> 64k, budget sized from scale), train (mixed context window
fine-tuning at 16k: tokens/s, memory, checkpoint and resume), notebook (notebook 05 through the launcher).
Everything measured goes into ``gpu.json`` (and ``gpu.log``). See :mod:`workbench.gpukit.run`.
"""

from .bundle import KitError
from .presets import GPU, PRESETS, STEPS, TINY, KitPreset

__all__ = ["GPU", "PRESETS", "STEPS", "TINY", "KitError", "KitPreset"]

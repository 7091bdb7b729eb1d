"""RoPE and its rescalings: one file per method, one signature, one registry.

Each method's file holds everything the workbench knows about it (maths, spec, transformers and
GGUF forms, serving flags, words, explorer controls); importing it registers it. See
docs/ARCHITECTURE.md, "Adding a method".

>>> from workbench.rope import make_spec
>>> spec = make_spec("yarn", head_dim=64, rope_theta=1e5, original_max_position_embeddings=8192,
...                  target_length=16384)
>>> f = spec.frequencies()          # inv_freq (32,), attention_factor
"""

from .base import (
    RopeFrequencies,
    RopeSpec,
    SpecError,
    available_methods,
    critical_dimension,
    default_inv_freq,
    get_method,
    hf_rope_types,
    make_spec,
    method_for_rope_type,
    method_specs,
    methods_with,
    register,
    spec_from_dict,
    unregister,
)
from .default import DefaultSpec
from .dynamic import DynamicSpec, dynamic_base
from .forms import GGUFForm, HFForm, NotExpressibleError, gguf_export_command
from .linear import LinearSpec
from .llama3 import Llama3Spec
from .longrope import LongRopeSpec, ramp_factors, resample_factors, su_attention_factor
from .longrope2 import LongRope2Spec, longrope2_factors
from .ntk import NTKSpec
from .presence import ROLES, Control, Look
from .yarn import YarnSpec, yarn_attention_factor, yarn_boundaries

__all__ = [
    "ROLES",
    "Control",
    "DefaultSpec",
    "DynamicSpec",
    "GGUFForm",
    "HFForm",
    "LinearSpec",
    "Llama3Spec",
    "Look",
    "LongRope2Spec",
    "LongRopeSpec",
    "NTKSpec",
    "NotExpressibleError",
    "RopeFrequencies",
    "RopeSpec",
    "SpecError",
    "YarnSpec",
    "available_methods",
    "critical_dimension",
    "default_inv_freq",
    "dynamic_base",
    "get_method",
    "gguf_export_command",
    "hf_rope_types",
    "longrope2_factors",
    "make_spec",
    "method_specs",
    "method_for_rope_type",
    "methods_with",
    "ramp_factors",
    "register",
    "resample_factors",
    "spec_from_dict",
    "su_attention_factor",
    "unregister",
    "yarn_attention_factor",
    "yarn_boundaries",
]

"""RoPE and its rescalings: one file per method, one signature, one registry.

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
    default_inv_freq,
    get_method,
    make_spec,
    spec_from_dict,
)
from .default import DefaultSpec
from .dynamic import DynamicSpec, dynamic_base
from .linear import LinearSpec
from .llama3 import Llama3Spec
from .longrope import LongRopeSpec, ramp_factors, su_attention_factor
from .longrope2 import LongRope2Spec, critical_dimension, longrope2_factors
from .ntk import NTKSpec
from .yarn import YarnSpec, yarn_attention_factor, yarn_boundaries

__all__ = [
    "DefaultSpec",
    "DynamicSpec",
    "LinearSpec",
    "Llama3Spec",
    "LongRope2Spec",
    "LongRopeSpec",
    "NTKSpec",
    "RopeFrequencies",
    "RopeSpec",
    "SpecError",
    "YarnSpec",
    "available_methods",
    "critical_dimension",
    "default_inv_freq",
    "dynamic_base",
    "get_method",
    "longrope2_factors",
    "make_spec",
    "ramp_factors",
    "spec_from_dict",
    "su_attention_factor",
    "yarn_attention_factor",
    "yarn_boundaries",
]

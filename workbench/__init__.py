"""LongRoPE Workbench: RoPE rescaling methods, LongRoPE search, extension and evaluation."""

__version__ = "0.1.0"

"""Protections by name: `create_protection("random", rho=8/255, seed=0).protect(data, "out")`;
methods with a key take a ProtectionContext: `create_protection("uge", ProtectionContext([key]))`.

Every method is one file here with a `Protection` subclass registered by
`@register_protection(name)`; the base class owns projection, quantisation and publishing.
"""

from __future__ import annotations

from .base import (
    PROTECTIONS,
    Protection,
    ProtectionContext,
    ProtectionSettings,
    create_protection,
    get_protection,
    list_protections,
    project_l2_quantize,
    project_quantize,
    quantize,
    register_protection,
)

# Methods register themselves on import.
from . import ar, em, keyed, lock, lsp, ops, pue, random_noise, rem, tap, uge  # noqa: E402,F401

__all__ = [
    "PROTECTIONS", "Protection", "ProtectionContext", "ProtectionSettings", "create_protection", "get_protection",
    "list_protections", "project_l2_quantize", "project_quantize", "quantize", "register_protection",
]

"""Imitated identity providers for `make dev`: one module per concern (shapes, keys, cookies, the issuer server)."""

from devstack.identity.issuer import LocalIdentityProvider
from devstack.identity.shapes import SHAPES, ProviderShape, shape_for

__all__ = ["SHAPES", "LocalIdentityProvider", "ProviderShape", "shape_for"]

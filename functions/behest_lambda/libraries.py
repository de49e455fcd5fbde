"""PyJWT, imported the way the functions spend their cold start.

`jwt/algorithms.py` runs `from cryptography import x509` at import, for one branch the functions
never take: telling an HMAC secret apart from a DER certificate (HMACAlgorithm._is_der_key).
Importing x509 compiles its name-parser regexes and pulls in its certificate, verification and
general-name modules: ~11 ms, an eighth of the cold mint (`make bench` prints both imports).

So before PyJWT loads, `cryptography.x509` is registered as a lazy module (the stdlib's own
`importlib.util.LazyLoader`): PyJWT's `from cryptography import x509` binds the module without
running it, and the first attribute anything reads from it loads it in full, exactly as an
import would have. Nothing in PyJWT or cryptography changes; RS256 signing and verification never
touch x509. Should anything have imported x509 already, it is left as it is.
"""

from __future__ import annotations

import importlib.util
import sys

DEFERRED = "cryptography.x509"


def defer(name: str) -> None:
    """Register module `name` so that it loads on first attribute access, not on import."""
    if name in sys.modules:
        return
    parent, _, child = name.rpartition(".")
    package = importlib.import_module(parent)
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        return  # not installed: the import that wants it fails as it would have
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    # `from package import child` finds the attribute and does not ask the import system again,
    # which would read the module's __spec__ and so load it.
    setattr(package, child, module)


defer(DEFERRED)

import jwt  # noqa: E402  (after the deferral, which is the point)

__all__ = ["jwt"]

"""The stand-in gateway's former single-module home: it now lives in `devstack.standin`.

Kept so that `from devstack.behest_standin import StandinGateway, Fault` and
`python -m devstack.behest_standin` keep working; new code imports `devstack.standin`.
"""

import sys

from devstack.standin import *  # noqa: F403 - this module only re-exports the package
from devstack.standin import Fault, StandinGateway
from devstack.standin.__main__ import main

__all__ = ["Fault", "StandinGateway", "main"]

if __name__ == "__main__":
    sys.exit(main())

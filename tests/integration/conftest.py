"""The stack under test for the post-deploy check: deployed (skipped when it cannot be reached) or `make dev`'s."""

from __future__ import annotations

import os
from typing import Iterator

import pytest
from botocore.credentials import Credentials

from devstack.iam_url import DEV_REGION, DEV_TRUSTED_CREDENTIALS
from tests.dev_process import DevProcess
from tests.integration.targets import Targets, deployed_stack, target_name

# The local stand-in's pacing between streamed chunks: long enough to see streaming, short enough for `make test`.
LOCAL_CHUNK_DELAY = 0.03


@pytest.fixture(scope="module")
def targets() -> Iterator[Targets]:
    """One stack for the whole module: the deployed one's Outputs, or one `make dev` process on free ports.

    A deployed target that cannot be reached has already skipped the module when it was collected.
    """
    if target_name(os.environ) == "deployed":
        yield deployed_stack()
        return
    dev = DevProcess(chunk_delay=LOCAL_CHUNK_DELAY)
    try:
        yield Targets(
            name="local",
            api_url=dev.urls["api"],
            token_endpoint=dev.urls["api"] + "/api/behest/token",
            openai_base_url=dev.urls["api"] + "/v1",
            stream_base_url=dev.urls["stream"] + "/v1",
            identity_token=dev.identity_token("ada"),
            chunk_delay=LOCAL_CHUNK_DELAY,
            service_base_url=dev.urls["service"] + "/v1",
            service_session=lambda: (Credentials(DEV_TRUSTED_CREDENTIALS.access_key, DEV_TRUSTED_CREDENTIALS.secret_key,
                                                 DEV_TRUSTED_CREDENTIALS.session_token), DEV_REGION),
        )
    finally:
        dev.stop()

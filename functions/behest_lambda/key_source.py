"""Where the tenant key comes from: the environment, or Secrets Manager through the shared expiring-value cache."""

from __future__ import annotations

import json
import time
from typing import Any, Callable, Mapping, Optional, Protocol

from . import settings as names
from .cache import ExpiringValue
from .credentials import Credentials, credentials_from
from .errors import ConfigurationError, FetchError, SigningKeyUnavailableError
from .settings import KeySettings
from .telemetry import Telemetry

SECRET_FETCH_TIMEOUT = 3.0
# After a failed refresh, callers are not made to wait on Secrets Manager again for this long.
RETRY_INTERVAL = 5.0

# Secrets Manager's error codes (boto3's ClientError code, or the extension's `__type`) → the reason logged and counted.
ERROR_REASONS = {
    "ThrottlingException": "throttled",
    "AccessDeniedException": "access_denied",
    "DecryptionFailure": "access_denied",
    "ResourceNotFoundException": "not_found",
    "InternalServiceError": "secrets_manager_error",
    "InvalidRequestException": "secrets_manager_error",
}
# The extension answers some failures without a Secrets Manager error document.
STATUS_REASONS = {401: "access_denied", 403: "access_denied", 404: "not_found", 429: "throttled"}


class ExtensionAbsentError(FetchError):
    """Nothing listens on the Parameters and Secrets extension's port."""


class KeySource(Protocol):
    def get(self) -> Credentials: ...


class EnvKeySource:
    """BEHEST_KEY from the environment: parsed on first use, then kept for the container's life."""

    def __init__(self, settings: KeySettings) -> None:
        self._settings = settings
        self._credentials: Optional[Credentials] = None

    def get(self) -> Credentials:
        if self._credentials is None:
            assert self._settings.behest_key is not None
            credentials = credentials_from(self._settings.behest_key, fallback_ids(self._settings))
            # Supabase's legacy JWT secret is read from Secrets Manager only, never from a variable.
            self._credentials = credentials._replace(caller_secret=None)
        return self._credentials


SecretFetcher = Callable[[str], str]


class SecretKeySource:
    """The key secret, trusted for `cache_ttl` seconds, then for `grace_period` more if refreshes fail."""

    def __init__(
        self,
        settings: KeySettings,
        telemetry: Telemetry,
        *,
        fetch: Optional[SecretFetcher] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert settings.secret_id is not None
        self._settings = settings
        self._secret_id = settings.secret_id
        self._telemetry = telemetry
        self._fetch = fetch or SecretsManagerFetcher(settings, telemetry)
        self._cache: ExpiringValue[Credentials] = ExpiringValue(
            self._load, ttl=settings.cache_ttl, grace=settings.grace_period, retry_interval=RETRY_INTERVAL,
            unavailable=lambda retry_after: SigningKeyUnavailableError(
                "the signing key is temporarily unavailable", retry_after=retry_after),
            events=self, clock=clock,
        )

    def get(self) -> Credentials:
        return self._cache.get()

    def _load(self) -> Credentials:
        try:
            return credentials_from(self._fetch(self._secret_id), fallback_ids(self._settings))
        except ConfigurationError as e:
            raise FetchError(e.message, reason="malformed_secret") from e

    def replaced(self, old: Optional[Credentials], new: Credentials) -> None:
        old_kid, new_kid = getattr(old, "kid", None), getattr(new, "kid", None)
        if old is not None and old_kid != new_kid:
            self._telemetry.info("signing key rotated", old_kid=old_kid, new_kid=new_kid)

    def fetch_failed(self, failure: FetchError, *, serving_cached: bool, age: float, grace_left: float) -> None:
        if serving_cached:
            self._telemetry.warning("key secret refresh failed; signing with the cached key", reason=failure.reason,
                                    detail=failure.message, cached_key_age_s=round(age, 1),
                                    grace_left_s=round(grace_left, 1))
        else:
            self._telemetry.error("key secret unavailable", reason=failure.reason, detail=failure.message)
        self._telemetry.metric("KeyRefreshFailed", reason=failure.reason)


class SecretsManagerFetcher:
    """Fetch through the Parameters and Secrets Lambda Extension when present, else boto3 (imported lazily)."""

    def __init__(self, settings: KeySettings, telemetry: Telemetry, *,
                 environ: Optional[Mapping[str, str]] = None) -> None:
        import os

        self._env = os.environ if environ is None else environ
        self._port = settings.extension_port
        self._telemetry = telemetry
        self._use_extension = settings.extension != "off"
        self._extension_required = settings.extension == "on"
        self._client: Any = None
        if not self._use_extension:
            telemetry.info("reading the key secret with boto3 (no Parameters and Secrets extension configured)")

    def __call__(self, secret_id: str) -> str:
        if self._use_extension:
            try:
                return self._via_extension(secret_id)
            except ExtensionAbsentError:
                if self._extension_required:
                    raise
                self._use_extension = False
                self._telemetry.info("Parameters and Secrets extension not found; using boto3")
        return self._via_boto3(secret_id)

    def _via_extension(self, secret_id: str) -> str:
        import http.client
        import urllib.parse

        connection = http.client.HTTPConnection("localhost", self._port, timeout=SECRET_FETCH_TIMEOUT)
        path = "/secretsmanager/get?secretId=" + urllib.parse.quote(secret_id, safe="")
        headers = {"X-Aws-Parameters-Secrets-Token": self._env.get(names.AWS_SESSION_TOKEN, "")}
        try:
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            body = response.read()
        except ConnectionRefusedError as e:
            raise ExtensionAbsentError("extension not listening", reason="extension_absent") from e
        except (TimeoutError, OSError, http.client.HTTPException) as e:
            raise FetchError(f"extension call failed ({type(e).__name__})", reason="timeout") from e
        finally:
            connection.close()
        document = _json(body)
        if response.status != 200:
            # The extension passes Secrets Manager's error document through: its type names the cause.
            error_type = _error_type(document)
            reason = ERROR_REASONS.get(error_type or "") or STATUS_REASONS.get(response.status, "secrets_manager_error")
            raise FetchError(f"extension answered {response.status} ({error_type or 'no error type'})", reason=reason)
        if document is None:
            raise FetchError("extension answered non-JSON", reason="malformed_secret")
        return _secret_string(document)

    def _via_boto3(self, secret_id: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        if self._client is None:
            # The client boto3.client("secretsmanager") returns is this one: boto3 asks botocore's session for it.
            # `import boto3` would also import its resource layer and s3transfer's transfer manager, ~20 ms of a
            # cold start for nothing a Secrets Manager read uses. Credentials, region, endpoint, retries and
            # timeouts all come from botocore, as they would through boto3.
            import botocore.session
            from botocore.config import Config

            self._client = botocore.session.get_session().create_client(
                "secretsmanager",
                config=Config(
                    connect_timeout=SECRET_FETCH_TIMEOUT,
                    read_timeout=SECRET_FETCH_TIMEOUT,
                    # Two attempts in all ("max_attempts" would mean two retries): a hung endpoint then costs at
                    # most 2 × SECRET_FETCH_TIMEOUT, leaving time to answer 503 inside the token function's 10 s.
                    retries={"total_max_attempts": 2, "mode": "standard"},
                ),
            )
            self._telemetry.adopt_library_loggers()
        try:
            document = self._client.get_secret_value(SecretId=secret_id)
        except ClientError as e:
            code = str(e.response.get("Error", {}).get("Code", "ClientError"))
            raise FetchError(f"Secrets Manager refused: {code[:80]}",
                             reason=ERROR_REASONS.get(code, "secrets_manager_error")) from e
        except BotoCoreError as e:
            raise FetchError(f"Secrets Manager unreachable ({type(e).__name__})", reason="timeout") from e
        return _secret_string(document)


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _error_type(document: Any) -> Optional[str]:
    value = document.get("__type") if isinstance(document, dict) else None
    # Secrets Manager may qualify the type: "com.amazonaws.secretsmanager#AccessDeniedException".
    return value.rpartition("#")[2] if isinstance(value, str) else None


def _secret_string(document: Any) -> str:
    value = document.get("SecretString") if isinstance(document, dict) else None
    if isinstance(value, str) and value.strip():
        return value
    binary = document.get("SecretBinary") if isinstance(document, dict) else None
    if isinstance(binary, (bytes, bytearray)):
        try:
            return bytes(binary).decode("utf-8")
        except UnicodeDecodeError:
            pass
    raise FetchError("the key secret has no text value", reason="malformed_secret")


def fallback_ids(settings: KeySettings) -> dict[str, Optional[str]]:
    return {
        names.BEHEST_KID: settings.kid,
        names.BEHEST_TENANT_ID: settings.tenant_id,
        names.BEHEST_PROJECT_ID: settings.project_id,
    }


def key_source_for(settings: KeySettings, telemetry: Telemetry) -> KeySource:
    """Secrets Manager when BEHEST_KEY_SECRET_ID is set, else BEHEST_KEY."""
    if settings.secret_id:
        return SecretKeySource(settings, telemetry)
    return EnvKeySource(settings)

"""Where the tenant key comes from: the environment, or Secrets Manager with a bounded cache."""

from __future__ import annotations

import json
import threading
import time
from typing import Any, Callable, Optional, Protocol

from . import settings as names
from .credentials import Credentials, credentials_from
from .errors import BehestLambdaError, ConfigurationError, SigningKeyUnavailableError
from .settings import Settings
from .telemetry import Telemetry

SECRET_FETCH_TIMEOUT = 3.0
# After a failed refresh, callers are not made to wait on Secrets Manager again for this long.
RETRY_INTERVAL = 5.0


class SecretFetchError(BehestLambdaError):
    """Secrets Manager (or its extension) did not hand over the secret."""

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class ExtensionAbsentError(SecretFetchError):
    """Nothing listens on the Parameters and Secrets extension's port."""


class KeySource(Protocol):
    def get(self) -> Credentials: ...


class EnvKeySource:
    """BEHEST_KEY from the environment: parsed on first use, then kept for the container's life."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._credentials: Optional[Credentials] = None

    def get(self) -> Credentials:
        if self._credentials is None:
            assert self._settings.behest_key is not None
            self._credentials = credentials_from(self._settings.behest_key, _fallback_ids(self._settings))
        return self._credentials


SecretFetcher = Callable[[str], str]


class SecretKeySource:
    """The key secret, trusted for `key_cache_ttl` seconds, then for `key_grace_period` more if refreshes fail."""

    def __init__(
        self,
        settings: Settings,
        telemetry: Telemetry,
        *,
        fetch: Optional[SecretFetcher] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        assert settings.key_secret_id is not None
        self._settings = settings
        self._secret_id = settings.key_secret_id
        self._telemetry = telemetry
        self._fetch = fetch or SecretsManagerFetcher(settings, telemetry)
        self._clock = clock
        self._lock = threading.Lock()
        self._credentials: Optional[Credentials] = None
        self._fetched_at = 0.0
        self._next_attempt = 0.0

    def get(self) -> Credentials:
        with self._lock:
            now = self._clock()
            cached = self._credentials
            age = now - self._fetched_at
            if cached is not None and age < self._settings.key_cache_ttl:
                return cached
            if now >= self._next_attempt:
                try:
                    fresh = credentials_from(self._fetch(self._secret_id), _fallback_ids(self._settings))
                except (SecretFetchError, ConfigurationError) as e:
                    self._next_attempt = now + RETRY_INTERVAL
                    failure = e
                else:
                    if cached is not None and cached.kid != fresh.kid:
                        self._telemetry.info("signing key rotated", old_kid=cached.kid, new_kid=fresh.kid)
                    self._credentials, self._fetched_at, self._next_attempt = fresh, now, 0.0
                    return fresh
            else:
                failure = None
            reason = getattr(failure, "reason", "malformed_secret" if failure else "retry_backoff")
            grace_left = self._settings.key_cache_ttl + self._settings.key_grace_period - age
            if cached is not None and grace_left > 0:
                if failure is not None:
                    self._telemetry.warning(
                        "key secret refresh failed; signing with the cached key",
                        reason=reason,
                        detail=failure.message,
                        cached_key_age_s=round(age, 1),
                        grace_left_s=round(grace_left, 1),
                    )
                    self._telemetry.metric("KeyRefreshFailed", reason=reason)
                return cached
            if failure is not None:
                self._telemetry.error("key secret unavailable", reason=reason, detail=failure.message)
                self._telemetry.metric("KeyRefreshFailed", reason=reason)
            raise SigningKeyUnavailableError(
                "the signing key is temporarily unavailable", retry_after=max(1, round(self._next_attempt - now))
            )


class SecretsManagerFetcher:
    """Fetch through the Parameters and Secrets Lambda Extension when present, else boto3 (imported lazily)."""

    def __init__(self, settings: Settings, telemetry: Telemetry, *, environ: Optional[dict[str, str]] = None) -> None:
        import os

        self._env = os.environ if environ is None else environ
        self._port = settings.extension_port
        self._telemetry = telemetry
        self._use_extension = settings.secrets_extension != "off"
        self._extension_required = settings.secrets_extension == "on"
        self._client: Any = None

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
            raise SecretFetchError(f"extension call failed ({type(e).__name__})", reason="timeout") from e
        finally:
            connection.close()
        if response.status != 200:
            # The extension passes Secrets Manager's error through: its type names the cause.
            text = body[:300].decode("utf-8", "replace")
            raise SecretFetchError(f"extension answered {response.status}: {text}", reason=_reason_from_text(text))
        try:
            document = json.loads(body)
        except ValueError as e:
            raise SecretFetchError("extension answered non-JSON", reason="malformed_secret") from e
        return _secret_string(document)

    def _via_boto3(self, secret_id: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "secretsmanager",
                config=Config(
                    connect_timeout=SECRET_FETCH_TIMEOUT,
                    read_timeout=SECRET_FETCH_TIMEOUT,
                    # Two attempts in all ("max_attempts" would mean two retries): a hung endpoint then costs at
                    # most 2 × SECRET_FETCH_TIMEOUT, leaving time to answer 503 inside the token function's 10 s.
                    retries={"total_max_attempts": 2, "mode": "standard"},
                ),
            )
        try:
            document = self._client.get_secret_value(SecretId=secret_id)
        except ClientError as e:
            code = e.response.get("Error", {}).get("Code", "ClientError")
            raise SecretFetchError(f"Secrets Manager refused: {code}", reason=_reason_from_text(code)) from e
        except BotoCoreError as e:
            raise SecretFetchError(f"Secrets Manager unreachable ({type(e).__name__})", reason="timeout") from e
        return _secret_string(document)


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
    raise SecretFetchError("the key secret has no text value", reason="malformed_secret")


def _reason_from_text(text: str) -> str:
    for marker, reason in (
        ("Throttl", "throttled"),
        ("AccessDenied", "access_denied"),
        ("ResourceNotFound", "not_found"),
        ("Decryption", "access_denied"),
    ):
        if marker in text:
            return reason
    return "secrets_manager_error"


def _fallback_ids(settings: Settings) -> dict[str, Optional[str]]:
    return {
        names.BEHEST_KID: settings.kid,
        names.BEHEST_TENANT_ID: settings.tenant_id,
        names.BEHEST_PROJECT_ID: settings.project_id,
    }


def key_source_for(settings: Settings, telemetry: Telemetry) -> KeySource:
    """Secrets Manager when BEHEST_KEY_SECRET_ID is set, else BEHEST_KEY."""
    if settings.key_secret_id:
        return SecretKeySource(settings, telemetry)
    return EnvKeySource(settings)

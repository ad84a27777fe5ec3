"""AWS Secrets Manager through boto3, with the standard AWS configuration.

Region, credentials and endpoint come from the usual chain (AWS_REGION, profiles, instance roles,
AWS_ENDPOINT_URL_SECRETS_MANAGER); settings may pin the region and endpoint. Secret ``NAME`` is the
AWS secret ``<prefix>NAME``; ``NAME:key`` reads ``key`` from a JSON secret.
"""
from __future__ import annotations

import json
import threading
from typing import Any

from secrets_app.exceptions import AccessDenied, ProviderUnavailable, SecretNotFound
from secrets_app.providers.base import SecretProvider, SecretValue

_NOT_FOUND = {"ResourceNotFoundException"}
_DENIED = {"AccessDeniedException", "AccessDenied", "UnrecognizedClientException",
           "InvalidSignatureException", "ExpiredTokenException"}


class AwsProvider(SecretProvider):
    """Secrets stored in AWS Secrets Manager."""

    name = "aws"

    def __init__(
        self,
        *,
        region: str = "",
        endpoint_url: str = "",
        prefix: str = "",
        timeout: float = 3.0,
    ) -> None:
        self.region = region
        self.endpoint_url = endpoint_url
        self.prefix = prefix
        self.timeout = timeout
        self._client = None
        self._client_lock = threading.Lock()

    def options(self) -> dict[str, Any]:
        return {"region": self.region or "(AWS default chain)", "endpoint_url": self.endpoint_url,
                "prefix": self.prefix, "timeout_seconds": self.timeout}

    def reset(self) -> None:
        # boto3 clients are not fork-safe (shared urllib3 pools): the child builds its own.
        self._client = None
        self._client_lock = threading.Lock()

    def _get_client(self):
        client = self._client
        if client is None:
            with self._client_lock:
                if self._client is None:
                    import boto3
                    from botocore.config import Config

                    config = Config(
                        connect_timeout=self.timeout, read_timeout=self.timeout,
                        # One quick retry at most: the manager owns back-off and stale-if-error.
                        retries={"max_attempts": 2, "mode": "standard"},
                    )
                    session = boto3.session.Session()
                    self._client = session.client(
                        "secretsmanager", region_name=self.region or None,
                        endpoint_url=self.endpoint_url or None, config=config,
                    )
                client = self._client
        return client

    def _call(self, secret_name: str, operation: str, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, NoRegionError

        try:
            return getattr(self._get_client(), operation)(**kwargs)
        except ClientError as error:
            code = error.response.get("Error", {}).get("Code", "")
            status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if code in _NOT_FOUND:
                raise SecretNotFound(secret_name, ["aws"]) from None
            if code in _DENIED or status in (401, 403):
                raise AccessDenied(f"AWS Secrets Manager refused {operation} on {secret_name!r} ({code}).") from None
            raise ProviderUnavailable(f"AWS Secrets Manager {operation} failed for {secret_name!r} ({code or status}).") from None
        except (NoCredentialsError, NoRegionError) as error:
            raise AccessDenied(f"AWS is not configured: {type(error).__name__}.") from None
        except BotoCoreError as error:
            # Connection refused, timeouts, endpoint errors: no value can be inside these.
            raise ProviderUnavailable(
                f"AWS Secrets Manager cannot be reached for {secret_name!r} ({type(error).__name__})."
            ) from None

    def get(self, secret_name: str) -> SecretValue:
        aws_name, _, json_key = secret_name.partition(":")
        response = self._call(secret_name, "get_secret_value", SecretId=self.prefix + aws_name)
        value = response.get("SecretString")
        if value is None and response.get("SecretBinary") is not None:
            value = response["SecretBinary"].decode("utf-8", "replace")
        if json_key:
            try:
                document = json.loads(value or "")
            except ValueError:
                raise SecretNotFound(secret_name, ["aws (secret is not JSON)"]) from None
            value = document.get(json_key) if isinstance(document, dict) else None
            value = None if value is None else str(value)
        if not value:
            raise SecretNotFound(secret_name, ["aws"])
        return SecretValue(value=value, source="aws", version=response.get("VersionId", ""))

    def set(self, secret_name: str, value: str) -> str:
        aws_name, _, json_key = secret_name.partition(":")
        secret_id = self.prefix + aws_name
        if json_key:
            # Rewrite one key of a JSON secret, keeping the others.
            current = self._call(secret_name, "get_secret_value", SecretId=secret_id)
            try:
                document = json.loads(current.get("SecretString") or "{}")
            except ValueError:
                document = None
            if not isinstance(document, dict):
                from secrets_app.exceptions import RotationRefused

                raise RotationRefused(f"AWS secret {aws_name!r} is not a JSON object.")
            document[json_key] = value
            value = json.dumps(document)
        try:
            response = self._call(secret_name, "put_secret_value", SecretId=secret_id, SecretString=value)
        except SecretNotFound:
            response = self._call(secret_name, "create_secret", Name=secret_id, SecretString=value)
        return response.get("VersionId", "")

    def check(self) -> str:
        self._call("(connection check)", "list_secrets", MaxResults=1)
        return f"aws: reachable ({self.region or 'default region'})"

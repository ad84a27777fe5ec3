"""Azure Key Vault through azure-keyvault-secrets and azure-identity's DefaultAzureCredential.

Key Vault secret names allow letters, digits and dashes only, so ``DATABASE_PASSWORD`` is stored
as ``DATABASE-PASSWORD``. The credential (managed identity, workload identity, environment, Azure
CLI...) is whatever DefaultAzureCredential finds; nothing of it is kept in settings or the database.
"""
from __future__ import annotations

import re
import threading
from typing import Any

from secrets_app.exceptions import AccessDenied, ProviderMisconfigured, ProviderUnavailable, SecretNotFound
from secrets_app.providers.base import SecretProvider, SecretValue

_VALID_NAME = re.compile(r"\A[0-9A-Za-z-]{1,127}\Z")


def key_vault_name(secret_name: str) -> str:
    """``DATABASE_PASSWORD`` -> ``DATABASE-PASSWORD`` (Key Vault allows no underscores)."""
    return secret_name.replace("_", "-")


class AzureProvider(SecretProvider):
    """Secrets stored in one Azure Key Vault.

    ``credential`` and ``transport`` default to DefaultAzureCredential and azure-core's HTTP
    transport; tests pass a Key Vault double as the transport instead of patching anything.
    """

    name = "azure"

    def __init__(self, *, vault_url: str, timeout: float = 3.0, credential=None, transport=None) -> None:
        if not vault_url:
            raise ProviderMisconfigured("SECRETS_PROVIDER=azure needs AZURE_KEY_VAULT_URL.")
        self.vault_url = vault_url
        self.timeout = timeout
        self._credential = credential
        self._transport = transport
        self._client = None
        self._client_lock = threading.Lock()

    def options(self) -> dict[str, Any]:
        return {"vault_url": self.vault_url, "timeout_seconds": self.timeout}

    def reset(self) -> None:
        self._client = None
        self._client_lock = threading.Lock()

    def _get_client(self):
        client = self._client
        if client is None:
            with self._client_lock:
                if self._client is None:
                    from azure.keyvault.secrets import SecretClient

                    credential = self._credential
                    if credential is None:
                        from azure.identity import DefaultAzureCredential

                        credential = DefaultAzureCredential()
                    options: dict[str, Any] = {
                        "connection_timeout": self.timeout, "read_timeout": self.timeout,
                        # The manager owns back-off; the SDK's default retries take ~minutes.
                        "retry_total": 1, "retry_backoff_factor": 0.2,
                    }
                    if self._transport is not None:
                        options["transport"] = self._transport
                    self._client = SecretClient(vault_url=self.vault_url, credential=credential, **options)
                client = self._client
        return client

    def _call(self, secret_name: str, operation):
        from azure.core.exceptions import (
            ClientAuthenticationError,
            HttpResponseError,
            ResourceNotFoundError,
            ServiceRequestError,
            ServiceResponseError,
        )

        try:
            return operation(self._get_client())
        except ResourceNotFoundError:
            raise SecretNotFound(secret_name, ["azure"]) from None
        except ClientAuthenticationError:
            raise AccessDenied(f"Azure Key Vault refused access to {secret_name!r} (authentication).") from None
        except HttpResponseError as error:
            if error.status_code in (401, 403):
                raise AccessDenied(f"Azure Key Vault refused access to {secret_name!r} ({error.status_code}).") from None
            raise ProviderUnavailable(f"Azure Key Vault failed for {secret_name!r} ({error.status_code}).") from None
        except (ServiceRequestError, ServiceResponseError) as error:
            raise ProviderUnavailable(
                f"Azure Key Vault cannot be reached for {secret_name!r} ({type(error).__name__})."
            ) from None

    def _vault_name(self, secret_name: str) -> str:
        vault_name = key_vault_name(secret_name)
        if not _VALID_NAME.match(vault_name):
            raise SecretNotFound(secret_name, ["azure (invalid Key Vault name)"])
        return vault_name

    def get(self, secret_name: str) -> SecretValue:
        vault_name = self._vault_name(secret_name)
        secret = self._call(secret_name, lambda client: client.get_secret(vault_name))
        if not secret.value:
            raise SecretNotFound(secret_name, ["azure"])
        return SecretValue(value=secret.value, source="azure", version=secret.properties.version or "")

    def set(self, secret_name: str, value: str) -> str:
        vault_name = self._vault_name(secret_name)
        secret = self._call(secret_name, lambda client: client.set_secret(vault_name, value))
        return secret.properties.version or ""

    def check(self) -> str:
        self._call("(connection check)", lambda client: next(iter(client.list_properties_of_secrets(max_page_size=1)), None))
        return f"azure: reachable at {self.vault_url}"

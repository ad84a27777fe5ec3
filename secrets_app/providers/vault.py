"""HashiCorp Vault (or OpenBao) KV version 2 through hvac.

Authentication is a token (VAULT_TOKEN) or AppRole (VAULT_ROLE_ID + VAULT_SECRET_ID). An AppRole
token is renewed before it expires and replaced by a new login when it can no longer be renewed.
Secret ``NAME`` is the field ``value`` at ``<path>/NAME`` on the KV v2 mount.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from secrets_app.exceptions import AccessDenied, ProviderMisconfigured, ProviderUnavailable, SecretNotFound
from secrets_app.providers.base import SecretProvider, SecretValue


@dataclass(frozen=True)
class VaultCredentials:
    """Either a token or an AppRole pair. Nothing here reaches ``repr()``."""

    token: str = field(default="", repr=False)
    role_id: str = field(default="", repr=False)
    secret_id: str = field(default="", repr=False)


class VaultProvider(SecretProvider):
    """Secrets stored in a Vault KV v2 mount."""

    name = "vault"
    #: Renew an AppRole token when less than this many seconds of its lease remain.
    renew_margin_seconds = 60

    def __init__(
        self,
        *,
        address: str,
        credentials: VaultCredentials,
        mount: str = "secret",
        path: str = "opsdesk",
        timeout: float = 3.0,
        namespace: str = "",
    ) -> None:
        if not address:
            raise ProviderMisconfigured("SECRETS_PROVIDER=vault needs VAULT_ADDR.")
        if not credentials.token and not (credentials.role_id and credentials.secret_id):
            raise ProviderMisconfigured("SECRETS_PROVIDER=vault needs VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID.")
        self.address = address
        self.mount = mount
        self.path = path.strip("/")
        self.timeout = timeout
        self.namespace = namespace
        self._credentials = credentials
        self._client = None
        self._token_expires_at: float | None = None
        self._client_lock = threading.Lock()

    def options(self) -> dict[str, Any]:
        return {"address": self.address, "mount": self.mount, "path": self.path,
                "auth": "token" if self._credentials.token else "approle", "timeout_seconds": self.timeout}

    def reset(self) -> None:
        self._client = None
        self._token_expires_at = None
        self._client_lock = threading.Lock()

    def _secret_path(self, secret_name: str) -> str:
        return f"{self.path}/{secret_name}" if self.path else secret_name

    def _login(self, client) -> None:
        response = client.auth.approle.login(
            role_id=self._credentials.role_id, secret_id=self._credentials.secret_id,
        )
        lease = int(response["auth"].get("lease_duration") or 0)
        self._token_expires_at = time.monotonic() + lease if lease else None

    def _get_client(self):
        with self._client_lock:
            if self._client is None:
                import hvac

                client = hvac.Client(
                    url=self.address, token=self._credentials.token or None,
                    timeout=self.timeout, namespace=self.namespace or None,
                )
                if not self._credentials.token:
                    self._login(client)
                self._client = client
            elif self._token_expires_at is not None and (
                self._token_expires_at - time.monotonic() < self.renew_margin_seconds
            ):
                self._renew_or_login(self._client)
            return self._client

    def _renew_or_login(self, client) -> None:
        import hvac

        try:
            response = client.auth.token.renew_self()
            lease = int(response["auth"].get("lease_duration") or 0)
            remaining = lease if lease else None
            # Renewal stops extending at the token's max TTL: log in again near the end.
            if remaining is not None and remaining < self.renew_margin_seconds:
                self._login(client)
            else:
                self._token_expires_at = time.monotonic() + remaining if remaining else None
        except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest):
            self._login(client)

    def _call(self, secret_name: str, operation):
        import hvac
        import requests

        try:
            try:
                return operation(self._get_client())
            except hvac.exceptions.Forbidden:
                if self._credentials.token:
                    raise
                # An AppRole token may have expired under us: one fresh login, then give up.
                with self._client_lock:
                    self._client = None
                return operation(self._get_client())
        except hvac.exceptions.InvalidPath:
            raise SecretNotFound(secret_name, ["vault"]) from None
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized):
            raise AccessDenied(f"Vault refused access to {secret_name!r}.") from None
        except (hvac.exceptions.VaultError, requests.RequestException) as error:
            raise ProviderUnavailable(f"Vault cannot answer for {secret_name!r} ({type(error).__name__}).") from None

    def get(self, secret_name: str) -> SecretValue:
        response = self._call(secret_name, lambda client: client.secrets.kv.v2.read_secret_version(
            path=self._secret_path(secret_name), mount_point=self.mount, raise_on_deleted_version=True,
        ))
        data = (response or {}).get("data") or {}
        value = (data.get("data") or {}).get("value")
        if not value:
            raise SecretNotFound(secret_name, ["vault"])
        version = str((data.get("metadata") or {}).get("version", ""))
        return SecretValue(value=str(value), source="vault", version=version)

    def set(self, secret_name: str, value: str) -> str:
        response = self._call(secret_name, lambda client: client.secrets.kv.v2.create_or_update_secret(
            path=self._secret_path(secret_name), secret={"value": value}, mount_point=self.mount,
        ))
        return str(((response or {}).get("data") or {}).get("version", ""))

    def check(self) -> str:
        if self._call("(connection check)", lambda client: client.sys.is_sealed()):
            raise ProviderUnavailable("Vault is sealed.")
        self._call("(connection check)", lambda client: client.auth.token.lookup_self())
        return f"vault: reachable at {self.address}"

"""A test double of the Azure Key Vault secrets REST API, plugged in as azure-core's transport.

No Key Vault server can run on this machine, so the real SecretClient (with its real pipeline:
challenge authentication, retries, deserialisation) talks to this in-memory vault instead of the
network. It behaves like the service where the client can tell: the unauthenticated first request
gets the 401 challenge (WWW-Authenticate with the tenant and resource), a wrong token gets 401,
unknown secrets get 404 SecretNotFound, every write creates a new version, and the test can make it
fail with 503 or deny with 403.
"""
from __future__ import annotations

import json
import threading
import time
import uuid
from urllib.parse import parse_qs, unquote, urlsplit

from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest._http_response_impl import HttpResponseImpl
from azure.core.utils import CaseInsensitiveDict

TENANT_ID = "00000000-0000-0000-0000-000000000001"


class StaticTokenCredential:
    """A TokenCredential that hands out one token; Azure AD is not reachable from tests."""

    def __init__(self, token: str) -> None:
        self._token = token
        self.requests: list[tuple[tuple[str, ...], dict]] = []

    def get_token(self, *scopes: str, **kwargs) -> AccessToken:
        self.requests.append((scopes, kwargs))
        return AccessToken(self._token, int(time.time()) + 3600)

    def close(self) -> None:
        pass


class _Response(HttpResponseImpl):
    def __init__(self, request, status: int, body: bytes, headers: dict[str, str]) -> None:
        super().__init__(
            request=request, internal_response=None, status_code=status, reason=_REASONS.get(status, ""),
            content_type=headers.get("Content-Type"), headers=CaseInsensitiveDict(headers),
            stream_download_generator=None,
        )
        self._content = body

    def close(self) -> None:
        self._is_closed = True


_REASONS = {200: "OK", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 503: "Service Unavailable"}


class KeyVaultDouble(HttpTransport):
    """In-memory Key Vault. ``fail_with`` = 503 or 403 makes every authenticated call fail."""

    def __init__(self, *, vault_url: str, token: str) -> None:
        self.vault_url = vault_url.rstrip("/")
        self.token = token
        self.secrets: dict[str, list[tuple[str, str]]] = {}  # name -> [(version, value)]
        self.fail_with: int | None = None
        self.requests: list[tuple[str, str, bool]] = []  # (method, path, authorised)
        self._lock = threading.Lock()

    # HttpTransport interface ------------------------------------------------------------------
    def __enter__(self):
        return self

    def __exit__(self, *args) -> None:
        pass

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def send(self, request, **kwargs):
        url = urlsplit(request.url)
        authorised = request.headers.get("Authorization") == f"Bearer {self.token}"
        self.requests.append((request.method, url.path, authorised))
        if f"{url.scheme}://{url.netloc}" != self.vault_url:
            return self._json(request, 404, {"error": {"code": "NotFound", "message": "Unknown host."}})
        if "api-version" not in parse_qs(url.query):
            return self._json(request, 400, {"error": {"code": "MissingApiVersionParameter", "message": "api-version"}})
        if not request.headers.get("Authorization"):
            # The challenge: Key Vault's clients first send the request without a token.
            return self._json(request, 401, {"error": {"code": "Unauthorized", "message": "AKV10000: Request is missing a Bearer token."}}, {
                "WWW-Authenticate": f'Bearer authorization="https://login.microsoftonline.com/{TENANT_ID}", resource="https://vault.azure.net"',
            })
        if not authorised:
            return self._json(request, 401, {"error": {"code": "Unauthorized", "message": "AKV10032: Invalid issuer."}})
        if self.fail_with == 403:
            return self._json(request, 403, {"error": {"code": "Forbidden", "message": "The user does not have secrets get permission.", "innererror": {"code": "AccessDenied"}}})
        if self.fail_with:
            return self._json(request, self.fail_with, {"error": {"code": "ServiceUnavailable", "message": "Try again later."}})
        parts = [unquote(part) for part in url.path.strip("/").split("/")]
        with self._lock:
            if parts == ["secrets"] and request.method == "GET":
                items = [{"id": f"{self.vault_url}/secrets/{name}", "attributes": {"enabled": True}} for name in self.secrets]
                return self._json(request, 200, {"value": items, "nextLink": None})
            if len(parts) in (2, 3) and parts[0] == "secrets":
                name = parts[1]
                if request.method == "PUT" and len(parts) == 2:
                    body = json.loads(self._body(request) or b"{}")
                    version = uuid.uuid4().hex
                    self.secrets.setdefault(name, []).append((version, body["value"]))
                    return self._json(request, 200, self._bundle(name, version, body["value"]))
                if request.method == "GET":
                    versions = self.secrets.get(name, [])
                    wanted = parts[2] if len(parts) == 3 and parts[2] else None
                    for version, value in reversed(versions):
                        if wanted in (None, version):
                            return self._json(request, 200, self._bundle(name, version, value))
                    return self._json(request, 404, {"error": {"code": "SecretNotFound", "message": f"A secret with (name/id) {name} was not found in this key vault."}})
        return self._json(request, 405, {"error": {"code": "BadRequest", "message": "Unsupported."}})

    # Helpers ----------------------------------------------------------------------------------
    def put(self, name: str, value: str) -> str:
        version = uuid.uuid4().hex
        with self._lock:
            self.secrets.setdefault(name, []).append((version, value))
        return version

    def _bundle(self, name: str, version: str, value: str) -> dict:
        now = int(time.time())
        return {"value": value, "id": f"{self.vault_url}/secrets/{name}/{version}",
                "attributes": {"enabled": True, "created": now, "updated": now, "recoveryLevel": "Recoverable+Purgeable"}}

    @staticmethod
    def _body(request) -> bytes:
        content = getattr(request, "content", None)
        if content is None:
            content = getattr(request, "body", None) or getattr(request, "data", None)
        if isinstance(content, str):
            content = content.encode()
        return content or b""

    @staticmethod
    def _json(request, status: int, document: dict, headers: dict[str, str] | None = None):
        body = json.dumps(document).encode()
        return _Response(request, status, body, {"Content-Type": "application/json; charset=utf-8",
                                                  "Content-Length": str(len(body)), **(headers or {})})

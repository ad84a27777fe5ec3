"""Every provider against its real server (moto, OpenBao) or the Key Vault double: one mixin."""
from __future__ import annotations

import os
import stat
import time
import uuid

import pytest

from secrets_app.exceptions import AccessDenied, ProviderMisconfigured, ProviderUnavailable, SecretNotFound
from secrets_app.manager import SecretManager
from secrets_app.providers import get_provider
from secrets_app.providers.aws import AwsProvider
from secrets_app.providers.azure import AzureProvider
from secrets_app.providers.local import LocalProvider, format_dotenv_value, parse_dotenv
from secrets_app.providers.vault import VaultCredentials, VaultProvider
from tests.secrets.azure_keyvault_double import KeyVaultDouble, StaticTokenCredential
from tests.secrets.conftest import free_port



class ProviderTestsMixin:
    """What every provider must do. Subclasses give `provider`, `unreachable_provider`, `store`."""

    supports_versions = True

    def test_reads_a_stored_secret_with_its_source(self, provider, store, unique_name):
        store(unique_name, "first-value-1")
        secret = provider.get(unique_name)
        assert secret.value == "first-value-1"
        assert secret.source == provider.name or provider.name == "local"
        assert "first-value-1" not in repr(secret) and "first-value-1" not in str(secret)

    def test_missing_secret_names_the_secret_and_the_source(self, provider, unique_name):
        with pytest.raises(SecretNotFound) as raised:
            provider.get(unique_name)
        assert unique_name in str(raised.value)
        assert raised.value.sources_tried

    def test_set_writes_a_new_version_read_back_at_once(self, provider, store, unique_name):
        store(unique_name, "old-value-1")
        before = provider.get(unique_name)
        version = provider.set(unique_name, "new-value-2")
        after = provider.get(unique_name)
        assert after.value == "new-value-2"
        if self.supports_versions:
            assert version and after.version == version and after.version != before.version

    def test_unreachable_store_is_unavailable_quickly_without_values(self, unreachable_provider, unique_name):
        started = time.monotonic()
        with pytest.raises(ProviderUnavailable) as raised:
            unreachable_provider.get(unique_name)
        assert time.monotonic() - started < 8
        assert unique_name in str(raised.value)

    def test_manager_caches_what_the_provider_returns(self, provider, store, unique_name):
        store(unique_name, "cached-value-1")
        manager = SecretManager(provider, fallback=LocalProvider(environ={}), ttl=60, fingerprint_key=b"k")
        assert manager.get(unique_name) == "cached-value-1"
        provider.set(unique_name, "changed-value-2")
        assert manager.get(unique_name) == "cached-value-1"  # within the TTL
        manager.invalidate(unique_name)
        assert manager.get(unique_name) == "changed-value-2"

    def test_repr_and_options_carry_no_credentials(self, provider):
        text = repr(provider) + repr(provider.options())
        for credential in self.credentials():
            assert credential not in text

    def test_check_reports_reachable(self, provider):
        assert provider.name in provider.check()

    def credentials(self) -> list[str]:
        return []


class TestLocalProvider(ProviderTestsMixin):
    supports_versions = False

    @pytest.fixture
    def env_file(self, tmp_path):
        path = tmp_path / ".env"
        path.write_text("# opsdesk\nDEBUG=on\n")
        path.chmod(0o640)
        return path

    @pytest.fixture
    def provider(self, env_file):
        return LocalProvider(env_file=env_file, environ={}, process_environment=set())

    @pytest.fixture
    def unreachable_provider(self, tmp_path):
        return _BrokenFileProvider(tmp_path / "secrets-dir" / "token")

    @pytest.fixture
    def store(self, env_file):
        def store(name, value):
            with env_file.open("a") as handle:
                handle.write(f"{name}={value}\n")
        return store

    def test_environment_wins_over_dotenv(self, env_file, unique_name):
        env_file.write_text(f"{unique_name}=from-file\n")
        provider = LocalProvider(env_file=env_file, environ={unique_name: "from-env"})
        assert provider.get(unique_name).value == "from-env"
        assert provider.get(unique_name).source == "environment"

    def test_name_copied_from_dotenv_into_environ_is_read_from_the_file(self, env_file, unique_name):
        # settings.py copies .env into os.environ; a rotated line must still be seen.
        env_file.write_text(f"{unique_name}=new-value\n")
        provider = LocalProvider(env_file=env_file, environ={unique_name: "old-copy"}, process_environment=set())
        assert provider.get(unique_name).value == "new-value"

    def test_file_convention_is_honoured(self, tmp_path, unique_name):
        secret_file = tmp_path / "docker-secret"
        secret_file.write_text("from-docker-secret\n")
        provider = LocalProvider(environ={f"{unique_name}_FILE": str(secret_file)})
        secret = provider.get(unique_name)
        assert (secret.value, secret.source) == ("from-docker-secret", "file")

    def test_empty_values_count_as_missing(self, env_file, unique_name):
        env_file.write_text(f"{unique_name}=\n")
        with pytest.raises(SecretNotFound):
            LocalProvider(env_file=env_file, environ={unique_name: ""}).get(unique_name)

    def test_rotation_rewrites_the_line_atomically_and_keeps_mode_and_other_lines(self, provider, env_file, unique_name):
        env_file.write_text(f"A=1\n{unique_name}='old'\nB=\"two words\"\n")
        env_file.chmod(0o640)
        inode = env_file.stat().st_ino
        provider.set(unique_name, "it's \"quoted\" \\ $x")
        assert stat.S_IMODE(env_file.stat().st_mode) == 0o640
        assert env_file.stat().st_ino != inode  # replaced by rename, never written in place
        lines = env_file.read_text().splitlines()
        assert lines[0] == "A=1" and lines[2] == 'B="two words"'
        assert provider.get(unique_name).value == "it's \"quoted\" \\ $x"
        assert not [name for name in os.listdir(env_file.parent) if name.startswith(".env.")]

    @pytest.mark.parametrize("value", ["plain", "it's", 'say "hi"', "back\\slash", "a#b c", "$HOME", "\\n literal"])
    def test_written_values_read_back_identically_by_django_environ(self, tmp_path, value):
        import environ

        path = tmp_path / ".env"
        path.write_text(f"X={format_dotenv_value(value)}\n")
        assert parse_dotenv(path.read_text())["X"] == value

        class Reader(environ.Env):
            ENVIRON = {}

        Reader.read_env(str(path))
        assert Reader.ENVIRON["X"] == value

    def test_rotation_refused_when_the_environment_would_shadow_it(self, env_file, unique_name):
        from secrets_app.exceptions import RotationRefused

        provider = LocalProvider(env_file=env_file, environ={unique_name: "exported"}, process_environment={unique_name})
        with pytest.raises(RotationRefused, match="process environment"):
            provider.set(unique_name, "new")


class _BrokenFileProvider(LocalProvider):
    """Local provider whose NAME_FILE points at a directory that cannot be read."""

    def __init__(self, secret_file):
        super().__init__(environ={})
        self.secret_file = secret_file

    def get(self, secret_name):
        self._environ = {f"{secret_name}_FILE": str(self.secret_file.parent)}  # a directory: EISDIR
        self.secret_file.parent.mkdir(exist_ok=True)
        return super().get(secret_name)


class TestAwsProvider(ProviderTestsMixin):
    @pytest.fixture
    def prefix(self):
        return f"opsdesk-{uuid.uuid4().hex[:8]}/"

    @pytest.fixture
    def provider(self, moto_endpoint, prefix):
        return AwsProvider(region="us-east-1", endpoint_url=moto_endpoint, prefix=prefix, timeout=2)

    @pytest.fixture
    def unreachable_provider(self):
        return AwsProvider(region="us-east-1", endpoint_url=f"http://127.0.0.1:{free_port()}", timeout=1)

    @pytest.fixture
    def store(self, moto_endpoint, prefix):
        import boto3

        client = boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=moto_endpoint)

        def store(name, value):
            client.create_secret(Name=prefix + name, SecretString=value)
        return store

    def test_json_secret_key_is_addressable(self, provider, store, unique_name):
        store(unique_name, '{"username": "ops", "password": "json-pass-1"}')
        assert provider.get(f"{unique_name}:password").value == "json-pass-1"
        provider.set(f"{unique_name}:password", "json-pass-2")
        assert provider.get(f"{unique_name}:password").value == "json-pass-2"
        assert provider.get(f"{unique_name}:username").value == "ops"
        with pytest.raises(SecretNotFound):
            provider.get(f"{unique_name}:absent")

    def test_set_creates_a_missing_secret(self, provider, unique_name):
        provider.set(unique_name, "created-1")
        assert provider.get(unique_name).value == "created-1"

    def test_selected_by_name_and_imported_lazily(self, moto_endpoint):
        provider = get_provider("aws", region="us-east-1", endpoint_url=moto_endpoint)
        assert isinstance(provider, AwsProvider)


class TestVaultProvider(ProviderTestsMixin):
    @pytest.fixture
    def path(self):
        return f"opsdesk-{uuid.uuid4().hex[:8]}"

    @pytest.fixture
    def root_token(self, bao_server):
        return bao_server[1]

    @pytest.fixture
    def provider(self, bao_server, path):
        address, token = bao_server
        return VaultProvider(address=address, credentials=VaultCredentials(token=token), path=path, timeout=2)

    @pytest.fixture
    def unreachable_provider(self):
        return VaultProvider(address=f"http://127.0.0.1:{free_port()}", credentials=VaultCredentials(token="x"), timeout=1)

    @pytest.fixture
    def store(self, bao_server, path):
        import hvac

        client = hvac.Client(url=bao_server[0], token=bao_server[1])

        def store(name, value):
            client.secrets.kv.v2.create_or_update_secret(path=f"{path}/{name}", secret={"value": value}, mount_point="secret")
        return store

    @pytest.fixture(autouse=True)
    def _credentials(self, bao_server):
        self._token = bao_server[1]

    def credentials(self):
        return [self._token]

    def test_token_without_policy_is_denied(self, bao_server, path, store, unique_name):
        import hvac

        store(unique_name, "guarded-1")
        root = hvac.Client(url=bao_server[0], token=bao_server[1])
        weak_token = root.auth.token.create(policies=["default"], ttl="10m")["auth"]["client_token"]
        provider = VaultProvider(address=bao_server[0], credentials=VaultCredentials(token=weak_token), path=path)
        with pytest.raises(AccessDenied) as raised:
            provider.get(unique_name)
        assert "guarded-1" not in str(raised.value) and weak_token not in str(raised.value)

    def test_approle_login_renews_then_logs_in_again_after_max_ttl(self, bao_server, path, store, unique_name):
        import hvac

        store(unique_name, "approle-value-1")
        root = hvac.Client(url=bao_server[0], token=bao_server[1])
        policy = f"opsdesk-{path}"
        root.sys.create_or_update_policy(name=policy, policy=f'path "secret/data/{path}/*" {{ capabilities = ["read", "create", "update"] }}')
        if "approle/" not in root.sys.list_auth_methods():
            root.sys.enable_auth_method("approle")
        role = f"role-{path}"
        root.auth.approle.create_or_update_approle(role_name=role, token_policies=[policy], token_ttl="3s", token_max_ttl="6s")
        role_id = root.auth.approle.read_role_id(role_name=role)["data"]["role_id"]
        secret_id = root.auth.approle.generate_secret_id(role_name=role)["data"]["secret_id"]
        provider = VaultProvider(address=bao_server[0], credentials=VaultCredentials(role_id=role_id, secret_id=secret_id), path=path)
        provider.renew_margin_seconds = 1.5
        tokens = set()
        deadline = time.monotonic() + 9
        while time.monotonic() < deadline:
            assert provider.get(unique_name).value == "approle-value-1"
            tokens.add(provider._client.token)
            time.sleep(0.5)
        # Past the 6 s max TTL, the provider had to log in again: a second token.
        assert len(tokens) >= 2
        assert secret_id not in repr(provider) and role_id not in repr(provider)

    def test_missing_address_or_credentials_is_a_configuration_error(self):
        with pytest.raises(ProviderMisconfigured, match="VAULT_ADDR"):
            VaultProvider(address="", credentials=VaultCredentials(token="x"))
        with pytest.raises(ProviderMisconfigured, match="VAULT_TOKEN"):
            VaultProvider(address="http://127.0.0.1:1", credentials=VaultCredentials())


class TestAzureProvider(ProviderTestsMixin):
    @pytest.fixture
    def vault_url(self):
        # The SDK caches each vault's challenge per URL: a fresh vault per test sees the 401 first.
        return f"https://opsdesk-{uuid.uuid4().hex[:8]}.vault.azure.net"

    @pytest.fixture
    def token(self):
        return uuid.uuid4().hex

    @pytest.fixture
    def double(self, token, vault_url):
        return KeyVaultDouble(vault_url=vault_url, token=token)

    @pytest.fixture
    def provider(self, double, token, vault_url):
        self._token = token
        return AzureProvider(vault_url=vault_url, credential=StaticTokenCredential(token), transport=double, timeout=2)

    @pytest.fixture
    def unreachable_provider(self, token, vault_url):
        double = KeyVaultDouble(vault_url=vault_url, token=token)
        double.fail_with = 503
        return AzureProvider(vault_url=vault_url, credential=StaticTokenCredential(token), transport=double)

    @pytest.fixture
    def store(self, double):
        def store(name, value):
            double.put(name.replace("_", "-"), value)
        return store

    def credentials(self):
        return [self._token]

    def test_answers_the_401_challenge_then_sends_the_token(self, provider, double, store, unique_name):
        store(unique_name, "challenged-1")
        provider.get(unique_name)
        assert double.requests[0][2] is False  # first request: no token, challenge returned
        assert all(authorised for _, _, authorised in double.requests[1:])
        assert double.requests[1][1] == f"/secrets/{unique_name.replace('_', '-')}/"

    def test_underscores_map_to_dashes(self, provider, double, unique_name):
        provider.set(unique_name, "dashed-1")
        assert unique_name.replace("_", "-") in double.secrets

    def test_wrong_token_and_403_are_access_denied(self, double, store, unique_name, vault_url):
        store(unique_name, "guarded-1")
        provider = AzureProvider(vault_url=vault_url, credential=StaticTokenCredential("wrong"), transport=double)
        with pytest.raises(AccessDenied):
            provider.get(unique_name)
        double.fail_with = 403
        right = AzureProvider(vault_url=vault_url, credential=StaticTokenCredential(double.token), transport=double)
        with pytest.raises(AccessDenied):
            right.get(unique_name)

    def test_missing_vault_url_is_a_configuration_error(self):
        with pytest.raises(ProviderMisconfigured, match="AZURE_KEY_VAULT_URL"):
            AzureProvider(vault_url="")


def test_unknown_provider_is_a_configuration_error():
    with pytest.raises(ProviderMisconfigured, match="Unknown SECRETS_PROVIDER"):
        get_provider("gcp")
    with pytest.raises(ProviderMisconfigured, match="not a SecretProvider"):
        get_provider("secrets_app.manager.SecretManager")


def test_an_unknown_provider_option_is_a_configuration_error_naming_it():
    with pytest.raises(ProviderMisconfigured, match="'regoin'"):
        get_provider("aws", regoin="eu-west-1")
    with pytest.raises(ProviderMisconfigured, match="no option 'adress'"):
        get_provider("azure", adress="https://example.vault.azure.net")

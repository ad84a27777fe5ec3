"""rotate_secret: the provider gets a new version, and every process drops the old value."""
from __future__ import annotations

import io
import stat
import sys
import time

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from backups_app.models import AuditEntry
from secrets_app import default_manager, get_secret
from secrets_app.models import SecretAccess
from secrets_app.providers.local import LocalProvider
from tests.conftest import require_service
from tests.secrets.conftest import ScriptedProvider
from tests.secrets.two_processes import rotation_propagation_seconds

pytestmark = pytest.mark.django_db


@pytest.fixture
def local_env_file(tmp_path, use_default_manager):
    env_file = tmp_path / ".env"
    env_file.write_text("DEBUG=on\nSGP_TOKEN='old-token-value'\n")
    env_file.chmod(0o640)
    use_default_manager(LocalProvider(env_file=env_file, environ={}, process_environment=set()))
    return env_file


def run_rotate(*args, stdin: str = "") -> str:
    out = io.StringIO()
    original = sys.stdin
    sys.stdin = io.StringIO(stdin)
    try:
        call_command("rotate_secret", *args, stdout=out)
    finally:
        sys.stdin = original
    return out.getvalue()


def test_rotate_from_stdin_rewrites_dotenv_and_drops_the_cached_value(local_env_file):
    assert get_secret("SGP_TOKEN") == "old-token-value"
    output = run_rotate("SGP_TOKEN", stdin="new-token-value\n")
    assert get_secret("SGP_TOKEN") == "new-token-value"
    assert "SGP_TOKEN='new-token-value'" in local_env_file.read_text()
    assert stat.S_IMODE(local_env_file.stat().st_mode) == 0o640
    assert "new-token-value" not in output and "old-token-value" not in output
    assert default_manager.fingerprint("new-token-value") in output
    entry = AuditEntry.objects.get(action="rotate_secret")
    assert (entry.target, entry.source, entry.outcome) == ("SGP_TOKEN", "cli", "success")
    assert "new-token-value" not in entry.detail
    assert SecretAccess.objects.filter(name="SGP_TOKEN", outcome="rotated").exists()


def test_rotate_generate_writes_a_long_random_value(local_env_file):
    run_rotate("SGP_TOKEN", "--generate")
    value = get_secret("SGP_TOKEN")
    assert len(value) >= 32 and value != "old-token-value"
    run_rotate("SGP_TOKEN", "--generate")
    assert get_secret("SGP_TOKEN") != value


@pytest.mark.parametrize("stdin, message", [("\n", "empty"), ("a\x00b\n", "NUL")])
def test_bad_values_are_refused_and_nothing_is_written(local_env_file, stdin, message):
    before = local_env_file.read_text()
    with pytest.raises(CommandError, match=message):
        run_rotate("SGP_TOKEN", stdin=stdin)
    assert local_env_file.read_text() == before
    assert get_secret("SGP_TOKEN") == "old-token-value"


def test_provider_failure_during_rotation_is_a_command_error_and_audited(use_default_manager):
    provider = ScriptedProvider({"SGP_TOKEN": "value-1"})
    use_default_manager(provider, fallback=LocalProvider(environ={}))

    def refuse(name, value):
        from secrets_app.exceptions import AccessDenied

        raise AccessDenied(f"not allowed to write {name}")

    provider.set = refuse
    with pytest.raises(CommandError, match="not allowed"):
        run_rotate("SGP_TOKEN", stdin="value-2\n")
    assert AuditEntry.objects.get(action="rotate_secret").outcome == "failure"


def test_without_redis_other_processes_see_the_rotation_within_the_ttl():
    provider = ScriptedProvider({"TOKEN": "before-1"})
    from secrets_app.manager import SecretManager

    reader = SecretManager(provider, fallback=LocalProvider(environ={}), ttl=0.3, fingerprint_key=b"k")
    assert reader.get("TOKEN") == "before-1"
    provider.set("TOKEN", "after-2")
    assert reader.get("TOKEN") == "before-1"
    time.sleep(0.35)
    assert reader.get("TOKEN") == "after-2"


@pytest.mark.services
@pytest.mark.slow
def test_rotation_reaches_another_process_within_five_seconds_through_redis(tmp_path, moto_endpoint, redis_url):
    require_service("Redis", "127.0.0.1", 6379)
    seconds = rotation_propagation_seconds(tmp_path, moto_endpoint, redis_url)
    assert seconds < 5, f"the other process saw the rotation after {seconds:.2f} s"


@pytest.mark.services
def test_listener_drops_a_rotated_value_and_catches_up_after_a_missed_message(redis_url, unique_prefix):
    import redis

    from secrets_app.manager import SecretManager
    from secrets_app.rotation import rotation_publish

    provider = ScriptedProvider({"TOKEN": "before-1", "OTHER": "other-1"})
    manager = SecretManager(provider, fallback=LocalProvider(environ={}), ttl=3600, fingerprint_key=b"k")
    manager.start_rotation_listener(redis_url=redis_url, prefix=unique_prefix)
    try:
        assert manager.rotation_listener.ready.wait(10)
        assert manager.get("TOKEN") == "before-1" and manager.get("OTHER") == "other-1"
        provider.set("TOKEN", "after-2")
        rotation_publish(redis_url=redis_url, prefix=unique_prefix, name="TOKEN")
        deadline = time.monotonic() + 5
        while manager.get("TOKEN") != "after-2":
            assert time.monotonic() < deadline, "the published rotation was not applied"
            time.sleep(0.01)
        # No pub/sub message this time (as if it was lost): the hash comparison still catches it.
        provider.set("OTHER", "other-2")
        client = redis.Redis.from_url(redis_url)
        client.hset(f"{unique_prefix}:rotations", "OTHER", "missed-message")
        deadline = time.monotonic() + 5
        while manager.get("OTHER") != "other-2":
            assert time.monotonic() < deadline, "the hash comparison did not catch the rotation"
            time.sleep(0.05)
        client.delete(f"{unique_prefix}:rotations")
        client.close()
    finally:
        manager.stop_rotation_listener()


def test_rotation_succeeds_when_redis_is_down_and_says_so(use_default_manager, caplog):
    from secrets_app.services import secret_rotate
    from tests.secrets.conftest import free_port

    provider = ScriptedProvider({"SGP_TOKEN": "value-1"})
    use_default_manager(provider, fallback=LocalProvider(environ={}))
    default_manager.rotation_redis_url = f"redis://127.0.0.1:{free_port()}/0"
    default_manager.rotation_prefix = "opsdesk-test-down"
    result = secret_rotate(name="SGP_TOKEN", value="value-2", source="cli")
    assert result.broadcast is False
    assert get_secret("SGP_TOKEN") == "value-2"
    assert "within SECRETS_CACHE_TTL" in caplog.text


def test_rotation_client_understands_sentinel_urls_like_the_cache():
    from redis.sentinel import SentinelConnectionPool

    from secrets_app.rotation import _client

    client = _client("sentinel://:p%40ss@127.0.0.1:26379,127.0.0.2:26380/mymaster/2")
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "mymaster"
    assert pool.connection_kwargs["db"] == 2 and pool.connection_kwargs["password"] == "p@ss"
    sentinels = [sentinel.connection_pool.connection_kwargs for sentinel in pool.sentinel_manager.sentinels]
    assert [(kwargs["host"], kwargs["port"]) for kwargs in sentinels] == [("127.0.0.1", 26379), ("127.0.0.2", 26380)]
    client.close()

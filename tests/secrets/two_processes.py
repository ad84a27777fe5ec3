"""Rotation across two real processes: a reader (rotation_worker.py) and `manage.py rotate_secret`.

Shared by tests/secrets/test_rotation.py and benchmarks/secrets_benchmark.py; needs no Django
set-up in the calling process.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

from tests.secrets.servers import AWS_TEST_ENVIRONMENT

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def process_environment(tmp_path, moto_endpoint, prefix, redis_url, key_prefix) -> dict:
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("DATABASE_URL", "SECRETS_", "AWS_", "VAULT_"))}
    environment.update(AWS_TEST_ENVIRONMENT)
    environment.update({
        "DJANGO_SETTINGS_MODULE": "ops_project.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'ops.sqlite3'}",
        "SECRETS_PROVIDER": "aws", "AWS_ENDPOINT_URL_SECRETS_MANAGER": moto_endpoint,
        "SECRETS_AWS_PREFIX": prefix, "SECRETS_CACHE_TTL": "3600",
        "SECRETS_FINGERPRINT_KEY_FILE": str(tmp_path / "fingerprint.key"),
        "REDIS_URL": redis_url, "CACHE_KEY_PREFIX": key_prefix,
        "SECRETS_ENV_FILE": str(tmp_path / ".env"),
    })
    return environment


def rotation_propagation_seconds(tmp_path: Path, moto_endpoint: str, redis_url: str) -> float:
    """Start a reader process, rotate from a second process, return how long the reader took to
    see the new value after the rotation was announced (the time written into the Redis hash)."""
    import boto3
    import redis

    prefix = f"opsdesk-{uuid.uuid4().hex[:8]}/"
    boto3.client("secretsmanager", region_name="us-east-1", endpoint_url=moto_endpoint).create_secret(
        Name=f"{prefix}SGP_TOKEN", SecretString="before-rotation-1")
    key_prefix = f"opsdesk-test-{uuid.uuid4().hex[:12]}"
    environment = process_environment(tmp_path, moto_endpoint, prefix, redis_url, key_prefix)
    subprocess.run([sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=PROJECT_ROOT,
                   env=environment, check=True, timeout=120)
    reader = subprocess.Popen([sys.executable, "-m", "tests.secrets.rotation_worker", "SGP_TOKEN"], cwd=PROJECT_ROOT,
                              env=environment, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        ready = json.loads(reader.stdout.readline())
        assert ready["event"] == "ready" and ready["listener"], ready
        rotated = subprocess.run([sys.executable, "manage.py", "rotate_secret", "SGP_TOKEN"], cwd=PROJECT_ROOT,
                                 env=environment, input="after-rotation-2\n", capture_output=True, text=True, timeout=60)
        assert rotated.returncode == 0, rotated.stderr
        assert "after-rotation-2" not in rotated.stdout + rotated.stderr
        assert "through Redis" in rotated.stdout
        changed = json.loads(reader.stdout.readline())
        assert changed["event"] == "changed" and changed["fingerprint"] != ready["fingerprint"]
        client = redis.Redis.from_url(redis_url)
        announced = float(client.hget(f"{key_prefix}:secrets:rotations", "SGP_TOKEN").split(b"-")[0])
        client.delete(f"{key_prefix}:secrets:rotations")
        client.close()
        return max(0.0, changed["at"] - announced)
    finally:
        reader.stdin.close()
        reader.wait(timeout=20)

"""A real S3 endpoint over HTTP for tests: moto's server mode in a subprocess on 127.0.0.1.

Requests go through botocore's HTTP stack to a separate process, so connection failures, aborted
multipart uploads and read-backs behave as against a remote store (no in-process patching).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import boto3
from botocore.config import Config

MOTO_SERVER = Path(sys.executable).with_name("moto_server")

# moto accepts any credentials; these are not secrets.
TEST_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "opsdesk-test", "AWS_SECRET_ACCESS_KEY": "opsdesk-test"}
REGION = "us-east-1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MotoServer:
    """One moto_server process; `stop()` kills it (its in-memory buckets go with it)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MotoServer:
        executable = str(MOTO_SERVER) if MOTO_SERVER.exists() else shutil.which("moto_server")
        self.process = subprocess.Popen(
            [executable, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**os.environ, **TEST_CREDENTIALS}, start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError("moto_server exited at start") from None
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("moto_server did not start")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def client(self):
        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name=REGION,
            aws_access_key_id=TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            config=Config(retries={"max_attempts": 1}),
        )


def offsite_settings(settings, server: MotoServer, *, bucket: str | None = None, prefix: str = "backups") -> str:
    """Point the `backups_offsite` storage at `server`, in a new bucket; returns the bucket name."""
    from boto3.s3.transfer import TransferConfig

    bucket = bucket or f"opsdesk-test-{uuid.uuid4().hex[:12]}"
    server.client().create_bucket(Bucket=bucket)
    storages = {name: dict(config) for name, config in settings.STORAGES.items()}
    storages["backups_offsite"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": bucket,
            "endpoint_url": server.endpoint_url,
            "region_name": REGION,
            "location": prefix,
            "default_acl": "private",
            "file_overwrite": True,
            "access_key": TEST_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            "secret_key": TEST_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            # S3's smallest part: a file of a few MiB goes up as a real multipart upload.
            "transfer_config": TransferConfig(
                multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024, use_threads=False,
            ),
            # Fail fast once the server is gone instead of retrying for a minute.
            "client_config": Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
        },
    }
    settings.STORAGES = storages
    settings.BACKUP_OFFSITE_BUCKET = bucket
    return bucket

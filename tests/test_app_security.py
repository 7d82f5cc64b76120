"""Exposure: loopback by default, no other address without --auth, and auth enforced on every API."""

import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_any_other_address_without_auth_is_refused(tmp_path):
    result = subprocess.run(
        [sys.executable, "app.py", "--host", "0.0.0.0", "--runs-dir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert "--auth" in result.stderr and "reward" in result.stderr


@pytest.fixture(scope="module")
def app_with_auth(tmp_path_factory):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "app.py", "--port", str(port), "--auth", "alice:secret",
         "--runs-dir", str(tmp_path_factory.mktemp("runs"))],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            http_status(url)
            break
        except OSError:
            time.sleep(0.5)
    yield url
    process.terminate()
    process.wait(timeout=30)


def test_unauthenticated_http_is_refused(app_with_auth):
    assert http_status(app_with_auth + "config") == 401
    assert http_status(app_with_auth + "gradio_api/info") == 401


def test_gradio_client_needs_the_password(app_with_auth):
    from gradio_client import Client

    with pytest.raises(Exception, match="credentials|login|Login"):
        Client(app_with_auth, verbose=False)
    with pytest.raises(Exception, match="login|Login"):
        Client(app_with_auth, auth=("alice", "wrong"), verbose=False)
    client = Client(app_with_auth, auth=("alice", "secret"), verbose=False)
    assert client.view_api(return_format="dict", print_info=False)["named_endpoints"]

"""README's run command on a fresh venv: requirements.txt alone serves tiny-tutor, with no torch."""

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT, free_port, wait_for_page

pytestmark = pytest.mark.slow


def test_requirements_serve_tiny_tutor_without_torch(tmp_path):
    from gradio_client import Client

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    subprocess.run(
        [python, "-m", "pip", "install", "-q", "--disable-pip-version-check",
         "-r", str(ROOT / "requirements.txt")],
        check=True, timeout=1800,
    )  # fmt: skip
    no_torch = subprocess.run([python, "-c", "import torch"], capture_output=True, text=True)
    assert "No module named 'torch'" in no_torch.stderr

    port = free_port()
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1",
           "PLAYGROUND_CACHE": str(tmp_path / "cache")}  # fmt: skip
    env.pop("PLAYGROUND_MODEL", None)
    server = subprocess.Popen(
        [python, "app.py", "--port", str(port)], cwd=ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}/"
        assert "tiny-tutor" in wait_for_page(url, server)
        reply = Client(url, verbose=False).predict(
            message="What is 7 plus 5?", history="[]", max_new_tokens=128, temperature=0.0,
            api_name="/chat",
        )  # fmt: skip
        assert reply.endswith("So 7 plus 5 is 12.")
    finally:
        server.terminate()
        server.communicate(timeout=60)

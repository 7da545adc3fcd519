"""`aed-tf serve` in a child process, for the tests that talk to it over HTTP or drive its page."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

STARTUP_SECONDS = 120  # importing TensorFlow and Gradio and loading the model, on a busy 2-core machine


@dataclasses.dataclass
class ChildServer:
    url: str  # of the page; the API is url + "api/predict"
    process: subprocess.Popen
    log: Path  # its standard output and error

    def output(self) -> str:
        return self.log.read_text()[-3000:]


@contextlib.contextmanager
def aed_tf_serve(
    args: Sequence[str], folder: Path, env: dict[str, str] | None = None
) -> Iterator[ChildServer]:
    """`aed-tf serve ARGS --host 127.0.0.1 --port <a free one>`, its output in `folder`/serve.log
    and Gradio's uploads in `folder`/gradio (`env` adds to the environment); yields once its
    /docs answers, and stops it on leaving."""
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = folder / "serve.log"
    environment = {
        **os.environ,
        "GRADIO_TEMP_DIR": str(folder / "gradio"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        **(env or {}),
    }
    command = [sys.executable, "-m", "aed_tf", "serve", *args, "--host", "127.0.0.1", "--port", str(port)]
    with open(log, "w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, env=environment)
    server = ChildServer(f"http://127.0.0.1:{port}/", process, log)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"aed-tf serve exited with {process.returncode}:\n{server.output()}")
            try:
                if httpx.get(server.url + "docs", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"aed-tf serve did not answer in {STARTUP_SECONDS} s:\n{server.output()}")
            time.sleep(0.5)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

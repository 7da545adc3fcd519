"""The HTTP API of `aed-tf serve`: real requests on 127.0.0.1 to the server in a child process.
`POST /api/predict` answers what EmotionRecognizer gives for the same file, as `aed-tf predict`
writes it; audio it cannot use gets 400 with the recognizer's reason, an upload over the limit 413,
and concurrent requests are all answered."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile as sf

from aed_tf import EmotionRecognizer
from aed_tf.audio import AudioError, decode
from aed_tf.cli import main
from tests.conftest import RAVDESS_DIR, TESS_DIR
from tests.responsive import make_responsive_run
from tests.servers import STARTUP_SECONDS, aed_tf_serve
from tests.test_recognizer import BAD_FILES

RAVDESS_CLIP = RAVDESS_DIR / "Actor_01" / "03-01-05-01-01-01-01.flac"  # 3.9 s
TESS_CLIP = TESS_DIR / "YAF_fear" / "YAF_bath_fear.flac"
MAX_UPLOAD_MB = 1  # small, so that a 2 MB upload is over it and a 20 s WAV (640 kB) is not
ANSWER_SECONDS = 120  # for one request, behind up to 19 others on a busy machine


@dataclasses.dataclass
class Served:
    url: str  # of the page; the API is url + "api/predict"
    process: subprocess.Popen
    temp_dir: Path  # the server's TMPDIR

    def predict(
        self,
        path: Path | None = None,
        content: bytes | None = None,
        raw: str | None = None,
        timeline: bool = False,
    ) -> httpx.Response:
        """POSTs the file at `path` (or `content`) as the form field `file`, or as the raw body
        with Content-Type `raw`."""
        content = path.read_bytes() if content is None else content
        name = path.name if path else "upload.wav"
        request = (
            {"content": content, "headers": {"Content-Type": raw}}
            if raw
            else {"files": {"file": (name, content, "application/octet-stream")}}
        )
        return httpx.post(
            self.url + "api/predict",
            params={"timeline": "1"} if timeline else None,
            timeout=ANSWER_SECONDS,
            **request,
        )


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory) -> Path:
    """A run whose model gives clips different labels (the tiny run's gives all the same one)."""
    return make_responsive_run(tiny_run, tmp_path_factory.mktemp("api") / "run")


@pytest.fixture(scope="module")
def recognizer(run) -> EmotionRecognizer:
    return EmotionRecognizer.load(run)


@pytest.fixture(scope="module")
def server(run, tmp_path_factory) -> Iterator[Served]:
    """`aed-tf serve RUN --host 127.0.0.1 --port N --max-upload-mb 1` running."""
    folder = tmp_path_factory.mktemp("api-server")
    temp_dir = folder / "tmp"
    temp_dir.mkdir()
    args = [str(run), "--max-upload-mb", str(MAX_UPLOAD_MB)]
    with aed_tf_serve(args, folder, env={"TMPDIR": str(temp_dir)}) as child:
        yield Served(child.url, child.process, temp_dir)
        assert child.process.poll() is None, f"aed-tf serve died:\n{child.output()}"
        assert "Traceback" not in child.log.read_text(), child.output()


def assert_close(actual: Any, expected: Any, path: str = "") -> None:
    """Equal JSON, floats to 1e-6: the server's model call may batch differently."""
    if isinstance(expected, dict):
        assert isinstance(actual, dict) and actual.keys() == expected.keys(), path
        for key in expected:
            assert_close(actual[key], expected[key], f"{path}.{key}")
    elif isinstance(expected, (list, tuple)):
        assert isinstance(actual, list) and len(actual) == len(expected), path
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, f"{path}[{i}]")
    elif isinstance(expected, float) and not isinstance(actual, bool):
        assert actual == pytest.approx(expected, abs=1e-6), path
    else:
        assert actual == expected, path


def leftovers(server: Served) -> list[str]:
    """Temporary folders of the API's uploads still on disk."""
    return [p.name for p in server.temp_dir.glob("aed-tf-api-*")]


def test_a_clip_gets_the_json_of_predict(server, recognizer, shared_datasets):
    labels = []
    for clip in (RAVDESS_CLIP, TESS_CLIP):
        expected = recognizer.predict(clip).to_dict()
        response = server.predict(clip)
        assert response.status_code == 200 and response.headers["content-type"] == "application/json"
        answer = response.json()
        assert answer["label"] == expected["label"] and answer["source"] == clip.name
        assert_close(answer, {**expected, "source": clip.name})
        assert math.isclose(sum(answer["probabilities"].values()), 1, abs_tol=1e-5)
        # The raw bytes as the body: the same answer, without a file name.
        raw = server.predict(clip, raw="audio/flac")
        assert raw.status_code == 200
        assert_close(raw.json(), {**expected, "source": "<upload>"})
        labels.append(answer["label"])
    assert labels[0] != labels[1]  # the answer follows the audio, not a constant
    assert leftovers(server) == []


def _write_bad(case: str, folder: Path) -> Path:
    make, _ = BAD_FILES[case]
    path = folder / (re.sub(r"\W+", "-", case) + (".flac" if "FLAC" in case else ".wav"))
    make(path)
    return path


def test_a_file_that_cannot_be_used_gets_400_with_the_reason(server, recognizer, tmp_path):
    for case in BAD_FILES:  # empty, not audio, truncated, zero samples, NaN, infinite
        path = _write_bad(case, tmp_path)
        with pytest.raises(AudioError) as raised:
            recognizer.predict(path)
        for response in (
            server.predict(path),
            server.predict(path, raw="audio/flac" if "FLAC" in case else "audio/wav"),
            server.predict(path, timeline=True),
        ):
            assert (response.status_code, response.json()) == (400, {"error": raised.value.reason}), case
    assert leftovers(server) == []


def test_silence_gets_no_label(server, tmp_path):
    silence = tmp_path / "silence.wav"
    sf.write(silence, np.zeros(3 * 16000, np.float32), 16000)
    response = server.predict(silence)
    assert response.status_code == 200
    answer = response.json()
    assert answer["label"] is None and answer["probabilities"] == {} and answer["speech_found"] is False


def test_an_upload_over_the_limit_gets_413(server, shared_datasets):
    too_big = np.random.default_rng(0).bytes(2 * 1024 * 1024)
    for response in (server.predict(content=too_big), server.predict(content=too_big, raw="audio/wav")):
        assert response.status_code == 413
        assert response.json() == {
            "error": f"the upload is over the limit of {MAX_UPLOAD_MB} MB (aed-tf serve --max-upload-mb)"
        }
    assert server.predict(RAVDESS_CLIP).status_code == 200  # and the server goes on
    assert leftovers(server) == []


def test_a_request_that_is_not_audio_gets_a_4xx_with_a_reason(server):
    response = httpx.post(
        server.url + "api/predict",
        content=b"x=1",
        timeout=ANSWER_SECONDS,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 415 and "form field 'file'" in response.json()["error"]
    response = httpx.post(
        server.url + "api/predict", files={"audio": ("a.wav", b"x")}, timeout=ANSWER_SECONDS
    )
    assert response.status_code == 400 and "form field 'file'" in response.json()["error"]
    response = httpx.post(
        server.url + "api/predict",
        params={"timeline": "maybe"},
        files={"file": ("a.wav", b"x")},
        timeout=ANSWER_SECONDS,
    )
    assert response.status_code == 400 and response.json()["error"].startswith("timeline: ")


def test_a_long_recording_gets_its_timeline(server, recognizer, shared_datasets, tmp_path):
    clips = sorted(RAVDESS_DIR.glob("Actor_0[1-4]/*.flac"))[::7]
    samples, seconds = [], 0.0
    for clip in clips:
        samples.append(decode(clip, 16000).samples)
        seconds += len(samples[-1]) / 16000
        if seconds >= 20:
            break
    long = tmp_path / "long.wav"
    sf.write(long, np.concatenate(samples), 16000, subtype="PCM_16")  # ~20 s, 640 kB
    expected = recognizer.timeline(long).to_dict()
    response = server.predict(long, timeline=True)
    assert response.status_code == 200
    answer = response.json()
    assert_close(
        answer,
        {**expected, "source": long.name, "prediction": {**expected["prediction"], "source": long.name}},
    )
    assert answer["duration"] >= 20 and answer["segments"] and answer["shares"]
    assert answer["segments"][-1]["end"] == pytest.approx(answer["duration"], abs=0.01)
    assert math.isclose(sum(answer["shares"].values()), 1, abs_tol=1e-5)
    assert leftovers(server) == []


def test_20_concurrent_requests_are_all_answered(server, recognizer, shared_datasets):
    expected = {clip: recognizer.predict(clip).label for clip in (RAVDESS_CLIP, TESS_CLIP)}
    clips = [RAVDESS_CLIP, TESS_CLIP] * 10
    with ThreadPoolExecutor(len(clips)) as pool:
        responses = list(pool.map(server.predict, clips))
    assert [r.status_code for r in responses] == [200] * len(clips)
    assert [r.json()["label"] for r in responses] == [expected[clip] for clip in clips]
    assert server.process.poll() is None
    assert leftovers(server) == []


def test_the_docs_and_the_page_are_served(server):
    docs = httpx.get(server.url + "docs", timeout=30)
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    schema = httpx.get(server.url + "openapi.json", timeout=30).json()
    assert "post" in schema["paths"]["/api/predict"]
    page = httpx.get(server.url, timeout=30)
    assert page.status_code == 200 and "gradio" in page.text.lower()


def test_a_bad_limit_or_a_taken_port_is_one_line_and_status_2(server, run, capsys):
    assert main(["serve", str(run), "--max-upload-mb", "0"]) == 2
    assert (
        capsys.readouterr().err == "aed-tf serve: error: --max-upload-mb must be a positive number, got 0\n"
    )
    port = server.url.rstrip("/").rsplit(":", 1)[1]
    taken = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from aed_tf.cli import main; sys.exit(main())",
            "serve",
            str(run),
            "--port",
            port,
        ],
        capture_output=True,
        text=True,
        timeout=STARTUP_SECONDS,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert taken.returncode == 2
    assert taken.stderr.strip().splitlines()[-1] == (
        f"aed-tf serve: error: cannot serve on 127.0.0.1:{port}: Address already in use"
    )


def test_uploads_to_the_page_are_deleted_when_the_server_stops(run, tmp_path, shared_datasets):
    """Gradio keeps an upload in its temporary folder for an hour; a stopped server leaves none."""
    import signal

    uploads = tmp_path / "gradio"
    with aed_tf_serve([str(run)], tmp_path, env={"TMPDIR": str(tmp_path)}) as child:
        url, process = child.url, child.process
        # What the page's audio component does with a file: Gradio's upload route.
        answer = httpx.post(
            url + "gradio_api/upload", files={"files": ("clip.flac", RAVDESS_CLIP.read_bytes())}, timeout=60
        )
        assert answer.status_code == 200, answer.text
        [stored] = answer.json()
        assert Path(stored).is_file() and Path(stored).is_relative_to(uploads)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0 or process.returncode == -signal.SIGTERM
        assert [p for p in uploads.rglob("*") if p.is_file()] == []


# -- a full disk -------------------------------------------------------------------------------------


def test_a_full_disk_gets_507_with_the_reason_and_keeps_no_partial_file(
    recognizer, monkeypatch, shared_datasets
):
    """Fault injection inside the server (a patched write): the upload that the disk cannot hold
    gets 507 and its reason, its partial file goes, and the next upload is answered as usual,
    on the API and on the page's own upload route."""
    import errno

    import gradio.route_utils
    from fastapi.testclient import TestClient

    import aed_tf.serving.web as web

    data = RAVDESS_CLIP.read_bytes()
    reason = "the server could not store the upload: No space left on device (try again later)"
    written: list[Path] = []
    real_write_upload = web._write_upload

    async def disk_full(path: Path, chunks) -> None:
        with open(path, "wb") as file:
            async for chunk in chunks:
                file.write(chunk[:100])  # a partial file, then the disk is full
                break
        written.append(path)
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    app = web.build_server(recognizer, "run")
    with TestClient(app) as client:
        monkeypatch.setattr(web, "_write_upload", disk_full)
        for request in (
            {"files": {"file": ("clip.flac", data, "audio/flac")}},
            {"content": data, "headers": {"Content-Type": "audio/flac"}},
        ):
            answer = client.post("/api/predict", **request)
            assert (answer.status_code, answer.json()) == (507, {"error": reason})
        assert len(written) == 2 and not any(path.exists() or path.parent.exists() for path in written)
        monkeypatch.setattr(web, "_write_upload", real_write_upload)
        answer = client.post("/api/predict", files={"file": ("clip.flac", data, "audio/flac")})
        assert answer.status_code == 200 and answer.json()["source"] == "clip.flac"

        # The page's uploads go through Gradio's route into its upload folder.
        (page,) = [route.app for route in app.routes if getattr(route, "path", None) == ""]
        upload_dir = Path(page.uploaded_file_dir)
        upload_dir.mkdir(parents=True, exist_ok=True)
        before = set(upload_dir.iterdir())
        real_write = gradio.route_utils.GradioUploadFile.write

        async def page_disk_full(self, chunk: bytes) -> None:
            await real_write(self, chunk[:100])
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(gradio.route_utils.GradioUploadFile, "write", page_disk_full)
        answer = client.post("/gradio_api/upload", files={"files": ("clip.flac", data, "audio/flac")})
        assert (answer.status_code, answer.text) == (507, reason)
        assert set(upload_dir.iterdir()) == before
        monkeypatch.setattr(gradio.route_utils.GradioUploadFile, "write", real_write)
        answer = client.post("/gradio_api/upload", files={"files": ("clip.flac", data, "audio/flac")})
        assert answer.status_code == 200 and len(answer.json()) == 1

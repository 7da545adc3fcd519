"""The web demo: `aed-tf serve RUN_DIR`, a Gradio app around the run's EmotionRecognizer.

A person uploads a file or records from the microphone, and sees the emotion with every class's
probability as bars and, for audio longer than one window, the timeline: the plot of
`Timeline.plot` and its segments as a table. The answer is the recognizer's, so the page shows
what `aed-tf predict` prints for the same file. Audio the recognizer cannot use gets its reason in
the status line ("empty file (0 bytes)"), never a traceback; audio without speech gets "no speech
found" and no emotion; warnings (padded, clipping, a low sample rate) are listed under the answer.

Beside the page, `POST /api/predict` takes an audio file (a multipart form field `file`, or the
raw bytes with an audio Content-Type) and answers the JSON of `aed-tf predict` for it, or of
`aed-tf predict --timeline` with `?timeline=1`; audio the recognizer cannot use gets 400 with its
reason, an upload over `--max-upload-mb` 413. FastAPI documents it at /docs.

Gradio's analytics and version check are off, so the app asks nothing of the internet, and
server-side rendering is off (it would need Node.js).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import mimetypes
import os
import re
import socket
import tempfile
import threading
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

# Read by Gradio when it is imported and when an app starts: no telemetry, no version check.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import fastapi  # noqa: E402
import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import uvicorn  # noqa: E402
from fastapi.exceptions import RequestValidationError  # noqa: E402
from starlette.concurrency import run_in_threadpool  # noqa: E402
from starlette.datastructures import UploadFile  # noqa: E402
from starlette.exceptions import HTTPException  # noqa: E402
from starlette.requests import ClientDisconnect  # noqa: E402

from aed_tf import __version__  # noqa: E402
from aed_tf.audio import AudioError  # noqa: E402
from aed_tf.errors import UserError  # noqa: E402
from aed_tf.serving.recognizer import (  # noqa: E402
    EmotionRecognizer,
    InputWarning,
    Prediction,
    Timeline,
    run_folders,
)

TITLE = "Speech emotion recognition"
SEGMENT_COLUMNS = ["start (s)", "end (s)", "emotion", "probability"]
DEFAULT_MAX_UPLOAD_MB = 100.0
# A multipart body is the file plus boundaries and part headers: this much more is let in before
# the file itself is measured against the limit.
MULTIPART_OVERHEAD = 64 * 1024
# The temporary file's suffix when the upload names none: libsndfile reads most formats by their
# header, but a suffix keeps the recognizer's reading the same as for a file on disk.
CONTENT_TYPE_SUFFIXES = {
    "audio/wav": ".wav",
    "audio/x-wav": ".wav",
    "audio/wave": ".wav",
    "audio/vnd.wave": ".wav",
    "audio/flac": ".flac",
    "audio/x-flac": ".flac",
    "audio/ogg": ".ogg",
    "audio/opus": ".opus",
    "audio/mpeg": ".mp3",
    "audio/mp3": ".mp3",
    "audio/aiff": ".aiff",
    "audio/x-aiff": ".aiff",
    "audio/basic": ".au",
}
UPLOAD_NAME = "<upload>"  # the `source` of an upload that gives no file name
# Where an upload is stored and cannot be: a full disk or quota, a read-only or forbidden folder.
# Answered 507 with the reason, the partial file removed; the next upload is unaffected.
STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def storage_reason(error: OSError) -> str:
    return f"the server could not store the upload: {error.strerror or error} (try again later)"


@dataclasses.dataclass(frozen=True)
class Answer:
    """What the page shows for one input."""

    status: str  # Markdown: the label and what was heard, or why the input was not used
    probabilities: dict[str, float] | None  # every class's, for gr.Label; None: no emotion
    timeline: np.ndarray | None = None  # the timeline plot as an RGB image, for longer audio
    segments: pd.DataFrame | None = None  # the timeline's segments, for longer audio


def analyse(recognizer: EmotionRecognizer, path: str | Path | None) -> Answer:
    """The answer for the audio file at `path` (None: nothing uploaded yet)."""
    if path is None:
        return Answer("Upload an audio file or record one to see its emotion.", None)
    name = _markdown_text(Path(path).name)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InputWarning)  # shown in the status line instead
            timeline = recognizer.timeline(path, progress=True)
    except AudioError as error:
        return Answer(f"**Could not use {name}:** {_markdown_text(error.reason)}", None)
    except UserError as error:
        return Answer(f"**Could not use {name}:** {_markdown_text(str(error))}", None)
    prediction = timeline.prediction
    heard = (
        f"{prediction.duration:.1f} s of audio ({prediction.sample_rate} Hz, "
        f"{prediction.channels} channel{'s' if prediction.channels > 1 else ''}), "
        f"{prediction.speech_seconds:.1f} s of speech"
    )
    if prediction.label is None:
        status = f"**No speech found** in {name}: {heard}. No emotion is given to silence."
    else:
        status = (
            f"**{prediction.label}** ({prediction.probabilities[prediction.label]:.0%}) in "
            f"{name}: {heard}; the mean of {prediction.windows} window"
            f"{'s' if prediction.windows > 1 else ''} of {recognizer.window_seconds:g} s."
        )
    status += "".join(f"\n- warning: {_markdown_text(message)}" for message in prediction.warnings)
    # A timeline is worth showing for speech longer than one window.
    over_time = prediction.speech_found and prediction.duration > recognizer.window_seconds
    return Answer(
        status,
        prediction.probabilities or None,
        _timeline_image(timeline) if over_time else None,
        _segments_table(timeline) if over_time else None,
    )


def build_app(
    recognizer: EmotionRecognizer, run_name: str = "", lock: threading.Lock | None = None
) -> gr.Blocks:
    """The Blocks app: audio in (upload or microphone), the answer out, on every change; `lock`
    is held for each answer (the API's lock, shared with the page's)."""
    # Uploads and recordings are deleted after an hour: people's voices are not kept.
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(
            f"# {TITLE}\nUpload or record speech: the model gives the probability of "
            f"each emotion ({', '.join(recognizer.classes)}). Audio longer than "
            f"{recognizer.window_seconds:g} s also gets a timeline."
            + (f" Model: {_markdown_text(run_name)}." if run_name else "")
        )
        audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Audio", elem_id="audio")
        status = gr.Markdown(analyse(recognizer, None).status, elem_id="status")
        probabilities = gr.Label(
            num_top_classes=len(recognizer.classes), label="Emotion", elem_id="probabilities"
        )
        timeline = gr.Image(label="Timeline", visible=False, interactive=False, elem_id="timeline")
        segments = gr.Dataframe(
            headers=SEGMENT_COLUMNS, label="Segments", visible=False, interactive=False, elem_id="segments"
        )

        def show(path: str | None, progress: gr.Progress = gr.Progress(track_tqdm=True)) -> tuple:
            with lock or contextlib.nullcontext():
                answer = analyse(recognizer, path)
            over_time = answer.timeline is not None
            return (
                answer.status,
                answer.probabilities,
                gr.Image(value=answer.timeline, visible=over_time),
                gr.Dataframe(value=answer.segments, visible=over_time),
            )

        audio.change(show, inputs=audio, outputs=[status, probabilities, timeline, segments])
    return app


def build_server(
    recognizer: EmotionRecognizer,
    run_name: str = "",
    max_upload_bytes: int = round(DEFAULT_MAX_UPLOAD_MB * 2**20),
    host: str = "127.0.0.1",
    port: int = 7860,
) -> fastapi.FastAPI:
    """The FastAPI app: `POST /api/predict` and its docs at /docs, the Blocks app at /."""
    # One model call at a time, from the page and the API alike: the recognizer is not known to
    # be thread-safe. Requests wait for it in the thread pool; the event loop stays free.
    lock = threading.Lock()
    blocks = build_app(recognizer, run_name, lock)
    blocks.queue(default_concurrency_limit=1)
    app = fastapi.FastAPI(
        title=f"{TITLE} API",
        version=__version__,
        description=f"The emotion of speech in an audio file ({', '.join(recognizer.classes)})"
        + (f"; model {run_name}" if run_name else "")
        + ". The web demo is at /.",
    )
    too_large = (
        f"the upload is over the limit of {max_upload_bytes / 2**20:g} MB (aed-tf serve --max-upload-mb)"
    )

    def recognise(path: Path, name: str, timeline: bool) -> dict[str, Any]:
        try:
            with lock, warnings.catch_warnings():
                warnings.simplefilter("ignore", InputWarning)  # in the answer's "warnings" instead
                result = recognizer.timeline(path) if timeline else recognizer.predict(path)
        except AudioError as error:
            raise _Refused(400, error.reason) from None
        except UserError as error:
            raise _Refused(400, str(error).replace(str(path), name)) from None
        return _named(result, name).to_dict()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: fastapi.Request, error: RequestValidationError) -> fastapi.Response:
        return _error(
            400,
            "; ".join(f"{'.'.join(map(str, e['loc'][1:])) or 'request'}: {e['msg']}" for e in error.errors()),
        )

    @app.post(
        "/api/predict",
        summary="The emotion of an audio file",
        description=API_DESCRIPTION,
        responses=API_RESPONSES,
        openapi_extra=API_BODY,
    )
    async def predict(
        request: fastapi.Request,
        timeline: bool = fastapi.Query(
            False, description="the timeline (segments and shares), as `aed-tf predict --timeline`"
        ),
    ) -> fastapi.Response:
        # The file the recognizer reads: in a folder of its own, deleted whatever happens.
        try:
            folder = tempfile.TemporaryDirectory(prefix="aed-tf-api-")
        except OSError as error:
            if error.errno not in STORAGE_ERRNOS:
                raise
            return _error(507, storage_reason(error))
        with folder:
            try:
                name, path = await _receive_upload(request, Path(folder.name), max_upload_bytes)
                data = await run_in_threadpool(recognise, path, name, timeline)
            except _TooLarge:
                return _error(413, too_large)
            except _Refused as refused:
                return _error(refused.status, refused.reason)
            except ClientDisconnect:
                return _error(400, "the client closed the connection before the upload ended")
            except OSError as error:
                if error.errno not in STORAGE_ERRNOS:
                    raise
                return _error(507, storage_reason(error))
        # json.dumps as `aed-tf predict` writes it (JSONResponse would refuse a NaN).
        return fastapi.Response(json.dumps(data, indent=2) + "\n", media_type="application/json")

    # Mounted last: the routes above come before the page's catch-all "/".
    app = gr.mount_gradio_app(
        app,
        blocks,
        path="/",
        server_name=host,
        server_port=port,
        max_file_size=max_upload_bytes,
        show_error=False,
        ssr_mode=False,
        mcp_server=False,
        pwa=False,
    )
    # The page's uploads are Gradio's: its own app answers a full disk with a 500 and keeps the
    # partial file, so its storage faults are answered here, inside it.
    (page,) = [route.app for route in app.routes if getattr(route, "path", None) == ""]
    page.add_middleware(_PageStorageFaults, upload_dir=Path(page.uploaded_file_dir))
    return app


@dataclasses.dataclass
class Server:
    """A server started by `serve(..., block=False)`: its URL, and `close()` to stop it."""

    url: str
    app: fastapi.FastAPI
    server: uvicorn.Server
    thread: threading.Thread

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join()


def serve(
    run_dir: str | Path | Sequence[str | Path],
    host: str = "127.0.0.1",
    port: int = 7860,
    block: bool = True,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    **recognizer_options: Any,
) -> Server | None:
    """Serves the app and the API of the run in `run_dir` (several: their ensemble) on
    http://host:port (port 0: any free one); with `block` False, returns at once (the server runs
    in a thread until `.close()`)."""
    recognizer = EmotionRecognizer.load(run_dir, **recognizer_options)
    listener = _listen(host, port)
    port = listener.getsockname()[1]
    name = " + ".join(path.name for path in run_folders(run_dir))
    app = build_server(recognizer, name, round(max_upload_mb * 2**20), host, port)
    # Gradio's SSE streams stay open: without a bound, Ctrl-C would wait for every browser tab.
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=3))
    url = f"http://{f'[{host}]' if ':' in host else host}:{port}/"
    if block:
        print(f"aed-tf serve: the demo on {url}, the API on {url}api/predict (docs: {url}docs)", flush=True)
        server.run(sockets=[listener])
        return None
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        time.sleep(0.05)
    return Server(url, app, server, thread)


API_DESCRIPTION = """The body is an audio file: a multipart form with the file in the field `file`
(`curl -F file=@clip.wav URL`), or the file's bytes with an audio Content-Type
(`curl -H 'Content-Type: audio/wav' --data-binary @clip.wav URL`).

The answer is the JSON of `aed-tf predict` for the file: `label` (null when no speech was found),
every class's `probabilities`, `warnings`, ...; with `timeline=1`, that of `aed-tf predict
--timeline`: `segments` and `shares` over the recording, the prediction inside. `source` is the
uploaded file's name."""

API_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": 'audio the recognizer cannot use, or a malformed request: `{"error": "<reason>"}`'},
    413: {"description": "an upload over the server's limit (aed-tf serve --max-upload-mb)"},
    415: {"description": "a body that is neither a multipart form nor audio"},
}

API_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary", "description": "the audio file"}
                    },
                }
            },
            "audio/*": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


class _PageStorageFaults:
    """ASGI middleware of the page's app: an upload that the disk cannot hold is answered 507
    with the reason instead of a 500, and the files it left in `upload_dir` are removed."""

    def __init__(self, app: Callable[..., Awaitable[None]], upload_dir: Path) -> None:
        self.app, self.upload_dir = app, upload_dir

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or not scope["path"].endswith("/upload"):
            await self.app(scope, receive, send)
            return
        before = self._files()
        started = False

        async def tracked(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except OSError as error:
            if started or error.errno not in STORAGE_ERRNOS:
                raise
            for path in self._files() - before:  # this request's partial file
                path.unlink(missing_ok=True)
            await fastapi.responses.PlainTextResponse(storage_reason(error), status_code=507)(
                scope, receive, send
            )

    def _files(self) -> set[Path]:
        try:
            return {path for path in self.upload_dir.iterdir() if path.is_file()}
        except OSError:
            return set()


class _TooLarge(Exception):
    """The request's body is over the upload limit."""


class _Refused(Exception):
    """A request answered with `status` and `{"error": reason}`."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


def _error(status: int, reason: str) -> fastapi.Response:
    return fastapi.responses.JSONResponse({"error": reason}, status_code=status)


async def _receive_upload(request: fastapi.Request, folder: Path, max_bytes: int) -> tuple[str, Path]:
    """Writes the request's audio to a file in `folder`; its name (for `source`) and path."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    multipart = content_type == "multipart/form-data"
    if not (multipart or content_type.startswith("audio/") or content_type == "application/octet-stream"):
        raise _Refused(
            415,
            "expected the audio file as the multipart form field 'file' (curl -F "
            "file=@clip.wav) or as the body with an audio Content-Type, got "
            + (f"Content-Type {content_type}" if content_type else "no Content-Type"),
        )
    body_limit = max_bytes + (MULTIPART_OVERHEAD if multipart else 0)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > body_limit:
        raise _TooLarge  # before a byte of it is read
    # Without a Content-Length (chunked), the body is counted as it arrives.
    limited = fastapi.Request(request.scope, _within(request.receive, body_limit))
    if multipart:
        return await _save_form_file(limited, folder, max_bytes)
    path = folder / f"upload{_suffix(None, content_type)}"
    await _write_upload(path, limited.stream())
    return UPLOAD_NAME, path


async def _save_form_file(request: fastapi.Request, folder: Path, max_bytes: int) -> tuple[str, Path]:
    try:
        form = await request.form(max_files=1, max_fields=16)
    except HTTPException as error:  # Starlette's answer to a malformed multipart body
        raise _Refused(400, f"malformed multipart form: {error.detail}") from None
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise _Refused(400, "no file in the multipart form field 'file' (curl -F file=@clip.wav)")
        if upload.size is not None and upload.size > max_bytes:
            raise _TooLarge
        path = folder / f"upload{_suffix(upload.filename, upload.content_type)}"

        async def chunks() -> AsyncIterator[bytes]:
            while chunk := await upload.read(1 << 20):
                yield chunk

        await _write_upload(path, chunks())
        return Path(upload.filename).name if upload.filename else UPLOAD_NAME, path
    finally:
        await form.close()


async def _write_upload(path: Path, chunks: AsyncIterator[bytes]) -> None:
    """The upload's bytes into `path` (an OSError of a full disk is answered by the caller)."""
    with open(path, "wb") as file:
        async for chunk in chunks:
            file.write(chunk)


def _within(receive: Callable[[], Awaitable[dict]], limit: int) -> Callable[[], Awaitable[dict]]:
    """`receive` that raises _TooLarge once the body passes `limit` bytes."""
    received = 0

    async def receive_within_limit() -> dict:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise _TooLarge
        return message

    return receive_within_limit


def _suffix(filename: str | None, content_type: str | None) -> str:
    """The upload's file name's suffix, else one for its Content-Type ("" if unknown)."""
    suffix = Path(filename or "").suffix
    if re.fullmatch(r"\.[A-Za-z0-9]{1,10}", suffix):
        return suffix
    content_type = (content_type or "").split(";")[0].strip().lower()
    if content_type in CONTENT_TYPE_SUFFIXES:
        return CONTENT_TYPE_SUFFIXES[content_type]
    return (mimetypes.guess_extension(content_type) or "") if content_type.startswith("audio/") else ""


def _named(result: Prediction | Timeline, name: str) -> Prediction | Timeline:
    """`result` with `source` the upload's name, not its temporary file's path."""
    if isinstance(result, Timeline):
        return dataclasses.replace(result, prediction=dataclasses.replace(result.prediction, source=name))
    return dataclasses.replace(result, source=name)


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to host:port: a taken port is the user's error here, not uvicorn's exit."""
    listener = None
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
    except (OSError, OverflowError) as error:  # taken, not this machine's, or not a port
        if listener is not None:
            listener.close()
        reason = getattr(error, "strerror", None) or str(error)
        raise UserError(f"cannot serve on {host}:{port}: {reason}") from error
    return listener


def _timeline_image(timeline: Timeline) -> np.ndarray:
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="aed-tf-serve-") as folder:
        with Image.open(timeline.plot(Path(folder) / "timeline.png")) as image:
            return np.asarray(image.convert("RGB"))


def _segments_table(timeline: Timeline) -> pd.DataFrame:
    rows = [
        [
            round(s.start, 2),
            round(s.end, 2),
            s.label or "(no speech)",
            round(s.probabilities[s.label], 3) if s.label else None,
        ]
        for s in timeline.segments
    ]
    return pd.DataFrame(rows, columns=SEGMENT_COLUMNS)


def _markdown_text(text: str) -> str:
    """`text` with Markdown's special characters escaped, shown as written."""
    return re.sub(r"([\\`*_{}\[\]()<>#+!|])", r"\\\1", text)

"""The web demo: `aed-tf serve RUN_DIR`, a Gradio app around the run's EmotionRecognizer.

A person uploads a file or records from the microphone, and sees the emotion with every class's
probability as bars and, for audio longer than one window, the timeline: the plot of
`Timeline.plot` and its segments as a table. The answer is the recognizer's, so the page shows
what `aed-tf predict` prints for the same file. Audio the recognizer cannot use gets its reason in
the status line ("empty file (0 bytes)"), never a traceback; audio without speech gets "no speech
found" and no emotion; warnings (padded, clipping, a low sample rate) are listed under the answer.

Gradio's analytics and version check are off, so the app asks nothing of the internet, and
server-side rendering is off (it would need Node.js).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import Any

# Read by Gradio when it is imported and when an app starts: no telemetry, no version check.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from aed_tf.audio import AudioError  # noqa: E402
from aed_tf.errors import UserError  # noqa: E402
from aed_tf.recognizer import EmotionRecognizer, InputWarning, Timeline  # noqa: E402

TITLE = "Speech emotion recognition"
SEGMENT_COLUMNS = ["start (s)", "end (s)", "emotion", "probability"]


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
    heard = (f"{prediction.duration:.1f} s of audio ({prediction.sample_rate} Hz, "
             f"{prediction.channels} channel{'s' if prediction.channels > 1 else ''}), "
             f"{prediction.speech_seconds:.1f} s of speech")
    if prediction.label is None:
        status = f"**No speech found** in {name}: {heard}. No emotion is given to silence."
    else:
        status = (f"**{prediction.label}** ({prediction.probabilities[prediction.label]:.0%}) in "
                  f"{name}: {heard}; the mean of {prediction.windows} window"
                  f"{'s' if prediction.windows > 1 else ''} of {recognizer.window_seconds:g} s.")
    status += "".join(f"\n- warning: {_markdown_text(message)}" for message in prediction.warnings)
    # A timeline is worth showing for speech longer than one window.
    over_time = prediction.speech_found and prediction.duration > recognizer.window_seconds
    return Answer(status, prediction.probabilities or None,
                  _timeline_image(timeline) if over_time else None,
                  _segments_table(timeline) if over_time else None)


def build_app(recognizer: EmotionRecognizer, run_name: str = "") -> gr.Blocks:
    """The Blocks app: audio in (upload or microphone), the answer out, on every change."""
    # Uploads and recordings are deleted after an hour: people's voices are not kept.
    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(3600, 3600)) as app:
        gr.Markdown(f"# {TITLE}\nUpload or record speech: the model gives the probability of "
                    f"each emotion ({', '.join(recognizer.classes)}). Audio longer than "
                    f"{recognizer.window_seconds:g} s also gets a timeline."
                    + (f" Model: {_markdown_text(run_name)}." if run_name else ""))
        audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="Audio",
                         elem_id="audio")
        status = gr.Markdown(analyse(recognizer, None).status, elem_id="status")
        probabilities = gr.Label(num_top_classes=len(recognizer.classes), label="Emotion",
                                 elem_id="probabilities")
        timeline = gr.Image(label="Timeline", visible=False, interactive=False, elem_id="timeline")
        segments = gr.Dataframe(headers=SEGMENT_COLUMNS, label="Segments", visible=False,
                                interactive=False, elem_id="segments")

        def show(path: str | None, progress: gr.Progress = gr.Progress(track_tqdm=True)) -> tuple:
            answer = analyse(recognizer, path)
            over_time = answer.timeline is not None
            return (answer.status, answer.probabilities,
                    gr.Image(value=answer.timeline, visible=over_time),
                    gr.Dataframe(value=answer.segments, visible=over_time))

        audio.change(show, inputs=audio, outputs=[status, probabilities, timeline, segments])
    return app


def serve(run_dir: str | Path, host: str = "127.0.0.1", port: int = 7860, block: bool = True,
          **recognizer_options: Any) -> gr.Blocks:
    """Serves the app of the run in `run_dir` on http://host:port; returns at once with
    `block` False (the server runs in a thread until `.close()`)."""
    recognizer = EmotionRecognizer.load(run_dir, **recognizer_options)
    app = build_app(recognizer, Path(run_dir).name)
    app.queue(default_concurrency_limit=1)  # one model, one request at a time
    try:
        app.launch(server_name=host, server_port=port, prevent_thread_lock=not block, share=False,
                   inbrowser=False, show_error=False, ssr_mode=False, mcp_server=False, pwa=False,
                   quiet=not block)
    except OSError as error:  # the port is taken, or the address is not this machine's
        raise UserError(f"cannot serve on {host}:{port}: {str(error).split('. ')[0]}") from error
    return app


def _timeline_image(timeline: Timeline) -> np.ndarray:
    from PIL import Image

    with tempfile.TemporaryDirectory(prefix="aed-tf-serve-") as folder:
        with Image.open(timeline.plot(Path(folder) / "timeline.png")) as image:
            return np.asarray(image.convert("RGB"))


def _segments_table(timeline: Timeline) -> pd.DataFrame:
    rows = [[round(s.start, 2), round(s.end, 2), s.label or "(no speech)",
             round(s.probabilities[s.label], 3) if s.label else None] for s in timeline.segments]
    return pd.DataFrame(rows, columns=SEGMENT_COLUMNS)


def _markdown_text(text: str) -> str:
    """`text` with Markdown's special characters escaped, shown as written."""
    return re.sub(r"([\\`*_{}\[\]()<>#+!|])", r"\\\1", text)

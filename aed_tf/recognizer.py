"""Moved to `aed_tf.serving.recognizer`; this name stays so that code written against 0.1 runs."""

from aed_tf.serving.recognizer import (  # noqa: F401
    EmotionRecognizer,
    InputWarning,
    Prediction,
    Timeline,
    audio_files,
    latest_run,
    predictions_csv,
    timelines_csv,
)

"""Moved to `aed_tf.serving.export`; this name stays so that code written against 0.1 runs."""

from aed_tf.serving.export import FORMATS, Export, check_waveforms, export, format_of, load_export  # noqa: F401

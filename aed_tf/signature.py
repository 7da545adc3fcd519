"""The serving model's interface, shared by the Keras serving model, its exports and the
recognizers that run them (TensorFlow-free, so the exported route needs no TensorFlow).

    input   WAVEFORM_INPUT      float32 [batch, samples]: mono audio at the run's sample rate
    input   STATISTICS_INPUT    float32 [batch, 2, n_mels]: the speaker's log-mel band means and
                                deviations (runs that normalise per speaker only)
    output  PROBABILITIES       float32 [batch, classes]
"""

WAVEFORM_INPUT = "waveform"
STATISTICS_INPUT = "speaker_statistics"
PROBABILITIES = "probabilities"


def centred_offset(samples: int, length: int) -> int:
    """Where a clip of `samples` meets a window of `length`: the first sample kept of a longer
    clip, or the zeros before a shorter one. Training's evaluation pipeline, the serving model and
    the recognizer all centre by this one rule. Plain arithmetic, so it also takes TF tensors."""
    return abs(samples - length) // 2

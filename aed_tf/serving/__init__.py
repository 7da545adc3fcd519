"""Using a trained model: everything that reads a run folder (`aed_tf.runs`) or an export and
answers for audio, and nothing that trains or prepares data.

    recognizer   EmotionRecognizer: predictions and timelines of files, arrays, long recordings
    timeline     sliding windows, voice activity, smoothing, segments (numpy)
    exported     an export's metadata and runtime (ONNX Runtime, LiteRT; TensorFlow for a SavedModel)
    export       writing SavedModel, TFLite and ONNX exports of a run, checked against it
    keras_route  the TensorFlow part: a run's Keras serving model, an ensemble of runs' (their
                 mean), the statistics of references
    batch        `aed-tf predict`: files and folders in, JSON or CSV out
    web          the web demo (Gradio) and POST /api/predict (FastAPI)

Serving depends on the run record, the front end, the model's layers and audio decoding, never
on training, the input pipeline, preparation or splits (tests/test_layering.py checks it). The
recognizer imports TensorFlow only for a Keras run or for speaker references.
"""

"""The `aed-tf` command. Every experiment parameter is a flag generated from `aed_tf.config.Config`."""

from __future__ import annotations

import argparse
import errno
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Sequence

from aed_tf import quiet
from aed_tf.config import CPU_SETTING, Config
from aed_tf.errors import InputError, UserError
from aed_tf.files import write_text
from aed_tf.serving.exported import FORMATS

# Commands that load TensorFlow only when they use it (predict: for a Keras run, not for an ONNX
# or TFLite export), so they are not made to import it up front.
_WITHOUT_TENSORFLOW = {"prepare", "predict"}
# The machine's faults, not the program's: a full disk, a read-only or forbidden place. One line
# naming the file, as for a user's mistake.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}
# Problems a user can act on: printed as one message, without a traceback.
_USER_ERRORS = (UserError, FileExistsError, FileNotFoundError)


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # A pooled CPU allocator: the input pipeline makes ~100 MB of fresh buffers per batch, and
    # the default allocator's page faults cost it 30-60% of its clips/s (measured).
    os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.command_line = "aed-tf " + shlex.join(argv)  # recorded with results
    if not hasattr(args, "run"):
        parser.print_help()
        return 2
    if args.verbose:
        os.environ[quiet.VERBOSE_ENV] = "1"
    if args.command not in _WITHOUT_TENSORFLOW:
        quiet.import_quietly()
    try:
        config = Config.from_args(args)
        return args.run(config, args) or 0
    except _USER_ERRORS as error:
        print(f"aed-tf {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        if error.errno not in _ENVIRONMENT_ERRNOS:
            raise  # a bug keeps its traceback
        where = f"{error.filename}: " if error.filename else ""
        print(f"aed-tf {args.command}: error: {where}{error.strerror or error}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aed-tf", description=__doc__)
    parser.add_argument(
        "--verbose",
        action="store_true",
        help=f"keep TensorFlow's start-up log lines (also: {quiet.VERBOSE_ENV}=1)",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    prepare = commands.add_parser(
        "prepare",
        help="scan corpora, decode once (cached), write manifest, summary and splits",
        description="Scans ROOTs (corpus folders in their own layouts, or CSV manifests), decodes "
        "every clip once into the audio cache and writes manifest.csv, rejected.csv, summary.json "
        "and the splits to --out.",
    )
    Config.add_arguments(prepare, ("data",), positional="data_roots", aliases={"prepared_dir": "--out"})
    prepare.set_defaults(run=_prepare)

    train = commands.add_parser(
        "train",
        help="train a classifier; writes <output-dir>/<run-id>/",
        description="Trains the configured backbone on the prepared data (prepare runs first and is "
        "cached) and writes the classifier, the serving model, config.json, history.csv and the split.",
    )
    Config.add_arguments(train)
    train.set_defaults(run=_train)

    run = commands.add_parser(
        "run",
        help="run notebooks with papermill; reports go to reports/<run-id>/",
        description="Executes NOTEBOOK (explore, train, evaluate, a path, or all: explore -> train -> "
        "evaluate) with papermill into reports/<run-id>/, renders each as HTML with inputs hidden and "
        "updates reports/index.html. Parameters are the notebooks' (the config fields, as CLI flags "
        "take them, plus run_dir and partition for evaluate).",
    )
    run.add_argument("notebook", metavar="NOTEBOOK", help="explore, train, evaluate, all, or a path")
    run.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        dest="parameters",
        help="a notebook parameter (repeatable)",
    )
    run.add_argument("--reports-dir", default="reports", help="where reports go (default: reports)")
    run.set_defaults(run=_run_notebooks)

    bench = commands.add_parser("bench", help="benchmarks; results go to reports/benchmarks/")
    bench_kinds = bench.add_subparsers(dest="benchmark", metavar="BENCHMARK", required=True)
    pipeline = bench_kinds.add_parser(
        "pipeline", help="clips/s of the tf.data training pipeline against the per-file librosa route"
    )
    Config.add_arguments(pipeline)
    pipeline.add_argument("--output", default="reports/benchmarks/pipeline.json", help="result file")
    pipeline.add_argument("--seconds", type=float, default=20.0, help="time spent in the pipeline")
    pipeline.set_defaults(run=_bench_pipeline)

    bench_train = bench_kinds.add_parser(
        "train", help="test UAR on held-out speakers (shared-si protocol), every backbone from scratch"
    )
    Config.add_arguments(bench_train)
    bench_train.add_argument(
        "--backbones", nargs="+", default=None, help="backbones to train (default: every registered one)"
    )
    bench_train.add_argument(
        "--output",
        default="reports/benchmarks/train.json",
        help="result file; its rows for backbones not trained here are kept",
    )
    bench_train.set_defaults(run=_bench_train)

    bench_cv = bench_kinds.add_parser(
        "cv",
        help="cross-validation over speakers: per-corpus UAR of every fold, seeds and baselines",
        description="Trains the configured model (default: the recommended CPU setting) on every "
        "fold of the cv protocol and seed, tests each on its held-out speakers (or corpus), and "
        "runs the baselines on the same folds, and the model fused with the per-speaker eGeMAPS "
        "SVM (its weight chosen on validation speakers); a run trained with --fusion egemaps also "
        "fused as it serves (its own head and weight). Writes --output (JSON) and the same name .md.",
    )
    Config.add_arguments(bench_cv)
    bench_cv.set_defaults(**CPU_SETTING)
    bench_cv.add_argument(
        "--test-folds",
        nargs="+",
        default=None,
        help="folds to run: 1-5 (speaker folds) and corpus names (leave it out); "
        "default: all five and every corpus",
    )
    bench_cv.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="seeds (default: 0 1)")
    bench_cv.add_argument(
        "--no-baselines",
        dest="baselines",
        action="store_false",
        help="skip the baselines and the fusion with one (they take a few minutes)",
    )
    bench_cv.add_argument(
        "--output",
        default="reports/benchmarks/cv.json",
        help="result file; its rows for other model settings are kept",
    )
    bench_cv.set_defaults(run=_bench_cv)

    bench_step = bench_kinds.add_parser(
        "step",
        help="clips/s of a training step for each value of one setting, measured in one run",
        description="Builds the configured model (default: the recommended CPU setting) once "
        "for each value of --vary's field, then times their training steps (input pipeline, "
        "forward and backward) in turns over several rounds: each value's clips/s and its ratio "
        "to the first's. Writes --output.",
    )
    Config.add_arguments(bench_step)
    bench_step.set_defaults(**CPU_SETTING)
    bench_step.add_argument(
        "--vary",
        nargs="+",
        metavar=("FIELD", "VALUE"),
        required=True,
        help="a Config field (as a notebook parameter: hop_ms) and its values, the first the one "
        "the others are compared with",
    )
    bench_step.add_argument("--clips", type=int, default=512, help="clips in memory, spread over the corpora")
    bench_step.add_argument("--output", default="reports/benchmarks/step.json", help="result file")
    bench_step.set_defaults(run=_bench_step)

    bench_predict = bench_kinds.add_parser(
        "predict",
        help="a run's Keras model against its ONNX export: cold predict on one clip, and x real "
        "time and peak memory of predict --timeline on recordings of real clips",
    )
    Config.add_arguments(bench_predict)
    bench_predict.set_defaults(**CPU_SETTING)
    bench_predict.add_argument(
        "--run-dir",
        help="run to measure (default: the newest finished run of --backbone, the recommended "
        "CPU setting's, in --output-dir; trained for one epoch first if there is none)",
    )
    bench_predict.add_argument(
        "--hours",
        type=float,
        nargs="+",
        default=[0.1, 1.0],
        help="lengths of the recordings; the last is the headline",
    )
    bench_predict.add_argument(
        "--recording-rate", type=int, default=48000, help="sample rate of the generated FLAC recordings"
    )
    bench_predict.add_argument("--output", default="reports/benchmarks/predict.json", help="result file")
    bench_predict.set_defaults(run=_bench_predict)

    predict = commands.add_parser(
        "predict",
        help="the emotion of audio files, or a timeline of long recordings",
        description="Predicts the emotion of FILE, or of every audio file under DIR (going on past "
        "files that cannot be used, listed at the end; exit status 1 if there were any). "
        "--timeline gives segments and each emotion's share of the speech time. Silence gets no label.",
    )
    predict.add_argument("path", metavar="FILE|DIR", help="an audio file, or a folder searched at any depth")
    predict.add_argument(
        "--run-dir",
        nargs="+",
        metavar="RUN_DIR",
        help="trained run (default: the newest finished run in saved_models/); several: their "
        "ensemble, each window's probabilities the mean of the runs' (e.g. one setting's seeds)",
    )
    predict.add_argument(
        "--model",
        metavar="EXPORT",
        help="an export of a run instead (aed-tf export: .onnx, .tflite or a SavedModel folder, "
        "its metadata JSON beside it); ONNX and TFLite run without TensorFlow",
    )
    predict.add_argument("--timeline", action="store_true", help="segments over time instead of one label")
    predict.add_argument("--format", choices=("json", "csv"), default="json", help="output format")
    predict.add_argument("--out", help="output file (default: standard output)")
    predict.add_argument("--plot", help="timeline PNG (implies --timeline); a folder when the input is one")
    predict.add_argument("--window", type=float, help="window seconds (default: the model's clip length)")
    predict.add_argument(
        "--hop", type=float, help="seconds between window starts (default: 1, at most the window)"
    )
    predict.add_argument("--smoothing", type=int, default=3, help="windows averaged (centred); 1: off")
    predict.add_argument(
        "--no-vad",
        action="store_true",
        help="classify every window that is not near silence (for audio that is not speech)",
    )
    predict.add_argument(
        "--vad-aggressiveness",
        type=int,
        choices=range(4),
        default=2,
        help="WebRTC voice activity detector, 0 (lenient) to 3 (strict)",
    )
    predict.add_argument(
        "--windows-per-batch", type=int, default=32, help="windows through the model at once"
    )
    predict.add_argument(
        "--speaker-reference",
        nargs="+",
        metavar="FILE|DIR",
        help="for a run that normalises per speaker: recordings of the speaker "
        "(emotions unneeded; the input itself will do) whose statistics "
        "normalise the features (default: those of the training clips); a run trained with "
        "--fusion egemaps is also fused with its eGeMAPS head, given 10 speech windows or more",
    )
    predict.set_defaults(run=_predict)

    export = commands.add_parser(
        "export",
        help="the serving model as a SavedModel, TFLite or ONNX model",
        description="Exports the serving model of RUN_DIR (float32 waveforms [batch, samples] at 16 kHz "
        "in, probabilities out, the front end inside) in --format, checks it against the Keras model "
        "and writes a metadata JSON beside it: classes, sample rate, clip length, the difference measured.",
    )
    export.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        nargs="+",
        help="a finished run (saved_models/<run_id>); several: their ensemble as one model "
        "(the mean of their probabilities; --out required)",
    )
    export.add_argument(
        "--format",
        choices=FORMATS,
        required=True,
        help="savedmodel (a folder), tflite or onnx",
    )
    export.add_argument(
        "--out",
        help="where to write it (default for one run: RUN_DIR/export/savedmodel, "
        "model.tflite or model.onnx); replaced if it exists",
    )
    export.set_defaults(run=_export)

    serve = commands.add_parser(
        "serve",
        help="a web demo and an HTTP API: upload or record audio, see the emotion",
        description="Starts a Gradio app on --host:--port: upload or record audio and see the "
        "probabilities of every emotion and, for audio longer than one window, the timeline. "
        "Beside it, POST /api/predict answers the JSON of aed-tf predict for an uploaded file "
        "(?timeline=1: of aed-tf predict --timeline); its docs are at /docs.",
    )
    serve.add_argument(
        "run_dir",
        metavar="RUN_DIR",
        nargs="*",
        help="a finished run (default: the newest finished run in saved_models/); several: their ensemble",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    serve.add_argument(
        "--max-upload-mb",
        type=float,
        default=100,
        metavar="MB",
        help="the largest upload, to the page and the API, in MiB (default: 100)",
    )
    serve.set_defaults(run=_serve)
    return parser


def _prepare(config: Config, args: argparse.Namespace) -> int:
    from aed_tf.prepare import format_summary, prepare

    prepared = prepare(config)
    print(format_summary(prepared.summary))
    print(f"\nmanifest: {prepared.manifest_path}")
    if prepared.split_path:
        print(f"split:    {prepared.split_path}")
    return 0


def _train(config: Config, args: argparse.Namespace) -> int:
    from aed_tf.report import format_held_out, held_out_summary
    from aed_tf.train import train

    result = train(config)
    val = result.val_metrics
    print(
        f"run {result.run_dir}: val UAR {val['uar']:.3f} (accuracy {val['accuracy']:.3f}, "
        f"macro-F1 {val['macro_f1']:.3f}), {config.data.protocol} split, {result.seconds:.0f} s"
    )
    if os.environ.get("TF_CONFIG"):
        # Every worker of a multi-machine run gets here, and only the chief has the run folder:
        # the figures are left to the report.
        print(f"held-out figures: aed-tf run evaluate -p run_dir {result.run_dir} (on the chief)")
        return 0
    print("evaluating the run, and the reference baseline trained on its training partition ...", flush=True)
    print(format_held_out(held_out_summary(result.run_dir)))
    return 0


def _run_notebooks(config: Config, args: argparse.Namespace) -> int:
    from aed_tf.runner import NOTEBOOKS, parse_parameters, run

    names = list(NOTEBOOKS) if args.notebook == "all" else [args.notebook]
    runs = run(names, parse_parameters(args.parameters), Path(args.reports_dir))
    for notebook_run in runs:
        print(f"{notebook_run.name}: {notebook_run.html}")
    print(f"report: {runs[-1].html}\nall runs: {Path(args.reports_dir) / 'index.html'}")
    from aed_tf.report import SUMMARY_FILE, format_held_out  # TensorFlow: not before the notebooks

    summary = runs[-1].notebook.parent / SUMMARY_FILE
    if runs[-1].notebook.name == NOTEBOOKS["evaluate"] and summary.is_file():  # `make demo` ends here
        print(format_held_out(json.loads(summary.read_text())))
    return 0


def _bench_pipeline(config: Config, args: argparse.Namespace) -> int:
    from aed_tf.bench.pipeline import run_pipeline_benchmark

    result = run_pipeline_benchmark(config, args.seconds, args.command_line, Path(args.output))
    print(json.dumps(result, indent=2))
    print(f"results: {args.output}")
    print(
        f"pipeline {result['pipeline_clips_per_second']:.0f} clips/s (target >= 1000); reference librosa "
        f"route {result['reference_clips_per_second']:.0f} clips/s; ratio {result['ratio']:.1f}x (target >= 20x)"
    )
    return 0


def _bench_step(config: Config, args: argparse.Namespace) -> int:
    from aed_tf.bench.step import run_step_benchmark

    if len(args.vary) < 3:
        raise InputError(f"--vary {' '.join(args.vary)}: give a field and two or more values")
    field, values = args.vary[0], args.vary[1:]
    result = run_step_benchmark(config, field, values, args.clips, args.command_line, Path(args.output))
    for value, rate, ratio in zip(result["values"], result["clips_per_second"], result["ratio_to_first"]):
        print(f"{field} = {value}: {rate:.0f} clips/s, {ratio:.2f}x the first")
    print(f"results: {args.output}")
    return 0


def _bench_train(config: Config, args: argparse.Namespace) -> int:
    from aed_tf.bench.train import format_train_table, run_train_benchmark

    output = Path(args.output)
    result = run_train_benchmark(config, args.backbones, args.command_line, output)
    print(format_train_table(result))
    best = max(result["results"], key=lambda r: r["test"]["uar"])
    print(
        f"best test UAR {best['test']['uar']:.3f} ({best['backbone']}, protocol {result['protocol']}); "
        f"results: {output}"
    )
    return 0


def _bench_cv(config: Config, args: argparse.Namespace) -> int:
    from aed_tf.bench.cv import format_cv_table, run_cv_benchmark

    output = Path(args.output)
    result = run_cv_benchmark(
        config, args.test_folds, args.seeds, args.command_line, output, baselines=args.baselines
    )
    print(format_cv_table(result))
    print(f"results: {output} and {output.with_suffix('.md')}")
    return 0


def _bench_predict(config: Config, args: argparse.Namespace) -> int:
    from aed_tf.bench.predict import run_predict_benchmark

    result = run_predict_benchmark(
        config, args.run_dir, args.hours, args.recording_rate, args.command_line, Path(args.output)
    )
    print(json.dumps(result, indent=2))
    print(f"results: {args.output}")
    for name, route in result["routes"].items():
        cold = route["cold_predict"]
        print(
            f"{name}: cold predict of one clip {cold['wall_seconds']:.2f} s, peak RSS "
            f"{cold['peak_rss_megabytes']:.0f} MB; {route['duration_seconds'] / 3600:.2f} h recording "
            f"{route['times_real_time']:.0f}x real time, peak RSS {route['peak_rss_megabytes']:.0f} MB"
        )
    for format, ratios in result["ratios"].items():
        print(
            f"keras / {format}: cold wall {ratios['cold_wall_keras_over_export']:.1f}x, cold peak RSS "
            f"{ratios['cold_rss_keras_over_export']:.1f}x; {format} / keras real time "
            f"{ratios['real_time_export_over_keras']:.2f}x"
        )
    print(f"targets: {json.dumps(result['targets'])}")
    return 0


def _predict(config: Config, args: argparse.Namespace) -> int:
    from aed_tf.serving.batch import predict_path, speaker_references
    from aed_tf.serving.recognizer import EmotionRecognizer, latest_run

    if args.run_dir and args.model:
        raise UserError("--run-dir and --model: give one (a run folder, or an export of one)")
    recognizer = EmotionRecognizer.load(
        args.model or args.run_dir or latest_run(config.train.output_dir),
        window_seconds=args.window,
        hop_seconds=args.hop,
        smoothing=args.smoothing,
        vad=not args.no_vad,
        vad_aggressiveness=args.vad_aggressiveness,
        batch_size=args.windows_per_batch,
    )
    if args.speaker_reference:
        recognizer = recognizer.for_speaker(speaker_references(args.speaker_reference))
    batch = predict_path(recognizer, Path(args.path), timeline=args.timeline or bool(args.plot))
    for prediction in batch.predictions:
        for message in prediction.warnings:
            print(f"aed-tf predict: warning: {prediction.source}: {message}", file=sys.stderr)
        if not prediction.speech_found:
            print(f"aed-tf predict: {prediction.source}: no speech found", file=sys.stderr)
    if args.plot:
        batch.plot(Path(args.plot))
    text = batch.text(args.format)
    if args.out:  # atomically: a killed command leaves the last whole file, not half a new one
        write_text(Path(args.out), text)
    else:
        sys.stdout.write(text)
    if batch.errors:
        print(
            f"aed-tf predict: {len(batch.errors)} of {len(batch.files)} files could not be used:",
            file=sys.stderr,
        )
        for error in batch.errors:
            print(f"  {error}", file=sys.stderr)
        return 1
    return 0


def _export(config: Config, args: argparse.Namespace) -> int:
    from aed_tf.serving.export import export

    exported = export(args.run_dir, args.format, args.out)
    check = exported.metadata["check"]
    print(f"{exported.format}: {exported.path}\nmetadata: {exported.metadata_path}")
    print(
        f"largest difference of a probability from the Keras model's: {check['max_abs_difference']:.2g} "
        f"({check['inputs'].split(' (')[0]})"
    )
    return 0


def _serve(config: Config, args: argparse.Namespace) -> int:
    # Checked before the imports: TensorFlow and Gradio take a while.
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port must be 0 to 65535, got {args.port}")
    if not 0 < args.max_upload_mb < float("inf"):  # also refuses nan
        raise UserError(f"--max-upload-mb must be a positive number, got {args.max_upload_mb:g}")
    from aed_tf.runs import latest_run
    from aed_tf.serving.web import serve

    serve(
        args.run_dir or latest_run(config.train.output_dir),
        host=args.host,
        port=args.port,
        max_upload_mb=args.max_upload_mb,
    )
    return 0

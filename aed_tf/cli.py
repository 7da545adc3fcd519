"""The `aed-tf` command. Every experiment parameter is a flag generated from `aed_tf.config.Config`."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Sequence

from aed_tf.config import Config
from aed_tf.errors import UserError

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
    try:
        config = Config.from_args(args)
        return args.run(config, args) or 0
    except _USER_ERRORS as error:
        print(f"aed-tf {args.command}: error: {error}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aed-tf", description=__doc__)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    prepare = commands.add_parser(
        "prepare", help="scan corpora, decode once (cached), write manifest, summary and splits",
        description="Scans ROOTs (corpus folders in their own layouts, or CSV manifests), decodes "
        "every clip once into the audio cache and writes manifest.csv, rejected.csv, summary.json "
        "and the splits to --out.",
    )
    Config.add_arguments(prepare, ("data",), positional="data_roots", aliases={"prepared_dir": "--out"})
    prepare.set_defaults(run=_prepare)

    train = commands.add_parser(
        "train", help="train a classifier; writes <output-dir>/<run-id>/",
        description="Trains the configured backbone on the prepared data (prepare runs first and is "
        "cached) and writes the classifier, the serving model, config.json, history.csv and the split.",
    )
    Config.add_arguments(train)
    train.set_defaults(run=_train)

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
    bench_train.add_argument("--backbones", nargs="+", default=None,
                             help="backbones to train (default: every registered one)")
    bench_train.add_argument("--output", default="reports/benchmarks/train.json", help="result file")
    bench_train.set_defaults(run=_bench_train)
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
    from aed_tf.train import train

    result = train(config)
    val = result.val_metrics
    print(f"run {result.run_dir}: val UAR {val['uar']:.3f} (accuracy {val['accuracy']:.3f}, "
          f"macro-F1 {val['macro_f1']:.3f}), {config.data.protocol} split, {result.seconds:.0f} s")
    return 0


def _bench_pipeline(config: Config, args: argparse.Namespace) -> int:
    from aed_tf.bench import bench_pipeline
    from aed_tf.labels import apply_calm_policy, class_names
    from aed_tf.prepare import prepare

    prepared = prepare(config)
    manifest = apply_calm_policy(prepared.manifest, config.data.calm)
    names = class_names(config.data.calm)
    waveforms = [prepared.waveforms[clip] for clip in manifest["clip_id"]]
    result = bench_pipeline(
        waveforms, [names.index(e) for e in manifest["emotion"]], [Path(p) for p in manifest["path"]],
        config, min_seconds=args.seconds,
    )
    result["command"] = args.command_line
    _write_json(Path(args.output), result)
    print(json.dumps(result, indent=2))
    print(f"results: {args.output}")
    print(
        f"pipeline {result['pipeline_clips_per_second']:.0f} clips/s (target >= 1000); reference librosa "
        f"route {result['reference_clips_per_second']:.0f} clips/s; ratio {result['ratio']:.1f}x (target >= 20x)"
    )
    return 0


def _bench_train(config: Config, args: argparse.Namespace) -> int:
    from aed_tf.backbones import BACKBONES
    from aed_tf.bench import bench_train, format_train_table

    result = bench_train(config, args.backbones or list(BACKBONES))
    result["command"] = args.command_line
    output = Path(args.output)
    _write_json(output, result)
    table = format_train_table(result)
    output.with_suffix(".md").write_text(table + f"\nCommand: `{result['command']}`\n")
    print(table)
    best = max(result["results"], key=lambda r: r["test"]["uar"])
    print(f"best test UAR {best['test']['uar']:.3f} ({best['backbone']}, protocol {result['protocol']}); "
          f"results: {output}")
    return 0


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)

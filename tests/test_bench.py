"""What every benchmark shares: the environment block each result records, and its result files."""

import datetime
import json
import os
import platform

import tensorflow as tf

from aed_tf import __version__
from aed_tf.bench import (
    ENVIRONMENT_KEYS,
    benchmark_environment,
    format_environment,
    read_result,
    write_result,
)


def test_the_environment_block_says_where_with_what_and_when_a_result_was_measured():
    before = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    environment = benchmark_environment()
    after = datetime.datetime.now(datetime.timezone.utc)
    assert tuple(environment) == ENVIRONMENT_KEYS
    assert environment["cpu_count"] == len(os.sched_getaffinity(0)) >= 1
    assert environment["python_version"] == platform.python_version()
    assert environment["aed_tf_version"] == __version__
    assert environment["tensorflow_version"] == tf.__version__
    assert all(environment[f"{name}_version"] for name in ("keras", "numpy", "librosa"))
    written = datetime.datetime.fromisoformat(environment["timestamp"])
    assert written.tzinfo is not None and before <= written <= after
    json.dumps(environment)


def test_the_environment_line_of_the_tables_is_the_results_block():
    environment = benchmark_environment()
    line = format_environment(environment)
    for key in (
        "cpu_count",
        "platform",
        "python_version",
        "tensorflow_version",
        "aed_tf_version",
        "timestamp",
    ):
        assert str(environment[key]) in line


def test_a_result_is_written_as_json_with_its_table_beside_it(tmp_path):
    output = tmp_path / "benchmarks" / "x.json"
    assert read_result(output) is None
    write_result(output, {"rows": [1], **benchmark_environment()}, "# table\n")
    assert read_result(output)["rows"] == [1]
    assert output.with_suffix(".md").read_text() == "# table\n"
    write_result(output, {"rows": [2]})  # no table: the one beside it is left as it was
    assert read_result(output) == {"rows": [2]}

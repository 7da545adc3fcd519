"""Every `aed-tf` command against a table of a user's mistakes and the machine's faults: a missing
file or folder, a full disk, a forbidden place. Each is one line naming the file and the reason,
exit status 2, no traceback; a bug keeps its traceback."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

import aed_tf.files
from aed_tf import cli
from tests.synth import make_ravdess_tree

MISSING = "/nonexistent/aed-tf-fault"
# What a small data tree and a tiny model need on the command line.
TINY = [
    "--clip-seconds", "0.5", "--n-mels", "32", "--time-mask-width", "5", "--freq-mask-width", "4",
    "--batch-size", "8", "--epochs", "1", "--backbone", "mobilenetv3small", "--weights", "none",
    "--image-size", "32",
]  # fmt: skip


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_ravdess_tree(tmp_path_factory.mktemp("fault-data") / "ravdess", actors=range(1, 7), takes=1)


def places(tmp_path: Path, data: Path | str) -> list[str]:
    return [
        "--data-roots", str(data), "--prepared-dir", str(tmp_path / "prepared"),
        "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(tmp_path / "runs"),
    ]  # fmt: skip


# (command, what it is given) -> argv, for the cases where the input is missing. The expected
# message names the missing path.
MISSING_INPUT = {
    "prepare": lambda tmp, run, clip: ["prepare", MISSING, "--prepared-dir", str(tmp / "p")],
    "train": lambda tmp, run, clip: ["train", *places(tmp, MISSING), *TINY],
    "run": lambda tmp, run, clip: ["run", "evaluate", "-p", "run_dir", MISSING, "--reports-dir", str(tmp)],
    "bench pipeline": lambda tmp, run, clip: ["bench", "pipeline", *places(tmp, MISSING), *TINY],
    "bench train": lambda tmp, run, clip: ["bench", "train", "--backbones", "mobilenetv3small", *places(tmp, MISSING), *TINY],
    "bench cv": lambda tmp, run, clip: ["bench", "cv", "--no-baselines", *places(tmp, MISSING), *TINY],
    "bench predict": lambda tmp, run, clip: ["bench", "predict", "--run-dir", MISSING, *places(tmp, MISSING)],
    "predict": lambda tmp, run, clip: ["predict", MISSING, "--run-dir", str(run)],
    "predict --model": lambda tmp, run, clip: ["predict", str(clip), "--model", MISSING],
    "predict --speaker-reference": lambda tmp, run, clip: ["predict", str(clip), "--run-dir", str(run), "--speaker-reference", MISSING],
    "export": lambda tmp, run, clip: ["export", MISSING, "--format", "onnx"],
    "serve": lambda tmp, run, clip: ["serve", MISSING],
}  # fmt: skip


def one_line_error(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    # (Other lines may be the command's own notes, such as predict's "no speech found".)
    lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(lines) == 1 and lines[0].startswith(f"aed-tf {command.split()[0]}: error: "), err
    return lines[0]


@pytest.mark.parametrize("command", list(MISSING_INPUT))
def test_a_missing_input_is_one_line_naming_it_with_status_2(command, tmp_path, tiny_run, capsys):
    clip = next(Path(tiny_run).parent.parent.glob("**/*.wav"), None) or tmp_path / "clip.wav"
    argv = MISSING_INPUT[command](tmp_path, tiny_run, clip)
    assert cli.main(argv) == 2
    assert MISSING in one_line_error(capsys, command)


# Commands that write, and what they are given to write: each gets the fault from the package's
# one writer (aed_tf.files.atomic_write), where the disk or the folder refuses it.
WRITING = {
    "prepare": lambda tmp, run, tree: ["prepare", str(tree), "--prepared-dir", str(tmp / "p"), "--cache-dir", str(tmp / "c")],
    "train": lambda tmp, run, tree: ["train", *places(tmp, tree), *TINY, "--run-id", "fault"],
    "predict --out": lambda tmp, run, tree: ["predict", str(tree), "--run-dir", str(run), "--out", str(tmp / "out.json")],
    "export": lambda tmp, run, tree: ["export", str(run), "--format", "onnx", "--out", str(tmp / "model.onnx")],
    "bench pipeline": lambda tmp, run, tree: ["bench", "pipeline", *places(tmp, tree), *TINY, "--seconds", "0.2", "--output", str(tmp / "pipeline.json")],
}  # fmt: skip
FAULTS = {
    "disk full": (errno.ENOSPC, "No space left on device"),
    "read-only": (errno.EROFS, "Read-only file system"),
    "forbidden": (errno.EACCES, "Permission denied"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("command", list(WRITING))
def test_a_write_the_machine_refuses_is_one_line_naming_the_file(
    command, fault, tmp_path, tiny_run, tree, monkeypatch, capsys
):
    code, reason = FAULTS[fault]
    refused: list[Path] = []

    def refusing_write(path, write):
        refused.append(Path(path))
        raise OSError(code, reason, str(path))

    monkeypatch.setattr(aed_tf.files, "atomic_write", refusing_write)
    argv = WRITING[command](tmp_path, tiny_run, tree)
    assert cli.main(argv) == 2
    line = one_line_error(capsys, command)
    assert refused and line.endswith(f"{refused[0]}: {reason}"), line


def test_a_bug_keeps_its_traceback(tmp_path, tree, monkeypatch):
    """An error that is neither the user's nor the machine's is not hidden behind one line."""

    def broken_write(path, write):
        raise OSError(errno.EIO, "Input/output error", str(path))  # not one the CLI explains

    monkeypatch.setattr(aed_tf.files, "atomic_write", broken_write)
    with pytest.raises(OSError, match="Input/output error"):
        cli.main(
            ["prepare", str(tree), "--prepared-dir", str(tmp_path / "p"), "--cache-dir", str(tmp_path / "c")]
        )

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("aed_tf.prepare.prepare", bug)
    with pytest.raises(ZeroDivisionError):
        cli.main(["prepare", str(tree), "--prepared-dir", str(tmp_path / "p")])

"""The notebooks, the papermill runner and the HTML reports."""

import json
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image
import nbformat
import numpy as np
import pytest

from aed_tf.cli import main
from aed_tf.config import Config
from aed_tf.errors import UserError
from aed_tf.runner import (
    NOTEBOOKS,
    NOTEBOOKS_DIR,
    NotebookFailedError,
    ensure_kernel,
    notebook_parameters,
    parse_parameters,
    run,
    run_notebook,
)
from tests.synth import make_ravdess_tree

SECTIONS = (
    "Run card",
    "Learning curves",
    "Per class",
    "Confusion matrix",
    "Per corpus",
    "Per speaker",
    "Calibration",
    "Errors you can listen to",
    "Baseline",
    "Parameters",
)


def config_defaults(*sections: str) -> dict:
    config = Config()
    return {
        name: list(value) if isinstance(value, tuple) else value
        for section in sections
        for name, value in vars(getattr(config, section)).items()
    }


@pytest.mark.parametrize("name", list(NOTEBOOKS.values()))
def test_notebooks_are_committed_clean_with_one_parameters_cell(name):
    notebook = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    nbformat.validate(notebook)
    tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert notebook.metadata["kernelspec"]["name"] == "aed-tf"


def test_notebook_parameters_are_the_config_fields_with_their_defaults():
    assert notebook_parameters(NOTEBOOKS_DIR / NOTEBOOKS["train"]) == config_defaults(
        "data", "frontend", "augment", "train"
    )
    explore = notebook_parameters(NOTEBOOKS_DIR / NOTEBOOKS["explore"])
    assert explore == {**config_defaults("data", "frontend", "augment"), "examples_per_emotion": 1}
    evaluate = notebook_parameters(NOTEBOOKS_DIR / NOTEBOOKS["evaluate"])
    assert evaluate["run_dir"] == "" and evaluate["partition"] == "test"


def test_parameters_take_their_config_field_types_and_yaml_otherwise():
    values = parse_parameters(
        [
            ("epochs", "3"),
            ("learning_rate", "1e-3"),
            ("augment", "false"),
            ("data_roots", "data/x"),
            ("run_dir", "saved_models/a"),
            ("bootstrap_resamples", "10"),
        ]
    )
    assert values == {
        "epochs": 3,
        "learning_rate": 0.001,
        "augment": False,
        "data_roots": ["data/x"],
        "run_dir": "saved_models/a",
        "bootstrap_resamples": 10,
    }
    with pytest.raises(UserError, match="epochs"):
        parse_parameters([("epochs", "many")])


def test_the_runner_refuses_parameters_no_notebook_declares(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="epochz"):
        run(list(NOTEBOOKS), {"epochz": 3}, tmp_path)
    monkeypatch.chdir(tmp_path)  # no saved_models/ here: evaluating needs a run to evaluate
    with pytest.raises(UserError, match="no finished run in saved_models"):
        run(["evaluate"], {}, tmp_path)


def test_a_failing_cell_names_the_cell_exits_non_zero_and_keeps_the_partial_record(tmp_path, capsys):
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("divisor = 1", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell("print('before the failure')"),
            nbformat.v4.new_code_cell("ratio = 1 / divisor"),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    source = tmp_path / "failing.ipynb"
    nbformat.write(notebook, source)

    with pytest.raises(
        NotebookFailedError,
        match=r"failing.ipynb failed in cell \[4\] \('ratio = 1 / divisor'\): ZeroDivisionError",
    ) as failure:
        run_notebook(str(source), {"divisor": 0}, tmp_path / "reports" / "r1", progress=False)
    record = tmp_path / "reports" / "r1" / "failing.ipynb"
    assert str(record) in str(failure.value)
    executed = nbformat.read(record, as_version=4)
    printed = next(c for c in executed.cells if c.source.startswith("print"))
    assert "before the failure" in printed.outputs[0]["text"]
    assert (tmp_path / "reports" / "r1" / "failing.html").is_file()

    # The same through the CLI: a non-zero exit and a one-line message; the record is never overwritten.
    code = main(["run", str(source), "-p", "divisor", "0", "--reports-dir", str(tmp_path / "other")])
    assert code != 0 and "failed in cell [4] ('ratio = 1 / divisor')" in capsys.readouterr().err
    with pytest.raises(FileExistsError, match="already records a run"):
        run_notebook(str(source), {"divisor": 1}, tmp_path / "reports" / "r1", progress=False)


def test_the_kernels_console_holds_no_tensorflow_start_up_lines_nor_transport_warnings(tmp_path, capfd):
    """The kernel imports TensorFlow silenced before the first cell and logs errors only; its
    standard error is the console's (file descriptor 2, which capfd holds here)."""
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("answer = 1", metadata={"tags": ["parameters"]}),
            nbformat.v4.new_code_cell("import tensorflow as tf\nprint(tf.constant(answer).numpy())"),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    source = tmp_path / "quiet.ipynb"
    nbformat.write(notebook, source)
    capfd.readouterr()
    run_notebook(str(source), {"answer": 42}, tmp_path / "reports" / "quiet", progress=False)
    console = capfd.readouterr().err
    for noise in ("oneDNN", "cuda", "cuInit", "absl::InitializeLog", "without encryption", "[IPKernelApp]"):
        assert noise not in console, console
    executed = nbformat.read(tmp_path / "reports" / "quiet" / "quiet.ipynb", as_version=4)
    assert executed.cells[-1].outputs[0]["text"].strip() == "42"


def test_evaluating_a_folder_that_is_not_a_finished_run_fails_before_any_kernel(
    tmp_path, monkeypatch, capsys
):
    import aed_tf.runner as runner

    monkeypatch.chdir(tmp_path)
    started = []
    monkeypatch.setattr(runner, "run_notebook", lambda *a, **k: started.append(a))
    assert main(["run", "evaluate", "-p", "run_dir", str(tmp_path / "nonexistent")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"aed-tf run: error: {tmp_path / 'nonexistent'}: not a run folder "
        "(no config.json); -p run_dir takes a folder that aed-tf train "
        "wrote, e.g. saved_models/<run-id>"
    )
    killed = tmp_path / "saved_models" / "killed"
    killed.mkdir(parents=True)
    (killed / "config.json").write_text('{"status": "training"}')
    assert main(["run", "evaluate", "-p", "run_dir", str(killed)]) == 2
    assert (
        "has not finished (status 'training'); resume it with aed-tf train --resume --run-id killed"
        in capsys.readouterr().err
    )
    assert started == [] and not (tmp_path / "reports").exists()


def test_the_kernel_spec_runs_this_environment():
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec(ensure_kernel())
    assert spec.argv[0] == sys.executable


class _Elements(HTMLParser):
    """Every tag with its attributes, and the text."""

    def __init__(self):
        super().__init__()
        self.tags, self.text = [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def parse_html(path: Path) -> _Elements:
    parser = _Elements()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def test_run_all_executes_explore_train_evaluate_into_a_self_contained_report(tmp_path, monkeypatch):
    data_root = make_ravdess_tree(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    parameters = parse_parameters(
        [
            ("data_roots", str(data_root)),
            ("cache_dir", "cache"),
            ("backbone", "mobilenetv3small"),
            ("weights", "none"),
            ("image_size", "32"),
            ("batch_size", "8"),
            ("epochs", "2"),
            ("clip_seconds", "0.5"),
            ("n_mels", "32"),
            ("time_mask_width", "5"),
            ("freq_mask_width", "4"),
            ("val_fraction", "0.2"),
            ("test_fraction", "0.2"),
            ("run_id", "tiny"),
            ("bootstrap_resamples", "50"),
        ]
    )
    runs = run(list(NOTEBOOKS), parameters, Path("reports"), progress=False)

    report_dir = tmp_path / "reports" / "tiny"
    assert [r.name for r in runs] == ["01_explore", "02_train", "03_evaluate"]
    for name in NOTEBOOKS.values():
        executed = nbformat.read(report_dir / name, as_version=4)
        injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert len(injected) == 1
        outputs = [o for c in executed.cells if c.cell_type == "code" for o in c.outputs]
        assert not [o for o in outputs if o["output_type"] == "error"]
        assert not [o for o in outputs if o.get("name") == "stderr"], "stderr in " + name
    assert (tmp_path / "saved_models" / "tiny" / "serving.keras").is_file()

    page = report_dir / "03_evaluate.html"
    elements = parse_html(page)
    text = " ".join(elements.text)
    for section in SECTIONS:
        assert section in text, section
    # The answer leads: the headline block (UAR with its interval, the protocol, the figures per
    # corpus beside the baseline's) comes before the first section; every parameter comes last,
    # folded in a <details> element.
    headline, run_card = text.index("UAR"), text.index("Run card")
    assert (
        headline
        < text.index("Split protocol speaker-independent")
        < text.index("bootstrap interval")
        < run_card
    )
    assert [tag for tag, attrs in elements.tags if attrs.get("class") == "aed-headline"] == ["div"]
    assert [tag for tag, _ in elements.tags].count("details") == 1
    assert text.index("All ", text.index("Parameters")) > text.index("Baseline")
    page_text = page.read_text(encoding="utf-8")
    assert page_text.index("<details>") > page_text.index("headline figures:")
    assert "Traceback" not in text
    assert not [a for _, a in elements.tags if a.get("data-mime-type") == "application/vnd.jupyter.stderr"]
    assert "speaker-independent" in text
    images = [attrs for tag, attrs in elements.tags if tag == "img"]
    sources = [attrs for tag, attrs in elements.tags if tag == "source"]
    assert len(images) >= 8 and all(
        a["src"].startswith("data:image/png;base64,") and len(a["src"]) > 1000 for a in images
    )
    assert sources and all(
        a["src"].startswith("data:audio/wav;base64,") and len(a["src"]) > 1000 for a in sources
    )
    # Nothing is fetched from the network.
    assert not [
        a
        for tag, a in elements.tags
        if tag in ("script", "link", "img")
        and (a.get("src") or a.get("href") or "").startswith(("http:", "https:", "//"))
    ]
    explore = parse_html(report_dir / "01_explore.html")
    assert sum(tag == "source" for tag, _ in explore.tags) >= 4  # a player per emotion

    summary = json.loads((report_dir / "summary.json").read_text())
    assert summary["protocol"] == "speaker-independent" and summary["backbone"] == "mobilenetv3small"
    assert 0 <= summary["uar"] <= 1 and 0 <= summary["baseline"]["uar"] <= 1
    assert set(summary["uar_per_corpus"]) == set(summary["baseline"]["uar_per_corpus"]) == {"ravdess"}
    index = parse_html(tmp_path / "reports" / "index.html")
    index_text = " ".join(index.text)
    assert "tiny" in index_text and f"{summary['uar']:.3f}" in index_text
    assert "UAR ravdess" in index_text and f"{summary['uar_per_corpus']['ravdess']:.3f}" in index_text
    assert any(a.get("href") == "tiny/03_evaluate.html" for tag, a in index.tags if tag == "a")

    screenshot = tmp_path / "report.png"
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={screenshot}",
            "--window-size=1280,1600",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pixels = matplotlib.image.imread(screenshot)[..., :3]
    not_white = np.mean(pixels.min(axis=-1) < 0.9)
    assert not_white > 0.02, f"the screenshot is blank ({not_white:.1%} of pixels are not white)"

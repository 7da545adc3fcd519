"""Runs the notebooks with papermill and renders them as HTML reports.

Each run executes into ``reports/<run_id>/<notebook>.ipynb``, the immutable record of the run
(an existing record is never overwritten), then renders ``<notebook>.html`` beside it with inputs
hidden and every image and audio clip embedded, so the page opens with no network.
``reports/index.html`` lists every report's headline figures.
"""

from __future__ import annotations

import ast
import html
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from aed_tf.config import Config
from aed_tf.errors import UserError
from aed_tf.files import write_text

PROJECT_ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = PROJECT_ROOT / "notebooks"
# The journey `aed-tf run all` takes, in order.
NOTEBOOKS = {"explore": "01_explore.ipynb", "train": "02_train.ipynb", "evaluate": "03_evaluate.ipynb"}
KERNEL_NAME = "aed-tf"
INDEX_FILE = "index.html"


class NotebookFailedError(UserError, RuntimeError):
    """A cell raised: names the notebook, the cell and the partial record."""


@dataclass(frozen=True)
class NotebookRun:
    name: str
    notebook: Path  # the executed record
    html: Path


def notebook_path(name: str) -> Path:
    """`explore`, `01_explore`, `01_explore.ipynb` or a path to a notebook."""
    if name in NOTEBOOKS:
        return NOTEBOOKS_DIR / NOTEBOOKS[name]
    for candidate in (Path(name), NOTEBOOKS_DIR / name, NOTEBOOKS_DIR / f"{name}.ipynb"):
        if candidate.is_file() and candidate.suffix == ".ipynb":
            return candidate
    raise FileNotFoundError(
        f"no notebook {name!r}: give one of {', '.join(NOTEBOOKS)} or all, or a path to an .ipynb file"
    )


def notebook_parameters(path: Path) -> dict[str, Any]:
    """The names and defaults of a notebook's `parameters` cell (a default that is not a Python
    literal stays its source text)."""
    import papermill

    def value(source: str) -> Any:
        try:
            return ast.literal_eval(source)
        except (ValueError, SyntaxError):
            return source

    return {name: value(spec["default"]) for name, spec in papermill.inspect_notebook(str(path)).items()}


def parse_parameters(pairs: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """`-p NAME VALUE` pairs to values: config fields take their field's type (as CLI flags do),
    other values are read as YAML scalars or lists (`3`, `true`, `[a, b]`, text)."""
    values: dict[str, Any] = {}
    config_fields = set(Config.field_names())
    for name, text in pairs:
        value = yaml.safe_load(text) if text.strip() else ""
        if name in config_fields:
            value = Config().replace(**{name: value}).to_flat()[name]
            value = list(value) if isinstance(value, tuple) else value
        values[name] = value
    return values


def ensure_kernel() -> str:
    """The project's own kernel spec, `aed-tf`, running this interpreter: installed into this
    environment when it is missing or stale, so papermill never meets "No such kernel"."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    manager = KernelSpecManager()
    try:
        spec = manager.get_kernel_spec(KERNEL_NAME)
        current = spec.argv[:1] == [sys.executable] and _KERNEL_ARGUMENT in spec.argv
    except NoSuchKernel:
        spec, current = None, False
    if not current:
        _install_kernel(manager)
        spec = KernelSpecManager().get_kernel_spec(KERNEL_NAME)
    if Path(spec.argv[0]).resolve() != Path(sys.executable).resolve():
        raise UserError(
            f"the Jupyter kernel {KERNEL_NAME!r} at {spec.resource_dir} runs {spec.argv[0]}, not this "
            f"environment's {sys.executable}; remove it (`jupyter kernelspec remove {KERNEL_NAME}`) and "
            "run again, and aed-tf installs its own"
        )
    return KERNEL_NAME


# TensorFlow's C++ logging writes to file descriptor 2; left to the terminal rather than captured
# into cells, it stays out of the records and the reports.
_KERNEL_ARGUMENT = "--IPKernelApp.capture_fd_output=False"


def _install_kernel(manager) -> None:
    import tempfile

    from ipykernel.kernelspec import write_kernel_spec

    with tempfile.TemporaryDirectory() as tmp:
        source = write_kernel_spec(
            Path(tmp) / KERNEL_NAME, extra_arguments=[_KERNEL_ARGUMENT],
            overrides={"display_name": "Python (aed-tf)",
                       "env": {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_CPU_ALLOCATOR_USE_BFC": "true"}},
        )
        manager.install_kernel_spec(source, KERNEL_NAME, prefix=sys.prefix)


def run_notebook(name: str, parameters: Mapping[str, Any], report_dir: Path,
                 progress: bool = True) -> NotebookRun:
    """Executes one notebook with `parameters` (each must be one of its parameters) into
    `report_dir`, then renders its HTML. A failing cell raises `NotebookFailedError` after the
    partial record and its HTML are written."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source = notebook_path(name)
    declared = notebook_parameters(source)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise UserError(f"{source.name} has no parameter(s) {', '.join(unknown)}; "
                        f"its parameters: {', '.join(declared)}")
    report_dir.mkdir(parents=True, exist_ok=True)
    record = report_dir / source.name
    if record.exists():
        raise FileExistsError(f"{record} already records a run; choose another run_id "
                              "(-p run_id NAME) or move the old report away")
    kernel = ensure_kernel()
    try:
        papermill.execute_notebook(
            str(source), str(record), parameters=dict(parameters), kernel_name=kernel,
            progress_bar=progress, cwd=os.getcwd(),
        )
    except PapermillExecutionError as error:
        page = render_html(record)
        first_line = (error.source or "").strip().splitlines()[:1]
        raise NotebookFailedError(
            f"{source.name} failed in cell [{error.exec_count}]"
            + (f" ({first_line[0][:60]!r})" if first_line else "")
            + f": {error.ename}: {error.evalue}; the partial record is {record} ({page})"
        ) from None
    return NotebookRun(source.stem, record, render_html(record))


def render_html(notebook: Path) -> Path:
    """`<notebook>.html` beside it: outputs only (inputs and prompts hidden), images embedded,
    and no scripts fetched from the network, so the page opens offline."""
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(
        template_name="lab", exclude_input=True, exclude_input_prompt=True,
        exclude_output_prompt=True, embed_images=True,
    )
    # The lab template loads MathJax and require.js from a CDN; the reports need neither.
    exporter.mathjax_url = ""
    exporter.require_js_url = ""
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    body = _strip_remote_scripts(body)
    return write_text(notebook.with_suffix(".html"), body)


def _strip_remote_scripts(body: str) -> str:
    """Drops the <script src> elements the template still emits: remote or empty."""
    import re

    return re.sub(r'<script[^>]*\bsrc="(https?://[^"]*)?"[^>]*>\s*</script>', "", body)


def run(names: Sequence[str], parameters: Mapping[str, Any], reports_dir: Path = Path("reports"),
        progress: bool = True) -> list[NotebookRun]:
    """Runs `names` in order under one run id (`run_id`, else the evaluated run's directory name,
    else a new one), into `reports_dir/<run_id>/`. Each notebook gets the parameters it declares;
    the evaluate notebook gets the run directory the train notebook writes, or without training
    `run_dir`, else the newest finished run."""
    parameters = dict(parameters)
    declared = {name: notebook_parameters(notebook_path(name)) for name in names}
    unused = sorted(set(parameters) - set().union(*map(set, declared.values())))
    if unused:
        raise UserError(f"no notebook of {', '.join(names)} has the parameter(s) {', '.join(unused)}")
    config = Config.from_namespace(parameters)
    trains = any("run_id" in d for d in declared.values())
    evaluates = any("run_dir" in d for d in declared.values())
    if evaluates and not trains and "run_dir" not in parameters:
        from aed_tf.recognizer import latest_run

        parameters["run_dir"] = str(latest_run(config.train.output_dir))
    if "run_dir" in parameters:
        run_id = Path(parameters["run_dir"]).name
    else:
        run_id = config.run_id()
        parameters["run_dir"] = str(Path(config.train.output_dir) / run_id)
    parameters["run_id"] = run_id
    report_dir = reports_dir / run_id
    parameters["report_dir"] = str(report_dir)
    runs = []
    for name, names_declared in declared.items():
        mine = {k: v for k, v in parameters.items() if k in names_declared}
        runs.append(run_notebook(name, mine, report_dir, progress=progress))
    write_index(reports_dir)
    return runs


def write_index(reports_dir: Path) -> Path:
    """`reports/index.html`: one row per report with a summary.json, newest first. A summary.json
    older than the per-corpus figures gets empty cells for them."""
    from aed_tf.report import SUMMARY_FILE, format_per_corpus, summary_has_held_out_test

    rows = []
    for summary_path in sorted(reports_dir.glob(f"*/{SUMMARY_FILE}")):
        summary = json.loads(summary_path.read_text())
        pages = sorted(p.name for p in summary_path.parent.glob("*.html"))
        rows.append((summary, summary_path.parent.name, pages))
    rows.sort(key=lambda row: row[0].get("date", ""), reverse=True)
    lines = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>aed-tf reports</title>',
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}th{background:#eee}</style>",
        "</head><body><h1>aed-tf reports</h1>",
        f"<p>{len(rows)} run(s). Figures are on each run's held-out test partition; the protocol says "
        "whether its speakers were heard in training. A run marked \"no held-out test\" (protocol "
        "all-speakers) trained on every speaker but its validation ones, and its figures are on "
        "those validation speakers, which chose the epoch: they overstate what new voices get.</p>",
        "<table><tr><th>run</th><th>backbone</th><th>weights</th><th>protocol</th><th>partition</th>"
        "<th>accuracy</th><th>UAR</th><th>macro-F1</th><th>UAR per corpus</th><th>baseline UAR</th>"
        "<th>baseline UAR per corpus</th><th>date</th><th>pages</th></tr>",
    ]
    for summary, run_id, pages in rows:
        protocol = summary["protocol"] + (" (speaker-independent)" if summary["speaker_independent"]
                                          else " (SPEAKER-DEPENDENT)")
        partition = summary["partition"] + ("" if summary_has_held_out_test(summary) else " (no held-out test)")
        baseline = summary.get("baseline") or {}
        links = " ".join(f'<a href="{html.escape(run_id)}/{html.escape(p)}">{html.escape(p)}</a>' for p in pages)
        cells = [run_id, summary["backbone"], summary["weights"], protocol, partition,
                 f"{summary['accuracy']:.3f}", f"{summary['uar']:.3f}", f"{summary['macro_f1']:.3f}",
                 format_per_corpus(summary.get("uar_per_corpus")),
                 f"{baseline['uar']:.3f}" if "uar" in baseline else "",
                 format_per_corpus(baseline.get("uar_per_corpus")), summary["date"]]
        lines.append("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in cells)
                     + f"<td>{links}</td></tr>")
    lines += ["</table></body></html>"]
    return write_text(reports_dir / INDEX_FILE, "\n".join(lines) + "\n")


def work_from_project_root() -> Path:
    """Opened in Jupyter, a notebook runs in `notebooks/`; this moves it to the project root,
    where papermill and the CLI run, so relative paths (`prepared`, `saved_models`) mean the
    same everywhere."""
    if Path.cwd().resolve() == NOTEBOOKS_DIR.resolve():
        os.chdir(PROJECT_ROOT)
    return Path.cwd()

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
import re
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from aed_tf.config import Config
from aed_tf.errors import UserError
from aed_tf.files import write_text

# The notebooks are package data, so they are found the same way from a source checkout (an
# editable install) and from an installed wheel. A checkout's top-level `notebooks/`, where
# Jupyter opens them, is a relative symlink to this folder: one copy of each.
NOTEBOOKS_DIR = Path(str(resources.files("aed_tf") / "notebooks"))


def _checkout_root() -> Path | None:
    """The source checkout aed_tf runs from, recognised by its `notebooks` link to NOTEBOOKS_DIR;
    None when aed_tf is installed from a wheel (site-packages has no such link)."""
    root = Path(__file__).resolve().parents[1]
    notebooks = root / "notebooks"
    return root if notebooks.is_dir() and notebooks.resolve() == NOTEBOOKS_DIR.resolve() else None


PROJECT_ROOT = _checkout_root()
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
    values = {name: yaml.safe_load(text) if text.strip() else "" for name, text in pairs}
    fields = {name: value for name, value in values.items() if name in Config.field_names()}
    # Together: one field may need another (--fusion egemaps needs --normalization speaker).
    typed = Config().replace(**fields).to_flat()
    return {
        name: (list(typed[name]) if isinstance(typed[name], tuple) else typed[name])
        if name in fields
        else value
        for name, value in values.items()
    }


def ensure_kernel() -> str:
    """The project's own kernel spec, `aed-tf`, running this interpreter: installed into this
    environment when it is missing or stale, so papermill never meets "No such kernel"."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    manager = KernelSpecManager()
    try:
        spec = manager.get_kernel_spec(KERNEL_NAME)
        current = spec.argv[:1] == [sys.executable] and all(a in spec.argv for a in _KERNEL_ARGUMENTS)
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


_KERNEL_ARGUMENTS = [
    # TensorFlow's C++ logging writes to file descriptor 2; left to the terminal rather than
    # captured into cells, it stays out of the records and the reports ...
    "--IPKernelApp.capture_fd_output=False",
    # ... and the kernel imports TensorFlow before the first cell with it silenced (unless
    # AED_TF_VERBOSE is set), so the console is not filled with it once per notebook.
    "--IPKernelApp.exec_lines=import aed_tf.quiet; aed_tf.quiet.import_quietly()",
    # "Kernel is running over TCP without encryption", once per notebook (the kernel listens on
    # 127.0.0.1 for this process alone), and "KeyboardInterrupt caught in kernel" as papermill
    # shuts it down. A failing cell is reported from the notebook, not from this log.
    "--IPKernelApp.log_level=CRITICAL",
]


def _install_kernel(manager) -> None:
    import tempfile

    from ipykernel.kernelspec import write_kernel_spec

    with tempfile.TemporaryDirectory() as tmp:
        source = write_kernel_spec(
            Path(tmp) / KERNEL_NAME,
            extra_arguments=_KERNEL_ARGUMENTS,
            overrides={
                "display_name": "Python (aed-tf)",
                "env": {"TF_CPP_MIN_LOG_LEVEL": "2", "TF_CPU_ALLOCATOR_USE_BFC": "true"},
            },
        )
        manager.install_kernel_spec(source, KERNEL_NAME, prefix=sys.prefix)


def run_notebook(
    name: str, parameters: Mapping[str, Any], report_dir: Path, progress: bool = True
) -> NotebookRun:
    """Executes one notebook with `parameters` (each must be one of its parameters) into
    `report_dir`, then renders its HTML. A failing cell raises `NotebookFailedError` after the
    partial record and its HTML are written."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source = notebook_path(name)
    declared = notebook_parameters(source)
    unknown = sorted(set(parameters) - set(declared))
    if unknown:
        raise UserError(
            f"{source.name} has no parameter(s) {', '.join(unknown)}; its parameters: {', '.join(declared)}"
        )
    report_dir.mkdir(parents=True, exist_ok=True)
    record = report_dir / source.name
    if record.exists():
        raise FileExistsError(
            f"{record} already records a run; move the old report away, or write "
            "elsewhere (-p run_id NAME when training, --reports-dir DIR)"
        )
    kernel = ensure_kernel()
    try:
        papermill.execute_notebook(
            str(source),
            str(record),
            parameters=dict(parameters),
            kernel_name=kernel,
            progress_bar=progress,
            cwd=os.getcwd(),
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
        template_name="lab",
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        embed_images=True,
    )
    # The lab template loads MathJax and require.js from a CDN; the reports need neither.
    exporter.mathjax_url = ""
    exporter.require_js_url = ""
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    body = _strip_remote_scripts(body)
    return write_text(notebook.with_suffix(".html"), body)


def _strip_remote_scripts(body: str) -> str:
    """Drops the <script src> elements the template still emits: remote or empty."""
    return re.sub(r'<script[^>]*\bsrc="(https?://[^"]*)?"[^>]*>\s*</script>', "", body)


def run(
    names: Sequence[str],
    parameters: Mapping[str, Any],
    reports_dir: Path = Path("reports"),
    progress: bool = True,
) -> list[NotebookRun]:
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
        from aed_tf.runs import latest_run

        parameters["run_dir"] = str(latest_run(config.train.output_dir))
    if evaluates and not trains:  # refused here, before a kernel starts and a partial report is kept
        _check_finished_run(Path(parameters["run_dir"]))
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


def _check_finished_run(run_dir: Path) -> None:
    from aed_tf.runs import CONFIG_FILE, FINISHED, Run

    if not (run_dir / CONFIG_FILE).is_file():
        raise UserError(
            f"{run_dir}: not a run folder (no {CONFIG_FILE}); -p run_dir takes a folder "
            "that aed-tf train wrote, e.g. saved_models/<run-id>"
        )
    status = Run.load(run_dir).status
    if status != FINISHED:
        raise UserError(
            f"{run_dir}: the run has not finished (status {status!r}); resume it with "
            "aed-tf train --resume --run-id " + run_dir.name
        )


def write_index(reports_dir: Path) -> Path:
    """`reports/index.html`: one row per report with a summary.json, newest first, sortable by any
    column, above a chart of each run's UAR. A summary.json older than the per-corpus figures
    gets empty cells for them."""
    rows = index_rows(reports_dir)
    corpora = sorted({corpus for summary, _, _ in rows for corpus in summary.get("uar_per_corpus") or {}})
    columns = [
        *INDEX_COLUMNS[:INDEX_CORPORA_AT],
        *((f"UAR {corpus}", True) for corpus in corpora),
        *INDEX_COLUMNS[INDEX_CORPORA_AT:],
    ]
    header = "".join(
        f'<th data-type="{"number" if numeric else "text"}" aria-sort="none">'
        f'<button type="button">{html.escape(name)}</button></th>'
        for name, numeric in columns
    )
    numeric = [numeric for _, numeric in columns]
    body = "\n".join(
        "<tr>"
        + "".join(
            _cell(text, value, number)
            for (text, value), number in zip(index_cells(summary, run_id, pages, corpora), numeric)
        )
        + "</tr>"
        for summary, run_id, pages in rows
    )
    lines = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8"><title>aed-tf reports</title>',
        f"<style>{_INDEX_STYLE}</style>",
        "</head><body><h1>aed-tf reports</h1>",
        f"<p>{len(rows)} run(s). Figures are on each run's held-out test partition; the protocol says "
        'whether its speakers were heard in training. A run marked "no held-out test" (protocol '
        "all-speakers) trained on every speaker but its validation ones, and its figures are on "
        "those validation speakers, which chose the epoch: they overstate what new voices get.</p>",
        uar_chart([(run_id, summary) for summary, run_id, _ in rows]),
        '<p class="hint">Click a column\'s header to sort by it; click again to reverse.</p>',
        f'<div class="wrap"><table class="runs"><thead><tr>{header}</tr></thead>',
        f"<tbody>\n{body}\n</tbody></table></div>",
        f"<script>{_SORT_SCRIPT}</script>",
        "</body></html>",
    ]
    return write_text(reports_dir / INDEX_FILE, "\n".join(lines) + "\n")


# The index's columns, (header, sorts as a number); the UAR of each corpus goes in at INDEX_CORPORA_AT.
INDEX_COLUMNS = (
    ("run", False),
    ("backbone", False),
    ("weights", False),
    ("protocol", False),
    ("partition", False),
    ("clips", True),
    ("accuracy", True),
    ("UAR", True),
    ("macro-F1", True),
    ("baseline UAR", True),
    ("date", False),
    ("pages", False),
)
INDEX_CORPORA_AT = 9


def index_rows(reports_dir: Path) -> list[tuple[dict[str, Any], str, list[str]]]:
    """(summary, run id, its HTML pages) of every report under `reports_dir`, newest first."""
    from aed_tf.report import SUMMARY_FILE

    rows = []
    for summary_path in sorted(reports_dir.glob(f"*/{SUMMARY_FILE}")):
        summary = json.loads(summary_path.read_text())
        pages = sorted(p.name for p in summary_path.parent.glob("*.html"))
        rows.append((summary, summary_path.parent.name, pages))
    rows.sort(key=lambda row: row[0].get("date", ""), reverse=True)
    return rows


def index_cells(
    summary: Mapping[str, Any], run_id: str, pages: Sequence[str], corpora: Sequence[str]
) -> list[tuple[str, str | None]]:
    """One index row: each cell's HTML and the value it sorts by (None: its text)."""
    from aed_tf.report import format_per_corpus, summary_has_held_out_test

    def figure(value: float | None) -> tuple[str, str | None]:
        return ("", "") if value is None else (f"{value:.3f}", f"{value:.6g}")

    independence = "speaker-independent" if summary["speaker_independent"] else "SPEAKER-DEPENDENT"
    protocol = html.escape(summary["protocol"]) + (
        ""
        if summary["protocol"].lower() == independence.lower()
        else f'<span class="sub">{independence}</span>'
    )
    held_out = summary_has_held_out_test(summary)
    partition = html.escape(summary["partition"]) + (
        "" if held_out else '<span class="sub">no held-out test</span>'
    )
    baseline = summary.get("baseline") or {}
    baseline_text, baseline_value = figure(baseline.get("uar"))
    baseline_per_corpus = format_per_corpus(baseline.get("uar_per_corpus"))
    if baseline_per_corpus:
        baseline_text += f'<span class="sub">{html.escape(baseline_per_corpus)}</span>'
    per_corpus = summary.get("uar_per_corpus") or {}
    # "03_evaluate.html" reads "evaluate": the order is the table's, and the column stays narrow.
    links = "".join(
        f'<a href="{html.escape(run_id)}/{html.escape(p)}">{html.escape(re.sub(r"^[0-9]+_", "", Path(p).stem))}</a>'
        for p in pages
    )
    date = summary.get("date", "")
    return [
        (html.escape(run_id), None),
        (html.escape(summary["backbone"]), None),
        (html.escape(summary["weights"]), None),
        (protocol, summary["protocol"]),
        (partition, summary["partition"]),
        (str(summary.get("clips", "")), str(summary.get("clips", ""))),
        figure(summary["accuracy"]),
        figure(summary["uar"]),
        figure(summary["macro_f1"]),
        *(figure(per_corpus.get(corpus)) for corpus in corpora),
        (baseline_text, baseline_value),
        (html.escape(date.replace("T", " ")), date),
        (links, None),
    ]


def _cell(text: str, value: str | None, numeric: bool) -> str:
    attributes = (' class="num"' if numeric else "") + (
        "" if value is None else f' data-value="{html.escape(value)}"'
    )
    return f"<td{attributes}>{text}</td>"


# Bar geometry of `uar_chart`, in pixels.
CHART_LABEL_WIDTH, CHART_BAR_WIDTH, CHART_ROW_HEIGHT = 230, 480, 20


def uar_chart(runs: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """Inline SVG, no script: one horizontal bar per (run id, summary), its UAR on a 0 to 1 scale,
    highest first, with the baseline's UAR as a tick across the bar. A run with no held-out test
    gets a pale bar: its figure is on the validation speakers."""
    from aed_tf.report import summary_has_held_out_test

    ranked = sorted(runs, key=lambda run: run[1]["uar"], reverse=True)
    left, top = CHART_LABEL_WIDTH, 24
    width, height = left + CHART_BAR_WIDTH + 60, top + CHART_ROW_HEIGHT * len(ranked) + 4
    parts = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="UAR per run">',
        "<title>UAR per run, highest first; tick: the baseline's UAR</title>",
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1):
        x = left + tick * CHART_BAR_WIDTH
        parts.append(
            f'<line x1="{x:.1f}" y1="{top - 6}" x2="{x:.1f}" y2="{height}" stroke="#ddd"/>'
            f'<text x="{x:.1f}" y="{top - 10}" text-anchor="middle" class="axis">{tick:g}</text>'
        )
    for row, (run_id, summary) in enumerate(ranked):
        y, uar = top + row * CHART_ROW_HEIGHT, float(summary["uar"])
        held_out = summary_has_held_out_test(summary)
        baseline = (summary.get("baseline") or {}).get("uar")
        label = html.escape(run_id) + ("" if held_out else " (val)")
        tip = html.escape(
            f"{run_id}: UAR {uar:.3f}"
            + (f", baseline {baseline:.3f}" if baseline is not None else "")
            + ("" if held_out else ", no held-out test (validation speakers)")
        )
        parts.append(
            f"<g><title>{tip}</title>"
            f'<text x="{left - 6}" y="{y + 14}" text-anchor="end">{label}</text>'
            f'<rect class="bar" data-run="{html.escape(run_id)}" data-uar="{uar:.6g}" x="{left}" y="{y + 3}" '
            f'width="{uar * CHART_BAR_WIDTH:.1f}" height="{CHART_ROW_HEIGHT - 6}" '
            f'fill="{"#4c78a8" if held_out else "#b9cde3"}"/>'
            f'<text x="{left + uar * CHART_BAR_WIDTH + 4:.1f}" y="{y + 14}">{uar:.3f}</text>'
        )
        if baseline is not None:
            x = left + float(baseline) * CHART_BAR_WIDTH
            parts.append(
                f'<line class="baseline" x1="{x:.1f}" y1="{y + 1}" x2="{x:.1f}" '
                f'y2="{y + CHART_ROW_HEIGHT - 1}" stroke="#222" stroke-width="2"/>'
            )
        parts.append("</g>")
    parts.append("</svg>")
    legend = (
        '<p class="hint">Bars: UAR of each run, highest first; black tick: the baseline trained on the '
        "same split; pale bar, (val): no held-out test, the figure is on the validation speakers.</p>"
    )
    return "<h2>UAR per run</h2>" + "".join(parts) + legend


# Narrow enough for a 1300 px window: a smaller font, long cells wrap, and a wrapper scrolls
# sideways rather than cutting off a column if the page is narrower still.
_INDEX_STYLE = (
    "body{font-family:sans-serif;margin:1.5em;font-size:14px}"
    ".wrap{overflow-x:auto;max-width:100%}"
    "table.runs{border-collapse:collapse;width:100%;font-size:13px}"
    "table.runs td,table.runs th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top;"
    "overflow-wrap:break-word}"
    # Run ids are long and unbroken: the one column that may break anywhere.
    "table.runs td:first-child{overflow-wrap:anywhere;min-width:8em}"
    "table.runs th{background:#eee;cursor:pointer}"
    "table.runs th button{all:unset;font-weight:bold}"
    "table.runs th button:focus-visible{outline:2px solid #4c78a8}"
    # On the cell, not the button: the arrow stays out of the button's accessible name.
    "table.runs th[aria-sort=ascending]::after{content:' \\25B2'}"
    "table.runs th[aria-sort=descending]::after{content:' \\25BC'}"
    "table.runs td.num{white-space:nowrap;text-align:right}"
    "table.runs td a{display:block;white-space:nowrap}"
    ".sub{display:block;color:#666;font-size:11px;white-space:normal}"
    ".hint{color:#555;font-size:12px}"
    "svg.chart text{font:12px sans-serif}svg.chart text.axis{fill:#666}"
)

# Sorts the rows of the index by the clicked column, ascending then descending: by data-value
# where a cell has one (as a number in a numeric column), else by its text; empty cells last.
_SORT_SCRIPT = """
document.querySelectorAll("table.runs th").forEach(function (th) {
  // The whole cell takes the click; its button, the keyboard (Enter and Space click it).
  th.addEventListener("click", function () {
    var table = th.closest("table"), body = table.tBodies[0];
    var column = Array.prototype.indexOf.call(th.parentElement.children, th);
    var numeric = th.dataset.type === "number", ascending = th.getAttribute("aria-sort") !== "ascending";
    table.querySelectorAll("th").forEach(function (other) { other.setAttribute("aria-sort", "none"); });
    th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
    function key(row) {
      var cell = row.cells[column], text = cell.hasAttribute("data-value") ? cell.dataset.value : cell.textContent.trim();
      return numeric ? (text === "" ? null : parseFloat(text)) : (text === "" ? null : text);
    }
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a), y = key(b);
      if (x === null || y === null) return (x === null) - (y === null);
      var order = numeric ? x - y : x.localeCompare(y);
      return ascending ? order : -order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
  });
});
"""


def work_from_project_root() -> Path:
    """Opened in Jupyter from a checkout, a notebook runs in `notebooks/`; this moves it to the
    checkout's root, where papermill and the CLI run, so relative paths (`prepared`,
    `saved_models`) mean the same everywhere. Anywhere else (papermill runs a notebook in the
    directory `aed-tf run` was started from, checkout or not) it stays where it is."""
    if PROJECT_ROOT is not None and Path.cwd().resolve() == NOTEBOOKS_DIR.resolve():
        os.chdir(PROJECT_ROOT)
    return Path.cwd()

"""Report rendering: a failing cell or an unknown kernel fails with the notebook's own
error; the HTML hides code behind a toggle and loads nothing from the network."""

import json

import nbformat
import pytest
from allianceflow.reports import ReportError, render_notebook, with_code_toggle


def notebook(tmp_path, *sources: str):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in sources]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = tmp_path / "template.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.mark.slow
def test_failing_cell_fails_with_the_notebooks_error(tmp_path):
    template = notebook(tmp_path, "x = 1", "raise ValueError(f'boom from cell, x={x}')")
    with pytest.raises(ReportError, match=r"ValueError: boom from cell, x=2"):
        render_notebook(template, tmp_path / "out.ipynb", tmp_path / "out.html", {"x": 2})
    assert not (tmp_path / "out.html").exists()  # nothing half-written is left behind


@pytest.mark.slow
def test_unknown_kernel_fails_clearly(tmp_path):
    template = notebook(tmp_path, "x = 1")
    with pytest.raises(ReportError, match="could not be executed.*no-such-kernel"):
        render_notebook(template, tmp_path / "out.ipynb", tmp_path / "out.html", {},
                        kernel="no-such-kernel")


@pytest.mark.slow
def test_html_hides_code_behind_a_toggle_and_needs_no_network(tmp_path):
    template = notebook(tmp_path, "x = 1", "print('visible output', x * 21)")
    render_notebook(template, tmp_path / "out.ipynb", tmp_path / "out.html", {"x": 2})
    html = (tmp_path / "out.html").read_text()
    assert "visible output 42" in html
    # the code is in the page (once in the highlighted source, once as output) behind a toggle
    assert html.count("visible output") == 2 and 'class="code-toggle"' in html
    assert "body:not(.show-code) .jp-CodeCell .jp-Cell-inputWrapper{display:none}" in html
    assert "cdnjs" not in html and "<script src=" not in html
    executed = json.loads((tmp_path / "out.ipynb").read_text())
    assert any("injected-parameters" in c["metadata"].get("tags", []) for c in executed["cells"])


def test_code_toggle_goes_right_after_body():
    out = with_code_toggle('<html><head></head><body class="jp-Notebook"><p>x</p></body>')
    assert out.index('class="code-toggle"') > out.index('<body class="jp-Notebook">')
    assert out.index('class="code-toggle"') < out.index("<p>x</p>")
    with pytest.raises(ReportError):
        with_code_toggle("<html>no body</html>")


def test_a_finished_job_is_not_failed_by_tracebacks_a_library_logged(tmp_path):
    from allianceflow.errors import DONE_MARK
    from allianceflow.reports import dataset_failure

    folder = tmp_path / "fit" / "trials" / "t"
    folder.mkdir(parents=True)
    recovered = ("Rewrite failure due to: local_add_remove_zeros\nTraceback (most recent "
                 "call last):\n  ...\nNotImplementedError: Elemwise.perform\n")
    (folder / "riclpm.log").write_text(recovered + f"{DONE_MARK}fit-trial-analysis\n")
    assert dataset_failure(tmp_path, "trials", "t") is None
    (folder / "riclpm.log").write_text(recovered)  # the same, but the job died there
    assert "NotImplementedError" in dataset_failure(tmp_path, "trials", "t")


def test_rank_plots_are_arviz_rank_plots_with_one_panel_per_parameter():
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    import xarray as xr
    from allianceflow.report_parts import rank_plots

    rng = np.random.default_rng(0)
    post = xr.Dataset({n: (("chain", "draw"), rng.normal(size=(4, 300)))
                       for n in ("mu", "tau_study", "unused")})
    fig = rank_plots(post, ["mu", "tau_study"], "Rank plots — test")
    titles = {ax.get_title() for ax in fig.axes}
    assert {"mu", "tau_study"} <= titles and "unused" not in titles
    assert fig._suptitle.get_text() == "Rank plots — test"

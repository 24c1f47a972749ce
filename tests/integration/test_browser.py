"""The index and a review report open in headless Chromium (Debian's package): the page
renders (a screenshot that is not blank) and the browser console shows no errors.

`make test` installs chromium when it can (root with apt); where it cannot, this test is
skipped and says why. A page with a deliberate script error checks that the console
check would catch one.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it "
                             "where it runs as root with apt)")


def open_in_chromium(page: Path, png: Path, profile: Path) -> list[str]:
    """Screenshot `page`; return the browser console lines that report errors."""
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
           "--window-size=1280,1600", f"--screenshot={png}", page.resolve().as_uri()]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert png.exists(), run.stderr[-3000:]
    return [line for line in run.stderr.splitlines()
            if "CONSOLE" in line and ("Error" in line or "Uncaught" in line
                                      or "Failed to load" in line)]


def not_blank(png: Path) -> bool:
    grey = np.asarray(Image.open(png).convert("L"), dtype=float)
    return grey.std() > 5 and (grey < 200).mean() > 0.01


@needs_chromium
def test_console_check_catches_a_script_error(tmp_path):
    page = tmp_path / "broken.html"
    page.write_text("<html><body><h1>x</h1><script>notDefinedAnywhere();</script></body></html>")
    assert open_in_chromium(page, tmp_path / "broken.png", tmp_path / "profile")


@needs_chromium
@pytest.mark.parametrize("page", ["reports/index.html",
                                  "reports/meta/konstantopoulos2011.html"])
def test_report_renders_in_chromium_without_console_errors(project, tmp_path, page):
    work, _, _ = project
    png = tmp_path / "page.png"
    errors = open_in_chromium(work / page, png, tmp_path / "profile")
    assert not errors, "\n".join(errors)
    assert not_blank(png), f"{page} rendered blank"

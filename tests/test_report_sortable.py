"""The HTML report's tables sort by a clicked header: one inline script (no external resource), every
table marked sortable, numbers by value (marks and bold kept with their row), words after them, hostile
text still inert; and, in headless Chromium where there is one, a click really reorders the rows."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile

import pandas as pd
import pytest

from cifarbench.report.render import SORT_SCRIPT, Document, Section, Strong, Table, to_html

CELLS = ["10.50 ± 1.00", "missing", "+9.75 [+1.0, +2.0]*", "−2.00", "1,234", "< 0.001", "n/a", "0.002"]


def page() -> str:
    frame = pd.DataFrame({"value": CELLS, "name": [f"n{i}" for i in range(len(CELLS))]},
                         index=pd.Index([f"row{i}" for i in range(len(CELLS))], name="arch"))
    other = pd.DataFrame({"x": ["1"]}, index=pd.Index(["a"], name="k"))
    return to_html(Document("report", [Strong("bold")], [Section("s", "title", "guide", [Table(frame), Table(other)])]))


def test_one_inline_script_sorts_every_table_and_the_page_stays_self_contained():
    html = page()
    assert html.count("<script>") == 1 and html.count(SORT_SCRIPT) == 1  # with the images-loaded flag, once
    assert html.count("<table") == html.count('<table class="sortable"><thead><tr>') == 2  # headers to click
    assert "table.sortable" in SORT_SCRIPT and 'addEventListener("click"' in SORT_SCRIPT
    assert not re.search(r"""(src|href)=["']?(https?:|//)|<link|@import|url\(""", html)


def test_a_click_on_a_header_sorts_the_rows_in_chromium():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium or chromium-browser on PATH (tests/install_browser.sh installs it)")
    click = ('<script>window.addEventListener("load", function () {'
             ' document.querySelector("thead th:nth-child(2)").click(); });</script></body>')
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/page.html"
        with open(path, "w", encoding="utf-8") as out:
            out.write(page().replace("</body>", click))
        done = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                               "--disable-background-networking", "--disable-component-update", "--disable-sync",
                               f"--user-data-dir={folder}/profile", "--virtual-time-budget=3000", "--dump-dom",
                               f"file://{path}"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    first_table = done.stdout.split("<tbody>")[1].split("</tbody>")[0]
    order = re.findall(r"<tr><th>(row\d+)</th><td[^>]*>([^<]*)</td>", first_table)
    assert [value.replace("&lt;", "<") for _, value in order] == [
        "−2.00", "< 0.001", "0.002", "+9.75 [+1.0, +2.0]*", "10.50 ± 1.00", "1,234", "missing", "n/a"]
    assert 'aria-sort="ascending"' in done.stdout

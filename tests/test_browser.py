"""The report in headless Chromium (gvsl.report.browser): the committed page passes, a broken one does not."""

import pytest

from gvsl.errors import GVSLInputError
from gvsl.report.browser import check_report, find_browser
from gvsl.report.page import FIGURE_CAPTIONS, FIGURE_FOLDER
from tests.test_pipeline import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def chromium():
    try:
        find_browser()
    except GVSLInputError as err:
        pytest.fail(f"{err} (make test-slow installs Debian's chromium)")


def test_the_committed_report_shows_every_image_and_table_within_the_page(tmp_path):
    page = ROOT / "results" / "report.html"
    check = check_report(page, screenshot=tmp_path / "report.png")
    assert check.problems == []
    source = page.read_text()
    assert len(check.measured["images"]) == source.count("<img") == len(FIGURE_CAPTIONS)
    assert len(check.measured["tables"]) == source.count("<table") >= 4
    assert check.screenshot.stat().st_size > 50_000  # a full page of tables and figures, not a blank window
    # narrower windows reflow the same page without it scrolling sideways
    assert check_report(page, width=1024).problems == []


def test_a_broken_page_names_each_problem(tmp_path):
    (tmp_path / "present.png").write_bytes((ROOT / "results" / FIGURE_FOLDER / "fig6_validation.png").read_bytes())
    (tmp_path / "page.html").write_text(
        "<!doctype html><html><head><style>body{max-width:600px;margin:auto}</style></head><body>"
        "<img src='present.png' style='max-width:100%'><img src='missing.png'>"
        "<table><tr><td>only</td><td>one row</td></tr></table>"
        "<table style='width:2000px'><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>2</td></tr></table>"
        "<div style='overflow-x:hidden'><p style='margin-left:-300px'>clipped</p></div>"
        "</body></html>"
    )
    problems = check_report(tmp_path / "page.html", width=1000).problems
    assert any("missing.png did not load" in p for p in problems)
    assert not any("present.png" in p for p in problems)
    assert any("rendered 1×2 cells" in p for p in problems)
    assert any(p.startswith('table "ab') and "sticks out of the page column" in p for p in problems)
    assert any("scrolls sideways" in p for p in problems)
    # cut off by a box that hides its overflow is still out of sight, here on the left
    assert any(p.startswith('p "clipped"') for p in problems)

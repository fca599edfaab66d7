"""The report as a person sees it: ``results/report.html`` opened in headless Chromium.

A script added to a copy of the page measures, once the page has loaded, what a reader would notice:
images that did not load, tables that did not render (fewer than two rows or columns, or no height),
and anything that sticks out of the page's column (wider than the body) without being inside a box
that scrolls. Chromium dumps the measured page (``--dump-dom``), which is read back here, and can
save a full-page screenshot to look at.

    make check-report        # python -m gvsl.report.browser results/report.html --screenshot build/report.png

Chromium is Debian's ``chromium`` package (``apt-get install chromium``); ``make check-report``
installs it where it is missing. A browser driver (Selenium, Playwright) would do the same through a
second package and its own browser download, which this machine cannot make.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gvsl.errors import GVSLInputError

__all__ = ["BrowserCheck", "check_report", "find_browser"]

_BROWSERS = ("chromium", "chromium-browser", "google-chrome")
_RESULT_ID = "gvsl-browser-check"
# Runs after every image has loaded or failed; writes its findings into the page for --dump-dom.
_MEASURE = """
<script>
window.addEventListener("load", () => {
  const column = document.body.getBoundingClientRect();
  const scrolls = el => { for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
    if (["auto", "scroll"].includes(getComputedStyle(a).overflowX)) return true; } return false; };
  const describe = el => {
    const text = (el.textContent || el.getAttribute("src") || "").trim().slice(0, 60);
    return `${el.tagName.toLowerCase()} "${text}"`;
  };
  const out = {column_left: Math.round(column.left), column_right: Math.round(column.right),
               page_width: document.documentElement.scrollWidth,
               viewport_width: document.documentElement.clientWidth, page_height: document.documentElement.scrollHeight,
               images: [], tables: [], overflowing: []};
  for (const img of document.images) {
    out.images.push({src: img.getAttribute("src"), loaded: img.complete && img.naturalWidth > 0,
                     width: Math.round(img.getBoundingClientRect().width)});
  }
  for (const table of document.querySelectorAll("table")) {
    const box = table.getBoundingClientRect();
    out.tables.push({rows: table.rows.length, columns: Math.max(0, ...Array.from(table.rows, r => r.cells.length)),
                     height: Math.round(box.height), caption: describe(table.rows[0] || table)});
  }
  const flagged = new Set();  // only the outermost element that sticks out, not each of its cells
  const inside = el => {
    for (let a = el.parentElement; a; a = a.parentElement) if (flagged.has(a)) return true;
    return false;
  };
  for (const el of document.body.querySelectorAll("*")) {
    const box = el.getBoundingClientRect();
    const out_of_column = box.right > column.right + 1 || box.left < column.left - 1;
    if (box.width > 0 && out_of_column && !scrolls(el) && !inside(el)) {
      flagged.add(el);
      out.overflowing.push({element: describe(el), left: Math.round(box.left), right: Math.round(box.right)});
    }
  }
  const pre = document.createElement("pre");
  pre.id = "RESULT_ID";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
""".replace("RESULT_ID", _RESULT_ID)


@dataclass
class BrowserCheck:
    """What Chromium measured on the page, and the problems found in it."""

    page: Path
    measured: dict[str, Any]
    problems: list[str] = field(default_factory=list)
    screenshot: Path | None = None

    @property
    def passed(self) -> bool:
        return not self.problems


def find_browser() -> str:
    """The Chromium executable on PATH, or a one-line error saying how to install it."""
    for name in _BROWSERS:
        if found := shutil.which(name):
            return found
    raise GVSLInputError(
        "no Chromium on PATH (looked for " + ", ".join(_BROWSERS) + "); on Debian: "
        "apt-get install chromium, or run make check-report"
    )


def _chromium(browser: str, width: int, height: int, *arguments: str) -> subprocess.CompletedProcess:
    command = [
        browser,
        "--headless",
        "--disable-gpu",
        "--hide-scrollbars",
        "--allow-file-access-from-files",
        f"--window-size={width},{height}",
        "--virtual-time-budget=10000",
        *arguments,
    ]
    if os.geteuid() == 0:
        command.insert(1, "--no-sandbox")  # Chromium refuses to run its sandbox as root (containers)
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def _problems(measured: dict[str, Any], expected_tables: int) -> list[str]:
    problems = [f"image {image['src']} did not load" for image in measured["images"] if not image["loaded"]]
    problems += [
        f"image {image['src']} is shown 0 px wide"
        for image in measured["images"]
        if image["loaded"] and image["width"] == 0
    ]
    if len(measured["tables"]) != expected_tables:
        problems.append(f"{len(measured['tables'])} tables rendered of the {expected_tables} in the page")
    problems += [
        f"table {table['caption']} rendered {table['rows']}×{table['columns']} cells, {table['height']} px high"
        for table in measured["tables"]
        if table["rows"] < 2 or table["columns"] < 2 or table["height"] == 0
    ]
    problems += [
        f"{item['element']} sticks out of the page column ({item['left']}–{item['right']} px outside "
        f"{measured['column_left']}–{measured['column_right']} px)"
        for item in measured["overflowing"]
    ]
    if measured["page_width"] > measured["viewport_width"]:
        problems.append(
            f"the page scrolls sideways: {measured['page_width']} px in a {measured['viewport_width']} px window"
        )
    return problems


def check_report(
    page: str | Path, *, width: int = 1280, screenshot: str | Path | None = None, browser: str | None = None
) -> BrowserCheck:
    """Open ``page`` in headless Chromium at ``width`` px and check what a reader would see.

    Returns the measurements and the problems found (empty when the page is fine). ``screenshot``
    also saves a full-page PNG there.
    """
    page = Path(page).resolve()
    if not page.is_file():
        raise GVSLInputError(f"{page}: no such report; run dvc repro first")
    browser = browser or find_browser()
    source = page.read_text()
    if "</body>" not in source:
        raise GVSLInputError(f"{page}: not an HTML page with a </body>")
    # A copy with the measuring script; <base> keeps the figures' relative paths pointing beside the page.
    base = f'<base href="{html.escape(page.parent.as_uri())}/">'
    measuring = re.sub(r"<head>", f"<head>{base}", source, count=1).replace("</body>", _MEASURE + "</body>")
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / page.name
        copy.write_text(measuring)
        result = _chromium(browser, width, 900, "--dump-dom", copy.as_uri())
        found = re.search(rf'<pre id="{_RESULT_ID}">(.*?)</pre>', result.stdout, re.S)
        if result.returncode or not found:
            raise GVSLInputError(
                f"{browser} did not render {page} (exit {result.returncode}): "
                f"{result.stderr.strip().splitlines()[-1:] or 'no measurements'}"
            )
        measured = json.loads(html.unescape(found.group(1)))
        check = BrowserCheck(page, measured, _problems(measured, source.count("<table")))
        if screenshot is not None:
            shot = Path(screenshot).resolve()
            shot.parent.mkdir(parents=True, exist_ok=True)
            # the page alone (without the script), as tall as it is
            _chromium(browser, width, measured["page_height"], f"--screenshot={shot}", page.as_uri())
            if not shot.is_file():
                raise GVSLInputError(f"{browser} wrote no screenshot of {page}")
            check.screenshot = shot
    return check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gvsl.report.browser", description=__doc__.splitlines()[0])
    parser.add_argument("page", type=Path, nargs="?", default=Path("results/report.html"))
    parser.add_argument("--find", action="store_true", help="only say which Chromium would run (exit 2: none)")
    parser.add_argument("--width", type=int, default=1280, help="window width in px (default 1280)")
    parser.add_argument("--screenshot", type=Path, help="also save a full-page PNG here")
    args = parser.parse_args(argv)
    try:
        if args.find:
            print(find_browser())
            return 0
        check = check_report(args.page, width=args.width, screenshot=args.screenshot)
    except GVSLInputError as err:
        print(f"check-report: error: {err}", file=sys.stderr)
        return 2
    measured = check.measured
    print(
        f"{check.page.name} at {args.width} px: {sum(i['loaded'] for i in measured['images'])}/"
        f"{len(measured['images'])} images loaded, {len(measured['tables'])} tables, "
        f"{measured['page_height']} px tall" + (f"; screenshot {check.screenshot}" if check.screenshot else "")
    )
    for problem in check.problems:
        print(f"  problem: {problem}")
    return 0 if check.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())

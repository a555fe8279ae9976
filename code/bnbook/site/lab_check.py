"""The Jupyter editions, opened in JupyterLab in a real browser: ``make lab-test``.

It starts JupyterLab on ``_build/jupyter`` the way ``make lab`` does (same root folder,
``--allow-root`` as root), here on 127.0.0.1 with a free port, a random token and no browser,
with notebook windowing off so that every cell is in the page. Then it opens every notebook
there (the Jupyter edition of each chapter and each student edition) in Debian's Chromium
through Playwright, without executing anything (requests to any other host are blocked),
waits for JupyterLab's MathJax, saves a screenshot under ``_build/lab-test/`` and checks:

* **raw MyST**: no ``{doc}``, ``{cite``, ``{glue``, ``{ref}``-style role, ``:label:`` or
  directive fence in the rendered Markdown's text outside code;
* **raw TeX**: no ``$``, ``\\(`` or TeX command left untypeset, no MathJax error;
* **figures**: at least as many loaded images as the website's page has figures;
* **numbers**: the notebook's "Exercise N.M" and "Fig. N.M" equal the website page's, in order;
* **errors**: no error output in the notebook, no "No renderer" or widget error in the page.

It prints one row per notebook and exits 1 with the failures if any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["site_numbers", "notebook_numbers", "LabReport", "format_table", "start_lab",
           "check_notebook", "run", "main"]

RAW_MYST = r"\{(doc|ref|numref|eq|cite(:[a-z]+)?|glue(:[a-z]+)?|download|math)\}`|:label:|:class:|```\{|:::\{"
RAW_TEX = r"\$|\\\(|\\\[|\\[a-zA-Z]+\{"
_CAPTION = re.compile(r'caption-number">((?:Exercise|Fig\.) [0-9A-Z.]+?)\s*</span>')
_NUMBER = re.compile(r"^(?:### (Exercise [0-9A-Z.]+)|\*\*(Fig\. [0-9A-Z.]+):\*\*)", re.M)

PAGE_SCRIPT = """([rawMyst, rawTex]) => {
  const md = [...document.querySelectorAll('.jp-MarkdownCell .jp-RenderedMarkdown')];
  const text = md.map(el => { const c = el.cloneNode(true);
      c.querySelectorAll('code, pre, mjx-container, mjx-assistive-mml').forEach(x => x.remove());
      return c.innerText; }).join('\\n');
  const images = [...document.querySelectorAll('.jp-Notebook img')]
      .filter(i => i.complete && i.naturalWidth > 0).length;
  const myst = text.match(new RegExp(rawMyst, 'g')) || [];
  const tex = text.match(new RegExp(rawTex, 'g')) || [];
  const body = document.querySelector('.jp-Notebook')?.innerText || '';
  const pageErrors = (body.match(/No renderer could be found|Error displaying widget/g) || []);
  return {markdown: md.length, images, myst, tex,
          merror: document.querySelectorAll('mjx-merror').length, pageErrors};
}"""


def site_numbers(html: str) -> list[str]:
    """The numbered exercises and figures of a website page, in order ("Exercise 2.1", ...)."""
    return _CAPTION.findall(html)


def notebook_numbers(nb: dict) -> list[str]:
    """The exercise headings and figure captions of an edition, in order."""
    found = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            source = "".join(cell["source"])
            found += [a or b for a, b in _NUMBER.findall(source)]
    return found


@dataclass
class LabReport:
    notebook: str
    figures: int = 0
    site_figures: int = 0
    myst: int = 0
    tex: int = 0
    errors: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


def format_table(reports: list[LabReport]) -> str:
    head = f"{'notebook':<42} {'figures':>9} {'raw MyST':>8} {'raw TeX':>7} {'errors':>6} {'s':>5}"
    rows = [head, "-" * len(head)]
    for r in reports:
        rows.append(f"{r.notebook:<42} {r.figures:>4}/{r.site_figures:<4} {r.myst:>8} "
                    f"{r.tex:>7} {r.errors:>6} {r.seconds:>5.1f}")
    return "\n".join(rows)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_lab(root: Path, settings: Path):
    """JupyterLab on ``root`` (127.0.0.1, a token, no browser); returns (process, url, token)."""
    port, token = _free_port(), secrets.token_hex(16)
    tracker = settings / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", f"--IdentityProvider.token={token}",
               f"--ServerApp.root_dir={root}"] + (["--allow-root"] if os.geteuid() == 0 else [])
    env = dict(os.environ, JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(settings / "workspaces"))
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        if process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited: {process.stderr.read()[-2000:]}")
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            return process, url, token
        except OSError:
            time.sleep(0.5)
    process.terminate()
    raise RuntimeError("JupyterLab did not answer within 60 s")


def check_notebook(page, url: str, token: str, path: Path, site: Path, shots: Path,
                   k: int) -> LabReport:
    report, start = LabReport(path.name), time.time()
    nb = json.loads(path.read_text())
    doc = path.stem.removesuffix("_student")
    html_path = site / "chapters" / f"{doc}.html"
    html = html_path.read_text() if html_path.exists() else ""
    report.site_figures = html.count('caption-number">Fig.')
    page.goto(f"{url}/lab/workspaces/t{k}/tree/{path.name}?reset&token={token}")
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60000)
    page.wait_for_function("""() => { const n = document.querySelectorAll(
        '.jp-MarkdownCell .jp-RenderedMarkdown').length; return n > 0; }""", timeout=60000)
    stable, last = 0, None
    while stable < 3 and time.time() - start < 60:           # MathJax typesets in batches
        time.sleep(0.5)
        result = page.evaluate(PAGE_SCRIPT, [RAW_MYST, RAW_TEX])
        key = (result["markdown"], result["images"], len(result["tex"]))
        stable, last = (stable + 1, key) if key == last else (0, key)
    page.screenshot(path=str(shots / f"{path.stem}.png"))
    report.figures, report.myst, report.tex = result["images"], len(result["myst"]), \
        len(result["tex"]) + result["merror"]
    report.errors = sum(o.get("output_type") == "error" for c in nb["cells"]
                        for o in c.get("outputs", [])) + len(result["pageErrors"])
    report.seconds = time.time() - start
    if report.myst:
        report.failures.append(f"raw MyST: {sorted(set(result['myst']))[:5]}")
    if report.tex:
        report.failures.append(f"untypeset TeX: {sorted(set(result['tex']))[:5]}")
    if report.figures < report.site_figures:
        report.failures.append(f"{report.figures} figures, the website has {report.site_figures}")
    if report.errors:
        report.failures.append(f"{report.errors} error outputs")
    if html and notebook_numbers(nb) != site_numbers(html):
        report.failures.append(f"numbers {notebook_numbers(nb)} differ from the website's "
                               f"{site_numbers(html)}")
    return report


def run(lab_dir: Path, site: Path, out: Path, chromium: str | None = None):
    from playwright.sync_api import sync_playwright

    from bnbook.site.check import CHROMIUM_FLAGS, find_chromium

    notebooks = sorted(lab_dir.glob("*.ipynb"))
    if not notebooks:
        raise RuntimeError(f"no notebooks in {lab_dir}: run make test, then make book")
    out.mkdir(parents=True, exist_ok=True)
    reports, start = [], time.time()
    with tempfile.TemporaryDirectory(prefix="bnbook-lab-") as tmp:
        process, url, token = start_lab(lab_dir.resolve(), Path(tmp) / "settings")
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=find_chromium(chromium),
                                             args=list(CHROMIUM_FLAGS), headless=True)
                page = browser.new_page(viewport={"width": 1280, "height": 1600})
                page.route("**/*", lambda route: route.continue_()
                           if route.request.url.startswith(url) or
                           route.request.url.startswith("data:") else route.abort())
                for k, path in enumerate(notebooks):
                    reports.append(check_notebook(page, url, token, path, site, out, k))
                browser.close()
        finally:
            process.terminate()
            process.wait(timeout=30)
    return reports, time.time() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bnbook.site.lab_check",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--lab-dir", type=Path, default=Path("_build/jupyter"))
    parser.add_argument("--site", type=Path, default=Path("_build/html"))
    parser.add_argument("--out", type=Path, default=Path("_build/lab-test"))
    parser.add_argument("--chromium", help="Chromium executable (default: chromium on PATH)")
    args = parser.parse_args(argv)
    try:
        import jupyterlab  # noqa: F401
        import playwright  # noqa: F401
    except ImportError as exc:
        print(f"error: {exc.name} is missing: make lab-test installs JupyterLab "
              "(pinned in constraints.txt); playwright comes with requirements.txt",
              file=sys.stderr)
        return 2
    try:
        reports, seconds = run(args.lab_dir, args.site, args.out, args.chromium)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_table(reports))
    print(f"{len(reports)} notebooks in {seconds:.0f} s; screenshots in {args.out}")
    failed = [(r.notebook, f) for r in reports for f in r.failures]
    for name, failure in failed:
        print(f"FAIL {name}: {failure}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

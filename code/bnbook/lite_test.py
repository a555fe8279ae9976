"""The browser edition tested in a real browser: ``make lite-test`` (``python -m bnbook.lite_test``).

It serves the built site (``_build/html``) on 127.0.0.1, blocks every request to another host,
opens the Lite edition's REPL in headless Chromium (Debian's ``chromium``, driven by Playwright;
Playwright's own browsers are never downloaded) and types code into it, as a reader would:

1. the kernel starts (the REPL runs ``print`` from its URL);
2. piplite installs ipywidgets and bnbook from the site's own ``pypi/`` folder;
3. ``import bnbook.numpy_norms`` and a batch norm forward give per-feature means of zero;
4. chapter 2's student edition (its Lite copy) runs its first checker on a wrong answer (the
   checker's message appears) and on a right one (it passes);
5. an explorer created in the page redraws its figure when a slider's value is set from Python;
6. the student edition opens in the notebook app with the Pyodide kernel (no kernel dialog).

Any failed request, blocked request or console error fails the test. It prints a table of each
step's time (the kernel start first), saves a screenshot per step under ``--out`` and writes
``summary.json`` there.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import quote

from bnbook.site_test import CHROMIUM_FLAGS, find_chromium, serve

__all__ = ["STEPS", "Step", "run", "main"]

STUDENT = "02_forward_student.ipynb"
_READY = quote('print("kernel " + "ready")')      # the page's text shows the code, not the output

_INSTALL = ('import piplite; await piplite.install(["ipywidgets", "comm", "jupyterlab_widgets"]); '
            'await piplite.install("bnbook", deps=False); print("installed")')
_FORWARD = ("import numpy as np, bnbook.numpy_norms as norms; "
            "x = np.random.default_rng(0).normal(3.0, 2.0, size=(16, 5)); "
            "y, _ = norms.batch_norm_forward(x, np.ones(5), np.zeros(5)); "
            "print('forward means zero:', bool(np.abs(y.mean(0)).max() < 1e-9))")
# The Lite copy's import cell (torch taken out, glue a no-op), then its first checker.
_LOAD = ("import json, sys, types, matplotlib.pyplot, ipywidgets; sys.modules.setdefault('myst_nb', types.SimpleNamespace("
         "glue=lambda *a, **k: None)); "
         f"cells = [''.join(c['source']) for c in json.load(open('{STUDENT}'))['cells'] "
         "if c['cell_type'] == 'code']; "
         "exec(next(c for c in cells if 'from bnbook.checks import' in c)); "
         "first_check = next(c for c in cells if c.lstrip().startswith('check_')); "
         "print('loaded:', first_check.strip())")
_WRONG = ("def my_batch_norm_forward(x, gamma, beta, eps=1e-5): "
          "return norms.batch_norm_forward(x, gamma, beta, eps=0.1)")
_RIGHT = "def my_batch_norm_forward(x, gamma, beta, eps=1e-5): return norms.batch_norm_forward(x, gamma, beta, eps=eps)"
_EXPLORER = ("from bnbook.widgets import batch_norm_explorer; explorer = batch_norm_explorer(); "
             "display(explorer); print('explorer shown')")
_SLIDE = ("slider = next(iter(explorer.controls.values())); slider.value = slider.max; "
          "print('slider set to', slider.value)")


@dataclass
class Step:
    """One step: code typed into the REPL and the text its output must contain."""

    name: str
    code: str
    expect: str
    error_expected: bool = False
    seconds: float = 0.0
    ok: bool = False
    detail: str = ""


STEPS = (
    ("piplite installs ipywidgets and bnbook", _INSTALL, "installed"),
    ("import bnbook.numpy_norms, batch norm forward", _FORWARD, "forward means zero: True"),
    ("load chapter 2's student edition", _LOAD, "loaded: check_batch_norm_forward"),
    ("checker on a wrong answer (eps ignored)", _WRONG + "\n", ""),
    ("", "first_check_run = exec(first_check)", "check_batch_norm_forward:"),
    ("checker on a right answer", _RIGHT + "\n", ""),
    ("", "exec(first_check); print('checker passed')", "checker passed"),
    ("explorer shown", _EXPLORER, "explorer shown"),
)


def format_table(rows) -> str:
    """Rows of strings as aligned columns, the first row a header underlined."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


@dataclass
class Report:
    steps: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    kernel_seconds: float = 0.0


def _output_text(page) -> str:
    """The text of every output in the console so far (not the code typed)."""
    return page.eval_on_selector_all(".jp-CodeConsole-content .jp-OutputArea-output",
                                     "els => els.map(e => e.innerText).join('\\n')")


def _wait_for_text(page, text: str, before: int, timeout: float) -> str:
    """Wait until the console's output after character ``before`` contains ``text``."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        new = _output_text(page)[before:]
        if text in new:
            return new
        if "Traceback" in new and "check_batch_norm_forward:" not in text:
            return new
        page.wait_for_timeout(250)
    return _output_text(page)[before:]


def _type(page, code: str) -> None:
    editor = page.locator(".jp-CodeConsole-promptCell .cm-content")
    editor.click()
    page.keyboard.insert_text(code.rstrip("\n"))
    page.keyboard.press("Shift+Enter")


def _explorer_redraws(page, timeout: float) -> tuple[bool, str]:
    images = page.locator(".jp-CodeConsole-content .widget-image")
    if images.count() == 0:
        return False, "no explorer image in the page"
    before = images.last.get_attribute("src")
    start = len(_output_text(page))
    _type(page, _SLIDE)
    _wait_for_text(page, "slider set to", start, timeout)
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if images.last.get_attribute("src") != before:
            return True, "figure redrawn"
        page.wait_for_timeout(250)
    return False, "the figure did not change after the slider moved"


def _watch(page, report: Report, base_url: str) -> None:
    page.on("console", lambda m: m.type == "error" and report.errors.append(f"console: {m.text}"))
    page.on("pageerror", lambda e: report.errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: report.errors.append(f"failed request: {r.url}"))
    page.on("response", lambda r: r.status >= 400 and report.errors.append(
        f"HTTP {r.status}: {r.url}"))


def _run_steps(page, report: Report, shots: Path, timeout: float) -> None:
    pending = ""
    for index, (name, code, expect) in enumerate(STEPS):
        start_chars, start = len(_output_text(page)), time.perf_counter()
        _type(page, code)
        if not expect:                              # a definition: timed with the next step
            pending = name
            continue
        text = _wait_for_text(page, expect, start_chars, timeout)
        step = Step(name or pending, code, expect, seconds=time.perf_counter() - start)
        step.ok = expect in text and ("Traceback" not in text or expect.endswith(":"))
        step.detail = text.strip().splitlines()[-1][:120] if text.strip() else "no output"
        report.steps.append(step)
        page.screenshot(path=str(shots / f"step{index:02d}.png"))
        if not step.ok:
            return
    start = time.perf_counter()
    ok, detail = _explorer_redraws(page, timeout)
    report.steps.append(Step("slider set from Python redraws the figure", _SLIDE, "",
                             seconds=time.perf_counter() - start, ok=ok, detail=detail))
    page.screenshot(path=str(shots / "explorer.png"))


def _notebook_app(context, base_url: str, report: Report, shots: Path, timeout: float) -> None:
    page = context.new_page()
    _watch(page, report, base_url)
    start = time.perf_counter()
    page.goto(f"{base_url}lite/notebooks/index.html?path={STUDENT}")
    try:
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=timeout * 1000)
        page.wait_for_selector("text=Python (Pyodide)", timeout=timeout * 1000)
        dialog = page.query_selector(".jp-Dialog")
        ok, detail = dialog is None, "opened with the Pyodide kernel" if dialog is None \
            else f"a dialog appeared: {dialog.inner_text()[:80]}"
    except Exception as exc:                         # Playwright's TimeoutError
        ok, detail = False, f"notebook app did not open: {str(exc).splitlines()[0]}"
    page.screenshot(path=str(shots / "notebook-app.png"))
    report.steps.append(Step("student edition in the notebook app", "", "", ok=ok, detail=detail,
                             seconds=time.perf_counter() - start))
    page.close()


def run(site: Path, out: Path, chromium: str | None = None, timeout: float = 180) -> Report:
    """Run every check on the Lite edition of ``site``; screenshots under ``out``."""
    from playwright.sync_api import sync_playwright

    from bnbook.site_test import _block_outside

    site, shots = Path(site), Path(out)
    if not (site / "lite" / "repl" / "index.html").is_file():
        raise FileNotFoundError(f"no Lite edition in {site / 'lite'}: run make book first")
    shots.mkdir(parents=True, exist_ok=True)
    executable = find_chromium(chromium)
    report = Report()
    server, base_url = serve(site)
    server.handle_error = lambda request, address: None   # the browser cancelling a download
    try:
        with tempfile.TemporaryDirectory(prefix="bnbook-lite-") as profile, sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=executable, headless=True, args=list(CHROMIUM_FLAGS),
                viewport={"width": 1280, "height": 900})
            context.route("**/*", _block_outside(base_url, lambda r: report.errors))
            page = context.new_page()
            _watch(page, report, base_url)
            start = time.perf_counter()
            page.goto(f"{base_url}lite/repl/index.html?kernel=python&toolbar=1&code={_READY}")
            text = _wait_for_text(page, "kernel ready", 0, timeout)
            report.kernel_seconds = time.perf_counter() - start
            ok = "kernel ready" in text
            report.steps.append(Step("kernel starts", "", "kernel ready", ok=ok,
                                     seconds=report.kernel_seconds,
                                     detail="ready" if ok else "no kernel output"))
            page.screenshot(path=str(shots / "kernel.png"))
            if ok:
                _run_steps(page, report, shots, timeout)
                _notebook_app(context, base_url, report, shots, timeout)
            context.close()
    finally:
        server.shutdown()
        server.server_close()
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bnbook.lite_test",
                                     description="Test the Lite edition in headless Chromium.")
    parser.add_argument("--site", type=Path, default=Path("_build/html"))
    parser.add_argument("--out", type=Path, default=Path("_build/lite-test"))
    parser.add_argument("--chromium", help="Chromium executable (default: chromium on PATH)")
    parser.add_argument("--timeout", type=float, default=180, help="seconds per step")
    args = parser.parse_args(argv)
    try:
        report = run(args.site, args.out, args.chromium, args.timeout)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = [["step", "seconds", "result", "detail"]] + [
        [s.name, f"{s.seconds:.1f}", "ok" if s.ok else "FAILED", s.detail] for s in report.steps]
    print(format_table(rows))
    for error in report.errors:
        print(f"error: {error}")
    (args.out / "summary.json").write_text(json.dumps(
        {"kernel_seconds": report.kernel_seconds, "steps": [asdict(s) for s in report.steps],
         "errors": report.errors}, indent=2) + "\n")
    expected = 3 + sum(1 for _, _, expect in STEPS if expect)
    passed = all(s.ok for s in report.steps) and len(report.steps) == expected and not report.errors
    print("lite-test passed" if passed else "lite-test FAILED")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

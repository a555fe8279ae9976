"""The browser edition in a real browser: ``make lite-test`` (``python -m bnbook.site.lite_check``).

It serves the built site (``_build/html``) on 127.0.0.1, blocks every request to another host,
and opens the Lite edition in headless Chromium (Debian's ``chromium``, driven by Playwright;
Playwright's own browsers are never downloaded), as a reader would (after the lab app's
file browser, which starts no kernel):

1. the REPL app starts the Pyodide kernel (it runs the ``print`` in its URL);
2. piplite installs ipywidgets and bnbook from the site's own ``pypi/`` folder;
3. ``import bnbook.numpy_norms`` and a batch norm forward give per-feature means of zero;
4. an explorer created in the page redraws its figure when a slider's value is set from
   Python;
5. chapter 2's student edition opens in the notebook app with the Pyodide kernel (no kernel
   dialog; a second kernel start), runs its set-up and import cells, and its first checker
   on a wrong answer (the checker's message appears) and on a right one (it passes).

Before them it checks that another host is unreachable from the page (a ``fetch`` to
:data:`OUTSIDE` must fail). Other hosts are blocked by a proxy that refuses every connection
(Chromium sends loopback addresses past proxies), not by Playwright's request interception,
so the page, its service worker and the kernel's web worker fetch exactly as in a reader's
browser, and a request to another host shows up as a failed request.

Every wait is bounded and a time-out names its step. Any failed request, HTTP error, blocked
request, wrong MIME type (``.wasm`` must be ``application/wasm``, ``.js``/``.mjs`` JavaScript)
or console error fails the test. It prints a table of each step's time (the kernel starts
included), saves a screenshot per step, ``requests.log`` (every request with its status, the
service worker's included) and ``console.log`` under ``--out``, and ``summary.json`` there.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import quote

from bnbook.site.lite_files import SETUP_CELL
from bnbook.site.check import CHROMIUM_FLAGS, find_chromium, serve

__all__ = ["STUDENT", "OUTSIDE", "WRONG_ANSWER", "RIGHT_ANSWER", "Step", "Report", "format_table",
           "wrong_mime", "run", "main"]

STUDENT = "02_forward_student.ipynb"
#: A URL on another host; the test checks that the page cannot fetch it.
OUTSIDE = "http://example.org/bnbook-lite-test"
_READY = 'print("kernel " + "ready")'           # the page shows the code, not "kernel ready"
_INSTALL = SETUP_CELL + 'print("installed")\n'     # the Lite copies' first cell
_FORWARD = ("import numpy as np, bnbook.numpy_norms as norms; "
            "x = np.random.default_rng(0).normal(3.0, 2.0, size=(16, 5)); "
            "y, _ = norms.batch_norm_forward(x, np.ones(5), np.zeros(5)); "
            "print('forward means zero:', bool(np.abs(y.mean(0)).max() < 1e-9))")
_EXPLORER = ("from bnbook.widgets import batch_norm_explorer; explorer = batch_norm_explorer(); "
             "display(explorer); print('explorer shown')")
_SLIDE = ("slider = explorer.controls['batch_size']; slider.value = slider.max; "
          "print('slider set to', slider.value)")

#: The student's answers typed into chapter 2's first exercise: the unbiased variance (a
#: mistake the checker names), then the chapter's equations.
RIGHT_ANSWER = '''\
def my_batch_norm_forward(x, gamma, beta, eps=1e-5):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mu = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    x_hat = (x - mu) / np.sqrt(var + eps)
    return np.reshape(gamma, shape) * x_hat + np.reshape(beta, shape), None'''
WRONG_ANSWER = RIGHT_ANSWER.replace("var(axis=axes, keepdims=True)",
                                    "var(axis=axes, keepdims=True, ddof=1)")
_CHECK_FAILED = "check_batch_norm_forward: y is wrong"
_CHECK_PASSED = "check_batch_norm_forward: passed"


class StepFailed(Exception):
    """A step did not reach what it waits for within its time."""


@dataclass
class Step:
    name: str
    seconds: float = 0.0
    ok: bool = False
    detail: str = ""


@dataclass
class Report:
    steps: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    requests: list = field(default_factory=list)
    console: list = field(default_factory=list)

    def step(self, name: str, action, shot=None) -> bool:
        """Run ``action()`` (it returns a detail line or raises :class:`StepFailed`) as the
        step ``name``, timed; ``shot(path)`` saves its screenshot."""
        start = time.perf_counter()
        try:
            ok, detail = True, action()
        except StepFailed as exc:
            ok, detail = False, str(exc)
        except Exception as exc:                    # Playwright's errors: a click timed out
            ok, detail = False, f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0]}"
        self.steps.append(Step(name, time.perf_counter() - start, ok, detail))
        if shot is not None:
            shot(f"step{len(self.steps):02d}.png")
        return ok


def format_table(rows) -> str:
    """Rows of strings as aligned columns, the first row a header underlined."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def wrong_mime(url: str, content_type: str | None) -> str | None:
    """Why the browser would refuse this response's MIME type, or ``None``: WebAssembly must be
    ``application/wasm`` (compiled while streaming) and scripts a JavaScript type."""
    path, kind = url.split("?")[0], (content_type or "").split(";")[0].strip()
    if path.endswith(".wasm") and kind != "application/wasm":
        return f"{url} served as {kind or 'no type'}, not application/wasm"
    if path.endswith((".js", ".mjs")) and kind not in ("text/javascript", "application/javascript"):
        return f"{url} served as {kind or 'no type'}, not JavaScript"
    return None


def _wait(page, step: str, seconds: float, probe, what: str):
    """Poll ``probe()`` until it returns something true; raise :class:`StepFailed` naming
    ``step`` and ``what`` after ``seconds``."""
    deadline = time.perf_counter() + seconds
    while True:
        value = probe()
        if value:
            return value
        if time.perf_counter() > deadline:
            raise StepFailed(f"{step}: {what} not seen within {seconds:.0f} s")
        page.wait_for_timeout(250)


# --- the REPL: kernel start, packages, the explorer ---------------------------------------------

def _console_output(page) -> str:
    return page.eval_on_selector_all(".jp-CodeConsole-content .jp-OutputArea-output",
                                     "els => els.map(e => e.innerText).join('\\n')")


def _repl_run(page, step: str, code: str, expect: str, seconds: float) -> str:
    """Type ``code`` into the REPL's prompt, run it and wait for ``expect`` in its output."""
    before = len(_console_output(page))
    page.locator(".jp-CodeConsole-promptCell .cm-content").click()
    page.keyboard.insert_text(code)
    page.keyboard.press("Shift+Enter")

    def probe():
        new = _console_output(page)[before:]
        if "Traceback" in new or "Error" in new.split("\n")[-1]:
            raise StepFailed(f"{step}: {new.strip().splitlines()[-1][:160]}")
        return expect in new and new
    return _wait(page, step, seconds, probe, repr(expect)).strip().splitlines()[-1][:100]


def _explorer_redraws(page, seconds: float) -> str:
    image = page.locator(".jp-CodeConsole-content img.widget-image").last
    _wait(page, "explorer", seconds, lambda: image.count() and image.get_attribute("src"),
          "the explorer's image")
    before = image.get_attribute("src")
    _repl_run(page, "slider set from Python", _SLIDE, "slider set to", seconds)
    _wait(page, "slider set from Python", seconds,
          lambda: image.get_attribute("src") != before, "a redrawn figure")
    return "figure redrawn"


def _outside_blocked(context, base: str, report: Report) -> str:
    page = context.new_page()
    _watch_page(page, report, "start")
    page.goto(f"{base}lite/start.html")
    reached = page.evaluate("url => fetch(url, {mode: 'no-cors'}).then(() => true, () => false)",
                            OUTSIDE)
    page.close()
    report.errors[:] = [e for e in report.errors if OUTSIDE not in e and "ERR_PROXY" not in e]
    if reached:
        raise StepFailed(f"the page fetched {OUTSIDE}: other hosts are not blocked")
    return "fetch to another host failed, as it should"


def _lab_opens(context, base: str, report: Report, shots: Path, seconds: float) -> str:
    """The lab app with its file browser listing the edition's notebooks (no kernel starts)."""
    page = context.new_page()
    _watch_page(page, report, "lab")
    page.goto(f"{base}lite/lab/index.html")
    listing = page.locator(".jp-DirListing-content .jp-DirListing-item")
    _wait(page, "lab app", seconds, lambda: STUDENT in " ".join(listing.all_inner_texts()),
          f"{STUDENT} in the file browser")
    page.screenshot(path=str(shots / "lab.png"))
    count = listing.count()
    page.close()
    return f"file browser lists {count} notebooks"


def _repl_steps(context, base: str, report: Report, shots: Path, kernel_s: float,
                step_s: float) -> bool:
    page = context.new_page()
    _watch_page(page, report, "repl")
    shot = lambda name: page.screenshot(path=str(shots / name))

    def kernel():
        page.goto(f"{base}lite/repl/index.html?kernel=python&toolbar=1&code={quote(_READY)}")
        _wait(page, "kernel start (REPL)", kernel_s,
              lambda: "kernel ready" in _console_output(page), "the output of the URL's print")
        return "ready"
    ok = report.step("kernel start (REPL)", kernel, shot)
    for name, code, expect in (
            ("set-up cell: piplite installs the packages", _INSTALL, "installed"),
            ("import bnbook.numpy_norms, batch norm forward", _FORWARD, "forward means zero: True"),
            ("explorer shown", _EXPLORER, "explorer shown")):
        ok = ok and report.step(
            name, lambda c=code, e=expect, n=name: _repl_run(page, n, c, e, step_s), shot)
    ok = ok and report.step("slider set from Python redraws the figure",
                            lambda: _explorer_redraws(page, step_s), shot)
    page.close()
    return ok


# --- the notebook app: chapter 2's student edition ----------------------------------------------

def _cells(site: Path) -> dict[str, int]:
    """Indices (in the Lite copy of :data:`STUDENT`) of the cells the test needs: the first
    exercise's stub, its checker and the last code cell above the stub."""
    cells = json.loads((site / "lite" / "files" / STUDENT).read_text(encoding="utf-8"))["cells"]
    code = ["".join(c["source"]) if c["cell_type"] == "code" else "" for c in cells]
    stub = next(i for i, s in enumerate(code) if "def my_batch_norm_forward" in s)
    return {"stub": stub, "checker": next(i for i in range(stub + 1, len(code)) if code[i].strip()),
            "above": max(i for i in range(stub) if code[i].strip())}


def _cell(page, index: int):
    """Cell ``index`` (the notebook attaches only the cells in view to the page)."""
    return page.locator(f'.jp-Notebook .jp-Cell[data-windowed-list-index="{index}"]')


def _has_run(page, index: int, step: str, seconds: float, expect: str | None = None) -> str:
    """Wait until cell ``index`` has run (its prompt shows a number) and, if given, ``expect``
    is in its output; an error in its output fails the step."""
    cell = _cell(page, index)

    def probe():
        if not any(ch.isdigit() for ch in cell.locator(".jp-InputPrompt").inner_text()):
            return False
        output = cell.locator(".jp-OutputArea").inner_text()
        if expect is None and ("Traceback" in output or "Error:" in output):
            last = output.strip().splitlines()[-1][:120]
            raise StepFailed(f"{step}: cell {index} failed: {last}")
        return (expect is None or expect in output) and (output.strip() or "no output")
    return _wait(page, step, seconds, probe, f"cell {index} run" + (
        f" with {expect!r} in its output" if expect else "")).splitlines()[0][:100]


def _move(page, state: dict, index: int) -> None:
    """Select cell ``index`` in command mode (the keys scroll it into view)."""
    key = "ArrowDown" if index > state["active"] else "ArrowUp"
    for _ in range(abs(index - state["active"])):
        page.keyboard.press(key)
    state["active"] = index


def _answer(page, state: dict, cells: dict, step: str, answer: str, expect: str,
            seconds: float) -> str:
    """Type ``answer`` into the stub, run it and the checker; wait for ``expect``."""
    page.keyboard.press("Escape")
    _move(page, state, cells["stub"])
    page.keyboard.press("Enter")
    page.keyboard.press("Control+a")
    page.keyboard.insert_text(answer)
    page.keyboard.press("Shift+Enter")                 # runs the stub, selects the checker
    page.keyboard.press("Shift+Enter")                 # runs the checker
    state["active"] = cells["checker"] + 1
    return _has_run(page, cells["checker"], step, seconds, expect)


def _open_notebook(page, base: str, state: dict, seconds: float) -> str:
    """Open :data:`STUDENT` in the notebook app and run its set-up cell: the kernel start
    (the kernel's status shows idle before the runtime has loaded, so the cell is the sign)."""
    page.goto(f"{base}lite/notebooks/index.html?path={STUDENT}")
    name, dialog = page.locator(".jp-Toolbar-kernelName"), page.locator(".jp-Dialog")
    _wait(page, "kernel start (notebook)", seconds, lambda: dialog.count() or (
        name.count() and "Pyodide" in name.first.inner_text()), "the Pyodide kernel's name")
    if dialog.count():
        raise StepFailed(f"a dialog appeared: {dialog.first.inner_text()[:80]}")
    _cell(page, 0).locator(".jp-InputArea-editor").click()
    page.keyboard.press("Escape")
    page.keyboard.press("Shift+Enter")
    state["active"] = 1
    _has_run(page, 0, "kernel start (notebook)", seconds)
    return f"kernel {name.first.inner_text().strip()}, no dialog; set-up cell ran"


def _run_above(page, state: dict, cells: dict, seconds: float) -> str:
    """Run every cell below the set-up cell and above the first exercise's stub."""
    for _ in range(cells["stub"] - state["active"]):
        page.keyboard.press("Shift+Enter")
    state["active"] = cells["stub"]
    _move(page, state, cells["above"])
    try:
        _has_run(page, cells["above"], "cells above the exercise", seconds)
        return f"cells 1 to {cells['above']} ran, no error in the last"
    except StepFailed as exc:                  # name the first cell whose output has an error
        for index in range(cells["above"], -1, -1):
            _move(page, state, index)
            output = _cell(page, index).locator(".jp-OutputArea").inner_text().strip()
            if "Traceback" in output:
                raise StepFailed(f"{exc}; cell {index} failed: {output.splitlines()[-1][:100]}")
        raise


def _notebook_steps(context, base: str, site: Path, report: Report, shots: Path,
                    kernel_s: float, step_s: float) -> bool:
    cells, state = _cells(site), {"active": 0}
    page = context.new_page()
    _watch_page(page, report, "notebook")
    shot = lambda name: page.screenshot(path=str(shots / name))
    ok = report.step("kernel start (notebook app, student edition) and its set-up cell",
                     lambda: _open_notebook(page, base, state, kernel_s), shot)
    ok = ok and report.step("the cells above the first exercise run",
                            lambda: _run_above(page, state, cells, step_s), shot)
    ok = ok and report.step("checker on a wrong answer: its message", lambda: _answer(
        page, state, cells, "wrong answer", WRONG_ANSWER, _CHECK_FAILED, step_s), shot)
    ok = ok and report.step("checker on the right answer: passed", lambda: _answer(
        page, state, cells, "right answer", RIGHT_ANSWER, _CHECK_PASSED, step_s), shot)
    page.close()
    return ok


# --- the browser --------------------------------------------------------------------------------

def _watch_page(page, report: Report, tag: str) -> None:
    def console(message):
        report.console.append(f"{tag} {message.type}: {message.text}")
        if message.type == "error":
            report.errors.append(f"console error ({tag}): {message.text[:200]}")
    page.on("console", console)
    page.on("pageerror", lambda e: report.errors.append(f"page error ({tag}): {e}"))
    page.on("worker", lambda w: report.console.append(f"{tag} worker started: {w.url}"))


def _watch_context(context, base: str, report: Report, start: float) -> dict:
    """Log every request and response (the service worker's and the web workers' included);
    a failed request, an HTTP error or a wrong MIME type is an error. Returns the requests
    still waiting for their response, by URL (named when a step times out)."""
    pending = {}

    def log(line):
        report.requests.append(f"{time.perf_counter() - start:8.2f}  {line}")

    def request(r):
        pending[r.url] = pending.get(r.url, 0) + 1

    def done(r):
        pending[r.url] -= 1
        if not pending[r.url]:
            del pending[r.url]

    def response(r):
        via = "service worker" if r.from_service_worker else "network"
        log(f"{r.status} {r.request.method} {r.url} ({r.headers.get('content-type')}; {via})")
        if r.status >= 400:
            report.errors.append(f"HTTP {r.status}: {r.url}")
        problem = wrong_mime(r.url, r.headers.get("content-type"))
        if problem:
            report.errors.append(f"wrong MIME type: {problem}")

    def failed(r):
        log(f"FAILED {r.method} {r.url} ({r.failure})")
        report.errors.append(f"failed request: {r.url} ({r.failure})")
        done(r)
    context.on("request", request)
    context.on("requestfinished", done)
    context.on("response", response)
    context.on("requestfailed", failed)
    context.on("serviceworker", lambda w: log(f"service worker started: {w.url}"))
    return pending


def _closed_port() -> socket.socket:
    """A bound, never listening socket on 127.0.0.1: a connection to its port is refused."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


def run(site: Path, out: Path, chromium: str | None = None, kernel_s: float = 300,
        step_s: float = 120) -> Report:
    """Run every check on the Lite edition of ``site``; screenshots and logs under ``out``."""
    from playwright.sync_api import sync_playwright

    site, shots = Path(site), Path(out)
    if not (site / "lite" / "repl" / "index.html").is_file():
        raise FileNotFoundError(f"no Lite edition in {site / 'lite'}: run make book first")
    executable = find_chromium(chromium)
    shots.mkdir(parents=True, exist_ok=True)
    report = Report()
    server, base = serve(site)
    server.handle_error = lambda request, address: None   # the browser cancelling a download
    # Other hosts are blocked by a proxy that refuses every connection (loopback addresses
    # bypass proxies), not by Playwright's request interception: with interception on, the
    # kernel's web worker intermittently never started (see the module's docstring).
    dead_proxy = _closed_port()
    flags = list(CHROMIUM_FLAGS) + [f"--proxy-server=127.0.0.1:{dead_proxy.getsockname()[1]}"]
    try:
        with tempfile.TemporaryDirectory(prefix="bnbook-lite-") as profile, sync_playwright() as pw:
            context = pw.chromium.launch_persistent_context(
                profile, executable_path=executable, headless=True, args=flags,
                viewport={"width": 1280, "height": 900})
            pending = _watch_context(context, base, report, time.perf_counter())
            if report.step("another host is unreachable (start page)",
                           lambda: _outside_blocked(context, base, report)) and \
                    report.step("the lab app opens (file browser, logo), no kernel",
                                lambda: _lab_opens(context, base, report, shots, step_s)) and \
                    _repl_steps(context, base, report, shots, kernel_s, step_s):
                _notebook_steps(context, base, site, report, shots, kernel_s, step_s)
            if not all(s.ok for s in report.steps) and pending:
                report.errors.append(f"requests without a response: {sorted(pending)[:5]}")
            context.close()
    finally:
        dead_proxy.close()
        server.shutdown()
        server.server_close()
    return report


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bnbook.site.lite_check",
                                     description="Test the Lite edition in headless Chromium.")
    parser.add_argument("--site", type=Path, default=Path("_build/html"))
    parser.add_argument("--out", type=Path, default=Path("_build/lite-test"))
    parser.add_argument("--chromium", help="Chromium executable (default: chromium on PATH)")
    parser.add_argument("--kernel-timeout", type=float, default=300,
                        help="seconds a kernel start may take (default 300)")
    parser.add_argument("--timeout", type=float, default=120,
                        help="seconds any other step may take (default 120)")
    args = parser.parse_args(argv)
    try:
        report = run(args.site, args.out, args.chromium, args.kernel_timeout, args.timeout)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    rows = [["step", "seconds", "result", "detail"]] + [
        [s.name, f"{s.seconds:.1f}", "ok" if s.ok else "FAILED", s.detail] for s in report.steps]
    table = format_table(rows)
    print(table)
    for error in report.errors:
        print(f"error: {error}")
    _write(args.out / "timings.txt", table + "\n")
    _write(args.out / "requests.log", "\n".join(report.requests) + "\n")
    _write(args.out / "console.log", "\n".join(report.console) + "\n")
    _write(args.out / "summary.json", json.dumps(
        {"steps": [asdict(s) for s in report.steps], "errors": report.errors}, indent=2) + "\n")
    passed = len(report.steps) == 11 and all(s.ok for s in report.steps) and not report.errors
    print(f"lite-test {'passed' if passed else 'FAILED'} ({len(report.requests)} responses "
          f"logged in {args.out / 'requests.log'})")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())

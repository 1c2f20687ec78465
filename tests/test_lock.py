"""requirements.lock: every dependency of pyproject.toml pinned, inside its range; torch left to
the Makefile's TORCH_SPEC (a CPU wheel in CI, a CUDA build on a GPU machine)."""

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.timeout(30)


def lock_pins() -> dict[str, Version]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _, version = line.partition("==")
            assert version, f"not an exact pin: {line!r}"
            pins[canonicalize_name(name)] = Version(version)
    return pins


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    reqs = project["dependencies"] + [r for extra in project["optional-dependencies"].values()
                                      for r in extra]
    return [Requirement(r) for r in reqs]


def test_lock_pins_every_dependency_inside_its_range():
    pins = lock_pins()
    problems = []
    for req in project_requirements():
        name = canonicalize_name(req.name)
        if name == "torch":
            assert name not in pins, "torch belongs to TORCH_SPEC, not the lock"
            continue
        if name not in pins:
            problems.append(f"{req}: not in requirements.lock (run make lock)")
        elif not req.specifier.contains(pins[name], prereleases=True):
            problems.append(f"{req}: the lock pins {pins[name]}")
    assert not problems, "\n".join(problems)


def test_makefile_installs_from_the_lock_and_its_torch_fits_the_range():
    make = (REPO / "Makefile").read_text()
    assert "-c $(LOCK) -e '.[dev]'" in make and "LOCK ?= requirements.lock" in make
    spec = re.search(r"^TORCH_SPEC \?= (.+)$", make, re.M).group(1)
    torch = next(r for r in project_requirements() if r.name == "torch")
    assert torch.specifier.contains(Requirement(spec).specifier.__iter__().__next__().version)

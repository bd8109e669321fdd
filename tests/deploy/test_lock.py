"""requirements.lock, which the image installs with --require-hashes, still
satisfies setup.cfg and the build backend in pyproject.toml.

After changing either, regenerate it with ``./scripts/lock.sh``.
"""

import configparser
import re
import tomllib

import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ..support.settings import ROOT

REGENERATE = "run ./scripts/lock.sh"
# Where the image runs: the official base is 3.12, the local stand-in 3.11.
PYTHONS = ("3.11", "3.12")


def locked():
    """{name: [(version, marker or None, hashes)]}: a name may be pinned twice,
    once per Python version range."""
    text = (ROOT / "requirements.lock").read_text()
    pins = {}
    for entry in re.split(r"\n(?=\S)", text):
        head = entry.split("\\", 1)[0].strip()
        if not head or head.startswith("#"):
            continue
        requirement, _, marker = head.partition(";")
        name, sep, version = requirement.strip().partition("==")
        assert sep, f"not pinned with ==: {head!r}"
        hashes = re.findall(r"--hash=sha256:([0-9a-f]{64})", entry)
        pins.setdefault(canonicalize_name(name), []).append(
            (version, Marker(marker) if marker.strip() else None, hashes)
        )
    return pins


def declared():
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    lines = setup["options"]["install_requires"].strip().splitlines()
    with open(ROOT / "pyproject.toml", "rb") as fh:
        build = tomllib.load(fh)["build-system"]["requires"]
    return [Requirement(line) for line in [*lines, *build] if line.strip()]


def environment(python):
    return {
        "python_version": python,
        "python_full_version": python + ".0",
        "implementation_name": "cpython",
        "platform_python_implementation": "CPython",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "os_name": "posix",
        "platform_machine": "x86_64",
    }


def pinned_for(pins, name, python):
    """The version locked for ``name`` on ``python``, or None."""
    env = environment(python)
    versions = [
        version
        for version, marker, _ in pins.get(canonicalize_name(name), [])
        if marker is None or marker.evaluate(env)
    ]
    assert len(versions) <= 1, f"{name} pinned twice for Python {python}"
    return versions[0] if versions else None


def test_every_locked_package_has_hashes():
    pins = locked()
    assert pins
    for name, entries in pins.items():
        for version, _, hashes in entries:
            assert hashes, f"{name}=={version} has no hash; {REGENERATE}"


@pytest.mark.parametrize("python", PYTHONS)
def test_lock_satisfies_the_declared_requirements(python):
    pins = locked()
    for requirement in declared():
        version = pinned_for(pins, requirement.name, python)
        assert version is not None, (
            f"{requirement.name} is required but not locked; {REGENERATE}"
        )
        assert requirement.specifier.contains(version, prereleases=True), (
            f"{requirement.name}=={version} is outside {requirement}; {REGENERATE}"
        )


def test_lock_holds_no_dropped_requirement():
    """A requirement removed from setup.cfg leaves the lock with it."""
    text = (ROOT / "requirements.lock").read_text()
    names = {canonicalize_name(r.name) for r in declared()}
    for entry in re.split(r"\n(?=\S)", text):
        if "postservice (setup.cfg)" not in entry:
            continue
        name = canonicalize_name(entry.split("==", 1)[0])
        assert name in names, (
            f"{name} is locked for setup.cfg, which no longer asks for it; {REGENERATE}"
        )

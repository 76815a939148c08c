"""KEDA's objects (transcriber.yaml) are well formed.

kubernetes-validate bundles no schema for KEDA's kinds, and the CRD is not vendored here,
so this is a minimal structural check written from KEDA's ScaledObject and
TriggerAuthentication CRDs (keda.sh/v1alpha1, KEDA 2.12 and later): the fields this
project uses, their types and the enums, no field KEDA does not know. The HPA behaviour
KEDA passes on is checked against Kubernetes' own schema of an HPA.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from deployfiles import keda_objects

INT = {"type": "integer", "minimum": 0}
STR = {"type": "string"}
NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"}
META = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": NAME, "labels": {"type": "object"}, "annotations": {"type": "object"}},
}


def closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


HPA_RULES = closed(
    {
        "stabilizationWindowSeconds": {"type": "integer", "minimum": 0, "maximum": 3600},
        "selectPolicy": {"enum": ["Max", "Min", "Disabled"]},
        "policies": {
            "type": "array",
            "items": closed(
                {
                    "type": {"enum": ["Pods", "Percent"]},
                    "value": {"type": "integer", "minimum": 1},
                    "periodSeconds": {"type": "integer", "minimum": 1, "maximum": 1800},
                },
                ("type", "value", "periodSeconds"),
            ),
        },
    }
)
#: The postgresql scaler's metadata (keda.sh/docs/scalers/postgresql): every value a string.
POSTGRESQL_METADATA = closed(
    {
        key: STR
        for key in (
            "query",
            "targetQueryValue",
            "activationTargetQueryValue",
            "connectionFromEnv",
            "host",
            "port",
            "userName",
            "dbName",
            "sslmode",
            "passwordFromEnv",
        )
    },
    ("query", "targetQueryValue"),
)
SCALED_OBJECT = closed(
    {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "ScaledObject"},
        "metadata": META,
        "spec": closed(
            {
                "scaleTargetRef": closed(
                    {"apiVersion": STR, "kind": STR, "name": NAME, "envSourceContainerName": STR},
                    ("name",),
                ),
                "pollingInterval": INT,
                "cooldownPeriod": INT,
                "initialCooldownPeriod": INT,
                "idleReplicaCount": INT,
                "minReplicaCount": INT,
                "maxReplicaCount": INT,
                "fallback": closed(
                    {"failureThreshold": INT, "replicas": INT, "behavior": STR},
                    ("failureThreshold", "replicas"),
                ),
                "advanced": closed(
                    {
                        "restoreToOriginalReplicaCount": {"type": "boolean"},
                        "horizontalPodAutoscalerConfig": closed(
                            {
                                "name": STR,
                                "behavior": closed({"scaleUp": HPA_RULES, "scaleDown": HPA_RULES}),
                            }
                        ),
                    }
                ),
                "triggers": {
                    "type": "array",
                    "minItems": 1,
                    "items": closed(
                        {
                            "type": {"const": "postgresql"},
                            "name": NAME,
                            "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
                            "useCachedMetrics": {"type": "boolean"},
                            "metadata": POSTGRESQL_METADATA,
                            "authenticationRef": closed(
                                {
                                    "name": NAME,
                                    "kind": {
                                        "enum": [
                                            "TriggerAuthentication",
                                            "ClusterTriggerAuthentication",
                                        ]
                                    },
                                },
                                ("name",),
                            ),
                        },
                        ("type", "metadata"),
                    ),
                },
            },
            ("scaleTargetRef", "triggers"),
        ),
    },
    ("apiVersion", "kind", "metadata", "spec"),
)
TRIGGER_AUTHENTICATION = closed(
    {
        "apiVersion": {"const": "keda.sh/v1alpha1"},
        "kind": {"const": "TriggerAuthentication"},
        "metadata": META,
        "spec": closed(
            {
                "secretTargetRef": {
                    "type": "array",
                    "items": closed(
                        {"parameter": STR, "name": NAME, "key": STR},
                        ("parameter", "name", "key"),
                    ),
                }
            }
        ),
    },
    ("apiVersion", "kind", "metadata", "spec"),
)
SCHEMAS = {"ScaledObject": SCALED_OBJECT, "TriggerAuthentication": TRIGGER_AUTHENTICATION}


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_keda_object_is_well_formed(kind: str) -> None:
    jsonschema.validate(keda_objects()[kind], SCHEMAS[kind])


def test_the_checks_refuse_what_keda_would() -> None:
    scaled = keda_objects()["ScaledObject"]
    broken = {**scaled, "spec": {**scaled["spec"], "maxReplicas": 10}}  # the HPA's name
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCALED_OBJECT)
    trigger = scaled["spec"]["triggers"][0]
    bad = {**trigger, "metadata": {**trigger["metadata"], "targetQueryValue": 2}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {**scaled, "spec": {**scaled["spec"], "triggers": [bad]}}, SCALED_OBJECT
        )


def test_the_hpa_behaviour_is_a_valid_kubernetes_hpa_behaviour() -> None:
    spec = keda_objects()["ScaledObject"]["spec"]
    hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "keda-hpa-transcriber"},
        "spec": {
            "scaleTargetRef": spec["scaleTargetRef"],
            "minReplicas": spec["minReplicaCount"],
            "maxReplicas": spec["maxReplicaCount"],
            "behavior": spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"],
        },
    }
    kubernetes_validate.validate(hpa, kubernetes_validate.utils.latest_version(), strict=True)

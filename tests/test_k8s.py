"""The worker on Kubernetes (ops/k8s/worker.yaml, worker-keda.yaml, prometheus-scrape.yml),
without a cluster: every document validates against its strict schema (Kubernetes 1.37,
KEDA 2.20's CRDs; vendored in tests/vendor/, provenance in its README), and its names,
ports, settings and scaling limits are the code's."""

from __future__ import annotations

import copy
import functools
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import mode
import pytest
import yaml

from stream_app import kafka_security
from stream_app.settings import OPTIONS, Settings
from tests.support import prometheus_tool
from tests.test_compose import services
from tests.test_retrain_schedules import retrain_args

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "ops" / "k8s"
WORKER = K8S / "worker.yaml"
KEDA = K8S / "worker-keda.yaml"
SCRAPE = K8S / "prometheus-scrape.yml"
CRONJOB = K8S / "retrain-cronjob.yaml"
RULES = ROOT / "ops" / "prometheus" / "rules.yml"
VENDOR = Path(__file__).resolve().parent / "vendor"

SCHEMAS = {
    ("v1", "ConfigMap"): "k8s-configmap-v1.json",
    ("apps/v1", "Deployment"): "k8s-deployment-apps-v1.json",
    ("v1", "Service"): "k8s-service-v1.json",
    ("policy/v1", "PodDisruptionBudget"): "k8s-poddisruptionbudget-policy-v1.json",
    ("keda.sh/v1alpha1", "TriggerAuthentication"): "keda-triggerauthentication-v1alpha1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "keda-scaledobject-v1alpha1.json",
}
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
# The trigger metadata the `kafka` scaler reads (kedacore/keda v2.20.2,
# pkg/scalers/kafka_scaler.go, kafkaMetadata's `order=triggerMetadata` fields): the CRD
# takes any string map, so a misspelt key would be ignored without a word.
KAFKA_SCALER_METADATA = {
    "bootstrapServers",
    "consumerGroup",
    "topic",
    "partitionLimitation",
    "lagThreshold",
    "activationLagThreshold",
    "offsetResetPolicy",
    "allowIdleConsumers",
    "excludePersistentLag",
    "scaleToZeroOnInvalidOffset",
    "limitToPartitionsWithLag",
    "ensureEvenDistributionOfPartitions",
    "version",
    "tls",
    "unsafeSsl",
    "sasl",
    "saslTokenProvider",
    "awsRegion",
}
# The worker's CHURN_KAFKA_SASL_MECHANISM as the kafka scaler's `sasl`.
KEDA_SASL = {"SCRAM-SHA-512": "scram_sha512", "SCRAM-SHA-256": "scram_sha256", "PLAIN": "plaintext"}
# The Secret is created by hand (worker.yaml's header), never from git; these stand in.
SECRETS = {
    "REDIS_URL": "rediss://churn:0123456789abcdef@redis.example:6379/0",
    "CHURN_KAFKA_SASL_PASSWORD": "0123456789abcdef",
    "CHURN_WEB_TOKEN": "0123456789abcdef",
}


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def manifests() -> list[dict[str, Any]]:
    return documents(WORKER) + documents(KEDA)


def the(kind: str) -> dict[str, Any]:
    (document,) = [doc for doc in manifests() if doc["kind"] == kind]
    return document


def closed(node: Any) -> Any:
    """A CRD's structural schema with every object that lists its properties closed to
    others, as `kubectl apply`'s strict field validation treats it."""
    if isinstance(node, list):
        return [closed(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: closed(value) for key, value in node.items()}
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        node["additionalProperties"] = False
    return node


@functools.cache
def validator(api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((VENDOR / SCHEMAS[api_version, kind]).read_text())
    if api_version.startswith("keda.sh/"):
        # Any object's metadata is Kubernetes' ObjectMeta (the CRD says only "object").
        meta = json.loads((VENDOR / SCHEMAS["v1", "ConfigMap"]).read_text())["$defs"]
        schema = closed(schema)
        schema["properties"]["metadata"] = {"$ref": f"#/$defs/{OBJECT_META}"}
        schema["$defs"] = meta
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def errors(document: dict[str, Any]) -> list[str]:
    check = validator(document["apiVersion"], document["kind"])
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in check.iter_errors(document)
    ]


def pod() -> dict[str, Any]:
    return the("Deployment")["spec"]["template"]["spec"]


def container() -> dict[str, Any]:
    (worker,) = pod()["containers"]
    return worker


def worker_env() -> dict[str, str]:
    """The worker's environment: the ConfigMap it takes whole, then its own `env`."""
    config = the("ConfigMap")
    assert container()["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    return {
        **config["data"],
        **{item["name"]: SECRETS[item["name"]] for item in container()["env"]},
    }


def settings() -> Settings:
    return Settings.from_env(worker_env())


def container_port(port: int | str) -> int:
    """A port of the worker's container, by number or by name."""
    ports = {p["name"]: p["containerPort"] for p in container()["ports"]}
    return port if isinstance(port, int) else ports[port]


# ---- the schemas ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "document", manifests(), ids=lambda doc: f"{doc['kind']}/{doc['metadata']['name']}"
)
def test_each_manifest_is_valid_against_its_kubernetes_or_keda_schema(
    document: dict[str, Any],
) -> None:
    assert errors(document) == []


def misspell(document: dict[str, Any], path: str, wrong: str) -> dict[str, Any]:
    """A copy of `document` with the key at `path` (slash-separated) renamed `wrong`."""
    broken = copy.deepcopy(document)
    *parents, key = path.split("/")
    node: Any = broken
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[wrong] = node.pop(key)
    return broken


BROKEN = {
    "ConfigMap": lambda doc: misspell(doc, "data", "datas"),
    "Deployment": lambda doc: misspell(
        doc, "spec/template/spec/containers/0/readinessProbe", "readynessProbe"
    ),
    "Service": lambda doc: misspell(doc, "spec/selector", "selectors"),
    "PodDisruptionBudget": lambda doc: misspell(doc, "spec/maxUnavailable", "maxUnavailible"),
    "TriggerAuthentication": lambda doc: misspell(doc, "spec/secretTargetRef", "secretTargetRefs"),
    # The HorizontalPodAutoscaler's name for it, not KEDA's.
    "ScaledObject": lambda doc: misspell(doc, "spec/maxReplicaCount", "maxReplicas"),
}


@pytest.mark.parametrize("kind", BROKEN)
def test_the_schemas_reject_a_misspelt_field(kind: str) -> None:
    # The validation above is only worth something if each schema is strict.
    assert errors(BROKEN[kind](the(kind)))


def test_the_schemas_reject_a_number_where_kubernetes_wants_a_string() -> None:
    # YAML's classic: an unquoted port in a ConfigMap, an unquoted KEDA threshold.
    config = copy.deepcopy(the("ConfigMap"))
    config["data"]["CHURN_WEB_PORT"] = 6066
    scaled = copy.deepcopy(the("ScaledObject"))
    scaled["spec"]["triggers"][0]["metadata"]["lagThreshold"] = 30000
    assert errors(config) and errors(scaled)


# ---- the worker -----------------------------------------------------------------------


def test_the_worker_sets_only_real_settings_and_the_required_kafka_and_redis() -> None:
    known = {option.env for option in OPTIONS.values()}
    from_config = set(the("ConfigMap")["data"])
    from_secret = [item["name"] for item in container()["env"]]
    assert not (from_config | set(from_secret)) - known, "stream_app.settings ignores these"
    assert {"KAFKA_BOOTSTRAP_SERVERS", "REDIS_URL"} <= from_config | set(from_secret)
    # `env` silently overrides `envFrom`: each name set in one place only.
    assert len(from_secret) == len(set(from_secret)) and not from_config & set(from_secret)
    # No password in git: every `env` entry is a reference into the Secret.
    for item in container()["env"]:
        assert set(item) == {"name", "valueFrom"}, item["name"]
        assert item["valueFrom"]["secretKeyRef"]["key"] == item["name"]
    assert {"REDIS_URL", "CHURN_KAFKA_SASL_PASSWORD", "CHURN_WEB_TOKEN"} <= set(from_secret)


def test_the_worker_settings_pass_the_workers_own_checks() -> None:
    config = settings()  # raises SettingsError, naming the setting, on a bad value
    kafka_security.check(config)
    assert config.kafka_security_protocol == "SASL_SSL"  # across machines: TLS
    assert config.redis_url.startswith("rediss://")
    assert config.web_bind == "0.0.0.0"  # or the kubelet's probes cannot reach it


def test_the_worker_runs_the_images_worker_command_and_user_on_a_read_only_root() -> None:
    worker = container()
    assert worker["command"] == services()["worker"]["command"]
    assert pod()["securityContext"]["runAsUser"] == 10001  # the Dockerfile's user
    assert pod()["securityContext"]["runAsNonRoot"]
    assert worker["securityContext"]["readOnlyRootFilesystem"]
    assert not worker["securityContext"]["allowPrivilegeEscalation"]
    mounts = {mount["mountPath"]: mount for mount in worker["volumeMounts"]}
    volumes = {volume["name"]: volume for volume in pod()["volumes"]}
    models = mounts[str(settings().models_dir)]
    assert models["readOnly"] and volumes[models["name"]]["persistentVolumeClaim"]["readOnly"]
    # The claim the retrain CronJob writes its models into.
    (job,) = documents(CRONJOB)
    job_pod = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (retrain,) = job_pod["containers"]
    written = str(retrain_args(retrain["command"]).models_dir)
    (into,) = [m["name"] for m in retrain["volumeMounts"] if m["mountPath"] == written]
    (claim,) = [v["persistentVolumeClaim"] for v in job_pod["volumes"] if v["name"] == into]
    assert volumes[models["name"]]["persistentVolumeClaim"]["claimName"] == claim["claimName"]
    # Faust's data dir and matplotlib's cache: the one writable place.
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]


def test_the_probes_ask_health_and_ready_on_the_port_the_settings_give() -> None:
    worker, port = container(), settings().web_port
    for probe, path in (
        ("startupProbe", "/health"),
        ("livenessProbe", "/health"),
        ("readinessProbe", "/ready"),
    ):
        get = worker[probe]["httpGet"]
        assert get["path"] == path and container_port(get["port"]) == port, probe
    # /ready bounds its Kafka and Redis checks to about 3 s (stream_app/web.py).
    assert worker["readinessProbe"]["timeoutSeconds"] > 3
    (service_port,) = the("Service")["spec"]["ports"]
    assert container_port(service_port["targetPort"]) == port


def test_the_grace_period_outlasts_the_prestop_pause_and_fausts_own_stop_timeout() -> None:
    pause = container()["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod()["terminationGracePeriodSeconds"] > pause + mode.Service.shutdown_timeout


def test_the_replica_count_is_left_to_the_autoscaler() -> None:
    # A `replicas` here would reset KEDA's count at every `kubectl apply`.
    assert "replicas" not in the("Deployment")["spec"]


def test_the_budget_and_the_service_select_the_worker_pods_and_nothing_else() -> None:
    deployment = the("Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    wanted = deployment["spec"]["selector"]["matchLabels"]
    assert wanted.items() <= labels.items()
    budget = the("PodDisruptionBudget")["spec"]
    assert budget["selector"] == {"matchLabels": wanted}
    assert the("Service")["spec"]["selector"] == wanted
    # Not the retrain job's pods, which share the app name.
    (job,) = documents(CRONJOB)
    job_labels = job["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    assert not wanted.items() <= job_labels.items()
    # Evicting one at a time never blocks a drain, whatever the replica count.
    assert budget["maxUnavailable"] == 1 and "minAvailable" not in budget


# ---- scaling on the consumer group's lag ------------------------------------------------


def test_keda_scales_the_worker_deployment_on_its_consumer_groups_lag() -> None:
    spec, config = the("ScaledObject")["spec"], settings()
    target = spec["scaleTargetRef"]
    assert target["name"] == the("Deployment")["metadata"]["name"]
    assert target.get("kind", "Deployment") == "Deployment"
    assert target.get("apiVersion", "apps/v1") == "apps/v1"
    (trigger,) = spec["triggers"]
    metadata = trigger["metadata"]
    assert trigger["type"] == "kafka"
    assert set(metadata) <= KAFKA_SCALER_METADATA
    assert metadata["consumerGroup"] == config.app_id  # Faust's group is the app id
    assert metadata["bootstrapServers"] == config.kafka_bootstrap_servers
    # No topic: the lag of everything the group reads (inputs and ticks).
    assert "topic" not in metadata
    assert int(metadata["lagThreshold"]) > 0
    assert metadata["offsetResetPolicy"] == "earliest"  # as the worker's consumer


def test_keda_never_runs_more_workers_than_the_input_topics_have_partitions() -> None:
    # The inputs are co-partitioned and assigned together: a replica beyond their
    # partition count owns nothing. CHURN_TOPIC_PARTITIONS is the count the worker
    # creates them with.
    spec = the("ScaledObject")["spec"]
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]  # the CRD's CEL rule
    assert spec["maxReplicaCount"] <= settings().partitions
    for direction in ("scaleUp", "scaleDown"):
        rules = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"][direction]
        assert {policy["type"] for policy in rules["policies"]} <= {"Pods", "Percent"}


def test_keda_logs_in_to_kafka_as_the_worker_does() -> None:
    config, auth = settings(), the("TriggerAuthentication")
    (trigger,) = the("ScaledObject")["spec"]["triggers"]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert trigger["metadata"]["sasl"] == KEDA_SASL[config.kafka_sasl_mechanism]
    tls = config.kafka_security_protocol in kafka_security.TLS_PROTOCOLS
    assert trigger["metadata"]["tls"] == ("enable" if tls else "disable")
    refs = {
        ref["parameter"]: (ref["name"], ref["key"])
        for ref in auth["spec"]["configMapTargetRef"] + auth["spec"]["secretTargetRef"]
    }
    config_map = the("ConfigMap")["metadata"]["name"]
    assert refs["username"] == (config_map, "CHURN_KAFKA_SASL_USERNAME")
    (password,) = [e for e in container()["env"] if e["name"] == "CHURN_KAFKA_SASL_PASSWORD"]
    secret = password["valueFrom"]["secretKeyRef"]
    assert refs["password"] == (secret["name"], secret["key"])
    assert {ref["name"] for ref in auth["spec"]["configMapTargetRef"]} == {config_map}


# ---- Prometheus -------------------------------------------------------------------------


def scrape_job() -> dict[str, Any]:
    (job,) = yaml.safe_load(SCRAPE.read_text())["scrape_configs"]
    return job


def test_promtool_accepts_the_scrape_job(tmp_path: Path) -> None:
    # Debian's promtool is built without Kubernetes discovery: the pod discovery is
    # swapped for a static target, and everything else is checked as written.
    job = scrape_job()
    assert job["kubernetes_sd_configs"] == [{"role": "pod"}]
    job["static_configs"] = [{"targets": ["10.0.0.1:6066"]}]
    del job["kubernetes_sd_configs"]
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump({"scrape_configs": [job]}))
    result = subprocess.run(
        [prometheus_tool("promtool"), "check", "config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def kept(labels: dict[str, str], port_name: str) -> bool:
    """Whether the scrape job's relabelling keeps a pod's container port, from the
    labels Kubernetes discovery gives it (label names sanitised as Prometheus does)."""
    meta = {
        "__meta_kubernetes_pod_label_" + re.sub(r"[^a-zA-Z0-9_]", "_", name): value
        for name, value in labels.items()
    }
    meta["__meta_kubernetes_pod_container_port_name"] = port_name
    for rule in scrape_job()["relabel_configs"]:
        if rule.get("action") == "keep":
            value = rule.get("separator", ";").join(meta.get(s, "") for s in rule["source_labels"])
            if not re.fullmatch(rule["regex"], value):
                return False
    return True


def test_the_scrape_job_keeps_the_worker_web_ports_under_the_job_the_alerts_name() -> None:
    labels = the("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert kept(labels, "web")
    (web,) = [p for p in container()["ports"] if p["name"] == "web"]
    assert web["containerPort"] == settings().web_port
    assert not kept(labels, "other")
    (job,) = documents(CRONJOB)
    assert not kept(job["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"], "web")
    assert f'up{{job="{scrape_job()["job_name"]}"}}' in RULES.read_text()
    assert scrape_job().get("metrics_path", "/metrics") == "/metrics"

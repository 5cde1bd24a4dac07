"""The schedule examples run the real `python -m training retrain` command, into the
models the worker reads: the compose service, the Kubernetes CronJob (validated against
the Kubernetes schema, vendored in tests/vendor/) and the cron lines in the docs
(docs/training.md, "Retraining")."""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from tests.test_compose import environment, services
from training.__main__ import parse_retrain_args

ROOT = Path(__file__).resolve().parents[1]
CRONJOB = ROOT / "ops" / "k8s" / "retrain-cronjob.yaml"
SCHEMA = Path(__file__).resolve().parent / "vendor" / "k8s-cronjob-batch-v1.json"
RETRAINING_DOCS = ROOT / "docs" / "training.md"
RETRAIN = ["python", "-m", "training", "retrain"]
CRON_LINE = re.compile(r"^\s*(\S+\s+){5}.*-m training retrain ")


def retrain_args(command: list[str]) -> argparse.Namespace:
    """`command`'s arguments as `python -m training retrain` parses them (one it would
    refuse exits 2, which fails the test)."""
    assert command[:4] == RETRAIN, command
    return parse_retrain_args(command[4:])


def cronjob() -> dict[str, Any]:
    return yaml.safe_load(CRONJOB.read_text())


def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_cronjob_is_valid_against_the_kubernetes_schema() -> None:
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator().iter_errors(cronjob())
    ]
    assert errors == []


def test_the_kubernetes_schema_rejects_a_misspelt_field() -> None:
    # The validation above is only worth something if the schema is strict.
    document = cronjob()
    pod = document["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    pod["containers"][0]["volumeMount"] = pod["containers"][0].pop("volumeMounts")
    assert not validator().is_valid(document)


def test_the_cronjob_retrains_into_the_models_claim_from_a_read_only_database() -> None:
    spec = cronjob()["spec"]
    assert len(spec["schedule"].split()) == 5
    assert spec["concurrencyPolicy"] == "Forbid"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    args = retrain_args(container["command"])
    mounts = {mount["mountPath"]: mount for mount in container["volumeMounts"]}
    claims = {v["name"]: v.get("persistentVolumeClaim") for v in pod["volumes"]}
    models, data = mounts[str(args.models_dir)], mounts[str(args.db.parent)]
    assert not models.get("readOnly") and claims[models["name"]]["claimName"] == "churn-models"
    assert data["readOnly"] and claims[data["name"]]["readOnly"]
    assert pod["securityContext"]["runAsUser"] == 10001  # the Dockerfile's user
    assert container["securityContext"]["readOnlyRootFilesystem"]


def test_a_refused_challenger_fails_the_cronjobs_job_without_a_retry() -> None:
    job = cronjob()["spec"]["jobTemplate"]["spec"]
    (container,) = job["template"]["spec"]["containers"]
    assert job["template"]["spec"]["restartPolicy"] == "Never"
    fail = [rule for rule in job["podFailurePolicy"]["rules"] if rule["action"] == "FailJob"]
    assert [rule["onExitCodes"] for rule in fail] == [
        {"containerName": container["name"], "operator": "In", "values": [1, 2]}
    ]


def test_the_compose_retrain_service_writes_the_models_volume_the_worker_reads() -> None:
    retrain, worker = services()["retrain"], services()["worker"]
    assert retrain["profiles"] == ["retrain"]  # `docker compose up` does not start it
    args = retrain_args(retrain["command"])
    assert f"models:{args.models_dir}" in retrain["volumes"]
    assert f"models:{environment(worker)['CHURN_MODELS_DIR']}:ro" in worker["volumes"]
    assert f"shop-data:{args.db.parent}:ro" in retrain["volumes"]


def test_the_docs_cron_lines_run_retrain() -> None:
    # The weekly retrain, and the daily one on a realised-AUC drop.
    lines = [line for line in RETRAINING_DOCS.read_text().splitlines() if CRON_LINE.match(line)]
    assert len(lines) == 2
    for line in lines:
        words = shlex.split(line)
        start = words.index("retrain") + 1
        end = words.index(">>") if ">>" in words else len(words)
        args = parse_retrain_args(words[start:end])
        assert args.models_dir.is_absolute() and args.db.is_absolute()  # cron's cwd: $HOME

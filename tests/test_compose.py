"""docker-compose.yml and the Dockerfile, checked without Docker.

The compose file is validated against the Compose Specification's JSON Schema
(vendored in tests/vendor/, source and commit in tests/vendor/README.md); then the
properties that matter for security are checked one by one. The Dockerfile is read
instruction by instruction.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from stream_app.settings import OPTIONS, Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
SCHEMA = Path(__file__).resolve().parent / "vendor" / "compose-spec.json"
OPS = ROOT / "ops"

LOCK = "requirements/requirements-runtime.txt"
DIGEST = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")
# Variables a container may set that are not the project's settings.
STANDARD_VARIABLES = {"PATH", "HOME", "TZ", "LANG", "LC_ALL", "PYTHONUNBUFFERED"}


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def app_services() -> dict[str, dict[str, Any]]:
    """The services that run the project's own image (built from the Dockerfile)."""
    return {name: svc for name, svc in services().items() if "build" in svc}


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


_VARIABLE = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


class MissingVariable(KeyError):
    pass


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's interpolation of ${VAR}, ${VAR:-default}, ${VAR:?error} and $$."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.groups()
        value = env.get(name)
        empty = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in ("?", ":?") and empty:
            raise MissingVariable(f"{name}: {arg}")
        if op in ("-", ":-") and empty:
            return arg
        return value or ""

    return _VARIABLE.sub(replace, text)


def example_env() -> dict[str, str]:
    """.env.example with every empty value filled in, as a user is told to."""
    env = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            env[name.strip()] = value.strip() or "0123456789abcdef" * 4
    return env


# ---- the compose file ---------------------------------------------------------------


def test_compose_file_is_valid_against_the_compose_specification() -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in jsonschema.Draft7Validator(schema).iter_errors(compose())
    ]
    assert errors == []


def test_the_specification_schema_rejects_a_misspelt_service_key() -> None:
    # The validation above is only worth something if the schema is strict.
    document = compose()
    document["services"]["worker"]["port"] = ["6066:6066"]
    assert not jsonschema.Draft7Validator(json.loads(SCHEMA.read_text())).is_valid(document)


def published_ports(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host address, the whole entry) for each published port, short or long syntax."""
    ports = []
    for entry in service.get("ports", []):
        if isinstance(entry, dict):
            ports.append((str(entry.get("host_ip", "")), str(entry)))
            continue
        text = str(entry)
        parts = text.rsplit("/", 1)[0].split(":")
        # "container" or "host:container" publish on every interface; only
        # "ip:host:container" names the address.
        ports.append((parts[0] if len(parts) == 3 else "", text))
    return ports


def test_every_published_port_is_bound_to_127_0_0_1() -> None:
    published = {name: published_ports(svc) for name, svc in services().items()}
    assert any(published.values()), "nothing published: the test would prove nothing"
    for name, ports in published.items():
        for address, entry in ports:
            assert address == "127.0.0.1", f"{name} publishes {entry} beyond 127.0.0.1"


def test_no_service_shares_the_host_network_or_runs_privileged() -> None:
    for name, svc in services().items():
        assert svc.get("network_mode") != "host", name
        assert not svc.get("privileged", False), name


def test_redis_requires_a_password_and_never_evicts() -> None:
    redis = services()["redis"]
    config_names = {c["source"] if isinstance(c, dict) else c for c in redis.get("configs", [])}
    text = " ".join(
        [" ".join(map(str, redis.get("command", [])))]
        + [compose()["configs"][name]["content"] for name in config_names]
    )
    assert re.search(r"\buser default off\b", text), "anonymous access must be off"
    assert re.search(r"\buser churn on >\$\{REDIS_PASSWORD:\?[^}]*\}", text), (
        "the churn user needs the password from .env"
    )
    assert re.search(r"maxmemory-policy\s+noeviction\b", text)
    # The password is in a config file, not on a command line `ps` shows.
    assert "PASSWORD" not in " ".join(map(str, redis.get("command", [])))
    assert "redis://churn:${REDIS_PASSWORD:?" in environment(services()["worker"])["REDIS_URL"]


def kafka_listeners() -> dict[str, tuple[str, str]]:
    """Listener name -> (bind address, security protocol)."""
    env = environment(services()["kafka"])
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    listeners = {}
    for listener in env["KAFKA_LISTENERS"].split(","):
        name, _, address = listener.partition("://")
        listeners[name] = (address.rpartition(":")[0], protocols[name])
    return listeners


def test_kafka_accepts_connections_from_outside_its_container_only_over_sasl() -> None:
    env = environment(services()["kafka"])
    listeners = kafka_listeners()
    reachable = {n: proto for n, (addr, proto) in listeners.items() if addr != "127.0.0.1"}
    assert reachable, "no listener for the other containers"
    assert set(reachable.values()) <= {"SASL_PLAINTEXT", "SASL_SSL"}, listeners
    assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    for name in reachable:
        key = f"KAFKA_LISTENER_NAME_{name}_SCRAM___SHA___512_SASL_JAAS_CONFIG"
        assert "ScramLoginModule" in env[key], f"listener {name} has no SCRAM login module"
    # The SCRAM user is created at start from the same secret the clients use.
    assert "compose-kafka.sh" in " ".join(services()["kafka"]["command"])
    assert env["CHURN_KAFKA_SASL_PASSWORD"].startswith("${CHURN_KAFKA_SASL_PASSWORD:?")


# Who logs in to Kafka as whom: (user, the .env variable of its password).
PRINCIPALS = {
    "kafka-acls": ("${CHURN_KAFKA_SASL_USERNAME:-churn}", "CHURN_KAFKA_SASL_PASSWORD"),
    "worker": ("churn-worker", "CHURN_KAFKA_WORKER_PASSWORD"),
    "simulator": ("churn-simulator", "CHURN_KAFKA_SIMULATOR_PASSWORD"),
    "shop-sink": ("churn-sink", "CHURN_KAFKA_SINK_PASSWORD"),
}


def test_kafka_clients_log_in_with_scram_each_as_its_own_user_with_its_own_acls() -> None:
    kafka = environment(services()["kafka"])
    script = (ROOT / "scripts" / "compose-kafka.sh").read_text()
    clients = {
        name: environment(svc)
        for name, svc in app_services().items()
        if "KAFKA_BOOTSTRAP_SERVERS" in environment(svc)
    }
    assert set(clients) == set(PRINCIPALS)
    for name, env in clients.items():
        user, password = PRINCIPALS[name]
        assert env["CHURN_KAFKA_SECURITY_PROTOCOL"] in ("SASL_PLAINTEXT", "SASL_SSL"), name
        assert env["CHURN_KAFKA_SASL_MECHANISM"] == "SCRAM-SHA-512", name
        assert env["CHURN_KAFKA_SASL_USERNAME"] == user, name
        assert env["CHURN_KAFKA_SASL_PASSWORD"].startswith("${" + password + ":?"), name
        assert kafka[password] == env["CHURN_KAFKA_SASL_PASSWORD"], name  # the user is made
        if user.startswith("churn-"):
            assert f'"{user}=${password}"' in script, f"compose-kafka.sh does not create {user}"
    # Only the admin is a super user (and the listeners inside the container); the
    # others get what kafka-acls grants them.
    admin = PRINCIPALS["kafka-acls"][0]
    assert kafka["KAFKA_SUPER_USERS"] == f"User:ANONYMOUS;User:{admin}"
    assert kafka["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
    granted = set(services()["kafka-acls"]["command"])
    roles = {
        "worker": "churn-worker",
        "simulator": "churn-simulator",
        "reader": "churn-reader",
        "sink": "churn-sink",
    }
    assert {f"--{role}=User:{user}" for role, user in roles.items()} <= granted
    assert '"churn-reader=$CHURN_KAFKA_READER_PASSWORD"' in script
    for name in ("worker", "simulator", "shop-sink"):
        assert services()[name]["depends_on"]["kafka-acls"] == {
            "condition": "service_completed_successfully"
        }


def test_app_services_set_only_variables_the_settings_know() -> None:
    known = {option.env for option in OPTIONS.values()} | STANDARD_VARIABLES
    for name, svc in app_services().items():
        unknown = set(environment(svc)) - known
        assert not unknown, f"{name} sets {sorted(unknown)}, which stream_app.settings ignores"


def test_the_worker_environment_passes_the_settings_checks() -> None:
    secrets = example_env()
    env = {k: interpolate(v, secrets) for k, v in environment(services()["worker"]).items()}
    settings = Settings.from_env(env)
    assert settings.kafka_security_protocol == "SASL_PLAINTEXT"
    assert settings.kafka_sasl_password == secrets["CHURN_KAFKA_WORKER_PASSWORD"]
    assert settings.redis_url == f"redis://churn:{secrets['REDIS_PASSWORD']}@redis:6379/0"
    assert settings.web_bind == "0.0.0.0"  # inside the container; published on 127.0.0.1


def strings(node: Any) -> list[str]:
    """Every string in the parsed compose file (keys and values; comments are gone)."""
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in strings(k) + strings(v)]
    if isinstance(node, list):
        return [s for item in node for s in strings(item)]
    return [node] if isinstance(node, str) else []


def test_compose_refuses_to_start_without_each_secret() -> None:
    texts = strings(compose())
    required = {name for text in texts for name in re.findall(r"\$\{(\w+):\?", text)}
    assert {"CHURN_KAFKA_SASL_PASSWORD", "REDIS_PASSWORD", "GRAFANA_ADMIN_PASSWORD"} <= required
    secrets = example_env()
    assert required <= set(secrets), ".env.example must list every required variable"
    for text in texts:
        interpolate(text, secrets)  # complete: nothing missing
    for name in required:
        with pytest.raises(MissingVariable, match=name):
            for text in texts:
                interpolate(text, {**secrets, name: ""})


def test_no_secret_is_committed() -> None:
    assert ".env" in ROOT.joinpath(".gitignore").read_text().split()
    for line in ENV_EXAMPLE.read_text().splitlines():
        name, sep, value = line.partition("=")
        if sep and not line.startswith("#") and ("PASSWORD" in name or "TOKEN" in name):
            assert value == "", f".env.example carries a value for {name}"
    # In the compose file every secret is a reference to .env, never a value.
    secret = re.compile(r"PASSWORD|TOKEN|AUTH(?!ORIZER)")  # not the authorizer class
    for name, svc in services().items():
        for key, value in environment(svc).items():
            if secret.search(key):
                assert re.fullmatch(r"\$\{\w+:[-?][^}]*\}", value), f"{name}: {key}"
    redis_url = environment(services()["worker"])["REDIS_URL"]
    assert re.match(r"redis://churn:\$\{REDIS_PASSWORD:\?[^}]*\}@", redis_url)
    for config in compose()["configs"].values():
        for password in re.findall(r">(\S+)", config["content"]):
            assert password.startswith("${REDIS_PASSWORD:?"), password


def test_every_image_is_pinned_by_digest() -> None:
    for name, svc in services().items():
        if "build" in svc:
            continue  # built from the Dockerfile, whose base is pinned (below)
        assert DIGEST.match(svc["image"]), f"{name}: {svc['image']} is not pinned by digest"


def test_the_worker_only_reads_the_models_volume_the_trainer_writes() -> None:
    worker, trainer = services()["worker"], services()["trainer"]
    assert "models:/models:ro" in worker["volumes"]
    assert "models:/models" in trainer["volumes"]
    assert environment(worker)["CHURN_MODELS_DIR"] == "/models"
    assert worker["depends_on"]["trainer"]["condition"] == "service_completed_successfully"


def test_services_start_once_their_dependencies_are_healthy() -> None:
    all_services = services()
    for name, svc in all_services.items():
        for dependency, spec in (svc.get("depends_on") or {}).items():
            condition = spec["condition"]
            assert condition in ("service_healthy", "service_completed_successfully"), name
            if condition == "service_healthy":
                # A healthcheck in compose, or the image's HEALTHCHECK (the worker).
                check = all_services[dependency].get("healthcheck", {})
                built = "build" in all_services[dependency]
                assert not check.get("disable") and (check.get("test") or built), dependency
    for name in ("kafka", "redis"):
        assert all_services[name]["healthcheck"]["test"], name


def test_the_project_containers_run_unprivileged_on_a_read_only_root() -> None:
    for name, svc in app_services().items():
        assert not str(svc["user"]).startswith(("0", "root")), name
        assert svc["read_only"] is True, name
        assert svc["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in svc["security_opt"], name


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Host path -> container path of a service's bind mounts (short syntax)."""
    return {
        source: target
        for source, target, *_ in (str(v).split(":") for v in service.get("volumes", []))
        if source.startswith(".")
    }


def test_prometheus_scrapes_the_worker_and_loads_the_tested_rules() -> None:
    prometheus = services()["prometheus"]
    assert mounts(prometheus) == {"./ops/prometheus": "/etc/prometheus"}
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    config = yaml.safe_load((OPS / "prometheus" / "prometheus.yml").read_text())
    # Relative to the config file: the rules.yml mounted beside it, the one tested.
    assert config["rule_files"] == ["rules.yml"]
    [job] = config["scrape_configs"]
    assert job["job_name"] == "churn-worker"  # the job rules.yml's ChurnWorkerDown watches
    assert 'up{job="churn-worker"}' in (OPS / "prometheus" / "rules.yml").read_text()
    port = environment(services()["worker"])["CHURN_WEB_PORT"]
    assert job["static_configs"] == [{"targets": [f"worker:{port}"]}]
    assert job.get("metrics_path", "/metrics") == "/metrics"


def test_grafana_provisions_the_prometheus_data_source_and_the_dashboard() -> None:
    grafana, provisioning = services()["grafana"], OPS / "grafana" / "provisioning"
    bound = mounts(grafana)
    assert bound["./ops/grafana/provisioning"] == "/etc/grafana/provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    assert "127.0.0.1:9090:9090" in services()["prometheus"]["ports"]
    [provider] = yaml.safe_load((provisioning / "dashboards" / "churn.yml").read_text())[
        "providers"
    ]
    assert bound["./ops/grafana/dashboards"] == provider["options"]["path"]
    dashboard = json.loads((OPS / "grafana" / "dashboards" / "churn.json").read_text())
    used = {
        node["datasource"]["uid"]
        for panel in dashboard["panels"]
        for node in [panel, *panel.get("targets", [])]
        if "datasource" in node
    }
    assert used == {source["uid"]}, "every panel must use the provisioned data source"
    password = environment(grafana)["GF_SECURITY_ADMIN_PASSWORD"]
    assert password.startswith("${GRAFANA_ADMIN_PASSWORD:?")
    assert environment(grafana)["GF_USERS_ALLOW_SIGN_UP"] == "false"


def test_the_monitoring_containers_run_without_capabilities() -> None:
    for name in ("prometheus", "grafana"):
        svc = services()[name]
        assert svc["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in svc["security_opt"], name
        assert not str(svc.get("user", "")).startswith(("0", "root")), name


# ---- the Dockerfile -----------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order; continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pending += line[:-1] + " " if line.endswith("\\") else line
        if line.endswith("\\"):
            continue
        keyword, _, args = pending.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def test_dockerfile_base_images_are_pinned_by_digest() -> None:
    instructions = dockerfile_instructions()
    args = {}
    stages = set()
    for keyword, rest in instructions:
        if keyword == "ARG" and "=" in rest:
            name, _, value = rest.partition("=")
            args[name] = value
        if keyword == "FROM":
            image, *alias = rest.split(" AS ") if " AS " in rest else (rest,)
            image = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image.strip())
            assert image in stages or DIGEST.match(image), f"FROM {image}"
            assert image in stages or image.startswith("python:3.11"), image
            stages.update(a.strip() for a in alias)


def test_dockerfile_switches_to_a_non_root_user_before_the_command() -> None:
    stage = final_stage()
    keywords = [keyword for keyword, _ in stage]
    users = [i for i, keyword in enumerate(keywords) if keyword == "USER"]
    starts = [i for i, keyword in enumerate(keywords) if keyword in ("CMD", "ENTRYPOINT")]
    assert users and starts
    assert users[-1] < min(starts), "USER must come before CMD/ENTRYPOINT"
    user = stage[users[-1]][1].split(":")[0]
    assert user not in ("0", "root"), user
    # Nothing runs as root after the switch.
    assert "RUN" not in keywords[users[-1] :]


def test_dockerfile_has_a_healthcheck_on_health_that_needs_no_curl() -> None:
    checks = [rest for keyword, rest in final_stage() if keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    assert "/health" in checks[0] and "urllib.request" in checks[0]
    assert "curl" not in checks[0] and "wget" not in checks[0]


def test_dockerfile_installs_dependencies_only_from_the_hashed_lock() -> None:
    instructions = dockerfile_instructions()
    copied = {
        shlex.split(rest)[-1]
        for keyword, rest in instructions
        if keyword == "COPY" and shlex.split(rest)[0] == LOCK
    }
    assert copied, f"{LOCK} is not copied into the build"
    commands = [
        shlex.split(command)
        for keyword, rest in instructions
        if keyword == "RUN"
        for command in re.split(r"&&|;", rest)
    ]
    pip_installs = [
        words for words in commands if "pip" in words and "install" in words[words.index("pip") :]
    ]
    assert pip_installs, "no pip install"
    for words in pip_installs:
        segment = words[words.index("install") :]
        assert "--require-hashes" in segment, words
        assert "--no-deps" in segment, words
        assert segment[segment.index("-r") + 1] in copied, words
        # Nothing else is installed: only options and the lock file.
        plain = [w for w in segment[1:] if not w.startswith("-") and w not in copied]
        assert plain == [], f"installs {plain} outside the lock"


def test_dockerfile_does_not_bake_model_artifacts_into_the_image() -> None:
    for keyword, rest in dockerfile_instructions():
        if keyword in ("COPY", "ADD") and "--from=" not in rest:
            sources = shlex.split(rest)[:-1]
            assert "." not in sources, "COPY . would bring artifacts/ and secrets along"
            assert not any("artifacts" in s or "models" in s for s in sources), rest
    env = " ".join(rest for keyword, rest in final_stage() if keyword == "ENV")
    assert "CHURN_MODELS_DIR=/models" in env

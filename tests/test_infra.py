"""infra/: the compose file, the Kubernetes manifests, the Dockerfiles and the profiler's bento agree with
each other and with the code they run.

There is no Docker engine or cluster here, so nothing is started in a container. What is checked instead:
the YAML parses into the expected structure; every port a container listens on (by its command) is the one
its ports, probes, health checks, Services and EXPOSE lines name; every command's flags parse with the
installed CLI's own parser; the profiler's SKILLPROFILER_* names exist in its settings module and the values
load; compose and Kubernetes give each container the same command and environment; the accelerate configs
load with accelerate's loader; and ``bentoml build`` packs the profiler with its wheels (temporary
BENTOML_HOME).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from concurrent import futures
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
K8S = INFRA / "k8s"
DOCKER = INFRA / "docker"
BENTOFILE = ROOT / "services" / "profiler" / "bentofile.yaml"
PROFILER_CONFIG = ROOT / "services" / "profiler" / "src" / "skillprofiler" / "config.py"


def _load(path: Path) -> ModuleType:
    """A script of infra/ (not a package) as a module, without touching sys.path."""
    spec = importlib.util.spec_from_file_location(f"infra_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and the like look their module up
    spec.loader.exec_module(module)
    return module


build_bento = _load(INFRA / "build_bento.py")
create_bucket = _load(DOCKER / "create_bucket.py")
grpc_health_check = _load(DOCKER / "grpc_health_check.py")

# The services a container runs, by compose service name = Kubernetes Deployment and Service name.
SERVERS = ("mlflow", "vllm", "tagger", "profiler")
# Compose's variable interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}.
ENV_PATTERN = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


# ---------------------------------------------------------------------------------------------- loaders
def _interpolate(value: Any) -> Any:
    """Compose's ``${VAR:-default}`` with every variable unset: the defaults the file ships with."""
    if isinstance(value, str):
        return ENV_PATTERN.sub(lambda m: m.group(2) or "", value)
    if isinstance(value, list):
        return [_interpolate(v) for v in value]
    if isinstance(value, dict):
        return {k: _interpolate(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return _interpolate(yaml.safe_load((INFRA / "compose.yaml").read_text()))


@pytest.fixture(scope="module")
def k8s() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs = []
    for name in kustomization["resources"]:
        docs += [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return docs


def _find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def _container(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (container,) = _find(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"]
    return container


def _k8s_env(objects: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """The container's environment with ConfigMap and Secret references resolved."""
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(_find(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        ref = item["valueFrom"]
        if "configMapKeyRef" in ref:
            key = ref["configMapKeyRef"]
            env[item["name"]] = _find(objects, "ConfigMap", key["name"])["data"][key["key"]]
        elif "secretKeyRef" in ref:
            key = ref["secretKeyRef"]
            secrets = [o for o in objects if o["kind"] == "Secret" and o["metadata"]["name"] == key["name"]]
            if not secrets and key.get("optional"):
                continue
            env[item["name"]] = _find(objects, "Secret", key["name"])["stringData"][key["key"]]
    return env


def _k8s_command(objects: list[dict[str, Any]], name: str) -> list[str]:
    """command + args, with ``$(VAR)`` expanded from the container's environment as the kubelet does."""
    container = _container(objects, name)
    env = _k8s_env(objects, container)
    argv = [*container.get("command", []), *container.get("args", [])]
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], a) for a in argv]


def _compose_command(compose: dict[str, Any], name: str) -> list[str]:
    service = compose["services"][name]
    command = service["command"]
    assert isinstance(command, list), f"{name}: write the command as a list (no shell splitting surprises)"
    return [*service.get("entrypoint", []), *[str(c) for c in command]]


def _flag(argv: list[str], flag: str) -> str:
    assert flag in argv, f"{flag} not in {argv}"
    return argv[argv.index(flag) + 1]


def _listen_port(argv: list[str]) -> int:
    return int(_flag(argv, "--port"))


def _dockerfile(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(
        r"\\\n", " ", "\n".join(ln for ln in path.read_text().splitlines() if not ln.lstrip().startswith("#"))
    )
    out = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _exec_form(args: str) -> list[str]:
    """A JSON (exec-form) CMD/HEALTHCHECK CMD argument list."""
    parsed = json.loads(args[args.index("[") :])
    assert isinstance(parsed, list)
    return parsed


def _constraint_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            pins[name.strip().lower().replace("_", "-")] = version.strip()
    return pins


# ------------------------------------------------------------------------------------------ structure
def test_compose_structure_and_health_checks(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"postgres", "minio", "create-bucket", "mlflow", "vllm", "tagger", "profiler"}
    for name, service in services.items():
        if name != "create-bucket":  # a one-shot job; every long-running service says when it is healthy
            test = service.get("healthcheck", {}).get("test")
            assert test and test[0] in {"CMD", "CMD-SHELL"}, f"{name} has no health check"
        for dep, cond in service.get("depends_on", {}).items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], (
                    f"{name} waits for {dep} to be healthy; it has no check"
                )
            else:
                assert cond["condition"] == "service_completed_successfully"
                assert services[dep].get("restart") == "no"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if not source.startswith((".", "/")):
                assert source in compose["volumes"], f"{name}: volume {source} is not declared"
    for name, service in services.items():
        if "build" in service:
            assert (ROOT / service["build"]["dockerfile"]).is_file(), name
            assert (INFRA / service["build"]["context"]).resolve() == ROOT
    # The profiler's image is the one `infra/build_bento.py --containerize` tags.
    profiler = tomllib.loads((ROOT / "services" / "profiler" / "pyproject.toml").read_text())["project"]
    assert services["profiler"]["image"] == f"{build_bento.IMAGE}:{profiler['version']}"
    gpu = services["vllm"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"]
    assert services["vllm"]["ipc"] == "host"
    # MLflow's artifacts go to the bucket the one-shot step creates, in the MinIO it waits for.
    mlflow_cmd = _compose_command(compose, "mlflow")
    bucket = urlsplit(_flag(mlflow_cmd, "--artifacts-destination")).netloc
    assert _compose_command(compose, "create-bucket")[-1] == bucket
    assert "--serve-artifacts" in mlflow_cmd
    s3_endpoint = urlsplit(services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"])
    assert s3_endpoint.hostname == "minio" and f":{s3_endpoint.port}" in _flag(
        services["minio"]["command"], "--address"
    )
    assert services["create-bucket"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == s3_endpoint.geturl()
    backend = urlsplit(_flag(mlflow_cmd, "--backend-store-uri"))
    postgres_env = services["postgres"]["environment"]
    assert backend.scheme == "postgresql+psycopg2"  # plain postgresql:// wants psycopg 3 (not installed)
    assert (backend.hostname, backend.username, backend.password, backend.path.lstrip("/")) == (
        "postgres",
        postgres_env["POSTGRES_USER"],
        postgres_env["POSTGRES_PASSWORD"],
        postgres_env["POSTGRES_DB"],
    )


def test_k8s_manifests_match_the_kubernetes_schemas(k8s: list[dict[str, Any]]) -> None:
    """Every object against Kubernetes' own OpenAPI schemas, strict (unknown fields fail), offline.
    kubernetes-validate is in the dev extras."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    version = kubernetes_validate.latest_version()
    for obj in k8s:
        kubernetes_validate.validate(obj, version, strict=True)  # raises ValidationError
    bad = json.loads(json.dumps(_find(k8s, "Deployment", "tagger")))
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpc"]["path"] = "/x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, version, strict=True)


def test_compose_matches_the_compose_specification(tmp_path: Path) -> None:
    """infra/compose.yaml against the Compose Specification's JSON schema (check-jsonschema's vendored
    copy), offline (check-jsonschema is in the dev extras)."""
    pytest.importorskip("check_jsonschema")

    def check(path: Path) -> subprocess.CompletedProcess[str]:
        argv = [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(path),
        ]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)

    result = check(INFRA / "compose.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    bad = tmp_path / "compose.yaml"
    bad.write_text((INFRA / "compose.yaml").read_text().replace("    ipc: host", "    ipcx: host"))
    assert check(bad).returncode != 0


def test_k8s_structure(k8s: list[dict[str, Any]]) -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    deployments = {o["metadata"]["name"]: o for o in k8s if o["kind"] == "Deployment"}
    services = {o["metadata"]["name"]: o for o in k8s if o["kind"] == "Service"}
    assert set(deployments) == set(services) == set(SERVERS)
    claims = {o["metadata"]["name"] for o in k8s if o["kind"] == "PersistentVolumeClaim"}
    for name, deployment in deployments.items():
        template = deployment["spec"]["template"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= template["metadata"]["labels"].items(), f"{name}: selector misses its pods"
        matched = [d for d, o in deployments.items() if services[name]["spec"]["selector"].items()
                   <= o["spec"]["template"]["metadata"]["labels"].items()]  # fmt: skip
        assert matched == [name], f"Service {name} selects {matched}"
        container = _container(k8s, name)
        _k8s_env(k8s, container)  # every ConfigMap/Secret reference resolves
        mounts = {m["name"] for m in container.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in template["spec"].get("volumes", [])}
        assert mounts == set(volumes), f"{name}: mounts {mounts} vs volumes {set(volumes)}"
        for volume in volumes.values():
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
    tagger = deployments["tagger"]["spec"]
    assert tagger["replicas"] == 2
    gpus = _container(k8s, "vllm")["resources"]["limits"]["nvidia.com/gpu"]
    assert int(_flag(_k8s_command(k8s, "vllm"), "--tensor-parallel-size")) == gpus


def test_tagger_uses_grpc_probes_and_profiler_bentoml_probes(k8s: list[dict[str, Any]]) -> None:
    tagger = _container(k8s, "tagger")
    port = _listen_port(_k8s_command(k8s, "tagger"))
    for probe in ("readinessProbe", "livenessProbe"):
        assert tagger[probe]["grpc"]["port"] == port
    profiler = _container(k8s, "profiler")
    port = _listen_port(_k8s_command(k8s, "profiler"))
    assert profiler["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
    assert profiler["livenessProbe"]["httpGet"] == {"path": "/livez", "port": port}
    # The tagger's grace on SIGTERM fits in the pod's termination grace period.
    grace = _find(k8s, "Deployment", "tagger")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    tagger_cli = _parse("tagger", _k8s_command(k8s, "tagger"))
    assert tagger_cli["grace"] < grace


# -------------------------------------------------------------------------------------------- ports
def _ports_in(value: Any) -> Iterator[int]:
    """Every :PORT in a health-check command or URL."""
    for text in value if isinstance(value, list) else [value]:
        yield from (int(p) for p in re.findall(r"(?:127\.0\.0\.1|localhost):(\d+)", str(text)))


@pytest.mark.parametrize("name", SERVERS)
def test_ports_agree_everywhere(compose: dict[str, Any], k8s: list[dict[str, Any]], name: str) -> None:
    port = _listen_port(_compose_command(compose, name))
    service = compose["services"][name]
    # compose: published port, health check
    assert [int(p.rsplit(":", 1)[1]) for p in service["ports"]] == [port]
    assert list(_ports_in(service["healthcheck"]["test"])) == [port]
    # Kubernetes: the same command, containerPort, probes, Service
    assert _listen_port(_k8s_command(k8s, name)) == port
    container = _container(k8s, name)
    assert [p["containerPort"] for p in container["ports"]] == [port]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        if probe in container:
            spec = container[probe]
            assert (spec.get("httpGet") or spec.get("grpc"))["port"] == port, f"{name} {probe}"
    (svc_port,) = _find(k8s, "Service", name)["spec"]["ports"]
    assert svc_port["targetPort"] == port
    assert svc_port["port"] == port  # so http://<name>:<port> is the same URL in compose and Kubernetes


@pytest.mark.parametrize(
    ("dockerfile", "name"), [("tagger.Dockerfile", "tagger"), ("mlflow.Dockerfile", "mlflow")]
)
def test_dockerfile_ports_and_health(compose: dict[str, Any], dockerfile: str, name: str) -> None:
    steps = _dockerfile(DOCKER / dockerfile)
    port = _listen_port(_compose_command(compose, name))
    assert [int(a) for op, a in steps if op == "EXPOSE"] == [port]
    (health,) = [a for op, a in steps if op == "HEALTHCHECK"]
    assert list(_ports_in(_exec_form(health))) == [port]
    (cmd,) = [_exec_form(a) for op, a in steps if op == "CMD"]
    assert _listen_port(cmd) == port
    _parse(name, cmd)  # the image's default command parses too
    assert compose["services"][name]["build"]["dockerfile"] == f"infra/docker/{dockerfile}"


def test_urls_name_services_on_their_ports(compose: dict[str, Any], k8s: list[dict[str, Any]]) -> None:
    """Every http://service:port a container is given (env or flag) reaches that service's listening port."""
    listening = {n: _listen_port(_compose_command(compose, n)) for n in SERVERS}
    listening |= {"minio": 9000, "postgres": 5432}
    seen = 0
    texts = []
    for service in compose["services"].values():
        texts += [*service.get("environment", {}).values(), *service.get("command", [])]
    for name in SERVERS:
        texts += [*_k8s_env(k8s, _container(k8s, name)).values(), *_k8s_command(k8s, name)]
    for text in texts:
        for url in re.findall(r"(?:https?|postgresql\+psycopg2)://[^\s,]+", str(text)):
            parts = urlsplit(url)
            if parts.hostname in listening:
                assert parts.port == listening[parts.hostname], url
                seen += 1
    assert seen >= 10  # the URIs are really there (tracking, S3, vLLM, backend store, in both files)


# ------------------------------------------------------------------------------------- environment
def _profiler_env_names() -> set[str]:
    """The SKILLPROFILER_* names the settings module reads, from its source (not a list kept here)."""
    tree = ast.parse(PROFILER_CONFIG.read_text())
    names = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    return {n for n in names if re.fullmatch(r"SKILLPROFILER_[A-Z_]+", n)}


def test_profiler_env_names_exist_and_load(
    compose: dict[str, Any], k8s: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    known = _profiler_env_names()
    assert {"SKILLPROFILER_ALLOWED_ROOTS", "SKILLPROFILER_WORK_DIR"} <= known  # the source read is real
    env = compose["services"]["profiler"]["environment"]
    bento_env = yaml.safe_load(BENTOFILE.read_text())["docker"]["env"]
    used = {
        k for k in [*env, *_k8s_env(k8s, _container(k8s, "profiler")), *bento_env] if k.startswith("SKILL")
    }
    assert used and used <= known, f"unknown settings: {sorted(used - known)}"
    assert bento_env["SKILLPROFILER_WORK_DIR"] == env["SKILLPROFILER_WORK_DIR"]
    # The values load, and the profiler will let its `openai` engine call the vLLM server of the same file.
    from skillprofiler.config import Settings

    for name in known:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, str(value))
    settings = Settings.from_env()
    assert str(settings.work_dir) == env["SKILLPROFILER_WORK_DIR"]
    assert settings.log_to_mlflow
    vllm_url = f"http://vllm:{_listen_port(_compose_command(compose, 'vllm'))}/v1"
    assert settings.check_base_url(vllm_url) == vllm_url
    # Its profiles folder is a volume in both, and its data root is mounted read-only in both.
    mounts = {v.split(":")[1]: v for v in compose["services"]["profiler"]["volumes"]}
    assert env["SKILLPROFILER_WORK_DIR"] in mounts and mounts[env["SKILLPROFILER_ALLOWED_ROOTS"]].endswith(
        ":ro"
    )
    k8s_mounts = {m["mountPath"]: m for m in _container(k8s, "profiler")["volumeMounts"]}
    assert env["SKILLPROFILER_WORK_DIR"] in k8s_mounts
    assert k8s_mounts[env["SKILLPROFILER_ALLOWED_ROOTS"]].get("readOnly") is True


@pytest.mark.parametrize("name", ["tagger", "profiler", "vllm"])
def test_compose_and_k8s_run_the_same(compose: dict[str, Any], k8s: list[dict[str, Any]], name: str) -> None:
    assert _compose_command(compose, name) == _k8s_command(k8s, name)
    assert compose["services"][name]["image"] == _container(k8s, name)["image"]
    compose_env = {k: str(v) for k, v in compose["services"][name].get("environment", {}).items()}
    k8s_env = _k8s_env(k8s, _container(k8s, name))
    if name == "vllm":  # the token is optional in both, a secret in Kubernetes
        compose_env.pop("HF_TOKEN")
    assert compose_env == k8s_env


def test_mlflow_same_stores_and_accepts_its_clients(
    compose: dict[str, Any], k8s: list[dict[str, Any]]
) -> None:
    from mlflow.server.security_utils import is_allowed_host_header

    compose_cmd, k8s_cmd = _compose_command(compose, "mlflow"), _k8s_command(k8s, "mlflow")
    for flag in ("--backend-store-uri", "--artifacts-destination", "--host", "--port"):
        assert _flag(compose_cmd, flag) == _flag(k8s_cmd, flag)
    compose_env = compose["services"]["mlflow"]["environment"]
    assert compose_env.items() <= _k8s_env(k8s, _container(k8s, "mlflow")).items()
    assert compose["services"]["mlflow"]["image"] == _container(k8s, "mlflow")["image"]
    # MLflow 3 refuses unknown Host headers: the one every client sends must be allowed (both files).
    uris = {e["MLFLOW_TRACKING_URI"] for e in (s.get("environment", {}) for s in compose["services"].values())
            if "MLFLOW_TRACKING_URI" in e}  # fmt: skip
    uris.add(_find(k8s, "ConfigMap", "skilldistill-env")["data"]["MLFLOW_TRACKING_URI"])
    assert uris == {"http://mlflow:5000"}
    for cmd in (compose_cmd, k8s_cmd):
        allowed = _flag(cmd, "--allowed-hosts").split(",")
        assert is_allowed_host_header(allowed, "mlflow:5000")
        assert is_allowed_host_header(allowed, "127.0.0.1:5000")  # the published port, from the host
        assert not is_allowed_host_header(allowed, "evil.example:5000")
    assert is_allowed_host_header(
        _flag(k8s_cmd, "--allowed-hosts").split(","), "mlflow.ml.svc.cluster.local:5000"
    )


# ---------------------------------------------------------------------------------------- commands
def _parse(name: str, argv: list[str]) -> dict[str, Any]:
    """Parse a container's command with the installed CLI's own parser; the parsed parameters."""
    command: Any  # a click Command; typer carries its own click, so no one class covers all three
    if name == "tagger":
        import typer
        from skilltagger.cli import app

        assert argv[:2] == ["skilltagger", "serve"]
        group: Any = typer.main.get_command(app)
        command, args = group.commands["serve"], argv[2:]
    elif name == "profiler":
        from bentoml_cli.cli import cli as bentoml_cli

        assert argv[:2] == ["bentoml", "serve"]
        bentoml_group: Any = bentoml_cli  # a click Group, typed as Command
        command, args = bentoml_group.commands["serve"], argv[2:]
    elif name == "mlflow":
        from mlflow.cli import cli as mlflow_cli

        assert argv[:2] == ["mlflow", "server"]
        command, args = mlflow_cli.commands["server"], argv[2:]
    else:
        raise AssertionError(f"no parser for {name}")
    with command.make_context(argv[1], list(args)) as ctx:
        return dict(ctx.params)


def _console_script(name: str) -> str:
    (value,) = {e.value for e in metadata.entry_points(group="console_scripts") if e.name == name}
    return value


def test_commands_parse_with_the_installed_clis(compose: dict[str, Any], k8s: list[dict[str, Any]]) -> None:
    from skilltag.factory import BACKENDS

    for source in (_compose_command(compose, "tagger"), _k8s_command(k8s, "tagger")):
        params = _parse("tagger", source)
        assert params["port"] == 50051 and params["host"] == "0.0.0.0"
        assert params["backend"] in BACKENDS and params["backend"] == "openai"
        assert params["openai_url"] == [f"http://vllm:{_listen_port(_compose_command(compose, 'vllm'))}/v1"]
        assert params["openai_model"] == _compose_command(compose, "vllm")[2]  # the model vLLM serves
        assert params["tree"] == "world" or params["tree"].startswith("/data/")
    for source in (_compose_command(compose, "profiler"), _k8s_command(k8s, "profiler")):
        params = _parse("profiler", source)
        assert params["bento"] == "/home/bentoml/bento"  # BENTO_PATH of BentoML's image
        assert (params["host"], params["port"]) == ("0.0.0.0", 3000)
    for source in (_compose_command(compose, "mlflow"), _k8s_command(k8s, "mlflow")):
        params = _parse("mlflow", source)
        assert params["serve_artifacts"] and params["artifacts_destination"].startswith("s3://")
    # The executables: console scripts of the installed packages (the tagger's declared by its pyproject).
    scripts = tomllib.loads((ROOT / "services" / "tagger" / "pyproject.toml").read_text())["project"][
        "scripts"
    ]
    assert scripts["skilltagger"] == _console_script("skilltagger") == "skilltagger.cli:app"
    assert _console_script("bentoml").startswith("bentoml_cli")
    assert _console_script("mlflow").startswith("mlflow.cli")
    # A flag the CLI does not know fails the parse (so the checks above can fail).
    with pytest.raises(Exception, match="No such option"):
        _parse("tagger", ["skilltagger", "serve", "--tree", "world", "--openai-base-url", "x"])
    with pytest.raises(click.UsageError, match="No such option"):
        _parse("mlflow", ["mlflow", "server", "--artifact-destination", "s3://x"])


def test_vllm_serve_flags(compose: dict[str, Any]) -> None:
    """`vllm serve` flags against the installed vLLM's own help (vLLM is the GPU extra: absent on CPU)."""
    argv = _compose_command(compose, "vllm")
    assert argv[:2] == ["vllm", "serve"] and not argv[2].startswith("-")  # the model, positional
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vllm is not installed (GPU extra: pip install 'packages/distill[gpu]')")
    vllm = shutil.which("vllm") or str(Path(sys.executable).with_name("vllm"))
    helptext = subprocess.run(
        [vllm, "serve", "--help=all"], capture_output=True, text=True, timeout=300
    ).stdout
    for flag in [a for a in argv[2:] if a.startswith("--")]:
        assert re.search(rf"{re.escape(flag)}\b", helptext), f"vllm serve has no {flag}"


def test_compose_service_commands_exist_in_images(compose: dict[str, Any]) -> None:
    """The helper scripts compose runs are the ones the images copy in."""
    copied = {}
    for dockerfile in DOCKER.glob("*.Dockerfile"):
        for op, args in _dockerfile(dockerfile):
            if op == "COPY" and not args.startswith("--from"):
                src, dest = shlex.split(args)[-2:]
                assert (ROOT / src).exists(), f"{dockerfile.name}: COPY source {src} does not exist"
                copied[dest] = src
    used = [a for s in compose["services"].values() for a in [*s.get("command", []), *s.get("healthcheck", {}).get("test", [])]
            if str(a).startswith("/opt/skilldistill/")]  # fmt: skip
    assert used and all(path in copied for path in used), used


def test_tagger_image_carries_what_the_tagger_needs() -> None:
    steps = _dockerfile(DOCKER / "tagger.Dockerfile")
    copied = {shlex.split(a)[0] for op, a in steps if op == "COPY" and not a.startswith("--from")}
    ours, _ = build_bento.closure("skilldistill-tagger")
    dirs = build_bento.project_dirs()
    needed = {str(dirs[d].relative_to(ROOT)) for d in ours}
    assert needed <= copied, f"the tagger image misses {sorted(needed - copied)}"
    (wheel_step,) = [a for op, a in steps if op == "RUN" and "pip wheel" in a]
    assert needed <= set(wheel_step.split())
    assert any(op == "RUN" and "-c /tmp/constraints.txt" in a for op, a in steps)


def test_mlflow_image_pins_match_the_tested_stack() -> None:
    (install,) = [
        a for op, a in _dockerfile(DOCKER / "mlflow.Dockerfile") if op == "RUN" and "pip install" in a
    ]
    pins = dict(p.split("==") for p in install.split() if "==" in p)
    assert set(pins) == {"mlflow", "psycopg2-binary", "boto3"}
    tested = _constraint_pins()
    assert {k: tested[k] for k in pins} == pins
    assert pins["mlflow"] == metadata.version("mlflow")


# --------------------------------------------------------------------------------- helper scripts
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_grpc_health_check_script() -> None:
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc

    port = _free_port()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    try:
        target = f"127.0.0.1:{port}"
        servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        assert grpc_health_check.main([target]) == 0
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        assert grpc_health_check.main([target]) == 1
        assert grpc_health_check.check(target, service="no.such.Service") == "NOT_FOUND"
    finally:
        server.stop(None)
    assert grpc_health_check.main([target, "--timeout", "1"]) == 1  # nobody listening


def test_create_bucket_is_idempotent() -> None:
    class FakeS3:
        def __init__(self) -> None:
            self.buckets: list[str] = []

        def list_buckets(self) -> dict[str, Any]:
            return {"Buckets": [{"Name": b} for b in self.buckets]}

        def create_bucket(self, Bucket: str) -> None:
            assert Bucket not in self.buckets
            self.buckets.append(Bucket)

    s3 = FakeS3()
    assert create_bucket.ensure_bucket(s3, "mlflow") is True
    assert create_bucket.ensure_bucket(s3, "mlflow") is False
    assert s3.buckets == ["mlflow"]


# ------------------------------------------------------------------------------------------ accelerate
@pytest.mark.parametrize(("name", "kind"), [("deepspeed_zero3.yaml", "DEEPSPEED"), ("fsdp.yaml", "FSDP")])
def test_accelerate_configs_load(name: str, kind: str) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(INFRA / "accelerate" / name))
    assert config.distributed_type.value == kind
    assert (config.num_processes, config.num_machines, str(config.mixed_precision)) == (8, 1, "bf16")
    if kind == "DEEPSPEED":
        assert config.deepspeed_config["zero_stage"] == 3
    else:
        assert config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "Qwen3DecoderLayer"


# ------------------------------------------------------------------------------------------------ bento
def test_bentofile_lists_the_wheels_the_profiler_needs() -> None:
    bentofile = yaml.safe_load(BENTOFILE.read_text())
    ours, pins = build_bento.closure()
    dirs = build_bento.project_dirs()
    assert {"skilldistill-profiler", "skilldistill-distill", "skilldistill-skillcore"} <= set(ours)
    assert sorted(bentofile["python"]["wheels"]) == sorted(
        f"wheels/{build_bento.wheel_name(dirs[d])}" for d in ours
    )
    assert bentofile["python"]["lock_packages"] is False  # offline build: the pins are the lock
    assert bentofile["docker"]["setup_script"] == f"wheels/{build_bento.SETUP_SCRIPT.name}"
    assert not any(p.startswith("skilldistill") for p in pins) and "bentoml" in pins and "torch" in pins


def test_bentoml_build_packs_the_profiler(tmp_path: Path, compose: dict[str, Any]) -> None:
    """`bentoml build` of a copy of the build context (the checkout gets no wheels/), bento store in tmp."""
    ctx = tmp_path / "services" / "profiler"
    shutil.copytree(
        ROOT / "services" / "profiler", ctx, ignore=shutil.ignore_patterns("tests", "__pycache__", "wheels")
    )
    wheels = build_bento.prepare(ctx)
    home = tmp_path / "bentoml-home"
    tag = build_bento.bentoml_build(ctx, env={"BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"})
    name, version = tag.split(":")
    bento = home / "bentos" / name / version
    info = yaml.safe_load((bento / "bento.yaml").read_text())
    bentofile = yaml.safe_load(BENTOFILE.read_text())
    assert info["name"] == bentofile["name"] == "skilldistill-profiler"
    assert info["service"] == bentofile["service"]
    # The wheels travel in the bento, and pip's view of them is right (name, version).
    packed = sorted(p.name for p in (bento / "env" / "python" / "wheels").glob("*.whl"))
    assert packed == sorted(w.name for w in wheels) == sorted(Path(w).name for w in info["python"]["wheels"])
    for wheel in bento.glob("env/python/wheels/*.whl"):
        with zipfile.ZipFile(wheel) as zf:
            meta = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
            assert len(meta) == 1 and b"Name: skilldistill-" in zf.read(meta[0])
            if wheel.name.startswith("skilldistill_profiler-"):
                module, _, attr = info["service"].partition(":")
                source = zf.read(module.replace(".", "/") + ".py").decode()
                assert f"class {attr}" in source
    requirements = (bento / "env" / "python" / "requirements.txt").read_text()
    assert re.search(r"^torch==\S+$", requirements, re.M) and "skilldistill" not in requirements
    assert (bento / "env" / "docker" / "setup_script").read_text() == (
        DOCKER / "profiler-setup.sh"
    ).read_text()
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text()
    assert "install.sh" in dockerfile and "setup_script" in dockerfile
    # torch's +cpu pin resolves from the PyTorch CPU index, which uv may combine with PyPI (set before install)
    install_sh = (bento / "env" / "python" / "install.sh").read_text()
    assert all(url in install_sh for url in bentofile["python"]["extra_index_url"])
    assert dockerfile.index("UV_INDEX_STRATEGY") < dockerfile.index("install.sh")
    # The service entry is importable and is the service the bento describes, on the port compose uses.
    module, _, attr = info["service"].partition(":")
    service = getattr(importlib.import_module(module), attr)
    (described,) = info["services"]
    assert described["name"] == service.name == info["entry_service"]
    assert described["config"]["http"]["port"] == _listen_port(_compose_command(compose, "profiler"))
    assert {r["route"] for r in info["schema"]["routes"]} >= {
        "/judge",
        "/profile",
        "/weakest",
        "/check_profile",
    }

"""Deployment: the model chosen at build time (``--arg model=``), the services' resources and
envs, and the BentoCloud and Kubernetes files in deploy/ agreeing with service.py."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
import yaml

from embedding_server.settings import ENV_PREFIX, Settings, load_settings
from helpers import TEST_MODEL_ID
from serving import REPO, free_port, start, stop, wait_until_ready

DEPLOY = REPO / "deploy"
OTHER_MODEL_ID = "CLIP/clip-vit-b-16"  # the settings' default, never imported here
BENTOML_VARIABLES = {"BENTOML_DO_NOT_TRACK", "BENTOML_PORT", "BENTOML_HOST", "BENTOML_CONFIG",
                     "BENTOML_CONFIG_OVERRIDES", "PORT"}
QUANTITY = re.compile(r"^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|Ti)?$")
UNITS = {None: 1.0, "m": 1e-3, "Ki": 2.0 ** 10, "Mi": 2.0 ** 20, "Gi": 2.0 ** 30, "Ti": 2.0 ** 40}


def manifest(name: str) -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "kubernetes" / name).read_text())


def bentocloud() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "bentocloud.yaml").read_text())


def container() -> dict[str, Any]:
    return manifest("deployment.yaml")["spec"]["template"]["spec"]["containers"][0]


def quantity(value: str | int | float) -> float:
    """A Kubernetes quantity (``"500m"``, ``"8Gi"``, ``4``) as a number."""
    match = QUANTITY.match(str(value))
    assert match, f"unexpected quantity {value!r}"
    return float(match.group(1)) * UNITS[match.group(2)]


def declared_resources(service: ModuleType) -> list[dict[str, Any]]:
    return [service.EmbeddingService.config["resources"], service.Encoder.config["resources"]]


def test_the_container_port_is_the_server_port():
    port = container()["ports"][0]
    assert port["containerPort"] == Settings.model_fields["server_port"].default
    assert manifest("service.yaml")["spec"]["ports"][0]["targetPort"] == port["name"]


@pytest.mark.parametrize("probe", ["startupProbe", "livenessProbe", "readinessProbe"])
def test_probes_ask_routes_the_server_answers(api_client, probe):
    check = container()[probe]["httpGet"]
    assert check["port"] == container()["ports"][0]["name"]
    assert api_client.get(check["path"]).status_code == 200


def test_readiness_is_the_apis_health_and_liveness_bentomls():
    assert container()["readinessProbe"]["httpGet"]["path"] == "/health"
    assert container()["livenessProbe"]["httpGet"]["path"] == "/livez"


def test_every_variable_the_files_set_is_a_setting_or_bentomls():
    cloud = bentocloud()
    named = [env["name"] for env in container()["env"]]
    named += [env["name"] for env in cloud.get("envs", [])]
    named += [env["name"] for service in cloud["services"].values() for env in service.get("envs", [])]
    for name in named:
        setting = name.removeprefix(ENV_PREFIX).lower()
        assert name in BENTOML_VARIABLES or (name.startswith(ENV_PREFIX) and setting in Settings.model_fields), name


def test_the_pod_requests_what_its_two_services_declare(service_module):
    resources = container()["resources"]
    declared = declared_resources(service_module)
    for kind in ("cpu", "memory"):
        assert quantity(resources["requests"][kind]) == sum(quantity(each[kind]) for each in declared), kind
    assert quantity(resources["limits"]["memory"]) == quantity(resources["requests"]["memory"])
    assert "nvidia.com/gpu" not in resources["requests"]  # the tests' settings serve on the CPU


def test_the_autoscaler_scales_the_deployment():
    target = manifest("hpa.yaml")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", manifest("deployment.yaml")["metadata"]["name"])


def test_bentocloud_scales_each_bentoml_service(service_module):
    services = bentocloud()["services"]
    assert set(services) == set(service_module.EmbeddingService.all_services())
    for name, service in services.items():
        assert service["instance_type"], name
        assert 1 <= service["scaling"]["min_replicas"] <= service["scaling"]["max_replicas"], name


def test_both_services_declare_the_concurrency_bentocloud_scales_on(service_module):
    for service in service_module.EmbeddingService.all_services().values():
        assert service.config["traffic"]["concurrency"] >= 1, service.name


@pytest.mark.parametrize(
    "device, use_ov, gpus",
    [("CPU", False, None), ("GPU", False, 1), ("GPU.1", False, None), ("GPU", True, None), ("AUTO", False, None)],
)
def test_the_encoder_asks_for_a_gpu_when_pytorch_runs_on_one(service_module, device, use_ov, gpus):
    resources = service_module.encoder_resources(Settings(device=device, use_ov=use_ov))
    assert resources.get("gpu") == gpus
    assert {key: resources[key] for key in ("cpu", "memory")} == service_module.ENCODER_RESOURCES


def test_declared_envs_hold_the_settings_defaults(service_module, monkeypatch):
    declared = service_module.EmbeddingService.envs
    names = [env.name.removeprefix(ENV_PREFIX).lower() for env in declared]
    assert all(env.value for env in declared)  # an unset variable without a value stops `bentoml serve`
    assert "model_name" not in names and "api_keys" not in names
    for env in declared:
        monkeypatch.setenv(env.name, env.value)
    defaults = {name: Settings.model_fields[name].default for name in names}
    # conftest.py sets EMBEDDING_PRECISION=exact for the whole test session.
    assert load_settings().model_dump(include=set(names)) == {**defaults, "precision": "exact"}


def test_declared_envs_carry_the_build_time_settings(service_module):
    """What a Bento is built with is what its image sets: a GPU build's Encoder declares a
    GPU, so its container must not fall back to the CPU default."""
    built = Settings(device="GPU", torch_threads=3)
    values = {env["name"]: env["value"] for env in service_module.deployment_envs(built)}
    assert values[f"{ENV_PREFIX}DEVICE"] == "GPU" and values[f"{ENV_PREFIX}TORCH_THREADS"] == "3"
    assert values[f"{ENV_PREFIX}USE_OV"] == "false"


def test_the_model_argument_names_the_model(service_module, monkeypatch):
    monkeypatch.delenv("EMBEDDING_MODEL_NAME")
    arguments = service_module.BuildArguments(model="clip-vit-b-32")
    assert service_module.with_model_argument(Settings(), arguments).model_name == TEST_MODEL_ID


@pytest.mark.parametrize("argument, kept", [(None, OTHER_MODEL_ID), ("clip-vit-b-16", OTHER_MODEL_ID)])
def test_the_environment_stands_without_an_argument_or_with_the_same_model(service_module, argument, kept):
    arguments = service_module.BuildArguments(model=argument)
    assert service_module.with_model_argument(Settings(model_name=kept), arguments).model_name == kept


def test_an_environment_model_other_than_the_argument_stops_start_up(service_module):
    arguments = service_module.BuildArguments(model=TEST_MODEL_ID)
    with pytest.raises(service_module.ModelMismatch, match=f"EMBEDDING_MODEL_NAME={OTHER_MODEL_ID} differs from the build "
                                            f"argument model={TEST_MODEL_ID}"):
        service_module.with_model_argument(Settings(model_name=OTHER_MODEL_ID), arguments)


# --- end to end: one Bento built for the test model, served from the Bento store ---

def environment_without_a_model(home: Path) -> dict[str, str]:
    env = {**os.environ, "BENTOML_HOME": str(home)}
    del env["EMBEDDING_MODEL_NAME"]
    return env


@pytest.fixture(scope="module")
def built_bento(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """BentoML home holding a Bento built with ``--arg model=<the test model>``, and its tag."""
    home = tmp_path_factory.mktemp("bento-home")
    env = environment_without_a_model(home)
    imported = subprocess.run([sys.executable, "-m", "models", "import", TEST_MODEL_ID, "--random-weights", "--tiny"],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert imported.returncode == 0, imported.stderr
    built = subprocess.run([sys.executable, "-m", "bentoml", "build", "--arg", f"model={TEST_MODEL_ID}", "-o", "tag"],
                           cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stdout + built.stderr
    return home, built.stdout.strip().splitlines()[-1].removeprefix("__tag__:")


def serve_bento(tag: str, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    """``bentoml serve <tag>`` from outside the checkout, so only the Bento's copy can serve."""
    port = free_port()
    command = [sys.executable, "-m", "bentoml", "serve", tag, "--host", "127.0.0.1"]
    return start(command, {**env, "EMBEDDING_SERVER_PORT": str(port)}, log, cwd=log.parent), f"http://127.0.0.1:{port}"


@pytest.mark.e2e
def test_a_bento_built_for_a_model_serves_it_without_the_variable(built_bento, tmp_path):
    home, tag = built_bento
    serve_log = tmp_path / "serve.log"
    process, url = serve_bento(tag, environment_without_a_model(home), serve_log)
    try:
        wait_until_ready(url, process, serve_log)
        assert httpx.get(f"{url}/model/current", timeout=10).json()["model"] == TEST_MODEL_ID
    finally:
        stop(process)


@pytest.mark.e2e
@pytest.mark.parametrize("variable, value, expected", [
    ("EMBEDDING_MODEL_NAME", OTHER_MODEL_ID,
     f"EMBEDDING_MODEL_NAME={OTHER_MODEL_ID} differs from the build argument model={TEST_MODEL_ID}"),
    # A bad setting is reported as such, not as BentoML's "not a Bento tag" import failure.
    ("EMBEDDING_DEVICE", "TPU", "Invalid configuration: EMBEDDING_DEVICE"),
])
def test_a_bento_refuses_a_variable_naming_another_model_or_a_bad_setting(built_bento, tmp_path, variable, value,
                                                                          expected):
    home, tag = built_bento
    serve_log = tmp_path / "serve.log"
    process, _ = serve_bento(tag, {**environment_without_a_model(home), variable: value}, serve_log)
    try:
        process.wait(timeout=120)
    finally:
        stop(process)
    assert process.returncode != 0
    assert expected in serve_log.read_text()


@pytest.mark.e2e
def test_the_bento_records_the_argument_resources_and_envs(built_bento, service_module):
    home, tag = built_bento
    name, version = tag.split(":")
    info = yaml.safe_load((home / "bentos" / name / version / "bento.yaml").read_text())
    assert info["args"] == {"model": TEST_MODEL_ID}
    configs = {service["name"]: service["config"] for service in info["services"]}
    assert configs["encoder"]["resources"] == service_module.Encoder.config["resources"]
    assert configs["embedding_service"]["resources"] == service_module.EmbeddingService.config["resources"]
    recorded = {env["name"]: env["value"] for env in info["envs"]}
    assert {env["name"]: env["value"] for env in service_module.deployment_envs(service_module.settings)}.items() <= recorded.items()

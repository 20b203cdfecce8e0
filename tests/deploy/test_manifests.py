"""deploy/: the compose file, the kustomize base and the image carry what they must.

Parsed with PyYAML and checked field by field; where the offline validators are installed
(``check-jsonschema`` bundles the compose-spec schema, ``kubernetes-validate`` the core
Kubernetes schemas) they validate the files too. RayCluster is a CRD with no bundled schema:
its pod templates are validated as core ``PodTemplate`` objects instead.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from service.settings import Settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
SETTINGS_ENV = {f"CURVPROF_{name.upper()}" for name in Settings.model_fields}


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return data


def _k8s() -> dict[str, dict[str, Any]]:
    """kind/name -> object, for every resource the kustomization lists."""
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    out: dict[str, dict[str, Any]] = {}
    for name in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / name).read_text()):
            out[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return out


def _bytes(size: str) -> float:
    number, unit = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([kmgKMG]?)[bB]?", str(size)).groups()  # type: ignore[union-attr]
    return float(number) * 1024 ** " kmg".index(unit.lower() or " ")


# ---------------------------------------------------------------------- image


def test_dockerfile_cpu_by_default_cuda_by_build_arg() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert base and base.group(1).endswith("-cpu")
    assert re.search(r"^FROM \$\{BASE_IMAGE\}$", text, re.M)
    assert re.search(r"^ARG TORCH_INDEX_URL=\S+/whl/cpu$", text, re.M)
    assert "-gpu" in text and "cu1" in text  # the CUDA build is documented in the file
    assert re.search(r'^ENTRYPOINT \["curvprof-entrypoint"\]$', text, re.M)
    assert re.search(r"^EXPOSE .*\b8000\b", text, re.M)
    for source in re.findall(r"^COPY (?:--\S+ )*(.+) \S+$", text, re.M):
        for path in source.split():
            assert (REPO / path).exists(), f"Dockerfile copies a missing {path}"


def test_entrypoint_modes() -> None:
    script = DEPLOY / "entrypoint.sh"
    subprocess.run(["sh", "-n", str(script)], check=True)
    text = script.read_text()
    for mode in ("api)", "ray-head)", "ray-worker)"):
        assert mode in text
    assert "curvprof serve --host 0.0.0.0" in text
    assert "--num-cpus=0 --num-gpus=0" in text  # the API node computes nothing


# ---------------------------------------------------------------------- compose


def test_compose_services_images_ports() -> None:
    services = _compose()["services"]
    assert {"postgres", "ray-head", "ray-worker", "api"} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:")
    for name in ("ray-head", "ray-worker", "api"):
        assert services[name]["image"] == "${CURVPROF_IMAGE:-curvprof:cpu}"
        assert services[name]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert services["ray-head"]["command"] == ["ray-head"]
    assert services["ray-worker"]["command"] == ["ray-worker"]
    assert services["api"]["command"] == ["api"]
    assert services["api"]["ports"] == ["127.0.0.1:8000:8000"]
    # its workers' own sockets hand queued connections on when one stops (worker_processes)
    assert services["api"]["sysctls"] == {"net.ipv4.tcp_migrate_req": 1}
    assert services["ray-worker"]["deploy"]["replicas"] >= 2
    gpu = services["ray-worker-gpu"]
    assert gpu["profiles"] == ["gpu"] and "gpu" in gpu["image"]
    device = gpu["deploy"]["resources"]["reservations"]["devices"][0]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_compose_health_shm_volumes_wiring() -> None:
    compose = _compose()
    services = compose["services"]
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    assert any("/readyz" in part for part in services["api"]["healthcheck"]["test"])
    for name in ("ray-head", "ray-worker", "ray-worker-gpu", "api"):
        assert _bytes(services[name]["shm_size"]) >= 1024**3, name
    assert set(compose["volumes"]) == {"pgdata", "artifacts"}
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    # .pt2 checkpoints reach workers by path: the same volume at the same mount point
    assert "artifacts:/data" in services["api"]["volumes"]
    for name in ("ray-worker", "ray-worker-gpu"):
        assert "artifacts:/data:ro" in services[name]["volumes"]
    env = services["api"]["environment"]
    assert env["CURVPROF_RAY_ADDRESS"] == "ray-head:6379"
    assert (
        env["CURVPROF_DB_URL"].startswith("postgresql+psycopg://")
        and "@postgres:5432/" in env["CURVPROF_DB_URL"]
    )
    assert env["CURVPROF_DATA_DIR"] == "/data"
    assert {k for k in env if k.startswith("CURVPROF_")} <= SETTINGS_ENV
    depends = services["api"]["depends_on"]
    assert depends["postgres"]["condition"] == depends["ray-head"]["condition"] == "service_healthy"
    for name in ("ray-head", "ray-worker", "api"):  # secrets are required, never defaulted
        assert services[name]["environment"]["RAY_AUTH_MODE"] == "token"
        assert ":?" in services[name]["environment"]["RAY_AUTH_TOKEN"]
    assert ":?" in env["CURVPROF_API_TOKENS"]


def test_compose_schema() -> None:
    pytest.importorskip(
        "check_jsonschema", reason="pip install check-jsonschema (compose-spec schema)"
    )
    import check_jsonschema
    import jsonschema

    schema_path = (
        Path(check_jsonschema.__file__).parent / "builtin_schemas/vendor/compose-spec.json"
    )
    schema = json.loads(schema_path.read_text())
    jsonschema.validate(_compose(), schema)


# ---------------------------------------------------------------------- kubernetes


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == present
    kinds = {key.split("/")[0] for key in _k8s()}
    assert kinds == {"ConfigMap", "PersistentVolumeClaim", "RayCluster", "Deployment", "Service"}


def test_raycluster_head_and_gpu_workers() -> None:
    objs = _k8s()
    ray = objs["RayCluster/curvprof"]
    spec = ray["spec"]
    import ray as ray_module

    assert spec["rayVersion"] == ray_module.__version__  # the version the tests ran on
    assert f"rayproject/ray:{spec['rayVersion']}-" in (DEPLOY / "Dockerfile").read_text()
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["authOptions"] == {"mode": "token", "secretName": "curvprof-ray-auth"}
    head = spec["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    head_ports = {p["containerPort"] for p in head["template"]["spec"]["containers"][0]["ports"]}
    assert {6379, 8265, 10001} <= head_ports
    (group,) = spec["workerGroupSpecs"]
    assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    assert group["maxReplicas"] >= 2
    worker = group["template"]["spec"]["containers"][0]
    assert worker["image"] == "curvprof-gpu"
    for part in ("requests", "limits"):
        assert int(worker["resources"][part]["nvidia.com/gpu"]) >= 1
    for pod in (head["template"]["spec"], group["template"]["spec"]):
        shm = next(v for v in pod["volumes"] if v["name"] == "dshm")
        assert shm["emptyDir"]["medium"] == "Memory"
        mounts = {m["name"]: m["mountPath"] for c in pod["containers"] for m in c["volumeMounts"]}
        assert mounts["dshm"] == "/dev/shm"
    worker_mounts = {m["name"]: m for m in worker["volumeMounts"]}
    assert worker_mounts["artifacts"]["mountPath"] == "/data"
    configured = objs["ConfigMap/curvprof-config"]["data"]["CURVPROF_RAY_ADDRESS"]
    assert configured == f"{ray['metadata']['name']}-head-svc:6379"


def test_api_deployment_service_config_secrets() -> None:
    objs = _k8s()
    deployment = objs["Deployment/curvprof-api"]
    assert deployment["spec"]["replicas"] == 1  # the in-process job manager must be alone
    assert deployment["spec"]["strategy"]["type"] == "Recreate"
    pod = deployment["spec"]["template"]["spec"]
    (api,) = pod["containers"]
    assert api["image"] == "curvprof" and api["args"] == ["api"]
    assert api["ports"] == [{"name": "http", "containerPort": 8000}]
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert api["startupProbe"]["httpGet"]["path"] == "/healthz"
    mounts = {m["name"]: m["mountPath"] for m in api["volumeMounts"]}
    assert mounts == {"artifacts": "/data", "dshm": "/dev/shm"}
    claims = {
        v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in pod["volumes"]
    }
    pvc = objs["PersistentVolumeClaim/curvprof-artifacts"]
    assert claims["artifacts"] == pvc["metadata"]["name"]
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    config = objs["ConfigMap/curvprof-config"]
    assert api["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    assert {k for k in config["data"] if k.startswith("CURVPROF_")} <= SETTINGS_ENV
    assert config["data"]["CURVPROF_DATA_DIR"] == "/data"
    secrets = {
        d["metadata"]["name"]: set(d["stringData"])
        for d in yaml.safe_load_all((K8S / "secret.example.yaml").read_text())
    }
    refs = [e["valueFrom"]["secretKeyRef"] for e in api["env"] if "valueFrom" in e]
    assert {r["key"] for r in refs} == {"db-url", "api-tokens", "auth_token"}
    for ref in refs:
        assert ref["key"] in secrets[ref["name"]]
    env_names = {e["name"] for e in api["env"]}
    assert {"CURVPROF_DB_URL", "CURVPROF_API_TOKENS", "RAY_AUTH_TOKEN"} <= env_names
    service = objs["Service/curvprof-api"]
    assert service["spec"]["selector"] == deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_kubernetes_schemas() -> None:
    kv = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    version = "1.30.0"
    documents = list(_k8s().values())
    documents += list(yaml.safe_load_all((K8S / "secret.example.yaml").read_text()))
    for doc in documents:
        if doc["kind"] == "RayCluster":
            spec = doc["spec"]
            templates = [spec["headGroupSpec"]["template"]]
            templates += [g["template"] for g in spec["workerGroupSpecs"]]
            for i, template in enumerate(templates):
                wrapped = {
                    "apiVersion": "v1",
                    "kind": "PodTemplate",
                    "metadata": {"name": f"raycluster-{i}"},
                    "template": template,
                }
                kv.validate(wrapped, version, strict=True)
        else:
            kv.validate(doc, version, strict=True)

#!/usr/bin/env python3
"""Offline checks of Dispatch's packaging, run by deploy/check-packaging.sh in its tool venv
(PyYAML, kubernetes-validate and compose-spec installed there).

  manifests  Every manifest `helm template` rendered (one directory per values file) is checked
             against the Kubernetes OpenAPI schemas (kubernetes-validate, strict: unknown fields
             fail) for each --kube-version; the ServiceMonitor CRD, which those schemas do not
             have, against the subset of its schema in SERVICE_MONITOR_SCHEMA. Then the
             references between objects: selectors match the pods, named ports and probes
             exist, Secrets/ConfigMaps referenced exist, the migration hook runs before and
             without the chart's non-hook objects, the hardening holds on every pod, and
             the grace periods exceed the binaries' shutdown times.
  config     Every DISPATCH_* key the chart's schema accepts, the manifests set or the Compose
             file sets is one the binary defines (crates/{api,worker}/src/config/keys.rs), and
             every key a binary defines is accepted by the chart's schema.
  compose    docker-compose.yml parses under the Compose specification (compose-spec, after
             YAML merge keys and ${VAR:-default} interpolation with an empty environment, as
             `docker compose config` would), and its services, volumes, mounts, dependencies
             and health checks fit the Dockerfile and deploy/.
  docker     deploy/Dockerfile and .dockerignore: the build context keeps what the build needs.
  live       (with --bin-dir) Runs both binaries with the exact environment of each rendered
             container and Compose service (secrets replaced by a database URL nothing answers)
             to prove each configuration is accepted, and probes them with the image's
             deploy/docker/healthcheck.sh.
"""

from __future__ import annotations

import argparse
import base64
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "helm/dispatch"
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "deploy/Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
HEALTHCHECK = ROOT / "deploy/docker/healthcheck.sh"

errors: list[str] = []


def error(message: str) -> None:
    errors.append(message)
    print(f"check_packaging: {message}", file=sys.stderr)


def log(message: str) -> None:
    print(f"check_packaging: {message}")


# --- What the binaries define ------------------------------------------------------------------


def code_keys(binary: str) -> set[str]:
    """The environment variables crates/<binary>/src/config/keys.rs declares (`env: "A / B"`)."""
    text = (ROOT / f"crates/{binary}/src/config/keys.rs").read_text()
    keys: set[str] = set()
    for names in re.findall(r'\benv:\s*"([^"]+)"', text):
        keys.update(n.strip() for n in names.split("/"))
    if not keys:
        sys.exit(f"check_packaging: no `env: \"...\"` keys found in "
                 f"crates/{binary}/src/config/keys.rs")
    return keys


# Variables the chart and Compose set besides DISPATCH_* settings, and those set elsewhere.
NON_CONFIG_ENV = {"ADDR", "DATABASE_URL", "RUST_LOG"}
SET_BY_CHART = {"DISPATCH_ADDR", "DISPATCH_DATABASE_URL", "DISPATCH_LOG_FORMAT"}
# Secrets: set from Secrets (values.yaml apiKeys, secretKeys), never in a ConfigMap or *.config.
SECRET_KEYS = {"DISPATCH_API_KEYS", "DISPATCH_SECRET_KEYS"}
# What dispatch-api says when it has no key (and DISPATCH_AUTH_DISABLED is not true).
NO_API_KEY = "DISPATCH_API_KEYS"
PLACEHOLDER_API_KEY = "placeholder-api-key-0123456789"
# What both binaries say without the keys sealing subscription secrets, and a stand-in for them.
NO_SECRET_KEYS = "DISPATCH_SECRET_KEYS"
PLACEHOLDER_SECRET_KEYS = "placeholder:AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="


# --- Manifests -------------------------------------------------------------------------------

DURATION = r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"
LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {"type": "array"},
    },
}
# The fields of monitoring.coreos.com/v1 ServiceMonitor this chart uses, with the types and
# patterns of the Prometheus Operator's CRD; anything else fails.
SERVICE_MONITOR_SCHEMA = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "required": ["name", "namespace"],
            "properties": {
                "name": {"type": "string"},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "additionalProperties": False,
        },
        "spec": {
            "type": "object",
            "required": ["selector", "endpoints"],
            "additionalProperties": False,
            "properties": {
                "jobLabel": {"type": "string"},
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "selector": LABEL_SELECTOR,
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": {"type": "string", "pattern": DURATION},
                            "scrapeTimeout": {"type": "string", "pattern": DURATION},
                            "metricRelabelings": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "sourceLabels": {"type": "array",
                                                         "items": {"type": "string"}},
                                        "separator": {"type": "string"},
                                        "targetLabel": {"type": "string"},
                                        "regex": {"type": "string"},
                                        "modulus": {"type": "integer"},
                                        "replacement": {"type": "string"},
                                        "action": {"enum": [
                                            "replace", "Replace", "keep", "Keep", "drop",
                                            "Drop", "hashmod", "HashMod", "labelmap",
                                            "LabelMap", "labeldrop", "LabelDrop", "labelkeep",
                                            "LabelKeep", "lowercase", "Lowercase", "uppercase",
                                            "Uppercase", "keepequal", "KeepEqual", "dropequal",
                                            "DropEqual"]},
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}
CRDS = {("monitoring.coreos.com/v1", "ServiceMonitor"): SERVICE_MONITOR_SCHEMA}


def seconds(duration: str) -> float:
    total = 0.0
    for number, unit in re.findall(r"(\d+)(ms|s|m|h)", duration):
        total += int(number) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    return total


def matches(selector: dict, labels: dict) -> bool:
    wanted = selector.get("matchLabels", selector)
    return bool(wanted) and all(labels.get(k) == v for k, v in wanted.items())


def pod_specs(docs: list[dict]):
    for doc in docs:
        if doc["kind"] in ("Deployment", "Job"):
            yield doc, doc["spec"]["template"]
        elif doc["kind"] == "CronJob":
            yield doc, doc["spec"]["jobTemplate"]["spec"]["template"]


def is_hook(doc: dict) -> bool:
    return "helm.sh/hook" in (doc["metadata"].get("annotations") or {})


def check_manifest_set(name: str, docs: list[dict], kube_versions: list[str],
                       api_keys: set[str], worker_keys: set[str]) -> None:
    import jsonschema
    import kubernetes_validate.utils as kv

    where = f"helm template ({name})"
    problems_before = len(errors)
    for doc in docs:
        ident = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        crd = CRDS.get((doc.get("apiVersion"), doc.get("kind")))
        if crd is not None:
            try:
                jsonschema.validate(doc, crd)
            except jsonschema.ValidationError as e:
                error(f"{where}: {ident}: {e.json_path}: {e.message}")
            continue
        for version in kube_versions:
            try:
                kv.validate(doc, version, strict=True)
            except kv.ValidationError as e:
                path = ".".join(str(p) for p in e.path)
                error(f"{where}: {ident} against Kubernetes {version}: {path}: {e.message}")
            except kv.SchemaNotFoundError:
                error(f"{where}: {ident}: no Kubernetes {version} schema for "
                      f"{doc.get('apiVersion')} {doc.get('kind')} (add it to CRDS if it is a CRD)")
        if not doc["metadata"].get("namespace"):
            error(f"{where}: {ident} has no metadata.namespace")
        for key, value in (doc["metadata"].get("annotations") or {}).items():
            if key.startswith("checkov.io/skip") and value.count("=") != 1:
                error(f"{where}: {ident}: annotation {key} must hold exactly one '=' "
                      "(CHECK=reason), checkov fails otherwise")

    by_kind: dict[str, list[dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    deployments = by_kind.get("Deployment", [])
    services = by_kind.get("Service", [])
    external_secrets: set[str] = set()  # referenced, not rendered: the user's own Secrets

    def deployment_for(selector: dict, what: str) -> dict | None:
        found = [d for d in deployments
                 if matches(selector, d["spec"]["template"]["metadata"]["labels"])]
        if len(found) != 1:
            error(f"{where}: {what} selects {len(found)} Deployments, expected 1")
            return None
        return found[0]

    def container_ports(deployment: dict) -> set:
        ports = set()
        for c in deployment["spec"]["template"]["spec"]["containers"]:
            for p in c.get("ports", []):
                ports.update({p.get("name"), p["containerPort"]})
        return ports

    components = {}
    for d in deployments:
        labels = d["spec"]["template"]["metadata"]["labels"]
        if not matches(d["spec"]["selector"], labels):
            error(f"{where}: Deployment/{d['metadata']['name']}: selector does not match its pods")
        components[labels.get("app.kubernetes.io/component")] = d
    for component in ("api", "worker"):
        if component not in components:
            error(f"{where}: no Deployment with app.kubernetes.io/component={component}")
    if len(errors) > problems_before:
        return

    # Services, Ingress, PDBs, HPA, NetworkPolicies, ServiceMonitors point at what exists.
    for svc in services:
        d = deployment_for(svc["spec"]["selector"], f"Service/{svc['metadata']['name']}")
        if d:
            for port in svc["spec"]["ports"]:
                if port.get("targetPort", port["port"]) not in container_ports(d):
                    error(f"{where}: Service/{svc['metadata']['name']}: targetPort "
                          f"{port.get('targetPort')} is no container port of {d['metadata']['name']}")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        deployment_for(pdb["spec"]["selector"], f"PodDisruptionBudget/{pdb['metadata']['name']}")
    for np in by_kind.get("NetworkPolicy", []):
        d = deployment_for(np["spec"]["podSelector"], f"NetworkPolicy/{np['metadata']['name']}")
        for rule in np["spec"].get("ingress", []):
            for port in rule.get("ports", []):
                if d and port["port"] not in container_ports(d):
                    error(f"{where}: NetworkPolicy/{np['metadata']['name']}: port "
                          f"{port['port']} is no container port")
    for ing in by_kind.get("Ingress", []):
        for rule in ing["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                svc = next((s for s in services if s["metadata"]["name"] == backend["name"]), None)
                if svc is None:
                    error(f"{where}: Ingress/{ing['metadata']['name']}: no Service {backend['name']}")
                elif backend["port"].get("name") not in {p.get("name") for p in svc["spec"]["ports"]}:
                    error(f"{where}: Ingress/{ing['metadata']['name']}: Service has no port "
                          f"{backend['port']}")
                if path["path"].rstrip("/") in ("", "/metrics", "/healthz", "/readyz"):
                    error(f"{where}: Ingress/{ing['metadata']['name']} routes {path['path']!r}: "
                          "/metrics must stay off the Ingress (README, Keeping /metrics private)")
    for hpa in by_kind.get("HorizontalPodAutoscaler", []):
        target = hpa["spec"]["scaleTargetRef"]
        d = next((d for d in deployments if d["metadata"]["name"] == target["name"]), None)
        if d is None or target["kind"] != "Deployment":
            error(f"{where}: HPA/{hpa['metadata']['name']}: no Deployment {target['name']}")
        elif d is not components["worker"]:
            error(f"{where}: HPA/{hpa['metadata']['name']} scales {target['name']}, not the workers")
        elif "replicas" in d["spec"]:
            error(f"{where}: {target['name']} sets spec.replicas although an HPA scales it "
                  "(every helm upgrade would reset the replica count)")
        for metric in hpa["spec"]["metrics"]:
            if metric["type"] == "Resource" and not all(
                    c.get("resources", {}).get("requests", {}).get(metric["resource"]["name"])
                    for c in d["spec"]["template"]["spec"]["containers"]):
                error(f"{where}: HPA on {metric['resource']['name']} but the workers request none")
            if metric["type"] == "External" and metric["external"]["target"]["type"] != "AverageValue":
                error(f"{where}: the backlog metric is database-wide: it needs an AverageValue "
                      "target so that the HPA divides it by the number of workers")
    for sm in by_kind.get("ServiceMonitor", []):
        svc = [s for s in services if matches(sm["spec"]["selector"], s["metadata"]["labels"])]
        if len(svc) != 1:
            error(f"{where}: ServiceMonitor/{sm['metadata']['name']} selects {len(svc)} Services")
            continue
        job = svc[0]["metadata"]["labels"].get(sm["spec"].get("jobLabel", ""))
        if job not in ("api", "worker"):
            error(f"{where}: ServiceMonitor/{sm['metadata']['name']}: job would be {job!r}; "
                  "deploy/prometheus/alerts.yml and the dashboard expect `api` and `worker`")
        for ep in sm["spec"]["endpoints"]:
            if ep["port"] not in {p.get("name") for p in svc[0]["spec"]["ports"]}:
                error(f"{where}: ServiceMonitor/{sm['metadata']['name']}: Service has no port "
                      f"{ep['port']}")
            if seconds(ep.get("scrapeTimeout", "10s")) > seconds(ep.get("interval", "30s")):
                error(f"{where}: ServiceMonitor/{sm['metadata']['name']}: scrapeTimeout above interval")
            if job == "worker" and seconds(ep.get("scrapeTimeout", "10s")) <= 5:
                error(f"{where}: the worker's scrapeTimeout must exceed db_connect_timeout_ms (5 s)")

    for cm in by_kind.get("ConfigMap", []):
        for key in cm.get("data", {}):
            if key in SECRET_KEYS | {"DATABASE_URL", "DISPATCH_DATABASE_URL"}:
                error(f"{where}: ConfigMap/{cm['metadata']['name']} holds {key}, a secret")

    # Every pod: hardening, probes, references, environment.
    hook_names = {(d["kind"], d["metadata"]["name"]) for d in docs if is_hook(d)}
    config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in by_kind.get("ConfigMap", [])}
    for owner, template in pod_specs(docs):
        ident = f"{owner['kind']}/{owner['metadata']['name']}"
        spec = template["spec"]
        hook = is_hook(owner)
        pod_sc = spec.get("securityContext", {})
        for key, want in (("runAsNonRoot", True), ("runAsUser", 10001)):
            if pod_sc.get(key) != want:
                error(f"{where}: {ident}: pod securityContext.{key} should be {want}")
        if pod_sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            error(f"{where}: {ident}: pod seccompProfile should be RuntimeDefault")
        if spec.get("automountServiceAccountToken") is not False:
            error(f"{where}: {ident}: automountServiceAccountToken should be false")
        if spec.get("enableServiceLinks") is not False:
            error(f"{where}: {ident}: enableServiceLinks should be false (service links add "
                  "DISPATCH_*-prefixed variables for Services named dispatch-...)")
        sa = spec.get("serviceAccountName", "default")
        if sa != "default" and ("ServiceAccount", sa) in names and \
                (hook and ("ServiceAccount", sa) not in hook_names):
            error(f"{where}: {ident} is a pre-install hook but uses ServiceAccount {sa}, which "
                  "the release creates only after its hooks")
        if sa != "default" and not hook and ("ServiceAccount", sa) not in names:
            log(f"{where}: {ident} uses ServiceAccount {sa}, not created by the chart")
        for c in spec["containers"]:
            cid = f"{ident} container {c['name']}"
            sc = c.get("securityContext", {})
            if sc.get("readOnlyRootFilesystem") is not True:
                error(f"{where}: {cid}: readOnlyRootFilesystem should be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                error(f"{where}: {cid}: allowPrivilegeEscalation should be false")
            if sc.get("capabilities", {}).get("drop") != ["ALL"]:
                error(f"{where}: {cid}: capabilities.drop should be [ALL]")
            for res in ("requests", "limits"):
                if not c.get("resources", {}).get(res, {}).get("memory"):
                    error(f"{where}: {cid}: no memory {res}")
            port_names = {p.get("name") for p in c.get("ports", [])} | \
                {p["containerPort"] for p in c.get("ports", [])}
            if owner["kind"] == "Deployment":
                for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                    get = c.get(probe, {}).get("httpGet")
                    if not get:
                        error(f"{where}: {cid}: no {probe}")
                    elif get["path"] != path or get["port"] not in port_names:
                        error(f"{where}: {cid}: {probe} should GET {path} on a container port, "
                              f"got {get['path']} on {get['port']}")
            for ref in c.get("envFrom", []):
                cm = ref.get("configMapRef", {}).get("name")
                if cm and ("ConfigMap", cm) not in names:
                    error(f"{where}: {cid}: envFrom ConfigMap {cm} is not rendered")
                if cm and hook and ("ConfigMap", cm) not in hook_names:
                    error(f"{where}: {cid}: the hook reads ConfigMap {cm}, created after hooks")
            for var in c.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if not ref:
                    continue
                secret = next((d for d in by_kind.get("Secret", [])
                               if d["metadata"]["name"] == ref["name"]), None)
                if secret is None:
                    external_secrets.add(ref["name"])  # database/apiKeys.existingSecret
                    continue
                if ref["key"] not in secret.get("data", {}) and not ref.get("optional"):
                    error(f"{where}: {cid}: Secret {ref['name']} has no key {ref['key']}")
                if hook and not is_hook(secret):
                    error(f"{where}: {cid}: the hook reads Secret {ref['name']}, which the "
                          "release creates only after its hooks (first install fails)")
                if is_hook(secret) and hook:
                    sw = int(secret["metadata"]["annotations"].get("helm.sh/hook-weight", 0))
                    jw = int(owner["metadata"]["annotations"].get("helm.sh/hook-weight", 0))
                    if sw >= jw:
                        error(f"{where}: hook Secret {ref['name']} must have a lower hook-weight "
                              "than the Job that reads it")
            # The environment the binary sees: every DISPATCH_* key must be one it defines.
            env = {}
            for ref in c.get("envFrom", []):
                env.update(config_maps.get(ref.get("configMapRef", {}).get("name"), {}))
            env.update({v["name"]: v.get("value") for v in c.get("env", [])})
            binary = (c.get("command") or ["dispatch-api"])[0]
            known = api_keys if binary == "dispatch-api" else worker_keys
            for key in env:
                if key.startswith("DISPATCH_") and key not in known:
                    error(f"{where}: {cid} sets {key}, which {binary} does not define")
            if owner["kind"] == "Deployment" and binary == "dispatch-worker":
                grace = int(env.get("DISPATCH_SHUTDOWN_GRACE_SECS") or 30)
                if spec.get("terminationGracePeriodSeconds", 30) <= grace:
                    error(f"{where}: {cid}: terminationGracePeriodSeconds "
                          f"{spec.get('terminationGracePeriodSeconds')} must exceed "
                          f"DISPATCH_SHUTDOWN_GRACE_SECS {grace}")
            if owner["kind"] == "Deployment" and binary == "dispatch-api":
                stop = int(env.get("DISPATCH_SHUTDOWN_TIMEOUT_SECS") or 30)
                pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
                pre_sleep = int(pre[1]) if pre[:1] == ["sleep"] else 0
                if spec.get("terminationGracePeriodSeconds", 30) <= stop + pre_sleep:
                    error(f"{where}: {cid}: terminationGracePeriodSeconds must exceed the "
                          f"preStop sleep plus DISPATCH_SHUTDOWN_TIMEOUT_SECS ({pre_sleep}+{stop})")

    # The migration hook.
    jobs = by_kind.get("Job", [])
    if jobs:
        job = jobs[0]
        ann = job["metadata"].get("annotations", {})
        if set(ann.get("helm.sh/hook", "").split(",")) != {"pre-install", "pre-upgrade"}:
            error(f"{where}: the migration Job must be a pre-install,pre-upgrade hook")
        c = job["spec"]["template"]["spec"]["containers"][0]
        if (c.get("command", []) + c.get("args", []))[-3:] != ["dispatch-api", "migrate", "up"]:
            error(f"{where}: the migration Job should run `dispatch-api migrate up`")
        if job["spec"]["template"]["spec"].get("restartPolicy") != "Never":
            error(f"{where}: the migration Job should have restartPolicy Never")
    # The purge CronJob (purge.enabled): the shipped binary's `admin purge`, one run at a time,
    # with the database URL and nothing secret besides.
    cron_jobs = by_kind.get("CronJob", [])
    if name == "values-full" and not cron_jobs:
        error(f"{where}: values-full turns purge on, but no CronJob was rendered")
    for cron in cron_jobs:
        ident = f"CronJob/{cron['metadata']['name']}"
        spec = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        c = spec["containers"][0]
        argv = c.get("command", []) + c.get("args", [])
        if argv[:4] != ["dispatch-api", "admin", "purge", "--older-than"]:
            error(f"{where}: {ident} should run `dispatch-api admin purge --older-than …`")
        if cron["spec"].get("concurrencyPolicy") != "Forbid":
            error(f"{where}: {ident}: concurrencyPolicy should be Forbid (one purge at a time)")
        if spec.get("restartPolicy") != "Never":
            error(f"{where}: {ident}: restartPolicy should be Never")
        if is_hook(cron):
            error(f"{where}: {ident} must not be a hook")
        names_set = {v["name"] for v in c.get("env", [])}
        if "DATABASE_URL" not in names_set:
            error(f"{where}: {ident} has no DATABASE_URL")
        for needless in ("DISPATCH_API_KEYS", NO_SECRET_KEYS):
            if needless in names_set:
                error(f"{where}: {ident} is given {needless}, which a purge never reads")
    non_hook_refs = [d for d in docs if is_hook(d) and d["kind"] not in ("Job", "Secret")]
    for d in non_hook_refs:
        error(f"{where}: unexpected hook object {d['kind']}/{d['metadata']['name']}")
    if len(errors) == problems_before:
        external = f" (Secrets of your own: {', '.join(sorted(external_secrets))})" \
            if external_secrets else ""
        log(f"{where}: {len(docs)} objects valid against Kubernetes "
            f"{', '.join(kube_versions)} and consistent with each other{external}")


def check_schema_keys(api_keys: set[str], worker_keys: set[str]) -> None:
    import json
    problems_before = len(errors)
    schema = json.loads((CHART / "values.schema.json").read_text())
    for component, keys in (("api", api_keys), ("worker", worker_keys)):
        accepted = set(schema["properties"][component]["properties"]["config"]["properties"])
        binary = f"dispatch-{component}"
        for key in sorted(accepted - keys):
            error(f"helm/dispatch/values.schema.json accepts {component}.config.{key}, which "
                  f"{binary} does not define (crates/{component}/src/config/keys.rs)")
        for key in sorted(keys - accepted - NON_CONFIG_ENV - SET_BY_CHART - SECRET_KEYS):
            error(f"{binary} defines {key} (crates/{component}/src/config/keys.rs) but "
                  f"helm/dispatch/values.schema.json does not accept {component}.config.{key}: "
                  "add it there (and to values.yaml's comments)")
    if len(errors) == problems_before:
        log("the chart's DISPATCH_* keys match crates/api and crates/worker config/keys.rs")


# --- Compose -----------------------------------------------------------------------------------

INTERPOLATION = re.compile(
    r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def interpolate(value, env: dict[str, str]):
    """Compose's interpolation of string values, with `env` as the environment."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def replace(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group(1) or m.group(4)
        op, default = m.group(2), m.group(3) or ""
        current = env.get(name)
        if op == ":-":
            return current if current else default
        if op == "-":
            return current if current is not None else default
        if op in (":?", "?"):
            if not current:
                error(f"docker-compose.yml: ${{{name}}} is required")
            return current or ""
        return current or ""

    return INTERPOLATION.sub(replace, value)


def load_compose(env: dict[str, str]) -> dict:
    """The Compose model as `docker compose config` sees it: merged, interpolated."""
    return interpolate(yaml.safe_load(COMPOSE.read_text()), env)


def check_compose() -> dict:
    import compose_spec

    model = load_compose({})
    where = "docker-compose.yml"
    try:
        compose_spec.PyCompose.from_yaml(yaml.safe_dump(model, sort_keys=False))
    except ValueError as e:
        error(f"{where}: not valid under the Compose specification: {e}")
        return model
    services = model["services"]
    volumes = set(model.get("volumes") or {})
    for name, svc in services.items():
        for dep in svc.get("depends_on") or {}:
            if dep not in services:
                error(f"{where}: {name} depends on undefined service {dep}")
        for mount in svc.get("volumes") or []:
            source = mount.split(":")[0] if isinstance(mount, str) else mount.get("source")
            if source.startswith((".", "/")):
                if not (ROOT / source).exists():
                    error(f"{where}: {name} mounts {source}, which does not exist")
            elif source not in volumes:
                error(f"{where}: {name} uses volume {source}, not declared under volumes:")
    expect = {
        "postgres": lambda s: s["image"] == "postgres:15" and "pg_isready" in str(s["healthcheck"]["test"]),
        "migrate": lambda s: s["command"] == ["dispatch-api", "migrate", "up"]
        and s.get("restart") == "no"
        and s["depends_on"]["postgres"]["condition"] == "service_healthy",
        "api": lambda s: "127.0.0.1:8080:8080" in s.get("ports", [])
        and s["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        and s["healthcheck"]["test"][:2] == ["CMD", "dispatch-healthcheck"],
        "worker": lambda s: not s.get("ports")
        and s["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        and s["healthcheck"]["test"][:2] == ["CMD", "dispatch-healthcheck"],
        "prometheus": lambda s: any(v.startswith("./deploy/prometheus:/etc/prometheus")
                                    for v in s["volumes"]),
        "grafana": lambda s: any(v.startswith("./deploy/grafana/provisioning:/etc/grafana/provisioning")
                                 for v in s["volumes"]),
    }
    for name, ok in expect.items():
        try:
            good = name in services and ok(services[name])
        except (KeyError, TypeError, IndexError):
            good = False
        if not good:
            error(f"{where}: service {name} is not as deploy/check_packaging.py expects "
                  "(see `expect` there)")
    builders = [n for n, s in services.items() if s.get("build")]
    if len(builders) != 1:
        error(f"{where}: exactly one service should build the image, not {builders}")
    else:
        build = services[builders[0]]["build"]
        if not (ROOT / build["context"] / build["dockerfile"]).samefile(DOCKERFILE):
            error(f"{where}: {builders[0]} does not build deploy/Dockerfile")
        image = services[builders[0]]["image"]
        for name in ("migrate", "api", "worker"):
            if services[name]["image"] != image:
                error(f"{where}: {name} does not run the image {builders[0]} builds ({image})")
    for name, grace in (("api", 30), ("worker", 30)):
        if seconds(services[name].get("stop_grace_period", "10s")) <= grace:
            error(f"{where}: {name}'s stop_grace_period must exceed its {grace} s shutdown time")
    # The dashboard provider's path is where the dashboards are mounted.
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/dispatch.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    if not any(v.endswith(f":{path}:ro") or v.endswith(f":{path}")
               for v in services["grafana"]["volumes"]):
        error(f"{where}: grafana does not mount the dashboards at {path} (provisioning's path)")
    # Grafana's version is the one deploy/check.sh type-checks the dashboard against.
    schema_version = re.search(r"^GRAFANA_SCHEMA_VERSION=(\S+)", (ROOT / "deploy/check.sh").read_text(), re.M)
    if schema_version and services["grafana"]["image"] != f"grafana/grafana:{schema_version.group(1)}":
        error(f"{where}: grafana image should be grafana/grafana:{schema_version.group(1)}, the "
              "version deploy/check.sh checks the dashboard against")
    # Prometheus scrapes the services on the ports they listen on.
    prom = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    ports = {"api": services["api"]["environment"]["ADDR"].rsplit(":", 1)[1],
             "worker": services["worker"]["environment"]["ADDR"].rsplit(":", 1)[1]}
    for job in prom["scrape_configs"]:
        targets = [t for sc in job.get("static_configs", []) for t in sc["targets"]]
        targets += [f"{n}:{sd['port']}" for sd in job.get("dns_sd_configs", []) for n in sd["names"]]
        for target in targets:
            host, port = target.rsplit(":", 1)
            if host not in services or ports.get(host) != port:
                error(f"deploy/prometheus/prometheus.yml: job {job['job_name']} scrapes {target}, "
                      "which is no Dispatch service port in docker-compose.yml")
    log(f"{where}: valid under the Compose specification (compose-spec), "
        f"{len(services)} services consistent with deploy/")
    return model


# --- Dockerfile and .dockerignore ------------------------------------------------------------


def dockerignore_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern as Docker reads it: `*` and `?` stop at `/`, `**` does not."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + "$")


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether the build context leaves `path` out (a pattern that matches a parent directory
    leaves out everything below it; the last matching pattern wins, `!` re-includes)."""
    ignored = False
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = dockerignore_regex(pattern.lstrip("!").strip("/"))
        if any(regex.match(p) for p in prefixes):
            ignored = not negate
    return ignored


def check_docker() -> None:
    text = DOCKERFILE.read_text()
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    needed = ["Cargo.toml", "Cargo.lock", "crates/api/src/main.rs", "crates/store/src/lib.rs",
              "xtask/Cargo.toml", "deploy/docker/skeleton.sh", "deploy/docker/healthcheck.sh",
              "migrations/" + sorted(os.listdir(ROOT / "migrations"))[0] + "/up.sql"]
    for path in needed:
        if dockerignored(path, patterns):
            error(f".dockerignore excludes {path}, which the image build needs")
    for path in ("target/release/dispatch-api", ".git/HEAD", "helm/dispatch/Chart.yaml"):
        if not dockerignored(path, patterns):
            error(f".dockerignore should exclude {path}")
    wanted = {
        "multi-stage build": len(re.findall(r"^FROM ", text, re.M)) >= 2,
        "builder on rust:1.95-bookworm or rust:1-bookworm":
            re.search(r"^FROM rust:1(\.95)?-bookworm AS builder", text, re.M),
        "runtime on debian:bookworm-slim": re.search(r"^FROM debian:bookworm-slim", text, re.M),
        "cargo build --release --locked -p dispatch-api -p dispatch-worker":
            "cargo build --release --locked -p dispatch-api -p dispatch-worker" in text,
        "USER 10001": re.search(r"^USER 10001", text, re.M),
        "EXPOSE 8080 8081": re.search(r"^EXPOSE 8080 8081$", text, re.M),
        'CMD ["dispatch-api"]': re.search(r'^CMD \["dispatch-api"\]$', text, re.M),
        "binaries in /usr/local/bin": "/usr/local/bin/" in text,
    }
    for what, ok in wanted.items():
        if not ok:
            error(f"deploy/Dockerfile: expected {what}")
    # The skeleton stage copies each member's manifest; the workspace must not need more.
    log("deploy/Dockerfile and .dockerignore hold what the build needs")


# --- Live: the binaries accept every rendered configuration -------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_config(label: str, bin_dir: pathlib.Path, argv: list[str], env: dict[str, str],
               serves: bool, healthcheck: list[str] | None) -> None:
    """Starts argv[0] from bin_dir with exactly `env` (plus PATH); a server must answer its
    health check, a command must fail only for want of a database."""
    binary = bin_dir / argv[0]
    dead_db = f"postgres://dispatch@127.0.0.1:{free_port()}/dispatch?sslmode=disable"
    env = {k: v for k, v in env.items() if v is not None}
    env.update({"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": "/nonexistent"})
    env = {k: (dead_db if k in ("DATABASE_URL", "DISPATCH_DATABASE_URL") else v)
           for k, v in env.items()}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)  # nothing listens; export is off then
    # Unless the configuration sets it, a short connect timeout: without a database, /readyz
    # and the worker's shutdown each wait for it (5 s by default, more than 15 s in all).
    env.setdefault("DISPATCH_DB_CONNECT_TIMEOUT_MS", "300")
    if not serves:
        result = subprocess.run([str(binary), *argv[1:]], env=env, capture_output=True,
                                text=True, timeout=60)
        if "invalid configuration" in result.stderr or result.returncode not in (0, 1):
            error(f"live {label}: `{' '.join(argv)}` refused its configuration: "
                  f"{result.stderr.strip()}")
        return
    env["ADDR"] = f"127.0.0.1:{free_port()}"
    env.pop("DISPATCH_ADDR", None)
    # Logs go to a file: a pipe nobody reads would fill up and block the binary.
    log_file = tempfile.TemporaryFile(mode="w+")
    proc = subprocess.Popen([str(binary), *argv[1:]], env=env, stdout=subprocess.DEVNULL,
                            stderr=log_file, text=True)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                log_file.seek(0)
                error(f"live {label}: {argv[0]} exited with {proc.returncode}: "
                      f"{log_file.read().strip()[-2000:]}")
                return
            check = subprocess.run(["bash", str(HEALTHCHECK), *(healthcheck or [])], env=env,
                                   capture_output=True, text=True)
            if check.returncode == 0:
                break
            if time.monotonic() > deadline:
                error(f"live {label}: the health check never passed: {check.stderr.strip()}")
                return
            time.sleep(0.2)
        # Without a database /readyz must fail the same check.
        ready = subprocess.run(["bash", str(HEALTHCHECK), "/readyz"], env=env,
                               capture_output=True, text=True)
        if ready.returncode == 0:
            error(f"live {label}: /readyz passed the health check without a database")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                error(f"live {label}: {argv[0]} did not stop within 20 s of SIGTERM")
        log_file.close()


def refuse_without_key(label: str, bin_dir: pathlib.Path, argv: list[str],
                       env: dict[str, str], name: str = NO_API_KEY) -> None:
    env = {**env, "PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": "/nonexistent",
           "DATABASE_URL": "postgres://dispatch@127.0.0.1:9/dispatch?sslmode=disable",
           "ADDR": f"127.0.0.1:{free_port()}"}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    try:
        result = subprocess.run([str(bin_dir / argv[0]), *argv[1:]], env=env,
                                capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        error(f"live {label}: without {name} `{' '.join(argv)}` did not stop")
        return
    if result.returncode == 0 or name not in result.stderr:
        error(f"live {label}: without {name} `{' '.join(argv)}` should stop naming "
              f"{name}; it exited {result.returncode}: {result.stderr.strip()[-500:]}")


def live(bin_dir: pathlib.Path, rendered: dict[str, list[dict]]) -> None:
    runs, keyless, problems_before = 0, 0, len(errors)
    for name, docs in rendered.items():
        config_maps = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
        # The chart's own Secrets hold the values as rendered (API keys included); the user's
        # existing Secrets get a placeholder.
        secrets = {d["metadata"]["name"]: {k: base64.b64decode(v).decode()
                                           for k, v in (d.get("data") or {}).items()}
                   for d in docs if d["kind"] == "Secret"}
        for owner, template in pod_specs(docs):
            for c in template["spec"]["containers"]:
                env: dict[str, str] = {}
                for ref in c.get("envFrom", []):
                    env.update(config_maps[ref["configMapRef"]["name"]])
                for var in c.get("env", []):
                    if "value" in var:
                        env[var["name"]] = var["value"]
                    elif "secretKeyRef" in var.get("valueFrom", {}):
                        ref = var["valueFrom"]["secretKeyRef"]
                        if ref["name"] in secrets:
                            env[var["name"]] = secrets[ref["name"]][ref["key"]]
                        elif not ref.get("optional"):  # an optional key may be absent
                            env[var["name"]] = (PLACEHOLDER_SECRET_KEYS
                                                if var["name"] == NO_SECRET_KEYS
                                                else "placeholder-secret-value")
                    elif "fieldRef" in var.get("valueFrom", {}):
                        env[var["name"]] = "pod-name"
                argv = c.get("command", []) + c.get("args", [])
                label = f"helm ({name}) {owner['kind']}/{owner['metadata']['name']}"
                serves = owner["kind"] == "Deployment"
                # `dispatch-api migrate` and `admin` need only the database URL: no keys to refuse.
                migrates = argv[:2] in (["dispatch-api", "migrate"], ["dispatch-api", "admin"])
                if not migrates and argv[0] == "dispatch-api" and \
                        "DISPATCH_API_KEYS" not in env and \
                        str(env.get("DISPATCH_AUTH_DISABLED", "")).lower() != "true":
                    # No key configured (a required value left out, or an optional Secret key):
                    # the API must refuse to start and say why; then check the rest with one.
                    refuse_without_key(label, bin_dir, argv, env)
                    keyless += 1
                    env["DISPATCH_API_KEYS"] = PLACEHOLDER_API_KEY
                if not migrates and NO_SECRET_KEYS not in env:
                    # Both binaries need the secret keys (an optional Secret key left out): they
                    # must refuse to start and say why; then check the rest with some.
                    refuse_without_key(label, bin_dir, argv, env, NO_SECRET_KEYS)
                    keyless += 1
                    env[NO_SECRET_KEYS] = PLACEHOLDER_SECRET_KEYS
                run_config(label, bin_dir, argv, env, serves=serves, healthcheck=None)
                runs += 1
    model = load_compose({})
    for svc_name in ("migrate", "api", "worker"):
        svc = model["services"][svc_name]
        env = {k: ("" if v is None else str(v)) for k, v in svc["environment"].items()}
        test = svc.get("healthcheck", {}).get("test", [])
        run_config(f"docker-compose.yml {svc_name}", bin_dir, svc["command"], env,
                   serves=svc_name != "migrate",
                   healthcheck=test[2:] if test[:2] == ["CMD", "dispatch-healthcheck"] else None)
        runs += 1
    if len(errors) == problems_before:
        log(f"live: {runs} container configurations accepted by the binaries; their health "
            "checks pass, and /readyz fails without a database; the "
            f"{keyless} without an API key (dispatch-api) or secret keys refuse to start, "
            "naming them")


# --- Main ----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rendered", type=pathlib.Path, required=True,
                        help="directory with one <values-name>.yaml per `helm template` run")
    parser.add_argument("--kube-version", action="append", required=True)
    parser.add_argument("--bin-dir", type=pathlib.Path,
                        help="directory with dispatch-api and dispatch-worker: run the live checks")
    args = parser.parse_args()

    api_keys, worker_keys = code_keys("api"), code_keys("worker")
    rendered: dict[str, list[dict]] = {}
    for path in sorted(args.rendered.glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        rendered[path.stem] = docs
        check_manifest_set(path.stem, docs, args.kube_version, api_keys, worker_keys)
    if not rendered:
        sys.exit("check_packaging: nothing rendered")
    check_schema_keys(api_keys, worker_keys)
    check_compose()
    check_docker()
    if args.bin_dir and not errors:
        live(args.bin_dir, rendered)
    if errors:
        print(f"check_packaging: {len(errors)} problem(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

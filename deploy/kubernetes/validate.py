#!/usr/bin/env python3
"""Validates the manifests in deploy/kubernetes, offline.

- Every built-in resource against the Kubernetes API's own JSON schemas, in
  strict mode (an unknown field is an error), for each version in
  KUBERNETES_VERSIONS: kubernetes-validate ships those schemas in its wheel,
  so nothing is downloaded.
- Every custom resource (KEDA's ScaledObject and TriggerAuthentication, the
  Prometheus Operator's ServiceMonitor) against its CRD's openAPIV3Schema,
  committed in schemas/ (from-crd.py says where each came from), with
  jsonschema. Like the API server with strict field validation, a field the
  schema does not know is an error.
- The references between them: selectors select, named ports exist, every
  Secret and key a pod or KEDA reads is in secrets.example.yaml, the
  kustomization lists every manifest, the pods are locked down.

Prints one line per resource and a summary; exits 1 on any failure.

  --facts FILE    also write what tests/deploy.rs compares with Courier's
                  own code and the Dockerfile (JSON)
  --queues FILE   check the ScaledObject's queue regex against queue names
                  (JSON {"work": [...], "other": [...]}, from courier-amqp's
                  Topology) instead of validating: only work queues match

Run by tests/deploy.rs with target/test-tools/venv/bin/python (installed by
scripts/test-tools from requirements.txt here).
"""
import argparse
import copy
import json
import re
import sys
from pathlib import Path

import jsonschema
import kubernetes_validate
import yaml

HERE = Path(__file__).resolve().parent
# The oldest Kubernetes the manifests need (the preStop `sleep` action is
# beta and on by default from 1.30) and the newest kubernetes-validate
# (requirements.txt) knows.
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
# Not applied by kustomization.yaml: placeholders for the Secrets.
EXAMPLES = ("secrets.example.yaml",)

errors: list[str] = []


def fail(message: str) -> None:
    errors.append(message)
    print(f"ERROR {message}")


def load_manifests() -> dict[str, list[dict]]:
    manifests = {}
    for path in sorted(HERE.glob("*.yaml")):
        with path.open() as f:
            manifests[path.name] = [d for d in yaml.safe_load_all(f) if d]
    return manifests


def crd_schemas() -> dict[tuple[str, str], dict]:
    schemas = {}
    for path in sorted((HERE / "schemas").glob("*.json")):
        schema = json.loads(path.read_text())
        crd = schema["x-courier-crd"]
        schemas[(f"{crd['group']}/{crd['version']}", crd["kind"])] = strict(schema)
    return schemas


def strict(schema):
    """The schema with unknown fields refused wherever the CRD lists the
    fields of an object and does not keep unknown ones."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


# The CEL rules (x-kubernetes-validations) of the committed CRD schemas,
# which jsonschema cannot run, written out. A schema update bringing a rule
# not listed here fails until it is added.
CEL_RULES = {
    "!has(self.minReplicaCount) || self.minReplicaCount <= (has(self.maxReplicaCount) ? self.maxReplicaCount : 100)":
        lambda spec: spec.get("minReplicaCount", 0) <= spec.get("maxReplicaCount", 100),
}


def check_cel(schema, value, where):
    if isinstance(schema, dict) and isinstance(value, dict):
        for rule in schema.get("x-kubernetes-validations", []):
            check = CEL_RULES.get(rule["rule"])
            if check is None:
                fail(f"{where}: the CRD schema has a CEL rule validate.py does not know: {rule['rule']}")
            elif not check(value):
                fail(f"{where}: {rule['message']}")
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                check_cel(sub, value[key], f"{where}.{key}")


def name_of(doc: dict) -> str:
    return f"{doc.get('kind', '?')}/{doc.get('metadata', {}).get('name', '?')}"


def validate_schemas(manifests, schemas) -> int:
    count = 0
    for filename, docs in manifests.items():
        if filename == "kustomization.yaml":
            continue
        for doc in docs:
            what = f"{filename}: {name_of(doc)}"
            key = (doc.get("apiVersion"), doc.get("kind"))
            if key in schemas:
                schema = schemas[key]
                problems = sorted(
                    jsonschema.Draft202012Validator(schema).iter_errors(doc),
                    key=lambda e: list(e.path),
                )
                for e in problems:
                    fail(f"{what}: {'.'.join(map(str, e.path))}: {e.message}")
                check_cel(schema, doc, what)
                # CRDs say only `metadata: {type: object}`; hold it to
                # ObjectMeta by validating it inside a resource that has one.
                shell = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": doc.get("metadata")}
                for version in KUBERNETES_VERSIONS:
                    try:
                        kubernetes_validate.validate(shell, version, strict=True)
                    except kubernetes_validate.ValidationError as e:
                        fail(f"{what}: metadata.{'.'.join(map(str, e.path))}: {e.message}")
                if not problems:
                    print(f"ok   {what} against the committed {key[1]} CRD schema ({key[0]})")
            else:
                ok = True
                for version in KUBERNETES_VERSIONS:
                    try:
                        kubernetes_validate.validate(doc, version, strict=True)
                    except kubernetes_validate.ValidationError as e:
                        ok = False
                        fail(f"{what}: Kubernetes {version}: {'.'.join(map(str, e.path))}: {e.message}")
                    except kubernetes_validate.utils.SchemaNotFoundError as e:
                        ok = False
                        fail(f"{what}: {e.message} (a custom resource needs its CRD schema in schemas/)")
                if ok:
                    print(f"ok   {what} against Kubernetes {' and '.join(KUBERNETES_VERSIONS)} (strict)")
            count += 1
    return count


# ---- references between the resources ---------------------------------------


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def pod_spec(deployment):
    return deployment["spec"]["template"]["spec"]


def container_ports(deployment) -> dict[str, int]:
    return {
        p["name"]: p["containerPort"]
        for c in pod_spec(deployment)["containers"]
        for p in c.get("ports", [])
    }


def check_references(manifests):
    applied = [d for f, docs in manifests.items() if f not in EXAMPLES and f != "kustomization.yaml" for d in docs]
    by_kind: dict[str, list[dict]] = {}
    for d in applied:
        by_kind.setdefault(d["kind"], []).append(d)
    secrets = {
        d["metadata"]["name"]: set(d.get("stringData", {})) | set(d.get("data", {}))
        for f in EXAMPLES
        for d in manifests.get(f, [])
        if d["kind"] == "Secret"
    }
    configmaps = {d["metadata"]["name"]: set(d.get("data", {})) for d in by_kind.get("ConfigMap", [])}
    deployments = by_kind.get("Deployment", [])

    # The kustomization applies every manifest but the examples.
    kustomization = manifests["kustomization.yaml"][0]
    listed = set(kustomization.get("resources", []))
    expected = set(manifests) - set(EXAMPLES) - {"kustomization.yaml"}
    if listed != expected:
        fail(f"kustomization.yaml: resources {sorted(listed)} should be {sorted(expected)}")
    namespace = kustomization.get("namespace")
    for d in applied + [d for f in EXAMPLES for d in manifests.get(f, [])]:
        if d["kind"] != "Namespace" and d["metadata"].get("namespace") != namespace:
            fail(f"{name_of(d)}: namespace {d['metadata'].get('namespace')!r}, the kustomization's is {namespace!r}")

    def need_secret(who, name, key=None):
        if name not in secrets:
            fail(f"{who}: reads Secret {name!r}, which secrets.example.yaml does not describe")
        elif key is not None and key not in secrets[name]:
            fail(f"{who}: reads key {key!r} of Secret {name!r}, which secrets.example.yaml does not have")

    for dep in deployments:
        who = name_of(dep)
        spec = dep["spec"]
        labels = spec["template"]["metadata"].get("labels", {})
        if not selects(spec["selector"].get("matchLabels", {}), labels):
            fail(f"{who}: its selector does not select its own pods")
        pod = pod_spec(dep)
        psc = pod.get("securityContext", {})
        if psc.get("runAsNonRoot") is not True:
            fail(f"{who}: pod securityContext.runAsNonRoot must be true")
        if pod.get("automountServiceAccountToken") is not False:
            fail(f"{who}: automountServiceAccountToken must be false (Courier never calls the API)")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for v in volumes.values():
            if "secret" in v:
                need_secret(f"{who} volume {v['name']}", v["secret"]["secretName"])
                for item in v["secret"].get("items", []):
                    need_secret(f"{who} volume {v['name']}", v["secret"]["secretName"], item["key"])
            if "configMap" in v:
                cm = v["configMap"]["name"]
                if cm not in configmaps:
                    fail(f"{who} volume {v['name']}: no ConfigMap {cm!r}")
                for item in v["configMap"].get("items", []):
                    if item["key"] not in configmaps.get(cm, set()):
                        fail(f"{who} volume {v['name']}: ConfigMap {cm!r} has no key {item['key']!r}")
        for c in pod["containers"]:
            cwho = f"{who} container {c['name']}"
            sc = c.get("securityContext", {})
            seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
            for ok, rule in [
                (sc.get("allowPrivilegeEscalation") is False, "allowPrivilegeEscalation: false"),
                (sc.get("readOnlyRootFilesystem") is True, "readOnlyRootFilesystem: true"),
                (sc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities.drop: [ALL]"),
                (sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, "runAsNonRoot: true"),
                (seccomp == "RuntimeDefault", "seccompProfile RuntimeDefault"),
                (not sc.get("privileged"), "not privileged"),
            ]:
                if not ok:
                    fail(f"{cwho}: securityContext needs {rule}")
            resources = c.get("resources", {})
            for part in ("requests", "limits"):
                for res in ("cpu", "memory"):
                    if res not in resources.get(part, {}):
                        fail(f"{cwho}: resources.{part}.{res} missing")
            ports = {p["name"] for p in c.get("ports", [])}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe not in c:
                    fail(f"{cwho}: no {probe}")
                    continue
                port = c[probe].get("httpGet", {}).get("port")
                if port not in ports:
                    fail(f"{cwho}: {probe} uses port {port!r}, not one of its named ports {sorted(ports)}")
            if "sleep" not in c.get("lifecycle", {}).get("preStop", {}):
                fail(f"{cwho}: no preStop sleep (the image has no shell for exec)")
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    need_secret(f"{cwho} env {env['name']}", ref["name"], ref["key"])
            for mount in c.get("volumeMounts", []):
                if mount["name"] not in volumes:
                    fail(f"{cwho}: mounts unknown volume {mount['name']!r}")
                if "subPath" in mount and "secret" in volumes.get(mount["name"], {}):
                    fail(f"{cwho}: a Secret mounted with subPath never rotates")

    def target(who, selector):
        matches = [d for d in deployments if selects(selector, d["spec"]["template"]["metadata"]["labels"])]
        if len(matches) != 1:
            fail(f"{who}: selects {len(matches)} Deployments, not one")
            return None
        return matches[0]

    services = by_kind.get("Service", [])
    for svc in services:
        dep = target(name_of(svc), svc["spec"].get("selector", {}))
        if dep:
            for p in svc["spec"]["ports"]:
                tp = p.get("targetPort", p["port"])
                ports = container_ports(dep)
                if (isinstance(tp, str) and tp not in ports) or (isinstance(tp, int) and tp not in ports.values()):
                    fail(f"{name_of(svc)}: targetPort {tp!r} is not a port of {name_of(dep)}")
                elif ports.get(tp, tp) != p["port"]:
                    fail(f"{name_of(svc)}: port {p['port']} forwards to {ports.get(tp, tp)}: keep them equal")
    for pdb in by_kind.get("PodDisruptionBudget", []):
        target(name_of(pdb), pdb["spec"]["selector"].get("matchLabels", {}))
    for np in by_kind.get("NetworkPolicy", []):
        selector = np["spec"]["podSelector"].get("matchLabels", {})
        if not selector:
            continue  # the namespace's default deny
        dep = target(name_of(np), selector)
        if dep:
            ports = set(container_ports(dep).values())
            for rule in np["spec"].get("ingress", []):
                for p in rule.get("ports", []):
                    if p["port"] not in ports:
                        fail(f"{name_of(np)}: admits port {p['port']}, which {name_of(dep)} does not serve")
    for sm in by_kind.get("ServiceMonitor", []):
        who = name_of(sm)
        matches = [s for s in services if selects(sm["spec"]["selector"].get("matchLabels", {}), s["metadata"].get("labels", {}))]
        if len(matches) != 1:
            fail(f"{who}: selects {len(matches)} Services, not one")
            continue
        svc = matches[0]
        for ep in sm["spec"]["endpoints"]:
            if ep.get("port") not in {p["name"] for p in svc["spec"]["ports"]}:
                fail(f"{who}: endpoint port {ep.get('port')!r} is not a port of {name_of(svc)}")
        job = svc["metadata"]["labels"].get(sm["spec"].get("jobLabel", ""), svc["metadata"]["name"])
        # deploy/prometheus's alerts read job="courier" (workers) and
        # job="courier-ingest" (webhook receivers).
        expected = "courier-ingest" if svc["metadata"]["labels"].get("app.kubernetes.io/component") == "ingest" else "courier"
        if job != expected:
            fail(f"{who}: its job label would be {job!r}; deploy/prometheus's alerts read job=\"{expected}\"")
    auths = {d["metadata"]["name"]: d for d in by_kind.get("TriggerAuthentication", [])}
    for ta in auths.values():
        for ref in ta["spec"].get("secretTargetRef", []):
            need_secret(f"{name_of(ta)} parameter {ref['parameter']}", ref["name"], ref["key"])
    for so in by_kind.get("ScaledObject", []):
        who = name_of(so)
        ref = so["spec"]["scaleTargetRef"]
        targets = [d for d in deployments if d["metadata"]["name"] == ref["name"]]
        if ref.get("kind", "Deployment") != "Deployment" or not targets:
            fail(f"{who}: scales {ref}, which is not one of the Deployments")
        elif "replicas" in targets[0]["spec"]:
            fail(f"{who}: {name_of(targets[0])} sets replicas, which every apply would reset under KEDA")
        for trigger in so["spec"]["triggers"]:
            meta = trigger["metadata"]
            if trigger["type"] != "rabbitmq":
                continue
            auth = trigger.get("authenticationRef", {}).get("name")
            if auth not in auths:
                fail(f"{who}: authenticationRef {auth!r} is not a TriggerAuthentication here")
            for key, want in [("protocol", "http"), ("useRegex", "true"), ("operation", "sum"), ("mode", "QueueLength")]:
                if meta.get(key) != want:
                    fail(f"{who}: rabbitmq trigger needs {key}: {want!r} (README.md says why), has {meta.get(key)!r}")
            if meta.get("excludeUnacknowledged") == "true":
                fail(f"{who}: excludeUnacknowledged would scale down workers holding unacked work")


def facts(manifests) -> dict:
    def deployment(dep):
        pod = pod_spec(dep)
        [c] = pod["containers"]
        uids = [pod.get("securityContext", {}).get("runAsUser"), c.get("securityContext", {}).get("runAsUser")]
        gids = [pod.get("securityContext", {}).get("runAsGroup"), c.get("securityContext", {}).get("runAsGroup")]
        secrets = {
            d["metadata"]["name"]: {**d.get("stringData", {})}
            for f in EXAMPLES
            for d in manifests.get(f, [])
            if d["kind"] == "Secret"
        }
        env = {}
        for e in c.get("env", []):
            ref = e.get("valueFrom", {}).get("secretKeyRef")
            env[e["name"]] = secrets.get(ref["name"], {}).get(ref["key"]) if ref else e.get("value")
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        files = {}
        for m in c.get("volumeMounts", []):
            v = volumes.get(m["name"], {})
            source = v.get("secret") or v.get("configMap") or {}
            for item in source.get("items", []):
                files[f"{m['mountPath'].rstrip('/')}/{item['path']}"] = {
                    "secret": "secret" in v,
                    "key": item["key"],
                }
        # Each probe's path and port, a named port resolved to its number.
        ports = container_ports(dep)
        probes = {}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            get = c.get(probe, {}).get("httpGet")
            if get:
                probes[probe] = {"path": get.get("path"), "port": ports.get(get["port"], get["port"])}
        return {
            "command": c.get("command"),
            "args": c.get("args", []),
            "runAsUser": [u for u in uids if u is not None],
            "runAsGroup": [g for g in gids if g is not None],
            "ports": ports,
            "probes": probes,
            "env": env,
            "files": files,
            "terminationGracePeriodSeconds": pod.get("terminationGracePeriodSeconds", 30),
            "preStopSleepSeconds": c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0),
        }

    docs = [d for f, ds in manifests.items() if f not in EXAMPLES and f != "kustomization.yaml" for d in ds]
    [configmap] = [d for d in docs if d["kind"] == "ConfigMap"]
    return {
        "courier.toml": configmap["data"]["courier.toml"],
        "deployments": {d["metadata"]["name"]: deployment(d) for d in docs if d["kind"] == "Deployment"},
        "queueRegexes": [
            t["metadata"]["queueName"]
            for d in docs
            if d["kind"] == "ScaledObject"
            for t in d["spec"]["triggers"]
            if t["type"] == "rabbitmq"
        ],
    }


def check_queues(manifests, path: Path) -> None:
    """Only work queues match: RabbitMQ's management API matches with
    Erlang's `re` (PCRE), which reads these regexes as Python does."""
    queues = json.loads(path.read_text())
    for regex in facts(manifests)["queueRegexes"]:
        pattern = re.compile(regex)
        for name in queues["work"]:
            if not pattern.search(name):
                fail(f"queue regex {regex!r} misses work queue {name!r}")
        for name in queues["other"]:
            if pattern.search(name):
                fail(f"queue regex {regex!r} matches {name!r}, which is not a work queue")
        print(f"ok   {regex!r}: {len(queues['work'])} work queues in, {len(queues['other'])} other queues out")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--facts", type=Path)
    parser.add_argument("--queues", type=Path)
    args = parser.parse_args()
    manifests = load_manifests()
    if args.queues:
        check_queues(manifests, args.queues)
    else:
        schemas = crd_schemas()
        count = validate_schemas(manifests, schemas)
        check_references(manifests)
        if args.facts:
            args.facts.write_text(json.dumps(facts(manifests), indent=1))
        if not errors:
            print(
                f"validated {count} resources in {len(manifests) - 1} files against Kubernetes "
                f"{' and '.join(KUBERNETES_VERSIONS)} and {len(schemas)} CRD schemas"
            )
    if errors:
        print(f"{len(errors)} problem(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

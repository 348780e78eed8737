#!/usr/bin/env python3
"""Writes a CustomResourceDefinition's schema as JSON Schema, for validate.py.

Reads the CRD (YAML) on stdin and prints the openAPIV3Schema of the version
named by the first argument, with a `$comment` naming the source (second
argument). The schemas beside this script were made from the official CRDs:

  git -C kedacore/keda show v2.20.2:config/crd/bases/keda.sh_scaledobjects.yaml \
    | from-crd.py v1alpha1 "kedacore/keda v2.20.2 config/crd/bases/keda.sh_scaledobjects.yaml" \
    > scaledobject-keda.sh-v1alpha1.json

(and likewise keda.sh_triggerauthentications.yaml, and prometheus-operator's
v0.93.0 example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml
for monitoring.coreos.com/v1). Needs PyYAML (in target/test-tools/venv).
"""
import json
import sys

import yaml


def main() -> None:
    version, source = sys.argv[1], sys.argv[2]
    crd = yaml.safe_load(sys.stdin)
    spec = crd["spec"]
    [served] = [v for v in spec["versions"] if v["name"] == version]
    schema = served["schema"]["openAPIV3Schema"]
    out = {
        "$comment": f"openAPIV3Schema of {spec['names']['kind']} {spec['group']}/{version}, from {source}",
        "x-courier-crd": {"group": spec["group"], "version": version, "kind": spec["names"]["kind"]},
    }
    out.update(schema)
    json.dump(out, sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

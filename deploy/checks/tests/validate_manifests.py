"""Validates Kubernetes manifests offline, with stock validators.

    python validate_manifests.py SCHEMA_DIR KUBERNETES_VERSION FILE...

Every document must parse (PyYAML). Core kinds are validated with kubernetes-validate
(the Kubernetes OpenAPI schemas of KUBERNETES_VERSION, strict: unknown fields are errors).
Strimzi kinds (kafka.strimzi.io) are validated with jsonschema against the CRD schemas in
SCHEMA_DIR, made strict the same way (an object schema with properties refuses any other
property, unless the CRD says it preserves unknown fields). Prints one line per document,
`ok <file> <kind> <name>` or `FAILED …` with the reason; exits 1 if any failed. Prints
`documents N` at the end.
"""

import copy
import json
import os
import sys

import jsonschema
import kubernetes_validate
import yaml


def strict(schema):
    """The schema with `additionalProperties: false` wherever it lists properties."""
    schema = copy.deepcopy(schema)

    def walk(node):
        if isinstance(node, dict):
            if (
                node.get("type") == "object"
                and "properties" in node
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
    # metadata is the Kubernetes ObjectMeta, which the CRD does not describe.
    schema.setdefault("properties", {})["metadata"] = {"type": "object"}
    return schema


def main():
    schema_dir, version, files = sys.argv[1], sys.argv[2], sys.argv[3:]
    crds = {}
    for name in os.listdir(schema_dir):
        if name.endswith(".schema.json"):
            with open(os.path.join(schema_dir, name)) as f:
                crd = json.load(f)
            crds[(crd["apiVersion"], crd["kind"])] = strict(crd["openAPIV3Schema"])
    failed = 0
    count = 0
    for path in files:
        with open(path) as f:
            documents = [d for d in yaml.safe_load_all(f) if d is not None]
        for document in documents:
            count += 1
            kind = document.get("kind", "?")
            name = document.get("metadata", {}).get("name", "?")
            key = (document.get("apiVersion"), kind)
            try:
                if key in crds:
                    jsonschema.validate(document, crds[key])
                    # ObjectMeta: the fields every resource needs.
                    if not isinstance(document.get("metadata", {}).get("name"), str):
                        raise ValueError("metadata.name is missing")
                elif str(document.get("apiVersion", "")).endswith("strimzi.io/v1"):
                    raise ValueError(f"no CRD schema for {key}")
                else:
                    kubernetes_validate.validate(document, version, strict=True)
                print(f"ok {os.path.basename(path)} {kind} {name}")
            except Exception as error:  # every failure is reported, then the run fails
                failed += 1
                message = str(error).splitlines()[0]
                print(f"FAILED {os.path.basename(path)} {kind} {name}: {message}")
    print(f"documents {count}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

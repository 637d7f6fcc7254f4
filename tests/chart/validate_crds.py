"""Validate rendered custom resources against CRD schemas kept in tests/chart/crds/.

Run by the chart tests with the tools venv's Python (jsonschema lives there):
``python validate_crds.py MANIFEST...``; prints one line per object and exits 1 on any error.
Unknown fields are errors, as with ``kubectl apply --validate=strict``: every object schema
that lists properties and does not preserve unknown fields gets ``additionalProperties: false``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRDS = Path(__file__).resolve().parent / "crds"


def strict(node: Any) -> Any:
    if isinstance(node, dict):
        out = {key: strict(value) for key, value in node.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        if out.get("x-kubernetes-int-or-string"):
            out.pop("type", None)
            out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
        return out
    if isinstance(node, list):
        return [strict(value) for value in node]
    return node


def load() -> dict[tuple[str, str], dict[str, Any]]:
    schemas = {}
    for path in sorted(CRDS.glob("*.json")):
        crd = json.loads(path.read_text(encoding="utf-8"))
        api_version = f"{crd['group']}/{crd['version']}"
        schemas[(api_version, crd["kind"])] = strict(crd["openAPIV3Schema"])
    return schemas


def main(paths: list[str]) -> int:
    schemas = load()
    failed = 0
    for path in paths:
        for doc in yaml.safe_load_all(Path(path).read_text(encoding="utf-8")):
            if not doc:
                continue
            key = (doc["apiVersion"], doc["kind"])
            if key not in schemas:
                continue
            name = f"{Path(path).name} {doc['kind']}/{doc['metadata']['name']}"
            errors = list(jsonschema.Draft7Validator(schemas[key]).iter_errors(doc))
            for error in errors:
                print(f"FAIL {name}: at {list(error.absolute_path)}: {error.message}")
            if errors:
                failed += 1
            else:
                print(f"PASS {name}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

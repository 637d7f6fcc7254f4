"""Render docs/contract.md from model_repository/_contract/contract.yaml.

``--check`` exits non-zero when the document is out of date (the unit tests run it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TABLE = ROOT / "model_repository" / "_contract" / "contract.yaml"
DOC = ROOT / "docs" / "contract.md"
INTRO = """\
# The TensorRT-LLM Triton contract we serve

Generated from `model_repository/_contract/contract.yaml` by
`scripts/render_contract_doc.py`; a unit test checks every rendered `config.pbtxt`
against that file.

Pinned releases:

{releases}

Columns: **NVIDIA** says which release declares the tensor (`both`, `v0.19` only,
`current` only, `-` for our extensions). **Status**: `implemented`; `refused` (declared;
a request that sets it gets INVALID_ARG naming it and the reason); `ignored` (accepted
hint); `placeholder` (declared, fixed value, see note); `omitted` (not declared);
`extension` (ours; `cpu` ones exist only with the CPU engine step). Dims exclude the
batch dimension.
"""


def _dims(entry: dict) -> str:
    return "[" + ", ".join(str(d) for d in entry["dims"]) + "]"


def _rows(entries: list[dict], with_optional: bool) -> list[str]:
    head = "| name | dtype | dims |" + (" optional |" if with_optional else "")
    head += " NVIDIA | status | note |"
    rule = "|---|---|---|" + ("---|" if with_optional else "") + "---|---|---|"
    lines = [head, rule]
    for entry in entries:
        status = entry["status"]
        if status == "extension":
            status += f" ({entry['engines']})"
        cells = [f"`{entry['name']}`", entry["dtype"].removeprefix("TYPE_"), _dims(entry)]
        if with_optional:
            cells.append("yes" if entry.get("optional") else "no")
        cells += [entry["nvidia"], status, entry.get("note", "").replace("|", "\\|")]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def render(table: dict) -> str:
    releases = "\n".join(f"* `{key}`: {value}" for key, value in table["releases"].items())
    parts = [INTRO.format(releases=releases)]
    for model, sides in table["models"].items():
        parts.append(f"## `{model}`\n")
        parts.append("Inputs:\n")
        parts.extend(_rows(sides["inputs"], True))
        parts.append("\nOutputs:\n")
        parts.extend(_rows(sides["outputs"], False))
        parts.append("")
    return "\n".join(parts) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the doc is stale")
    args = parser.parse_args()
    text = render(yaml.safe_load(TABLE.read_text(encoding="utf-8")))
    if args.check:
        if not DOC.is_file() or DOC.read_text(encoding="utf-8") != text:
            print(f"{DOC} is out of date: run python scripts/render_contract_doc.py")
            return 1
        return 0
    DOC.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

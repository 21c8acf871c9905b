"""docs/config-reference.md, generated from the schema (``make docs``; a test fails when it is stale)."""

from __future__ import annotations

from lmsys_arena import families, schema

HEADER = """# Config reference

Generated from the schema by `python -m lmsys_arena config --reference --out docs/config-reference.md`
(`make docs`); do not edit by hand. A config states only what differs from these defaults; `base: <config>`
inherits another config (README, "Configs in one screen"). Print any config resolved with
`python -m lmsys_arena config <name> [--set key=value ...]`.

"""


def markdown() -> str:
    sections = []
    for name, fam in families.FAMILIES.items():
        if not fam.trains:
            continue
        cls = fam.config_class()
        intro = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        sections.append((f"family: {name}", f"{intro} Schema: `{fam.schema.replace(':', '.')}`.", cls))
    return HEADER + schema.reference(sections)

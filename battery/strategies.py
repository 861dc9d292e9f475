"""Hypothesis strategies for hostile input: paths, version names, JSON values, tar archives, byte edits."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

# Modest example counts keep the whole battery within its time budget (a few minutes on 2 cores); no
# example database: CI starts clean anyway, and the repo stays free of .hypothesis/ files from here.
FUZZ = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)
FUZZ_MEDIUM = settings(FUZZ, max_examples=100)
FUZZ_SMALL = settings(FUZZ, max_examples=60)

# Pieces that broke path handling somewhere, sometime: traversal, absolute and drive paths, Windows
# device names and forbidden characters, control characters, lone surrogates, look-alikes, overlong names.
NASTY_COMPONENTS = [
    "..", ".", "", "...", "~", "$HOME", "%2e%2e", "..%2f", "CON", "con.txt", "NUL", "aux.tar.zst", "COM1", "LPT¹",
    "C:", "c:\\evil", "\\\\server\\share", "a\\..\\b", "x ", "x.", " ", "a:b", "a*b", "a?b", "a<b", "a>b", "a|b",
    'a"b', "a\x00b", "a\nb", "a\x7fb", "\u202eexe.txt", "\ud800", "ｃｏｎ", "é", "é", "A", "a", "x" * 256,
    "ü" * 128, "signatures.json", "delta_manifest.json", "indirect_manifest.json", "bin", "game.exe",
]

component = st.one_of(
    st.sampled_from(NASTY_COMPONENTS),
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="/"), min_size=1, max_size=12),
    st.from_regex(r"[a-z0-9_-]{1,10}(\.[a-z]{1,4})?", fullmatch=True),
)
hostile_paths = st.one_of(
    st.lists(component, min_size=1, max_size=5).map("/".join),
    st.lists(component, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts)),
    st.lists(component, min_size=1, max_size=3).map(lambda parts: "./" + "/".join(parts)),
    st.lists(component, min_size=1, max_size=3).map("\\".join),
    st.lists(component, min_size=1, max_size=3).map(lambda parts: "/".join(parts) + "/"),
    st.text(max_size=40),
)
safe_paths = st.from_regex(r"[a-z]{1,8}(/[a-z0-9_]{1,8}){0,2}\.(pak|bin|txt)", fullmatch=True)
any_paths = st.one_of(safe_paths, safe_paths, hostile_paths)

version_names = st.one_of(
    st.from_regex(r"[A-Za-z0-9._+-]{1,64}", fullmatch=True),
    st.sampled_from(["1.0", "..", ".", "1__2", "a/b", "CON", "con", "v1.", ".hidden", "x" * 65, "", " 1.0", "1.0\n"]),
    st.text(max_size=70),
)

sha256s = st.one_of(
    st.binary(min_size=1, max_size=8).map(lambda b: hashlib.sha256(b).hexdigest()),
    st.sampled_from(["", "0" * 63, "A" * 64, "g" * 64, "0" * 65]),
)
sizes = st.one_of(st.integers(min_value=0, max_value=10**6), st.sampled_from([-1, 2**63, 2**64 + 1]))

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


def mutate_doc(data: st.DataObject, doc: Any, keys_hint: list[str]) -> Any:
    """Apply 0-3 random edits to a JSON document: change, drop or add a key, or replace a list entry."""
    for _ in range(data.draw(st.integers(0, 3), label="edits")):
        containers = _containers(doc)
        target = data.draw(st.sampled_from(containers), label="target")
        if isinstance(target, dict):
            action = data.draw(st.sampled_from(["set", "drop", "add"]), label="action")
            if action == "drop" and target:
                del target[data.draw(st.sampled_from(sorted(target)), label="drop")]
            elif action == "add":
                target[data.draw(st.one_of(st.sampled_from(keys_hint), st.text(max_size=8)))] = data.draw(json_values)
            elif target:
                key = data.draw(st.sampled_from(sorted(target)), label="key")
                target[key] = data.draw(st.one_of(json_values, any_paths, sha256s, sizes, version_names))
        elif isinstance(target, list):
            if target and data.draw(st.booleans()):  # type: ignore[arg-type]
                target[data.draw(st.integers(0, len(target) - 1))] = data.draw(json_values)
            else:
                target.append(data.draw(json_values))
    return doc


def _containers(doc: Any) -> list[Any]:
    out = [doc] if isinstance(doc, (dict, list)) else []
    children = doc.values() if isinstance(doc, dict) else doc if isinstance(doc, list) else []
    for child in children:
        out.extend(_containers(child))
    return out


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")


byte_edits = st.lists(
    st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate"]), st.integers(0, 2**31), st.integers(0, 255)),
    min_size=1,
    max_size=6,
)


def apply_byte_edits(data: bytes, edits: list[tuple[str, int, int]]) -> bytes:
    buf = bytearray(data)
    for kind, where, value in edits:
        if not buf:
            break
        at = where % len(buf)
        if kind == "flip":
            buf[at] ^= value or 1
        elif kind == "insert":
            buf[at:at] = bytes([value])
        elif kind == "delete":
            del buf[at]
        else:
            del buf[at:]
    return bytes(buf)


# --- Tar archives --------------------------------------------------------------------------------

MEMBER_TYPES = [tarfile.REGTYPE, tarfile.REGTYPE, tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
                tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE, tarfile.CONTTYPE, tarfile.GNUTYPE_SPARSE]


@st.composite
def tar_members(draw: Callable[..., Any], names: st.SearchStrategy[str] = any_paths) -> list[dict[str, Any]]:
    """A list of tar members: hostile or plain names, any type, small contents, sometimes lying sizes."""
    members = []
    for _ in range(draw(st.integers(0, 5))):
        members.append({
            "name": draw(names),
            "type": draw(st.sampled_from(MEMBER_TYPES)),
            "data": draw(st.binary(max_size=64)),
            "linkname": draw(st.sampled_from(["", "/etc/passwd", "../../outside", "a", "."])),
            "mode": draw(st.sampled_from([0o644, 0o755, 0o4755, 0o777, 0])),
            "pax": draw(st.sampled_from([None, {"size": "99999999999"}, {"path": "../escape"}, {"mtime": "x"}])),
        })
    return members


def build_tar(members: list[dict[str, Any]], *, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """Tar bytes for `members`; a name tarfile itself cannot encode is replaced, not skipped."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=fmt, encoding="utf-8", errors="surrogateescape") as tf:
        for m in members:
            info = tarfile.TarInfo(m["name"].replace("\x00", "_"))
            info.type = m["type"]
            info.mode = m["mode"]
            info.linkname = m["linkname"]
            if m["pax"]:
                info.pax_headers = dict(m["pax"])
            data = m["data"] if info.type in (tarfile.REGTYPE, tarfile.CONTTYPE) else b""
            info.size = len(data)
            try:
                tf.addfile(info, io.BytesIO(data) if data else None)
            except (UnicodeError, ValueError):
                info.name = "unencodable-name.bin"
                tf.addfile(info, io.BytesIO(data) if data else None)
    return raw.getvalue()


def listing(root: Path) -> set[str]:
    """Every entry under root (files, folders, links), relative: to prove nothing appeared outside a folder."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            out.add(os.path.relpath(os.path.join(dirpath, name), root))
    return out

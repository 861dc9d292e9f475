"""Bad input at the HTTP doors: hostile bodies, paths, version names, ranges and uploads never give a 5xx.

In-process (Django's test client, real PostgreSQL): fast enough to run a few hundred requests per
door. What is accepted must be right too: a 206 carries exactly the bytes `downloads.ranges.decide`
chose, a 200 on /dl/file/ is a file of the version's manifest and nothing else.
"""

from __future__ import annotations

import io
import json
import re
import tarfile
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver
from django.urls.resolvers import RoutePattern
from hypothesis import example, given
from hypothesis import strategies as st
from rest_framework.test import APIClient

from battery import tally
from battery.strategies import (
    FUZZ_MEDIUM,
    FUZZ_SMALL,
    any_paths,
    apply_byte_edits,
    build_tar,
    byte_edits,
    dumps,
    json_values,
    mutate_doc,
    tar_members,
    version_names,
)
from builds import services as builds_services
from builds.models import Version
from builds.services import BuildError, push_version
from catalog.models import Game
from conftest import bearer_client
from downloads.ranges import RangeKind, decide
from mist.testing.gamedata import make_build, next_version, tree_bytes
from mistcore.indirect import SIGNATURES_JSON, signature_set

pytestmark = pytest.mark.django_db

SLUG = "space-game"
API = f"/api/v1/games/{SLUG}"
NUL_AND_FRIENDS = ["%00", "\ud800", "1.0/../2.0", "..", "1.0;drop", "1.0%2F..", "\u202e1.0"]


def no_nul(text: str) -> bool:
    # NUL in URLs has its own walk below (test_nul_in_urls_and_query_strings_is_not_a_500).
    return "\x00" not in text


class World(dict):  # type: ignore[type-arg]
    """The fixture's objects; a short repr keeps hypothesis from printing megabytes of file contents."""

    def __repr__(self) -> str:
        return "<world: space-game 1.0, 2.0>"


def no_server_error(response: Any, allowed: set[int]) -> None:
    """The answer is one of the expected statuses, and an error carries a JSON `detail`."""
    assert response.status_code < 500, f"{response.status_code}: {getattr(response, 'content', b'')[:500]!r}"
    assert response.status_code in allowed, (response.status_code, getattr(response, "content", b"")[:300])
    if response.status_code >= 400 and response.get("Content-Type", "").startswith("application/json"):
        assert "detail" in response.json() or response.status_code == 400


@pytest.fixture
def world(tmp_path: Path, admin_user: Any) -> dict[str, Any]:
    """A game with two ready versions whose trees are on the storage (no worker needed)."""
    game = Game.objects.create(slug=SLUG, title="Space Game")
    v1_src = make_build(tmp_path / "b1", seed=41)
    v2_src = next_version(v1_src, tmp_path / "b2", seed=41, step=1)
    v1 = push_version(game=game, name="1.0", source=v1_src, user=admin_user).version
    builds_services.mark_ready(version=v1)
    v2 = push_version(game=game, name="2.0", source=v2_src, user=admin_user).version
    builds_services.mark_ready(version=v2)
    return World(game=game, v1=v1, v2=v2, files={"1.0": tree_bytes(v1_src), "2.0": tree_bytes(v2_src)},
                 src={"1.0": v1_src, "2.0": v2_src})


def _quiet(client: Client) -> Client:
    client.raise_request_exception = False  # a crash must show up as the 500 a real client would get
    return client


# --- The update planner ----------------------------------------------------------------------------

plan_bodies = st.fixed_dictionaries(
    {},
    optional={
        "from_version": st.one_of(st.sampled_from(["1.0", "2.0", "unknown", None, "", *NUL_AND_FRIENDS]), version_names,
                                  json_values),
        "to_version": st.one_of(st.sampled_from(["1.0", "2.0", None, *NUL_AND_FRIENDS]), version_names, json_values),
        "local_manifest": st.one_of(json_values, st.just("manifest")),
    },
)


@FUZZ_MEDIUM
@given(body=plan_bodies, data=st.data())
def test_update_plan_with_hostile_bodies(world: dict[str, Any], friend: Any, body: dict[str, Any],
                                         data: st.DataObject) -> None:
    tally.bad_inputs("POST /api/v1/games/<slug>/updates")
    if body.get("local_manifest") == "manifest":
        doc = json.loads(builds_services.read_manifest(version=world["v1"]).to_json())
        body["local_manifest"] = mutate_doc(data, doc, ["path", "size", "sha256", "files", "version"])
    client = _quiet(bearer_client(friend))
    response = client.post(f"{API}/updates", data=dumps(body), content_type="application/json")
    no_server_error(response, {200, 400, 404})
    if response.status_code == 200:
        plan = response.json()
        assert plan["route"] in ("none", "direct", "jump", "indirect", "full")
        assert plan["to_version"] in ("1.0", "2.0")


# --- Indirect update requests (signature uploads) --------------------------------------------------


def _signature_tar(root: Path, paths: list[str]) -> bytes:
    out = root.parent / f"{root.name}-sigs.tar"
    signature_set(root=root, paths=paths, out_tar=out)
    return out.read_bytes()


@FUZZ_SMALL
@given(kind=st.sampled_from(["members", "edits", "paths"]), members=tar_members(), edits=byte_edits,
       paths=st.one_of(st.lists(st.one_of(st.sampled_from(["bin/game.x86_64", "config.ini"]), any_paths), max_size=4),
                       json_values))
def test_indirect_request_with_hostile_uploads(world: dict[str, Any], friend: Any, kind: str,
                                               members: list[dict[str, Any]], edits: list[tuple[str, int, int]],
                                               paths: Any) -> None:
    tally.bad_inputs("POST /api/v1/games/<slug>/indirect")
    wanted = ["bin/game.x86_64", "config.ini"]
    valid = _signature_tar(world["src"]["1.0"], wanted)
    if kind == "members":
        try:
            upload = build_tar(members)
        except (ValueError, UnicodeError, tarfile.TarError):
            upload = b""
    elif kind == "edits":
        upload = apply_byte_edits(valid, edits)
    else:
        upload = valid
    paths_field = json.dumps(paths) if kind == "paths" else json.dumps(wanted)
    client = _quiet(bearer_client(friend))
    response = client.post(
        f"{API}/indirect",
        {"to_version": "2.0", "paths": paths_field, "signatures": io.BytesIO(upload)},
    )
    no_server_error(response, {202, 400, 404, 413})
    if kind == "members":
        assert response.status_code in (400, 404), response.content


def test_the_unmodified_signature_upload_is_accepted(world: dict[str, Any], friend: Any) -> None:
    # The corrupted uploads above start from this one: it must be good, or they prove nothing.
    upload = _signature_tar(world["src"]["1.0"], ["bin/game.x86_64", "config.ini"])
    response = bearer_client(friend).post(
        f"{API}/indirect",
        {"to_version": "2.0", "paths": json.dumps(["bin/game.x86_64", "config.ini"]), "signatures": io.BytesIO(upload)},
    )
    assert response.status_code == 202, response.content


def test_indirect_request_with_a_huge_integer_in_signatures_json_is_a_400(world: dict[str, Any], friend: Any) -> None:
    tally.bad_inputs("POST /api/v1/games/<slug>/indirect")
    index = b'{"files":{"config.ini":{"sha256":"' + b"0" * 64 + b'","size":' + b"7" * 5000 + b'}},"format":"mist-sigs/1"}'
    upload = build_tar([{"name": SIGNATURES_JSON, "type": tarfile.REGTYPE, "data": index, "linkname": "",
                         "mode": 0o644, "pax": None}])
    response = _quiet(bearer_client(friend)).post(
        f"{API}/indirect", {"to_version": "2.0", "paths": '["config.ini"]', "signatures": io.BytesIO(upload)}
    )
    assert response.status_code == 400, response.status_code


# --- Versions and file paths in URLs ----------------------------------------------------------------


@FUZZ_MEDIUM
@given(version=st.one_of(version_names, st.sampled_from(NUL_AND_FRIENDS)).filter(no_nul),
       door=st.sampled_from(["manifest", "archive-get", "archive-post", "game"]))
def test_version_names_in_api_urls(world: dict[str, Any], friend: Any, version: str, door: str) -> None:
    tally.bad_inputs("GET/POST /api/v1/games/<slug>/versions/<version>/...")
    client = _quiet(bearer_client(friend))
    quoted = quote(version.encode("utf-8", "surrogatepass"), safe="")
    if door == "manifest":
        response = client.get(f"{API}/versions/{quoted}/manifest")
    elif door == "archive-get":
        response = client.get(f"{API}/versions/{quoted}/archive")
    elif door == "archive-post":
        response = client.post(f"{API}/versions/{quoted}/archive")
    else:
        response = client.get(f"/api/v1/games/{quoted}")
    no_server_error(response, {200, 202, 404})
    if response.status_code in (200, 202) and door != "game":
        assert version in ("1.0", "2.0")


@FUZZ_MEDIUM
@given(version=st.one_of(st.sampled_from(["1.0", "2.0"]), version_names, st.sampled_from(NUL_AND_FRIENDS)).filter(no_nul),
       path=st.one_of(st.sampled_from(["bin/game.x86_64", "config.ini", "../manifests/2.0.json", "../../../etc/passwd",
                                       "data/../config.ini", "bin%2fgame.x86_64", "CON", "a\x00b"]), any_paths),
       signed=st.one_of(st.none(), st.fixed_dictionaries({"u": st.text(max_size=20), "exp": st.text(max_size=25),
                                                          "sig": st.text(max_size=70)})))
@example(version="2.0", path="../../../../etc/passwd", signed=None)
@example(version="2.0", path="config.ini", signed={"u": "1" * 30, "exp": "9" * 5000, "sig": "x"})
def test_file_downloads_with_hostile_paths_and_signatures(world: dict[str, Any], friend: Any, version: str, path: str,
                                                          signed: dict[str, str] | None) -> None:
    tally.bad_inputs("GET /dl/file/<slug>/<version>/<path>")
    client = _quiet(Client() if signed else bearer_client(friend))
    url = f"/dl/file/{SLUG}/{quote(version.encode('utf-8', 'surrogatepass'), safe='')}/" \
          f"{quote(path.encode('utf-8', 'surrogatepass'), safe='/')}"
    response = client.get(url, signed or {})
    no_server_error(response, {200, 400, 401, 403, 404})
    if response.status_code == 200:
        body = b"".join(response.streaming_content)
        assert world["files"][version][path][0] == body  # a file of the version, and nothing else


# --- Ranges through the real view (the parser itself is fuzzed in downloads/tests/test_ranges.py) ---

range_headers = st.one_of(
    st.text(max_size=40),
    st.builds(lambda a, b, unit, sp: f"{unit}={sp}{a}-{b}{sp}",
              st.one_of(st.integers(0, 400_000).map(str), st.just("")), st.one_of(st.integers(0, 400_000).map(str),
                                                                                  st.just("")),
              st.sampled_from(["bytes", "Bytes", "items", "bytes "]), st.sampled_from(["", " "])),
    st.lists(st.integers(0, 5000), min_size=2, max_size=4).map(lambda xs: "bytes=" + ",".join(f"{x}-{x + 9}" for x in xs)),
)


@FUZZ_MEDIUM
@given(range_header=st.one_of(st.none(), range_headers), if_range=st.one_of(st.none(), st.text(max_size=70),
                                                                            st.just("<etag>"), st.just("W/<etag>")),
       method=st.sampled_from(["GET", "HEAD"]))
def test_ranges_through_the_download_view(world: dict[str, Any], friend: Any, range_header: str | None,
                                          if_range: str | None, method: str) -> None:
    tally.bad_inputs("GET/HEAD /dl/ Range and If-Range")
    content = world["files"]["2.0"]["bin/game.x86_64"][0]
    etag = f'"{builds_services.read_manifest(version=world["v2"]).by_path()["bin/game.x86_64"].sha256}"'
    if if_range is not None:
        if_range = if_range.replace("<etag>", etag)
    headers = {}
    if range_header is not None:
        headers["HTTP_RANGE"] = range_header
    if if_range is not None:
        headers["HTTP_IF_RANGE"] = if_range
    client = _quiet(bearer_client(friend))
    url = f"/dl/file/{SLUG}/2.0/bin/game.x86_64"
    response = client.get(url, **headers) if method == "GET" else client.head(url, **headers)
    expected = decide(range_header=range_header, if_range=if_range, size=len(content), etag=etag)
    assert response.status_code == expected.status, (range_header, if_range, response.status_code)
    if expected.kind is RangeKind.UNSATISFIABLE:
        assert response["Content-Range"] == f"bytes */{len(content)}"
        return
    assert int(response["Content-Length"]) == expected.length
    if expected.kind is RangeKind.PARTIAL:
        assert response["Content-Range"] == f"bytes {expected.start}-{expected.end}/{len(content)}"
    if method == "GET":
        assert b"".join(response.streaming_content) == content[expected.start : expected.end + 1]


# --- The upload API (admin) and the push service -----------------------------------------------------

upload_bodies = st.fixed_dictionaries(
    {"game": st.one_of(st.just(SLUG), st.text(max_size=10)), "version": st.one_of(version_names, st.just("9.0")),
     "filename": st.one_of(st.sampled_from(["b.tar", "../../b.tar", "/etc/b.zip", "x.exe", ".tar", "a/.zip"]),
                           any_paths.map(lambda p: p + ".tar")),
     "total_size": st.one_of(st.integers(-5, 10**20), st.just(4))},
    optional={"sha256": st.one_of(st.text(max_size=70), st.just("0" * 64)), "notes": json_values},
)
content_ranges = st.one_of(
    st.text(max_size=40),
    st.builds(lambda a, b, t: f"bytes {a}-{b}/{t}", st.integers(-1, 10), st.integers(-1, 10), st.integers(-1, 10)),
    st.sampled_from(["bytes 0-3/4", "bytes ٠-٣/٤", "bytes 0-3/4 ", "bytes 0-99999999999999999999/4"]),
)


@FUZZ_SMALL
@given(body=upload_bodies, content_range=content_ranges, chunk=st.binary(min_size=1, max_size=12),
       finalize=st.booleans())
def test_upload_api_with_hostile_bodies_and_ranges(world: dict[str, Any], admin_user: Any, body: dict[str, Any],
                                                   content_range: str, chunk: bytes, finalize: bool) -> None:
    tally.bad_inputs("POST/PUT /api/v1/builds/uploads")
    client = _quiet(bearer_client(admin_user))
    created = client.post("/api/v1/builds/uploads", data=dumps(body), content_type="application/json")
    no_server_error(created, {201, 400})
    if created.status_code != 201:
        return
    url = f"/api/v1/builds/uploads/{created.json()['id']}"
    put = client.put(url, chunk, content_type="application/octet-stream", HTTP_CONTENT_RANGE=content_range)
    no_server_error(put, {200, 400, 409})
    if finalize:
        done = client.post(url + "/finalize")
        no_server_error(done, {202, 400, 409})
        assert done.status_code != 202 or Version.objects.filter(game__slug=SLUG, name=body["version"]).exists()


def test_upload_with_a_huge_content_range_number_is_a_400(world: dict[str, Any], admin_user: Any) -> None:
    tally.bad_inputs("POST/PUT /api/v1/builds/uploads")
    client = _quiet(bearer_client(admin_user))
    body = {"game": SLUG, "version": "9.0", "filename": "b.tar", "total_size": 4}
    url = f"/api/v1/builds/uploads/{client.post('/api/v1/builds/uploads', body, format='json').json()['id']}"
    response = client.put(url, b"abcd", content_type="application/octet-stream",
                          HTTP_CONTENT_RANGE=f"bytes 0-{'9' * 5000}/4")
    assert response.status_code == 400, response.status_code


def test_an_empty_chunk_is_a_400(world: dict[str, Any], admin_user: Any) -> None:
    tally.bad_inputs("POST/PUT /api/v1/builds/uploads")
    client = _quiet(bearer_client(admin_user))
    body = {"game": SLUG, "version": "9.0", "filename": "b.tar", "total_size": 4}
    url = f"/api/v1/builds/uploads/{client.post('/api/v1/builds/uploads', body, format='json').json()['id']}"
    response = client.put(url, b"", content_type="application/octet-stream", HTTP_CONTENT_RANGE="bytes 0-3/4")
    assert response.status_code == 400, response.status_code
    assert client.get(url).json()["received"] == 0


@FUZZ_SMALL
@given(name=st.one_of(version_names, st.sampled_from(NUL_AND_FRIENDS)))
def test_push_with_hostile_version_names(world: dict[str, Any], name: str) -> None:
    tally.bad_inputs("builds.services.push_version(name=...)")
    src = world["src"]["1.0"].parent / "b-names"
    if not src.exists():
        (src / "data").mkdir(parents=True)
    (src / "data" / "x.bin").write_bytes(name.encode("utf-8", "surrogatepass") + b"\x01")
    before = set(world["game"].versions.values_list("name", flat=True))
    try:
        version = push_version(game=world["game"], name=name, source=src).version
    except BuildError:
        assert set(world["game"].versions.values_list("name", flat=True)) == before  # refused: nothing changed
        return
    assert version.name == name and name not in before
    assert builds_services.version_tree(version=version) is not None


def test_clients_used_here_talk_to_the_real_api(world: dict[str, Any], friend: Any) -> None:
    # Guard against a fuzz suite that only ever sees 401s or 404s: the happy paths answer 200.
    client: APIClient = bearer_client(friend)
    assert client.post(f"{API}/updates", {"from_version": "1.0"}, format="json").status_code == 200
    assert client.get(f"{API}/versions/2.0/manifest").status_code == 200
    assert client.get(f"/dl/file/{SLUG}/2.0/config.ini").status_code == 200


# --- NUL in URLs and query strings ------------------------------------------------------------------

_PARAM = re.compile(r"<(?:(?P<conv>[^>:]+):)?(?P<name>[^>]+)>")
_FILLS = {"slug": SLUG, "uuid": "6f1c8a1e-0000-4000-8000-000000000000", "int": "1", "pair": "1.0%00x__2.0",
          "path": "config.ini%00"}


def _routes(patterns: list[Any] | None = None, prefix: str = "") -> list[str]:
    out = []
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            out += _routes(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern) and isinstance(pattern.pattern, RoutePattern):
            out.append(prefix + str(pattern.pattern))
    return out


def _nul_urls() -> list[str]:
    urls = []
    for route in _routes():
        if route in ("accounts/logout/", "admin/logout/", "readyz"):
            continue  # logouts would end the session the walk needs; readyz is a 503 by design without a worker
        with_nul = _PARAM.sub(lambda m: _FILLS.get(m["name"], _FILLS.get(m["conv"] or "str", "1.0%00x")), route)
        urls.append("/" + with_nul)
        if "%00" not in with_nul:
            urls.append("/" + with_nul + "?q=%00&sort=%00&page=%00&next=%00&u=%00&exp=%00&sig=%00")
    return sorted(set(urls))


def test_nul_in_urls_and_query_strings_is_not_a_500(world: dict[str, Any], admin_user: Any) -> None:
    client = _quiet(bearer_client(admin_user))
    client.force_login(admin_user)
    failures = []
    for url in _nul_urls():
        # Admin forms are posted with their real fields by test_read_only_admin_records_cannot_be_added.
        for method in ("get",) if url.startswith("/admin/") else ("get", "post"):
            tally.bad_inputs("NUL in every URL and query string")
            response = getattr(client, method)(url)
            if response.status_code >= 500:
                failures.append(f"{method.upper()} {url} -> {response.status_code}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("model", ["cacheentry", "uploadsession"])
def test_read_only_admin_records_cannot_be_added(world: dict[str, Any], admin_user: Any, model: str) -> None:
    from builds.models import CacheEntry

    tally.bad_inputs("admin add forms of read-only records")
    client = _quiet(Client())
    client.force_login(admin_user)
    responses = [client.post(f"/admin/builds/{model}/add/", {}).status_code for _ in range(2)]
    assert not CacheEntry.objects.filter(relpath="").exists(), "an empty cache entry points at the cache root"
    assert responses == [403, 403], responses

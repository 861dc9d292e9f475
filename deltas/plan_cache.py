"""What the update planner reads on every request, made cheap without ever being stale.

A plan has two kinds of inputs:

- the manifests of the two versions, immutable once pushed: comparing them (the indirect route's
  estimate, which files differ) is cached per process, keyed by both versions' ids and hashes;
- everything that changes: which direct deltas are ready and their bundle sizes, the parent links
  (re-linked when a version is removed), the latest version. These are read from the database on
  every request, in one query whatever the length of the chain.

Nothing here is invalidated, on purpose: the worker makes deltas ready and `manage.py rm` re-links
versions in other processes than the gunicorn workers holding the caches, so an in-process
invalidation hook would miss them. The keys carry everything the cached values depend on instead.
"""

from __future__ import annotations

from dataclasses import dataclass

from builds.manifest_cache import WeightedLRU, manifest_key
from builds.models import Version
from deltas.models import DirectDelta

# Weight = paths listed: about 0.1 KB each, so at most ~5 MB per web process.
MAX_CACHED_PATHS = 50_000


@dataclass(frozen=True)
class IndirectEstimate:
    """The manifest comparison behind a plan: bytes of an indirect update, its paths, their new sizes."""

    download_bytes: int
    paths: tuple[str, ...]
    changed_bytes: int


@dataclass(frozen=True)
class ChainStep:
    """One ready direct delta of a chain, with what the plan shows of it."""

    from_version: str
    to_version: str
    to_total_size: int
    bundle_size: int
    bundle_sha256: str


_estimates: WeightedLRU[IndirectEstimate] = WeightedLRU(MAX_CACHED_PATHS)


def estimate_key(from_version: Version, to_version: Version) -> tuple[object, ...]:
    return (manifest_key(from_version), manifest_key(to_version))


def cached_estimate(*, from_version: Version, to_version: Version) -> IndirectEstimate | None:
    return _estimates.get(estimate_key(from_version, to_version))


def keep_estimate(*, from_version: Version, to_version: Version, estimate: IndirectEstimate) -> None:
    _estimates.put(estimate_key(from_version, to_version), estimate, weight=len(estimate.paths) + 1)


def direct_chain(*, from_version: Version, to_version: Version) -> list[ChainStep] | None:
    """The ready direct deltas leading from one version forward to another (one query), or None.

    A hop counts only if its delta starts at the current parent of the version it leads to, as
    re-linked by a removal; the history is linear in `seq`, so every hop lies in (from, to].
    """
    rows = DirectDelta.objects.filter(
        to_version__game_id=to_version.game_id,
        to_version__platform=to_version.platform,  # seq counts each platform's history on its own
        status=DirectDelta.Status.READY,
        to_version__seq__gt=from_version.seq,
        to_version__seq__lte=to_version.seq,
    ).values_list(
        "from_version_id", "to_version_id", "to_version__parent_id", "from_version__name",
        "to_version__name", "to_version__total_size", "bundle_size", "bundle_sha256",
    )
    into: dict[int, tuple[int, ChainStep]] = {}
    for from_id, to_id, parent_id, from_name, to_name, to_size, size, sha in rows:
        if from_id == parent_id:
            into[to_id] = (from_id, ChainStep(from_name, to_name, to_size, size, sha))
    chain: list[ChainStep] = []
    current = to_version.pk
    while current != from_version.pk:
        hop = into.pop(current, None)  # popped: a corrupt parent cycle ends the walk
        if hop is None:
            return None
        current, step = hop
        chain.append(step)
    chain.reverse()
    return chain


def clear() -> None:
    """Forget every cached estimate (tests; never needed for correctness)."""
    _estimates.clear()

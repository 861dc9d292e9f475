"""Human descriptions of what an install or update will cost, shown before anything starts."""

from __future__ import annotations

from mist_patcher.core.install import InstallResult
from mist_patcher.core.units import format_bytes
from mist_patcher.core.update import UpdateResult


def _size(n: int | None) -> str:
    return "unknown (the archive is not built yet)" if n is None else format_bytes(n)


def describe_install_plan(plan: InstallResult) -> str:
    return "\n".join([
        f"Install {plan.slug} {plan.version} into {plan.path}",
        f"  route:     full archive ({plan.reason})",
        f"  download:  {_size(plan.download_bytes)}",
        f"  disk:      {format_bytes(plan.disk_bytes)} needed while installing",
    ])


def describe_update_plan(plan: UpdateResult) -> str:
    if plan.up_to_date:
        return f"{plan.slug} is up to date ({plan.from_version})."
    lines = [
        f"Update {plan.slug} {plan.from_version} -> {plan.to_version}",
        f"  route:     {plan.route}" + (f" ({plan.reason})" if plan.reason else ""),
        f"  download:  {format_bytes(plan.download_bytes)}",
        f"  disk:      {format_bytes(plan.disk_bytes)} needed during the update",
    ]
    if plan.alternatives:
        alts = ", ".join(
            f"{name} {format_bytes(size) if isinstance(size, int) else 'n/a'}"
            for name, size in sorted(plan.alternatives.items())
        )
        lines.append(f"  compared:  {alts}")
    if plan.steps:
        lines.append(f"  steps:     {plan.steps} bundle(s)")
    return "\n".join(lines)

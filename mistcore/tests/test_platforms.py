"""The platform names shared by server and patcher."""

from __future__ import annotations

import pytest

from mistcore.platforms import PLATFORMS, PlatformError, current_platform, validate_platform


def test_the_three_platforms_and_validation() -> None:
    assert PLATFORMS[:3] == ("windows", "linux", "macos")
    assert validate_platform("linux") == "linux"
    with pytest.raises(PlatformError, match="must be one of windows, linux, macos"):
        validate_platform("Linux")


@pytest.mark.parametrize(
    ("system", "expected"),
    [("win32", "windows"), ("cygwin", "windows"), ("darwin", "macos"), ("linux", "linux"), ("freebsd14", "linux")],
)
def test_current_platform_from_sys_platform(system: str, expected: str) -> None:
    assert current_platform(system) == expected

"""environment.yml for conda users, derived from the pip lock that `make` installs."""

from __future__ import annotations

import sys


def lock_pins(text: str) -> dict[str, str]:
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line and "==" in line:
            name, version = line.split("==", 1)
            pins[name.strip().lower()] = version.strip()
    return pins


def environment_yml(lock_text: str, python: str | None = None) -> str:
    python = python or f"{sys.version_info.major}.{sys.version_info.minor}"
    pins = lock_pins(lock_text)
    lines = [
        "# Generated from requirements.lock by `make env-sync`; a test checks they agree.",
        "# No conda channel is needed beyond Python itself: every package is pinned for pip.",
        "name: allianceflow",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        f"  - python={python}",
        "  - pip",
        "  - pip:",
    ]
    lines += [f"      - {name}=={version}" for name, version in sorted(pins.items())]
    lines.append("      - -e .")
    return "\n".join(lines) + "\n"

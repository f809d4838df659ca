"""Debian packages as a fresh machine fetches them: ``apt-get download`` (no install) and ``dpkg-deb -x``."""

import subprocess
from pathlib import Path


def extract_debian_package(name: str, folder: Path) -> Path:
    """Download the package ``name`` into ``folder`` and unpack it there; the root of its file tree."""
    download = ["apt-get", "download", name]
    if subprocess.run(download, cwd=folder, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], check=True)  # a fresh machine has no package lists yet
        subprocess.run(download, cwd=folder, check=True, capture_output=True)
    package = next(folder.glob(f"{name}_*.deb"))
    root = folder / name
    subprocess.run(["dpkg-deb", "-x", str(package), str(root)], check=True)
    return root

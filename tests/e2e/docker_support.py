"""The Docker side of the e2e tests and bench: daemon check, test image, what nodes mount.

No registry is reachable here, so the test image `grid-test:local` is Debian's static
busybox (`apt-get install -y busybox-static`) as a root filesystem, imported with
`docker import`. A node in it runs this environment's Python from read-only bind mounts
of the host: the folders of `host_mounts()` (this repository, the venv, the Python
install) and the host's shared libraries (`/usr/lib`, `/usr/lib64`; the image links `/lib`
and `/lib64` into `/usr` like the host's merged /usr). That set is the minimum that starts
grid-node, and it lives only here.

The daemon is the one `scripts/docker-up.sh` starts (or any that answers at DOCKER_HOST).
Used by tests/e2e/test_docker_platform.py and bench/platforms.py.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests

from grid.platforms.docker import DockerConfig
from tests.e2e.systemd_container import host_mounts

TEST_IMAGE = "grid-test:local"
# Bump when rootfs_tar() changes: an image with another version is imported again.
IMAGE_VERSION = "2"
VERSION_LABEL = "grid.test-image"
NODE_UID = 1000  # owns /data, so a node run as this user writes a fresh volume (copy-up)
BUSYBOX = Path("/bin/busybox")
HOST_LIBS = ("/usr/lib", "/usr/lib64")
DIRS = ("bin", "usr", "etc", "tmp", "proc", "sys", "dev", "root", "run", "var")


def docker_client() -> Any:
    """A client of a daemon that answers, or None."""
    try:
        client = docker.from_env(timeout=30)  # negotiates the API version: fails if none answers
    except (docker.errors.DockerException, requests.RequestException):
        return None
    try:
        client.ping()
    except (docker.errors.DockerException, requests.RequestException):
        client.close()
        return None
    return client


def runtime_mounts() -> list[str]:
    """Bind mounts ("src:dst:ro") that let the test image run grid-node from this venv."""
    paths = [*HOST_LIBS, *(str(p) for p in host_mounts())]
    return [f"{path}:{path}:ro" for path in paths]


def node_env() -> dict[str, str]:
    """Environment of a node in the test image: grid-node on PATH, no bytecode writes."""
    return {
        "PATH": f"{Path(sys.prefix) / 'bin'}:/bin",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
    }


def docker_config(**overrides: Any) -> DockerConfig:
    """A DockerConfig for the test image: host network, the runtime mounts and environment."""
    values: dict[str, Any] = {
        "image": TEST_IMAGE,
        "mounts": runtime_mounts(),
        "env": node_env(),
        **overrides,
    }
    return DockerConfig(**values)


def rootfs_tar() -> bytes:
    """The test image's root filesystem as a tar: busybox, its applets, /lib links."""
    applets = subprocess.run(
        [str(BUSYBOX), "--list"], capture_output=True, text=True, check=True, timeout=10
    ).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add(name: str, kind: bytes, mode: int, data: bytes = b"", link: str = "") -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.size, info.linkname = kind, mode, len(data), link
            tar.addfile(info, io.BytesIO(data) if data else None)

        for name in DIRS:
            add(name, tarfile.DIRTYPE, 0o1777 if name == "tmp" else 0o755)
        data = tarfile.TarInfo("data")
        data.type, data.mode, data.uid, data.gid = tarfile.DIRTYPE, 0o755, NODE_UID, NODE_UID
        tar.addfile(data)
        add("bin/busybox", tarfile.REGTYPE, 0o755, BUSYBOX.read_bytes())
        for applet in applets:
            if applet != "busybox":
                add(f"bin/{applet}", tarfile.SYMTYPE, 0o777, link="busybox")
        add("lib", tarfile.SYMTYPE, 0o777, link="usr/lib")
        add("lib64", tarfile.SYMTYPE, 0o777, link="usr/lib64")
        add("etc/passwd", tarfile.REGTYPE, 0o644, b"root:x:0:0:root:/root:/bin/sh\n")
        add("etc/group", tarfile.REGTYPE, 0o644, b"root:x:0:\n")
    return buf.getvalue()


def ensure_test_image(client: Any) -> str | None:
    """Import the test image unless present at IMAGE_VERSION; why it cannot be, or None."""
    try:
        old = client.images.get(TEST_IMAGE)
    except docker.errors.ImageNotFound:
        old = None
    if old is not None and old.labels.get(VERSION_LABEL) == IMAGE_VERSION:
        return None
    if not os.access(BUSYBOX, os.X_OK):
        return f"{BUSYBOX} is missing: apt-get install -y busybox-static (scripts/docker-up.sh)"
    repository, tag = TEST_IMAGE.split(":")
    client.api.import_image_from_data(
        rootfs_tar(),
        repository=repository,
        tag=tag,
        changes=[f"LABEL {VERSION_LABEL}={IMAGE_VERSION}"],
    )
    if old is not None:  # the previous version, now untagged
        with contextlib.suppress(docker.errors.APIError):
            client.images.remove(old.id)
    return None

"""Root filesystems for the imported base images: Debian by debootstrap, and busybox.

The Debian rootfs is slow to make (a minute or two of downloads), so its tarball is
kept in a cache folder keyed by everything that shapes it; a second engine on the same
machine then imports the cached tarball in seconds.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import logging
import os
import platform
import shutil
import signal
import struct
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from workers.baseimages.certs import ExtraCa, cas_digest, install_extra_cas
from workers.baseimages.errors import BaseImageError

logger = logging.getLogger(__name__)

# Bump when customize_debian_rootfs changes what it writes, to retire cached tarballs.
ROOTFS_RECIPE_VERSION = "2"
DEBOOTSTRAP_TIMEOUT_SECONDS = 1800.0
DEBOOTSTRAP_PACKAGES = ("ca-certificates",)
# Stops package maintainer scripts from starting services inside image builds.
POLICY_RC_D = (
    "#!/bin/sh\n# Services are never started while building images.\nexit 101\n"
)
PT_INTERP = 3  # the ELF program header type naming a dynamic loader
# Images keep neither downloaded .deb files nor apt's binary caches (see apt.conf(5));
# together they added about 100 MB to each image that installs packages.
APT_SLIM_CONF = """\
APT::Keep-Downloaded-Packages "false";
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
"""
BUSYBOX_PASSWD = (
    "root:x:0:0:root:/root:/bin/sh\n"
    "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
)
BUSYBOX_GROUP = "root:x:0:\nnogroup:x:65534:\n"


@dataclass(frozen=True)
class DebianRootfsSpec:
    """Everything that decides the content of a debootstrapped Debian rootfs."""

    mirror: str
    suite: str
    cas: tuple[ExtraCa, ...] = ()

    def cache_key(self) -> str:
        """Name the tarball by suite and a digest of mirror, CAs, arch and recipe."""
        parts = (
            self.mirror,
            self.suite,
            platform.machine(),
            ROOTFS_RECIPE_VERSION,
            cas_digest(self.cas),
        )
        digest = hashlib.sha256("\n".join(parts).encode()).hexdigest()
        return f"debian-{self.suite}-{digest[:16]}"


def cached_debian_rootfs(spec: DebianRootfsSpec, cache_dir: Path) -> Path:
    """Return the cached rootfs tarball for ``spec``, debootstrapping it if needed."""
    folder = cache_dir / "rootfs"
    folder.mkdir(parents=True, exist_ok=True)
    tarball = folder / f"{spec.cache_key()}.tar"
    with _locked(folder / f"{spec.cache_key()}.lock"):
        if tarball.is_file():
            logger.info("base-images: reusing cached rootfs %s", tarball)
        else:
            make_debian_rootfs_tarball(spec, tarball)
    return tarball


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    # Two engines ensuring images at once must not debootstrap the same tarball twice.
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def make_debian_rootfs_tarball(spec: DebianRootfsSpec, tarball: Path) -> None:
    """Debootstrap a minimal Debian, prepare it for containers and pack it as a tar."""
    workdir = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=tarball.parent))
    try:
        rootfs = workdir / "rootfs"
        run_debootstrap(spec, rootfs, log_path=workdir / "debootstrap.log")
        customize_debian_rootfs(rootfs, spec.cas)
        pack_rootfs(rootfs, tarball)
    finally:
        remove_tree(workdir)


def debootstrap_argv(spec: DebianRootfsSpec, rootfs: Path) -> list[str]:
    """Spell the debootstrap command line for a minimal rootfs with CA certificates."""
    include = ",".join(DEBOOTSTRAP_PACKAGES)
    return [
        "debootstrap",
        "--variant=minbase",
        f"--include={include}",
        spec.suite,
        str(rootfs),
        spec.mirror,
    ]


def run_debootstrap(spec: DebianRootfsSpec, rootfs: Path, *, log_path: Path) -> None:
    """Run debootstrap into ``rootfs``, raising with its log's tail when it fails."""
    logger.info("base-images: debootstrap suite=%s mirror=%s", spec.suite, spec.mirror)
    started = time.monotonic()
    code = run_logged(
        debootstrap_argv(spec, rootfs),
        log_path=log_path,
        timeout_seconds=DEBOOTSTRAP_TIMEOUT_SECONDS,
    )
    if code != 0:
        tail = _tail(log_path) + _tail(rootfs / "debootstrap" / "debootstrap.log")
        raise BaseImageError(
            f"debootstrap of {spec.suite} from {spec.mirror} failed (exit {code}); "
            f"check the mirror and the network. Log tail:\n{tail}"
        )
    logger.info("base-images: debootstrap took %.0fs", time.monotonic() - started)


def run_logged(argv: Sequence[str], *, log_path: Path, timeout_seconds: float) -> int:
    """Run a command logging to ``log_path``; kill its process group on timeout."""
    try:
        with open(log_path, "ab") as log:
            child = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
    except FileNotFoundError as exc:
        raise BaseImageError(
            f"{argv[0]} is not installed; install Debian's {argv[0]} package."
        ) from exc
    try:
        return child.wait(timeout=timeout_seconds)
    except subprocess.TimeoutExpired as exc:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()
        raise BaseImageError(
            f"{argv[0]} ran longer than {timeout_seconds:.0f}s"
        ) from exc


def _tail(path: Path, size: int = 1500) -> str:
    return path.read_text(errors="replace")[-size:] if path.is_file() else ""


def customize_debian_rootfs(rootfs: Path, cas: Sequence[ExtraCa]) -> None:
    """Make a fresh debootstrap fit for images: no caches, no host files, extra CAs."""
    policy = rootfs / "usr/sbin/policy-rc.d"
    policy.write_text(POLICY_RC_D)
    policy.chmod(0o755)
    (rootfs / "etc/apt/apt.conf.d/90farm-slim").write_text(APT_SLIM_CONF)
    drop_apt_caches(rootfs)
    # debootstrap copies these from the host; the engine mounts its own at run time.
    for host_file in ("etc/hostname", "etc/resolv.conf"):
        (rootfs / host_file).unlink(missing_ok=True)
    install_extra_cas(rootfs, cas)


def drop_apt_caches(rootfs: Path) -> None:
    """Delete package lists, downloaded packages and apt's binary caches."""
    for folder in ("var/cache/apt", "var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (rootfs / folder).glob("*"):
            if entry.is_file() and entry.name != "lock":
                entry.unlink()


def pack_rootfs(rootfs: Path, tarball: Path) -> None:
    """Pack ``rootfs`` into ``tarball`` with numeric owners, replacing it atomically."""
    partial = tarball.with_name(tarball.name + ".partial")
    argv = [
        "tar",
        "--numeric-owner",
        "--format=gnu",
        "-C",
        str(rootfs),
        "-cf",
        str(partial),
        ".",
    ]
    code = run_logged(argv, log_path=rootfs.parent / "tar.log", timeout_seconds=600)
    if code != 0:
        log_tail = _tail(rootfs.parent / "tar.log")
        raise BaseImageError(f"Packing the rootfs failed:\n{log_tail}")
    partial.replace(tarball)
    logger.info(
        "base-images: packed rootfs %s (%d MB)",
        tarball,
        tarball.stat().st_size // 1_000_000,
    )


def mounts_below(folder: Path) -> list[str]:
    """List mount points at or below ``folder``, deepest first, from mountinfo."""
    prefix = str(folder.resolve())
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
    points = [line.split()[4].replace("\\040", " ") for line in lines]
    inside = [p for p in points if p == prefix or p.startswith(prefix + "/")]
    return sorted(inside, key=len, reverse=True)


def remove_tree(folder: Path) -> None:
    """Delete a work folder, first unmounting what a failed debootstrap left mounted."""
    for point in mounts_below(folder):
        subprocess.run(["umount", "--lazy", point], check=False)
    shutil.rmtree(folder, ignore_errors=True)


def busybox_applets(busybox: Path) -> list[str]:
    """Ask a busybox binary for the paths of all its applets ("usr/bin/wget", ...)."""
    try:
        listing = subprocess.run(
            [str(busybox), "--list-full"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise BaseImageError(
            f"Cannot run {busybox}; install Debian's busybox-static package."
        ) from exc
    return [line.strip() for line in listing.stdout.splitlines() if line.strip()]


def has_interpreter(elf: bytes) -> bool:
    """Tell whether an ELF binary names a dynamic loader, that is, is not static."""
    if elf[:4] != b"\x7fELF":
        raise BaseImageError("The busybox file is not an ELF binary.")
    order = "<" if elf[5] == 1 else ">"
    # Header offsets from the ELF specification, for 64-bit (class 2) and 32-bit files.
    if elf[4] == 2:
        (table,) = struct.unpack_from(order + "Q", elf, 0x20)
        entry_size, count = struct.unpack_from(order + "HH", elf, 0x36)
    else:
        (table,) = struct.unpack_from(order + "I", elf, 0x1C)
        entry_size, count = struct.unpack_from(order + "HH", elf, 0x2A)
    kinds = (
        struct.unpack_from(order + "I", elf, table + i * entry_size)[0]
        for i in range(count)
    )
    return PT_INTERP in kinds


def busybox_rootfs_tar(busybox: bytes, applets: Sequence[str]) -> bytes:
    """Build a GNU tar of a rootfs holding a static busybox and a link per applet."""
    if has_interpreter(busybox):
        raise BaseImageError("busybox is dynamically linked; install busybox-static.")
    # "linuxrc" (an init for initramfs) is the only applet outside a folder; not wanted.
    paths = [applet.strip("/") for applet in applets]
    links = [path for path in paths if "/" in path and path != "bin/busybox"]
    folders = {"bin", "etc", "root", "tmp", "var", "usr"}
    folders |= {str(Path(link).parent) for link in links} - {"."}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for folder in sorted(folders):
            _add_dir(tar, folder, 0o1777 if folder == "tmp" else 0o755)
        _add_file(tar, "bin/busybox", busybox, 0o755)
        _add_file(tar, "etc/passwd", BUSYBOX_PASSWD.encode(), 0o644)
        _add_file(tar, "etc/group", BUSYBOX_GROUP.encode(), 0o644)
        for link in sorted(links):
            _add_symlink(tar, link, "/bin/busybox")
    return buffer.getvalue()


def _add_dir(tar: tarfile.TarFile, name: str, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def _add_symlink(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    tar.addfile(info)

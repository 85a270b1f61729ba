"""The Debian package: built once with ``make deb``, inspected with dpkg-deb, then installed
for real with ``dpkg --root`` into throwaway roots, so its maintainer scripts run chrooted
(systemd-sysusers, systemd-tmpfiles, deb-systemd-helper) as they would on a gateway.

A throwaway root is not a container: it is a folder with its own /etc (a copy of the host's),
its own dpkg database (a copy of the host's, so the package's Depends resolve against what is
really installed), and the host's /usr (and /bin, /lib, ... on a system without merged /usr)
mounted as an overlay inside a private mount namespace (``unshare --mount``): the package's
files under /usr land in the overlay's upper layer, never in the host's /usr. No systemd
manager runs in there (nor could one here: it would need to be PID 1), so what postinst does
when systemd runs (start, try-restart) is not exercised; what it does without one is.

Needs root and debhelper, dpkg-dev, python3-venv, systemd and util-linux (.ci/run installs
them), and the package index for the venv's dependencies. Skipped without them locally;
with CI set, fails instead.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from swm_edge.testing import unavailable

# One worker runs the whole module (pytest-xdist --dist loadgroup), so the package is built once.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900), pytest.mark.xdist_group("deb")]

REPO = Path(__file__).resolve().parents[2]
PYPROJECT_VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
#: What the package needs on the host to be built and installed here.
TOOLS = ("make", "dpkg-buildpackage", "dh", "dpkg-deb", "dpkg", "unshare", "chroot", "mount")
#: Top-level folders the root shares with the host (symlinks on a merged-/usr system).
SHARED_TOP = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")

VALID_CONFIG = """\
gateway: {id: gw-deb-test-0001}
mqtt: {host: 127.0.0.1}
buffer: {path: /var/lib/swm-edge/buffer.sqlite}
buses:
  - {id: lan, type: modbus-tcp, host: 192.0.2.10}
devices:
  - {id: inlet-flow, bus: lan, unit: 1, interval: 10, profile: siemens-mag6000}
"""
#: Line 7, column 51 of this one is the bad interval.
INVALID_CONFIG = VALID_CONFIG.replace("interval: 10", "interval: -5")
VALIDATE = ("/usr/bin/swm-edge", "validate", "--config", "/etc/swm-edge/config.yaml")


def _require_tools(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        unavailable(f"missing {', '.join(missing)} (apt-get install debhelper dpkg-dev ...)")


def _require_root() -> None:
    if os.geteuid() != 0:
        unavailable("installing the package into a throwaway root needs root (mount, chroot)")
    _require_tools(*TOOLS)


def _run(cmd: Sequence[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, check=False, **kwargs
    )


def _ok(cmd: Sequence[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    proc = _run(cmd, **kwargs)
    assert proc.returncode == 0, f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


# -- the build -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Build:
    deb: Path
    build_dir: Path  # DEB_BUILD_DIR: the path that must not appear in the package
    extracted: Path  # dpkg-deb -x of the package


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Build:
    """`make deb` into a temporary DIST and build dir (the developer's dist/ stays as is)."""
    _require_root()
    tmp = tmp_path_factory.mktemp("deb")
    dist, build_dir = tmp / "dist", tmp / "build"
    _ok(["make", "-C", REPO, "deb", f"DIST={dist}", f"DEB_BUILD_DIR={build_dir}"])
    debs = sorted(dist.glob("swm-edge_*.deb"))
    assert len(debs) == 1, debs
    extracted = tmp / "extracted"
    _ok(["dpkg-deb", "-x", debs[0], extracted])
    shutil.rmtree(build_dir)  # 150 MB of staging tree; only its name is needed below
    return Build(debs[0], build_dir, extracted)


def _control(deb: Path) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in _ok(["dpkg-deb", "-f", deb]).stdout.splitlines():
        if line[:1] not in (" ", "\t") and ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    return fields


def test_changelog_and_pyproject_agree_on_the_version() -> None:
    _require_tools("dpkg-parsechangelog")
    version = _ok(["dpkg-parsechangelog", "-l", REPO / "debian/changelog", "-S", "Version"])
    assert version.stdout.strip() == PYPROJECT_VERSION


def test_control_fields(build: Build) -> None:
    arch = _ok(["dpkg", "--print-architecture"]).stdout.strip()
    assert build.deb.name == f"swm-edge_{PYPROJECT_VERSION}_{arch}.deb"
    fields = _control(build.deb)
    assert fields["Package"] == "swm-edge"
    assert fields["Version"] == PYPROJECT_VERSION
    # Compiled extensions inside: built for this architecture, not "all".
    assert fields["Architecture"] == arch
    depends = [d.strip() for d in fields["Depends"].split(",")]
    # The venv's python is /usr/bin/python3 and its packages are in lib/python3.11.
    assert "python3 (>= 3.11)" in depends
    assert "python3 (<< 3.12)" in depends
    # dh_installsysusers: postinst calls systemd-sysusers.
    assert "systemd | systemd-standalone-sysusers | systemd-sysusers" in depends
    assert any(d.startswith("libc6") for d in depends)  # dh_shlibdeps saw the .so files


def test_conffiles_and_maintainer_scripts(build: Build, tmp_path: Path) -> None:
    _ok(["dpkg-deb", "-e", build.deb, tmp_path / "DEBIAN"])
    conffiles = (tmp_path / "DEBIAN/conffiles").read_text().split()
    assert conffiles == ["/etc/swm-edge/config.example.yaml"]
    postinst = (tmp_path / "DEBIAN/postinst").read_text()
    # The debhelper snippets, in the order that works: user, then folders, then the unit.
    sysusers = postinst.index("systemd-sysusers")
    tmpfiles = postinst.index("systemd-tmpfiles")
    enable = postinst.index("deb-systemd-helper enable 'swm-edge.service'")
    assert sysusers < tmpfiles < enable
    # Upgrade: restart only if running; never an unconditional start from debhelper.
    assert "deb-systemd-invoke try-restart 'swm-edge.service'" in postinst
    assert "_dh_action=start" not in postinst
    assert os.access(tmp_path / "DEBIAN/postrm", os.X_OK)


def _contents(deb: Path) -> dict[str, tuple[str, str, str]]:
    """path -> (mode string, owner/group, symlink target or '')."""
    entries = {}
    for line in _ok(["dpkg-deb", "--contents", deb]).stdout.splitlines():
        mode, owner, _size, _date, _time, rest = line.split(None, 5)
        path, _, target = rest.partition(" -> ")
        entries[path.removeprefix(".").rstrip("/") or "/"] = (mode, owner, target)
    return entries


def test_contents(build: Build) -> None:
    files = _contents(build.deb)
    expected = {
        "/opt/swm-edge/bin/swm-edge": "-rwxr-xr-x",
        "/opt/swm-edge/pyvenv.cfg": "-rw-r--r--",
        "/lib/systemd/system/swm-edge.service": "-rw-r--r--",
        "/usr/lib/sysusers.d/swm-edge.conf": "-rw-r--r--",
        "/usr/lib/tmpfiles.d/swm-edge.conf": "-rw-r--r--",
        "/etc/swm-edge/config.example.yaml": "-rw-r--r--",
        "/usr/share/doc/swm-edge/README.md": "-rw-r--r--",
        "/usr/share/doc/swm-edge/operations.md": "-rw-r--r--",
        "/usr/share/doc/swm-edge/copyright": "-rw-r--r--",
        "/usr/share/doc/swm-edge/requirements.frozen.txt": "-rw-r--r--",
    }
    for path, mode in expected.items():
        assert path in files, f"{path} missing from the package"
        assert files[path][0] == mode, (path, files[path])
    assert files["/usr/bin/swm-edge"][2] == "/opt/swm-edge/bin/swm-edge"
    assert files["/opt/swm-edge/bin/python3"][2] == "/usr/bin/python3"
    assert {owner for _mode, owner, _target in files.values()} == {"root/root"}
    # The buffer's folder is made by tmpfiles at install, not shipped: dpkg would otherwise
    # remove it (with whatever the admin left there) when the package is removed.
    assert not any(p.startswith("/var/lib/swm-edge") for p in files)
    # The agent, its drivers and its dependencies are in the venv.
    site = "/opt/swm-edge/lib/python3.11/site-packages"
    for package in ("swm_edge", "swm_edge_drivers", "pydantic_core", "cryptography", "paho"):
        assert f"{site}/{package}" in files, package


def test_shipped_files_are_the_repository_s(build: Build) -> None:
    pairs = {
        "lib/systemd/system/swm-edge.service": "systemd/swm-edge.service",
        "usr/lib/sysusers.d/swm-edge.conf": "systemd/swm-edge.sysusers",
        "usr/lib/tmpfiles.d/swm-edge.conf": "systemd/swm-edge.tmpfiles",
        "etc/swm-edge/config.example.yaml": "config/example.yaml",
    }
    for shipped, source in pairs.items():
        assert (build.extracted / shipped).read_bytes() == (REPO / source).read_bytes(), shipped


def test_no_build_path_left_in_the_package(build: Build) -> None:
    """Shebangs, activate scripts, pyvenv.cfg, RECORDs, bytecode: all name /opt/swm-edge."""
    needle = str(build.build_dir)
    leftovers = _run(["grep", "-rl", "--fixed-strings", needle, build.extracted])
    assert leftovers.returncode == 1, f"{needle} found in:\n{leftovers.stdout}"
    venv = build.extracted / "opt/swm-edge"
    assert (venv / "bin/swm-edge").read_text().startswith("#!/opt/swm-edge/bin/python\n")
    assert "command = /usr/bin/python3 -m venv /opt/swm-edge\n" in (venv / "pyvenv.cfg").read_text()
    # Bytecode is shipped (the service cannot write /opt) and names its final path.
    cli_pyc = list(
        (venv / "lib/python3.11/site-packages/swm_edge/cli/__pycache__").glob("__init__.*.pyc")
    )
    assert len(cli_pyc) == 1
    assert b"/opt/swm-edge/lib/python3.11/site-packages/swm_edge/cli/__init__.py" in (
        cli_pyc[0].read_bytes()
    )


# -- installing it ---------------------------------------------------------------------------


class Root:
    """A throwaway root: own /etc, /var, /opt; the host's /usr etc. through overlays."""

    def __init__(self, base: Path) -> None:
        self.path = base / "root"
        self.layers = base / "layers"
        self.path.mkdir()
        self.layers.mkdir()
        self.overlays: list[str] = []
        # An overlay's upper layer cannot be on overlayfs (a container's root file system):
        # then the layers live on a tmpfs, unmounted by close().
        self.layers_mounted = _ok(["stat", "-f", "-c", "%T", base]).stdout.strip() == "overlayfs"
        if self.layers_mounted:
            _ok(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", self.layers])
        for top in SHARED_TOP:
            host = Path("/") / top
            if host.is_symlink():
                (self.path / top).symlink_to(os.readlink(host))
            elif host.is_dir():
                (self.path / top).mkdir()
                for layer in ("upper", "work"):
                    (self.layers / top / layer).mkdir(parents=True)
                self.overlays.append(top)
        shutil.copytree("/etc", self.path / "etc", symlinks=True)
        shutil.copytree("/var/lib/dpkg", self.path / "var/lib/dpkg", symlinks=True)
        for folder in ("var/log", "var/cache", "var/tmp", "tmp", "run", "dev", "proc", "root"):
            (self.path / folder).mkdir(parents=True, exist_ok=True)
        (self.path / "tmp").chmod(0o1777)
        (self.path / "var/tmp").chmod(0o1777)
        self._forget_swm_edge()

    def close(self) -> None:
        if self.layers_mounted:
            _ok(["umount", self.layers])
            self.layers_mounted = False

    def _forget_swm_edge(self) -> None:
        """The host's own swm-edge user or config (a developer's machine) must not leak in."""
        for name in ("passwd", "group", "shadow", "gshadow"):
            file = self.path / "etc" / name
            if file.exists():
                lines = file.read_text().splitlines(keepends=True)
                kept = [line for line in lines if not line.startswith("swm-edge:")]
                file.write_text("".join(kept))
        shutil.rmtree(self.path / "etc/swm-edge", ignore_errors=True)
        wants = self.path / "etc/systemd/system/multi-user.target.wants/swm-edge.service"
        wants.unlink(missing_ok=True)

    def run(
        self, *cmd: str | Path, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run a host command in a private mount namespace where the root is complete."""
        mounts = [
            f"mount -t overlay overlay -o lowerdir=/{top},upperdir={self.layers / top / 'upper'}"
            f",workdir={self.layers / top / 'work'} {self.path / top}"
            for top in self.overlays
        ]
        mounts += [
            f"mount --rbind /dev {self.path / 'dev'}",
            f"mount --rbind /proc {self.path / 'proc'}",
        ]
        script = "set -e; " + "; ".join(mounts) + '; exec "$@"'
        return _run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *cmd],
            env=env,
        )

    def chroot(self, *cmd: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a command inside the root (as `user`, with its groups, if given)."""
        prefix: list[str] = ["chroot"]
        if user is not None:
            uid, gid = self.ids(user)
            groups = [str(g) for g in self.groups_of(user)]
            prefix += [f"--userspec={uid}:{gid}", f"--groups={','.join(groups)}"]
        return self.run(*prefix, self.path, *cmd)

    def dpkg(self, *args: str | Path, env: dict[str, str] | None = None) -> str:
        full_env = {**os.environ, **(env or {})}
        full_env.setdefault("DEBIAN_FRONTEND", "noninteractive")
        proc = self.run("dpkg", f"--root={self.path}", "--force-confold", *args, env=full_env)
        assert proc.returncode == 0, f"dpkg {args} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout + proc.stderr

    def passwd(self, user: str) -> list[str]:
        for line in (self.path / "etc/passwd").read_text().splitlines():
            if line.split(":")[0] == user:
                return line.split(":")
        raise AssertionError(f"no user {user} in {self.path}/etc/passwd")

    def group(self, name: str) -> list[str]:
        for line in (self.path / "etc/group").read_text().splitlines():
            if line.split(":")[0] == name:
                return line.split(":")
        raise AssertionError(f"no group {name} in {self.path}/etc/group")

    def ids(self, user: str) -> tuple[int, int]:
        entry = self.passwd(user)
        return int(entry[2]), int(entry[3])

    def groups_of(self, user: str) -> list[int]:
        gids = []
        for line in (self.path / "etc/group").read_text().splitlines():
            name, _pw, gid, members = line.split(":")
            if name == user or user in members.split(","):
                gids.append(int(gid))
        return gids

    def status(self, package: str) -> str:
        proc = _run(["dpkg-query", f"--root={self.path}", "-W", "-f=${Status}", package])
        return proc.stdout.strip() if proc.returncode == 0 else "not known"


def _host_state() -> dict[str, bool]:
    paths = ("/opt/swm-edge", "/usr/bin/swm-edge", "/etc/swm-edge", "/var/lib/swm-edge")
    paths += ("/lib/systemd/system/swm-edge.service", "/usr/lib/sysusers.d/swm-edge.conf")
    return {p: os.path.lexists(p) for p in paths}


@contextmanager
def _new_root(tmp: Path, build: Build) -> Iterator[Root]:
    root = Root(tmp)
    try:
        before = _host_state()
        output = root.dpkg("-i", build.deb)
        assert _host_state() == before, "installing into the throwaway root touched the host"
        assert root.status("swm-edge") == "install ok installed", output
        yield root
    finally:
        root.close()


@pytest.fixture(scope="module")
def installed(build: Build, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Root]:
    with _new_root(tmp_path_factory.mktemp("root"), build) as root:
        yield root


def test_install_creates_the_user_in_dialout(installed: Root) -> None:
    entry = installed.passwd("swm-edge")
    assert entry[5] == "/var/lib/swm-edge"
    assert entry[6].endswith("/nologin")
    uid, gid = int(entry[2]), int(entry[3])
    assert 0 < uid < 1000  # a system user
    assert int(installed.group("swm-edge")[2]) == gid
    assert "swm-edge" in installed.group("dialout")[3].split(",")


def test_install_creates_the_folders(installed: Root) -> None:
    uid, gid = installed.ids("swm-edge")
    data = (installed.path / "var/lib/swm-edge").stat()
    assert (data.st_uid, data.st_gid, stat.S_IMODE(data.st_mode)) == (uid, gid, 0o750)
    conf = (installed.path / "etc/swm-edge").stat()
    assert (conf.st_uid, conf.st_gid, stat.S_IMODE(conf.st_mode)) == (0, gid, 0o750)


def test_install_enables_the_service(installed: Root) -> None:
    wants = installed.path / "etc/systemd/system/multi-user.target.wants/swm-edge.service"
    assert os.readlink(wants) == "/lib/systemd/system/swm-edge.service"
    # ... without starting it: no config yet, no systemd here; the agent's run would show up
    # as a buffer or a status socket.
    assert list((installed.path / "var/lib/swm-edge").iterdir()) == []


def test_installed_unit_verifies(installed: Root) -> None:
    """systemd-analyze verify against the installed tree: ExecStart= resolves to the venv's
    script through /usr/bin/swm-edge, /bin/kill exists, the targets it names exist."""
    proc = installed.run(
        "systemd-analyze", "verify", f"--root={installed.path}", "swm-edge.service"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout + proc.stderr == ""


def test_installed_command_runs(installed: Root) -> None:
    proc = installed.chroot("/usr/bin/swm-edge", "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"swm-edge, version {PYPROJECT_VERSION}"


def _write_config(root: Root, text: str) -> None:
    config = root.path / "etc/swm-edge/config.yaml"
    config.write_text(text)
    config.chmod(0o640)
    os.chown(config, 0, root.ids("swm-edge")[1])


def test_installed_validate_as_the_service_user(installed: Root) -> None:
    _write_config(installed, VALID_CONFIG)
    try:
        ok = installed.chroot(*VALIDATE, user="swm-edge")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "/etc/swm-edge/config.yaml: OK (1 buses, 1 devices" in ok.stdout

        _write_config(installed, INVALID_CONFIG)
        bad = installed.chroot(*VALIDATE, user="swm-edge")
        assert bad.returncode == 2, bad.stdout + bad.stderr
        assert re.search(
            r"^/etc/swm-edge/config\.yaml:7:51: devices\.0\.interval: ",
            bad.stdout + bad.stderr,
            re.MULTILINE,
        ), bad.stdout + bad.stderr
    finally:
        (installed.path / "etc/swm-edge/config.yaml").unlink()


def test_reinstall_keeps_an_edited_example_and_the_user(installed: Root, build: Build) -> None:
    """A reinstall runs the upgrade paths of the maintainer scripts (preinst upgrade,
    postinst configure <old version>); the edited conffile is the admin's and stays."""
    example = installed.path / "etc/swm-edge/config.example.yaml"
    original = example.read_text()
    example.write_text(original + "# edited by the admin\n")
    try:
        users_before = (installed.path / "etc/passwd").read_text().count("swm-edge:")
        installed.dpkg("-i", build.deb)
        assert example.read_text().endswith("# edited by the admin\n")
        assert (installed.path / "etc/passwd").read_text().count("swm-edge:") == users_before
        data = (installed.path / "var/lib/swm-edge").stat()
        assert stat.S_IMODE(data.st_mode) == 0o750
    finally:
        example.write_text(original)


# -- removing it -----------------------------------------------------------------------------


@pytest.fixture
def root_with_data(build: Build, tmp_path: Path) -> Iterator[Root]:
    """A fresh root with the package installed and a buffer in /var/lib/swm-edge."""
    with _new_root(tmp_path, build) as root:
        _write_config(root, VALID_CONFIG)
        buffer = root.path / "var/lib/swm-edge/buffer.sqlite"
        buffer.write_bytes(b"undelivered readings")
        os.chown(buffer, *root.ids("swm-edge"))
        yield root


def _assert_purged_except_data(root: Root, output: str) -> None:
    assert root.status("swm-edge") == "not known", output
    assert not (root.path / "opt/swm-edge").exists()
    assert not (root.path / "etc/systemd/system/multi-user.target.wants/swm-edge.service").exists()
    assert not (root.path / "etc/swm-edge/config.example.yaml").exists()
    # The admin's config is not the package's: kept, and said so.
    assert (root.path / "etc/swm-edge/config.yaml").exists()
    assert "kept /etc/swm-edge" in output and "config.yaml" in output
    # Debian policy: the system user stays.
    root.passwd("swm-edge")


def test_remove_then_purge_keeps_the_buffer_without_opt_in(root_with_data: Root) -> None:
    root = root_with_data
    # remove: the program goes; config, buffer and the enable state stay for a reinstall.
    output = root.dpkg("--remove", "swm-edge")
    assert root.status("swm-edge") == "deinstall ok config-files", output
    assert not (root.path / "opt/swm-edge").exists()
    assert (root.path / "etc/swm-edge/config.example.yaml").exists()
    assert (root.path / "var/lib/swm-edge/buffer.sqlite").exists()
    # purge without opting in: the buffer stays, and the admin is told where and how.
    output = root.dpkg("--purge", "swm-edge", env={"SWM_EDGE_PURGE_DATA": ""})
    _assert_purged_except_data(root, output)
    buffer = root.path / "var/lib/swm-edge/buffer.sqlite"
    assert buffer.read_bytes() == b"undelivered readings"
    assert "kept /var/lib/swm-edge" in output
    assert "SWM_EDGE_PURGE_DATA=yes" in output


def test_purge_removes_the_buffer_with_the_environment_variable(root_with_data: Root) -> None:
    output = root_with_data.dpkg("--purge", "swm-edge", env={"SWM_EDGE_PURGE_DATA": "yes"})
    _assert_purged_except_data(root_with_data, output)
    assert not (root_with_data.path / "var/lib/swm-edge").exists()
    assert "removed /var/lib/swm-edge" in output


def test_purge_removes_the_buffer_with_the_marker_file(root_with_data: Root) -> None:
    (root_with_data.path / "var/lib/swm-edge/PURGE").touch()
    output = root_with_data.dpkg("--purge", "swm-edge", env={"SWM_EDGE_PURGE_DATA": ""})
    _assert_purged_except_data(root_with_data, output)
    assert not (root_with_data.path / "var/lib/swm-edge").exists()


def test_root_layers_really_held_the_usr_files(installed: Root) -> None:
    """The package's /usr files went to the overlay's upper layer (and _new_root checked
    that the host has none of them)."""
    assert "usr" in installed.overlays
    upper = installed.layers / "usr/upper"
    assert (upper / "lib/sysusers.d/swm-edge.conf").is_file()
    assert os.readlink(upper / "bin/swm-edge") == "/opt/swm-edge/bin/swm-edge"


# -- running it in the unit's sandbox ----------------------------------------------------------
#
# systemd cannot run here, so the unit's sandbox is rebuilt around the installed agent from
# the same parts: the kernel's seccomp with systemd's own system call groups (as listed by
# `systemd-analyze syscall-filter`) combined the way systemd combines the unit's
# SystemCallFilter= lines, systemd's MemoryDenyWriteExecute= and RestrictAddressFamilies=
# rules, NoNewPrivileges, the service user and groups, UMask, a read-only root but for
# /var/lib/swm-edge (ProtectSystem=strict) and a private /tmp. An emulation, not systemd:
# it shows that the agent's own calls (adjtimex, ctypes, cryptography, SQLite, MQTT) pass
# the filters the unit asks for; mount namespaces, device cgroups and /proc options are not
# rebuilt.

SANDBOX_RUNNER = r"""
import ctypes, os, sys
root, uid, gid, groups, allowed, families, *cmd = sys.argv[1:]
seccomp = ctypes.CDLL("libseccomp.so.2")
libc = ctypes.CDLL(None, use_errno=True)

class Cmp(ctypes.Structure):  # struct scmp_arg_cmp
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]

seccomp.seccomp_init.restype = ctypes.c_void_p
seccomp.seccomp_init.argtypes = [ctypes.c_uint32]
seccomp.seccomp_rule_add_array.argtypes = [
    ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(Cmp)]
seccomp.seccomp_load.argtypes = [ctypes.c_void_p]
seccomp.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
ALLOW, LT, EQ, GT, MASKED_EQ = 0x7FFF0000, 2, 4, 6, 7
def errno(e): return 0x00050000 | e
def rule(ctx, action, name, *cmps):
    nr = seccomp.seccomp_syscall_resolve_name(name.encode())
    if nr == -1:  # a name libseccomp does not know
        return
    array = (Cmp * len(cmps))(*cmps) if cmps else None
    rc = seccomp.seccomp_rule_add_array(ctx, action, nr, len(cmps), array)
    if rc != 0:
        raise OSError(-rc, f"seccomp_rule_add {name}")

# MemoryDenyWriteExecute=yes, as systemd's seccomp_memory_deny_write_execute() does it.
W, X, SHM_EXEC, EPERM, EAFNOSUPPORT = 0x2, 0x4, 0o100000, 1, 97
mdwe = seccomp.seccomp_init(ALLOW)
rule(mdwe, errno(EPERM), "mmap", Cmp(2, MASKED_EQ, W | X, W | X))
rule(mdwe, errno(EPERM), "mprotect", Cmp(2, MASKED_EQ, X, X))
rule(mdwe, errno(EPERM), "pkey_mprotect", Cmp(2, MASKED_EQ, X, X))
rule(mdwe, errno(EPERM), "shmat", Cmp(2, MASKED_EQ, SHM_EXEC, SHM_EXEC))
# RestrictAddressFamilies=: socket() with any other family fails with EAFNOSUPPORT.
ok = {int(f) for f in families.split(",")}
afs = seccomp.seccomp_init(ALLOW)
for family in range(max(ok)):
    if family not in ok:
        rule(afs, errno(EAFNOSUPPORT), "socket", Cmp(0, EQ, family, 0))
rule(afs, errno(EAFNOSUPPORT), "socket", Cmp(0, GT, max(ok), 0))
# SystemCallFilter= (an allow-list) with SystemCallErrorNumber=EPERM.
calls = seccomp.seccomp_init(errno(EPERM))
for name in open(allowed).read().split():
    rule(calls, ALLOW, name)

os.chroot(root)
os.chdir("/")
os.setgroups([int(g) for g in groups.split(",")])
os.setgid(int(gid))
os.setuid(int(uid))
os.umask(0o027)
if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
    raise OSError(ctypes.get_errno(), "PR_SET_NO_NEW_PRIVS")
for ctx in (mdwe, afs, calls):
    rc = seccomp.seccomp_load(ctx)
    if rc != 0:
        raise OSError(-rc, "seccomp_load")
env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin", "LANG": "C.UTF-8",
       "HOME": "/var/lib/swm-edge", "USER": "swm-edge", "LOGNAME": "swm-edge"}
os.execve(cmd[0], cmd, env)
"""


def _unit_syscalls(unit: str, without: Sequence[str] = ()) -> set[str]:
    """The system calls the unit's SystemCallFilter= lines allow, combined like systemd does:
    the first line sets an allow-list; later plain lines add to it, ~lines remove from it."""
    listing = _ok(["systemd-analyze", "syscall-filter"]).stdout
    groups: dict[str, list[str]] = {}
    current = ""
    for line in listing.splitlines():
        if line.startswith("@"):
            current = line.strip()
            groups[current] = []
        elif line.startswith("    ") and not line.strip().startswith("#") and line.strip():
            groups[current].append(line.strip())

    def expand(name: str) -> set[str]:
        if not name.startswith("@"):
            return {name}
        return set().union(*(expand(member) for member in groups[name]))

    filters = [v for s, k, v in _unit_directives(unit) if (s, k) == ("Service", "SystemCallFilter")]
    assert filters and not filters[0].startswith("~"), "expected an allow-list"
    allowed: set[str] = set()
    for value in filters:
        names = set().union(*(expand(n) for n in value.removeprefix("~").split()))
        allowed = allowed - names if value.startswith("~") else allowed | names
    return allowed - set(without)


def _unit_directives(text: str) -> list[tuple[str, str, str]]:
    section, out = "", []
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif line and line[0] not in "#;":
            key, _, value = line.partition("=")
            out.append((section, key.strip(), value.strip()))
    return out


class Sandbox:
    """Runs commands in `root` under the emulated sandbox of its installed unit."""

    def __init__(self, root: Root, unit: str, workdir: Path) -> None:
        self.root = root
        self.unit = unit
        self.workdir = workdir
        self.runner = workdir / "runner.py"
        self.runner.write_text(SANDBOX_RUNNER)
        families = [v for s, k, v in _unit_directives(self.unit) if k == "RestrictAddressFamilies"]
        self.families = ",".join(
            str(int(getattr(socket, name))) for name in " ".join(families).split()
        )

    def command(self, *cmd: str, without: Sequence[str] = ()) -> list[str]:
        allowed = self.workdir / f"allowed-{len(without)}-{'-'.join(without)}.txt"
        allowed.write_text("\n".join(sorted(_unit_syscalls(self.unit, without))) + "\n")
        r, layers = self.root.path, self.root.layers
        uid, gid = self.root.ids("swm-edge")
        groups = ",".join(str(g) for g in self.root.groups_of("swm-edge"))
        mounts = [
            # ProtectSystem=strict: all read-only but the StateDirectory.
            f"mount --bind {r} {r}",
            f"mount --bind {r}/var/lib/swm-edge {r}/var/lib/swm-edge",
            f"mount -o remount,bind,ro {r}",
            *(
                f"mount -t overlay overlay -o ro,lowerdir=/{top},upperdir={layers / top}/upper"
                f",workdir={layers / top}/work {r}/{top}"
                for top in self.root.overlays
            ),
            f"mount --rbind /dev {r}/dev",
            f"mount --rbind /proc {r}/proc",
            # PrivateTmp=yes
            f"mount -t tmpfs tmpfs {r}/tmp",
            f"mount -t tmpfs tmpfs {r}/var/tmp",
        ]
        script = "set -e; " + "; ".join(mounts) + '; exec "$@"'
        return [
            "unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
            sys.executable, str(self.runner), str(r), str(uid), str(gid), groups,
            str(allowed), self.families, *cmd,
        ]  # fmt: skip

    def run(self, *cmd: str, without: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
        return _run(self.command(*cmd, without=without), timeout=120)


@pytest.fixture
def sandbox(installed: Root, build: Build, tmp_path: Path) -> Sandbox:
    """The installed root, with the unit the package installed (its /lib is on the overlay,
    so the unit is read from the package's files)."""
    unit = (build.extracted / "lib/systemd/system/swm-edge.service").read_text()
    return Sandbox(installed, unit, tmp_path)


CLOCK_PROBE = """\
import json
from swm_edge.clock import kernel_clock_synchronized, read_adjtimex
try:
    print(json.dumps({"adjtimex": read_adjtimex(), "synchronized": kernel_clock_synchronized()}))
except OSError as exc:
    print(json.dumps({"error": exc.errno}))
"""


def test_clock_read_passes_the_unit_s_system_call_filter(sandbox: Sandbox) -> None:
    """adjtimex() in glibc is the system call clock_adjtime: the unit must allow it (and
    does), or the agent could not tell whether the clock is synchronised."""
    proc = sandbox.run("/opt/swm-edge/bin/python", "-c", CLOCK_PROBE)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert "error" not in result, result
    state, status = result["adjtimex"]
    assert 0 <= state <= 5
    assert result["synchronized"] is (not (state == 5 or status & 0x40))
    # The emulation does filter: without clock_adjtime (i.e. with only `adjtimex` allowed,
    # as a first draft of the unit had it) the same call is refused.
    denied = sandbox.run("/opt/swm-edge/bin/python", "-c", CLOCK_PROBE, without=["clock_adjtime"])
    assert denied.returncode == 0, denied.stderr
    assert json.loads(denied.stdout) == {"error": errno.EPERM}


def test_agent_runs_in_the_unit_s_sandbox(
    sandbox: Sandbox,
    installed: Root,
    mosquitto: Any,
    modbus_tcp_device: Any,
    mqtt_collector: Any,
) -> None:
    """The installed agent polls a simulated meter and publishes to a broker under the
    sandbox, reads its clock, and stops cleanly on SIGTERM."""
    device = modbus_tcp_device("siemens-mag6000")
    config = f"""\
gateway: {{id: gw-sandbox-0001}}
mqtt: {{host: {mosquitto.host}, port: {mosquitto.port}}}
buffer: {{path: /var/lib/swm-edge/buffer.sqlite}}
buses:
  - {{id: lan, type: modbus-tcp, host: 127.0.0.1, port: {device.port}}}
devices:
  - {{id: inlet-flow, bus: lan, unit: 1, interval: 1, profile: siemens-mag6000}}
"""
    _write_config(installed, config)
    collector = mqtt_collector(mosquitto, "swm/gw-sandbox-0001/#")
    agent = subprocess.Popen(
        sandbox.command("/usr/bin/swm-edge", "run", "--config", "/etc/swm-edge/config.yaml"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        telemetry = collector.wait_for(
            lambda m: m.topic.endswith("/inlet-flow/telemetry"), timeout=60, count=2
        )
        status = sandbox.run("/usr/bin/swm-edge", "status", "--config", "/etc/swm-edge/config.yaml")
    finally:
        agent.send_signal(signal.SIGTERM)
        try:
            log, _ = agent.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            agent.kill()
            log, _ = agent.communicate()
        for leftover in ("etc/swm-edge/config.yaml", "var/lib/swm-edge/buffer.sqlite"):
            (installed.path / leftover).unlink(missing_ok=True)
        for extra in (installed.path / "var/lib/swm-edge").glob("buffer.sqlite-*"):
            extra.unlink()
    assert agent.returncode == 0, log
    assert "Operation not permitted" not in log and "Traceback" not in log, log
    for message in telemetry:
        readings = message.json()["readings"]
        assert readings and all(r["quality"] == "good" for r in readings.values()), readings
    # The status socket (0660, in the StateDirectory) answers another sandboxed process.
    assert status.returncode == 0, status.stdout + status.stderr
    assert "gw-sandbox-0001" in status.stdout

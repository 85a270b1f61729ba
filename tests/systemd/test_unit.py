"""systemd/: the unit, its sysusers.d and tmpfiles.d snippets, checked by systemd's own tools.

- ``systemd-analyze security --offline=true`` rates the sandbox (≤ 2.5 required) and says
  which system calls the combined SystemCallFilter= lines allow;
- ``systemd-analyze verify --root=`` checks the unit against a root holding what it refers
  to: the real ``swm-edge`` entry point of this environment, the host's ``kill`` and the
  host's systemd units (the Debian package test verifies it against the installed package);
- ``systemd-sysusers --root=`` and ``systemd-tmpfiles --root= --create`` apply the snippets
  to a throwaway root's /etc/passwd and folders.

No systemd manager runs here, so the unit is never started: tests/packaging runs the
installed agent under the unit's seccomp rules rebuilt outside systemd; the sandbox as a
whole is for a gateway to show.
Needs systemd's tools and, for the tmpfiles ownerships, root: skipped without them locally,
failing when CI is set.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from swm_edge.testing import unavailable

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "systemd/swm-edge.service"
SYSUSERS = REPO / "systemd/swm-edge.sysusers"
TMPFILES = REPO / "systemd/swm-edge.tmpfiles"
#: The highest `systemd-analyze security` exposure accepted (0 = locked down, 10 = none).
MAX_EXPOSURE = 2.5


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed (apt-get install systemd)")
    assert path is not None
    return path


def _root_needed() -> None:
    if os.geteuid() != 0:
        unavailable("systemd-tmpfiles --root sets owners: needs root")


def _run(cmd: Sequence[str | Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, check=False)


def _directives(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of every assignment, in order (keys may repeat)."""
    section, out = "", []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.strip()))
    return out


DIRECTIVES = _directives(UNIT.read_text())


def _values(section: str, key: str) -> list[str]:
    return [v for s, k, v in DIRECTIVES if (s, k) == (section, key)]


def _one(section: str, key: str) -> str:
    values = _values(section, key)
    assert len(values) == 1, f"[{section}] {key}= set {len(values)} times: {values}"
    return values[0]


# -- the unit's content ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("Unit", "After", "network-online.target time-sync.target"),
        ("Unit", "Wants", "network-online.target"),
        ("Unit", "ConditionPathExists", "/etc/swm-edge/config.yaml"),
        ("Service", "Type", "notify"),
        ("Service", "NotifyAccess", "main"),
        ("Service", "ExecStart", "/usr/bin/swm-edge run --config /etc/swm-edge/config.yaml"),
        ("Service", "ExecReload", "/bin/kill -HUP $MAINPID"),
        ("Service", "WatchdogSec", "30s"),
        ("Service", "TimeoutStopSec", "30s"),
        ("Service", "Restart", "on-failure"),
        ("Service", "RestartPreventExitStatus", "2"),  # config error: a restart cannot help
        ("Service", "User", "swm-edge"),
        ("Service", "Group", "swm-edge"),
        ("Service", "SupplementaryGroups", "dialout"),
        ("Service", "StateDirectory", "swm-edge"),
        ("Service", "ConfigurationDirectory", "swm-edge"),
        ("Service", "RuntimeDirectory", "swm-edge"),
        ("Service", "UMask", "0027"),
        ("Service", "ProtectSystem", "strict"),
        ("Service", "ProtectProc", "invisible"),
        ("Service", "ProcSubset", "pid"),
        ("Service", "DevicePolicy", "closed"),
        ("Service", "RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
        ("Service", "CapabilityBoundingSet", ""),
        ("Service", "AmbientCapabilities", ""),
        ("Service", "SystemCallArchitectures", "native"),
        ("Service", "SystemCallErrorNumber", "EPERM"),
        ("Service", "MemoryMax", "256M"),
        ("Install", "WantedBy", "multi-user.target"),
    ],
)
def test_unit_sets(section: str, key: str, value: str) -> None:
    assert _one(section, key) == value


def test_restart_is_rate_limited() -> None:
    assert _one("Unit", "StartLimitIntervalSec")
    assert int(_one("Unit", "StartLimitBurst")) >= 1
    assert _one("Service", "RestartSec")
    assert _one("Service", "TasksMax")
    # In [Service] systemd ignores them (with a warning): they belong to [Unit].
    assert not _values("Service", "StartLimitIntervalSec")


def test_serial_ports_stay_reachable() -> None:
    """The options that would take the serial lines away are absent; /dev/tty* are allowed."""
    assert sorted(_values("Service", "DeviceAllow")) == sorted(
        f"char-{name} rw" for name in ("ttyS", "ttyUSB", "ttyACM", "ttyAMA")
    )
    # PrivateDevices=yes hides /dev/tty*; PrivateUsers=yes maps dialout to nobody.
    for key in ("PrivateDevices", "PrivateUsers"):
        assert _values("Service", key) in ([], ["no"]), key


def test_adjtimex_stays_allowed() -> None:
    """The agent reads the clock's sync state with glibc's adjtimex(), which is the system
    call clock_adjtime (clock_adjtime64 on 32-bit ARM): ProtectClock=yes (which filters
    @clock) must not be set, and the calls must be allowed after ~@privileged (which
    contains @clock), or that line would take them away again. (The packaging tests run
    the installed agent under this filter.)"""
    assert _values("Service", "ProtectClock") in ([], ["no"])
    filters = _values("Service", "SystemCallFilter")
    assert filters[0] == "@system-service"
    deny = next(i for i, f in enumerate(filters) if f.startswith("~"))
    assert set(filters[deny][1:].split()) >= {"@privileged", "@resources"}
    for call in ("adjtimex", "clock_adjtime", "clock_adjtime64"):
        allowed_at = [i for i, f in enumerate(filters) if call in f.split()]
        assert allowed_at and min(allowed_at) > deny, call
    # ... and nothing that sets the clock.
    assert not any(
        name in f.split() for f in filters for name in ("@clock", "settimeofday", "clock_settime")
    )


# -- systemd-analyze ---------------------------------------------------------------------------


def _security(*args: str) -> subprocess.CompletedProcess[str]:
    analyze = _tool("systemd-analyze")
    return _run([analyze, "security", "--offline=true", *args, UNIT])


def test_security_exposure_is_low() -> None:
    proc = _security()
    assert proc.returncode == 0, proc.stderr
    match = re.search(r"Overall exposure level for swm-edge\.service: (\d+\.\d)", proc.stdout)
    assert match, proc.stdout
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, proc.stdout
    # systemd's own threshold check agrees (its scale is 0-100).
    assert _security(f"--threshold={round(MAX_EXPOSURE * 10)}").returncode == 0
    assert _security(f"--threshold={round(exposure * 10) - 1}").returncode != 0


def test_security_sees_adjtimex_allowed_and_no_clock_setting() -> None:
    """systemd's own reading of the combined SystemCallFilter= lines: adjtimex is allowed
    (the agent's read-only call), while changing the clock is impossible (no CAP_SYS_TIME),
    and the other dangerous groups stay filtered."""
    proc = _security("--json=short")
    assert proc.returncode == 0, proc.stderr
    checks = {c["json_field"]: c for c in json.loads(proc.stdout)}
    assert "adjtimex is allowed" in checks["SystemCallFilter_clock"]["description"]
    assert checks["CapabilityBoundingSet_CAP_SYS_TIME"]["set"] is True
    for group in ("mount", "module", "raw_io", "reboot", "swap", "debug", "obsolete", "resources"):
        check = checks[f"SystemCallFilter_{group}"]
        assert check["set"] is True, check
    for field in (
        "NoNewPrivileges",
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "ProtectKernelLogs",
        "ProtectControlGroups",
        "ProtectHostname",
        "ProtectProc",
        "ProcSubset",
        "RestrictNamespaces_user",
        "RestrictRealtime",
        "RestrictSUIDSGID",
        "LockPersonality",
        "MemoryDenyWriteExecute",
        "RemoveIPC",
        "SystemCallArchitectures",
        "AmbientCapabilities",
        "CapabilityBoundingSet_CAP_SYS_ADMIN",
        "RestrictAddressFamilies_AF_NETLINK",
        "RestrictAddressFamilies_AF_PACKET",
        "PrivateMounts",
        "NotifyAccess",
    ):
        assert checks[field]["set"] is True, checks[field]


def _verify_root(tmp_path: Path, *, with_agent: bool = True) -> Path:
    """A root with what the unit refers to: /usr/bin/swm-edge (this environment's real entry
    point script), /bin/kill and the host's systemd units (for After=/Wants=/WantedBy=)."""
    root = tmp_path / "root"
    (root / "usr/bin").mkdir(parents=True)
    (root / "usr/lib/systemd").mkdir(parents=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for top in ("bin", "sbin", "lib"):
        (root / top).symlink_to(f"usr/{top}")
    units = Path("/usr/lib/systemd/system")
    if not units.is_dir():
        units = Path("/lib/systemd/system")
    shutil.copytree(units, root / "usr/lib/systemd/system", symlinks=True)
    kill = shutil.which("kill") or "/bin/kill"
    shutil.copy2(kill, root / "usr/bin/kill")
    if with_agent:
        agent = Path(sys.executable).parent / "swm-edge"
        assert agent.is_file(), f"{agent}: the project is not installed in this environment"
        shutil.copy2(agent, root / "usr/bin/swm-edge")
    shutil.copy2(UNIT, root / "etc/systemd/system/swm-edge.service")
    return root


def test_verify_is_clean(tmp_path: Path) -> None:
    analyze = _tool("systemd-analyze")
    root = _verify_root(tmp_path)
    proc = _run([analyze, "verify", f"--root={root}", "swm-edge.service"])
    assert proc.returncode == 0, proc.stderr
    # Not even a warning (unknown keys, keys in the wrong section, bad values).
    assert proc.stdout + proc.stderr == ""


def test_verify_catches_a_missing_executable(tmp_path: Path) -> None:
    """The check above can fail: without /usr/bin/swm-edge in the root, verify says so."""
    analyze = _tool("systemd-analyze")
    root = _verify_root(tmp_path, with_agent=False)
    proc = _run([analyze, "verify", f"--root={root}", "swm-edge.service"])
    assert proc.returncode != 0
    assert "/usr/bin/swm-edge is not executable" in proc.stderr


# -- sysusers.d and tmpfiles.d ------------------------------------------------------------------


def _etc_root(tmp_path: Path) -> Path:
    """A root whose /etc/{passwd,group,shadow,gshadow} are the host's, without swm-edge."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    for name in ("passwd", "group", "shadow", "gshadow"):
        host = Path("/etc") / name
        if host.exists():
            lines = host.read_text().splitlines(keepends=True)
            (root / "etc" / name).write_text(
                "".join(line for line in lines if not line.startswith("swm-edge:"))
            )
    return root


def _entry(root: Path, file: str, name: str) -> list[str]:
    for line in (root / "etc" / file).read_text().splitlines():
        if line.split(":")[0] == name:
            return line.split(":")
    raise AssertionError(f"no {name} in {root}/etc/{file}")


def test_sysusers_creates_the_service_user_in_dialout(tmp_path: Path) -> None:
    sysusers = _tool("systemd-sysusers")
    _root_needed()
    root = _etc_root(tmp_path)
    assert "swm-edge:" not in (root / "etc/passwd").read_text()
    proc = _run([sysusers, f"--root={root}", SYSUSERS])
    assert proc.returncode == 0, proc.stderr
    user = _entry(root, "passwd", "swm-edge")
    assert user[4] == "swm-edge smart water gateway agent"
    assert user[5] == "/var/lib/swm-edge"
    assert user[6].endswith("/nologin")
    assert 0 < int(user[2]) < 1000  # a system user
    group = _entry(root, "group", "swm-edge")
    assert group[2] == user[3]
    assert "swm-edge" in _entry(root, "group", "dialout")[3].split(",")
    assert _entry(root, "shadow", "swm-edge")[1].startswith("!")  # no password login
    # The unit runs as this user and group.
    assert _one("Service", "User") == user[0]
    assert _one("Service", "Group") == group[0]
    # A second run (every upgrade's postinst) changes nothing.
    before = (root / "etc/passwd").read_text(), (root / "etc/group").read_text()
    assert _run([sysusers, f"--root={root}", SYSUSERS]).returncode == 0
    assert ((root / "etc/passwd").read_text(), (root / "etc/group").read_text()) == before


def test_tmpfiles_creates_the_folders(tmp_path: Path) -> None:
    sysusers, tmpfiles = _tool("systemd-sysusers"), _tool("systemd-tmpfiles")
    _root_needed()
    root = _etc_root(tmp_path)
    assert _run([sysusers, f"--root={root}", SYSUSERS]).returncode == 0
    uid, gid = int(_entry(root, "passwd", "swm-edge")[2]), int(_entry(root, "group", "swm-edge")[2])
    # dpkg creates /etc/swm-edge 0755 root:root when it unpacks config.example.yaml;
    # tmpfiles must tighten it.
    (root / "etc/swm-edge").mkdir(mode=0o755)
    proc = _run([tmpfiles, f"--root={root}", "--create", TMPFILES])
    assert proc.returncode == 0, proc.stderr
    expected = {
        "var/lib/swm-edge": (uid, gid, 0o750),
        "etc/swm-edge": (0, gid, 0o750),
    }
    for path, owner_mode in expected.items():
        st = (root / path).stat()
        assert stat.S_ISDIR(st.st_mode)
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == owner_mode, path
    # The service's own directory settings agree with tmpfiles (systemd warns otherwise).
    assert int(_one("Service", "StateDirectoryMode"), 8) == 0o750
    assert int(_one("Service", "ConfigurationDirectoryMode"), 8) == 0o750

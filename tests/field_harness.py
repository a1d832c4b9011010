"""A real Debian 12 machine for the Ansible role: a cached debootstrap root filesystem booted
with systemd-nspawn inside a network namespace the test owns.

Why a connection plugin rather than SSH: `community.docker.nsenter` enters the container's
namespaces from the host by the PID of its init, so the test needs no SSH server, key or
route into the container, and the booted system stays exactly what the role made of it
(an sshd would be one more unit we added only for the test). Everything the role does runs
through the same modules either way; `ansible/README` shows the SSH inventory a technician
uses on a real box.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
ROLE_DEFAULTS = REPO / "ansible" / "roles" / "skillspot_box" / "defaults" / "main.yml"
CACHE_DIR = Path(os.environ.get("SKILLSPOT_TEST_CACHE", "/var/cache/skillspot-test"))
# What debootstrap needs for a system that boots with systemd and that Ansible can drive.
BASE_PACKAGES = ["systemd", "systemd-sysv", "dbus", "python3", "procps"]


class HarnessError(Exception):
    """The test machine could not be built or booted; the message says where to look."""


def role_packages() -> list[str]:
    """The Debian packages the role installs (its defaults): they are put into the cached root
    filesystem because the container has no route to a Debian mirror (tests reach only their own
    namespaces). The role's apt task then finds them installed, as on a box flashed from an image."""
    defaults = yaml.safe_load(ROLE_DEFAULTS.read_text())
    return list(defaults["skillspot_box_packages"])


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 .sources or a classic sources.list line)."""
    files = sorted(Path("/etc/apt/sources.list.d").glob("*.sources")) + [Path("/etc/apt/sources.list")]
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        for stanza in re.split(r"\n\s*\n", text):
            uris = re.search(r"^URIs:\s*(\S+)", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and "bookworm" in suites.group(1).split() and "security" not in uris.group(1):
                return uris.group(1)
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[-2] == "bookworm" or (
                    len(parts) >= 3 and parts[0] == "deb" and "bookworm" in parts[2:3]):
                url = next(p for p in parts[1:] if "://" in p)
                if "security" not in url:
                    return url
    return "http://deb.debian.org/debian"


def cached_rootfs(log=print) -> Path:
    """The tarball of a minimal bookworm with the role's packages; built once (about 2 minutes
    here), rebuilt when missing or when the package list changes (its hash names the file)."""
    packages = sorted(set(BASE_PACKAGES + role_packages()))
    key = hashlib.sha256(" ".join(packages).encode()).hexdigest()[:12]
    tarball = CACHE_DIR / f"bookworm-{key}.tar"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once build it once
        if tarball.exists():
            return tarball
        if shutil.which("debootstrap") is None:
            raise HarnessError("debootstrap is not installed; fix: apt-get install debootstrap systemd-container")
        staging = CACHE_DIR / f"staging-{key}-{os.getpid()}"
        _remove_tree(staging)
        start = time.monotonic()
        log(f"building the bookworm root filesystem {tarball} (once; about 2 minutes)")
        proc = subprocess.run(["debootstrap", "--variant=minbase", "--include=" + ",".join(packages),
                               "bookworm", str(staging), debian_mirror()], capture_output=True, text=True)
        # debootstrap can leave /proc (and more) mounted inside: never tar or delete through them.
        _unmount_under(staging)
        if proc.returncode != 0:
            _remove_tree(staging)
            raise HarnessError(f"debootstrap failed: {(proc.stdout + proc.stderr)[-1500:]}")
        # Packages' own services must not start by themselves in the image: the role decides.
        for unit in ("hostapd.service", "chrony.service", "nftables.service"):
            for d in (staging / "etc/systemd/system/multi-user.target.wants",):
                (d / unit).unlink(missing_ok=True)
        (staging / "var/cache/apt/archives").mkdir(parents=True, exist_ok=True)
        for deb in (staging / "var/cache/apt/archives").glob("*.deb"):
            deb.unlink()
        tmp = tarball.with_suffix(".tmp")
        subprocess.run(["tar", "--numeric-owner", "--xattrs", "--one-file-system", "-C", str(staging),
                        "-cf", str(tmp), "."], check=True)
        tmp.rename(tarball)
        _remove_tree(staging)
        log(f"root filesystem built in {time.monotonic() - start:.0f} s")
        return tarball


def _unmount_under(root: Path) -> None:
    """Unmount everything mounted below root, deepest first."""
    prefix = str(root.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    for mnt in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", mnt], check=False)


def _remove_tree(root: Path) -> None:
    """Delete a root filesystem we made, after unmounting anything inside it."""
    if root.exists():
        _unmount_under(root)
        shutil.rmtree(root, ignore_errors=True)


def extract(tarball: Path, dest: Path) -> Path:
    """Unpack a root filesystem tarball into dest (a fresh directory)."""
    dest.mkdir(parents=True)
    subprocess.run(["tar", "--numeric-owner", "--xattrs", "-C", str(dest), "-xf", str(tarball)], check=True)
    return dest


def _children(pid: int) -> list[int]:
    kids: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            kids += [int(x) for x in (task / "children").read_text().split()]
        except OSError:
            pass
    return kids


def wait_for(what: str, check, timeout: float, interval: float = 0.2):
    """Poll check() until it returns something truthy; HarnessError naming `what` at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise HarnessError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class Container:
    """A booted systemd-nspawn container; a context manager that always stops it."""

    rootfs: Path
    name: str
    netns: str                       # the network namespace (in /run/netns) it lives in
    log_path: Path
    proc: subprocess.Popen | None = None
    init_pid: int = 0
    binds: list[str] = field(default_factory=list)
    resolver: str | None = None      # the WAN's DNS server, as the office network's DHCP would give it

    def boot(self, timeout: float = 90) -> "Container":
        if shutil.which("systemd-nspawn") is None:
            raise HarnessError("systemd-nspawn is not installed; fix: apt-get install systemd-container")
        (self.rootfs / "etc/hostname").write_text(self.name + "\n")
        if self.resolver:
            resolv = self.rootfs / "etc/resolv.conf"
            resolv.unlink(missing_ok=True)
            resolv.write_text(f"nameserver {self.resolver}\n")
        argv = ["systemd-nspawn", "-q", "-D", str(self.rootfs), "--register=no", "--keep-unit",
                "-M", self.name, f"--network-namespace-path=/run/netns/{self.netns}", "-b", "--console=pipe",
                # A namespace given by path is not "private" to nspawn, so it would drop CAP_NET_ADMIN
                # and mount /proc/sys/net read-only; the box needs both (nftables, conntrack, sysctl).
                "--capability=CAP_NET_ADMIN", "--resolv-conf=off"]
        for b in self.binds:
            argv.append(f"--bind-ro={b}")
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True,
                                     env={**os.environ, "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "network"})
        log.close()

        def find_init() -> int:
            if self.proc.poll() is not None:
                raise HarnessError(f"systemd-nspawn exited ({self.proc.returncode}); see {self.log_path}")
            # nspawn -> its child (the namespace's stub) -> systemd, PID 1 inside
            for child in _children(self.proc.pid):
                for grand in [child, *_children(child)]:
                    try:
                        if Path(f"/proc/{grand}/comm").read_text().strip() == "systemd":
                            return grand
                    except OSError:
                        pass
            return 0

        self.init_pid = wait_for("the container's systemd to start", find_init, 30)

        def running() -> bool:
            state = self.run(["systemctl", "is-system-running"], check=False).stdout.strip()
            if state in ("running", "degraded"):
                return True
            if self.proc.poll() is not None:
                raise HarnessError(f"systemd-nspawn exited ({self.proc.returncode}); see {self.log_path}")
            return False

        wait_for("the container to reach 'running'", running, timeout, 0.5)
        return self

    def run(self, argv: list[str], check: bool = True, timeout: float = 120,
            input: str | None = None) -> subprocess.CompletedProcess:
        """Run a command inside the container (all its namespaces), as root."""
        proc = subprocess.run(["nsenter", "-t", str(self.init_pid), "-a", *argv], capture_output=True,
                              text=True, timeout=timeout, input=input)
        if check and proc.returncode != 0:
            raise HarnessError(f"{' '.join(argv)} in {self.name} failed ({proc.returncode}): "
                               f"{(proc.stderr or proc.stdout).strip()[-1500:]}")
        return proc

    def failed_units(self) -> list[str]:
        out = self.run(["systemctl", "list-units", "--failed", "--plain", "--no-legend"], check=False).stdout
        return [line.split()[0] for line in out.splitlines() if line.strip()]

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM to our nspawn (it shuts the container down cleanly), SIGKILL at the deadline."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.kill(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)
        except ProcessLookupError:
            pass

    def __enter__(self) -> "Container":
        try:
            return self.boot()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()


# -- a time server for the simulated internet ----------------------------------------------
# The box's chrony must synchronise to something inside the test's own namespaces. This is a
# minimal NTPv4 server (RFC 5905 server mode) answering with the host's clock as a stratum-2
# source: enough for chronyd to select it and report "synchronised".

NTP_EPOCH_OFFSET = 2208988800


def _ntp_ts(t: float) -> bytes:
    import struct
    secs = int(t) + NTP_EPOCH_OFFSET
    frac = int((t % 1) * (1 << 32)) & 0xFFFFFFFF
    return struct.pack("!II", secs & 0xFFFFFFFF, frac)


def serve_ntp(address: str, port: int = 123) -> None:
    """Answer NTP client requests on address:port until killed."""
    import socket
    import struct
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))
    while True:
        data, peer = sock.recvfrom(512)
        received = time.time()
        if len(data) < 48 or (data[0] & 0x7) != 3:  # client mode only
            continue
        version = (data[0] >> 3) & 0x7
        header = struct.pack("!BBbb", (0 << 6) | (version << 3) | 4, 2, 4, -20)  # LI 0, server, stratum 2
        root = struct.pack("!II", 0x00000010, 0x00000010)                      # ~0.25 ms delay, dispersion
        refid = socket.inet_aton("127.127.1.0")
        reply = header + root + refid + _ntp_ts(received - 1) + data[40:48] + _ntp_ts(received) + _ntp_ts(time.time())
        sock.sendto(reply, peer)


if __name__ == "__main__":  # python tests/field_harness.py ntp ADDRESS
    import sys
    if len(sys.argv) == 3 and sys.argv[1] == "ntp":
        serve_ntp(sys.argv[2])
    else:
        raise SystemExit("usage: field_harness.py ntp ADDRESS")

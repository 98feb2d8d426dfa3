"""`cdp mount` / `cdp umount`: a rewind point mounted read-only through the kernel's nbd driver.

Mounting is `cdp export` plus three system steps: a detached `cdp export`
serves the point on a unix socket, ``nbd-client`` connects a free
``/dev/nbdN`` to it read-only, and the filesystem is mounted read-only with
the options that never replay a journal on a read-only device (ext2/3/4
``noload``, xfs ``norecovery``, btrfs ``nologreplay``). What was set up is
written to a state directory under ``/run/cdp/mounts`` so `cdp umount`
undoes exactly that, in reverse; a step that fails undoes the ones before.

This needs the kernel's ``nbd`` module; without it the command says so in
one line before touching anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from cdp.errors import CdpError

STATE_ROOT = Path(os.environ.get("CDP_MOUNT_STATE", "/run/cdp/mounts"))
#: Mount options that keep a read-only mount from replaying the filesystem's journal.
NO_REPLAY = {"ext2": "ro,noload", "ext3": "ro,noload", "ext4": "ro,noload", "xfs": "ro,norecovery",
             "btrfs": "ro,nologreplay"}


@dataclass
class MountState:
    """What `cdp mount` set up, for `cdp umount`."""

    mountpoint: str
    device: str
    socket: str
    export_pid: int
    journal: str
    seq: int
    fstype: str
    #: the device's ``pid`` attribute once connected: which connection is ours (see :func:`umount`)
    nbd_pid: str = ""


def check_nbd_support() -> None:
    """One line when the kernel cannot do it: no nbd module, no /dev/nbd0, no nbd-client."""
    if not Path("/dev/nbd0").exists() or not Path("/sys/block/nbd0").exists():
        loaded = Path("/sys/module/nbd").exists()
        why = "it has no /dev/nbd0" if loaded else "the nbd kernel module is not loaded"
        raise CdpError(f"cannot mount: {why} (try 'modprobe nbd'; without it use 'cdp export' and an NBD client)")
    for tool in ("nbd-client", "mount", "umount", "blkid"):
        if shutil.which(tool) is None and shutil.which(tool, path="/usr/sbin:/sbin") is None:
            raise CdpError(f"cannot mount: {tool} is not installed"
                           + (" (apt-get install nbd-client)" if tool == "nbd-client" else ""))
    if os.geteuid() != 0:
        raise CdpError("cannot mount: connecting an nbd device and mounting need root")


def state_dir(mountpoint: Path) -> Path:
    """The state directory of one mount point (named by a hash of its real path)."""
    key = hashlib.sha256(os.fsencode(os.path.realpath(mountpoint))).hexdigest()[:16]
    return STATE_ROOT / key


def _run(*args: str, timeout: float = 60) -> str:
    """Run a system tool; its failure is one line naming it."""
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        # the last line that says something: mount(8) ends with a hint to read dmesg
        message = [line.strip() for line in (proc.stderr.strip() or proc.stdout.strip()).splitlines()
                   if line.strip() and "dmesg(1)" not in line]
        raise CdpError(f"{args[0]} failed: {message[-1] if message else f'exit {proc.returncode}'}")
    return proc.stdout


def _mounted(mountpoint: Path) -> bool:
    real = os.path.realpath(mountpoint)
    with open("/proc/self/mountinfo") as fh:
        return any(line.split()[4] == real for line in fh if len(line.split()) > 4)


def _fstype(device: str) -> str:
    """The filesystem type blkid sees on ``device``, or a one-line error when it sees none.

    blkid says "nothing found" with exit status 2 and no output: that is an
    answer about the point (no filesystem then), not a failure of blkid.
    """
    proc = subprocess.run(["blkid", "-p", "-o", "value", "-s", "TYPE", device],
                          capture_output=True, text=True, timeout=60)
    fstype = proc.stdout.strip()
    if proc.returncode == 2 or (proc.returncode == 0 and not fstype):
        raise CdpError(f"no filesystem found at that point ({device} has no known signature)")
    if proc.returncode != 0:
        message = (proc.stderr.strip() or f"exit {proc.returncode}").splitlines()[-1]
        raise CdpError(f"blkid failed on {device}: {message}")
    return fstype


def _free_nbd() -> str:
    """The first /dev/nbdN not connected to anything."""
    for sysdir in sorted(Path("/sys/block").glob("nbd*"), key=lambda p: int(p.name[3:] or 0)):
        if not (sysdir / "pid").exists() and (sysdir / "size").read_text().strip() == "0":
            return f"/dev/{sysdir.name}"
    raise CdpError("cannot mount: every /dev/nbdN is in use")


def mount(journal: Path, seq: int, mountpoint: Path, *, fs_options: str | None, allow_partial: bool) -> MountState:
    """Export ``seq`` of ``journal`` and mount it read-only on ``mountpoint``."""
    check_nbd_support()
    if not mountpoint.is_dir():
        raise CdpError(f"{mountpoint} is not a directory")
    if _mounted(mountpoint):
        raise CdpError(f"{mountpoint} is already a mount point")
    state = state_dir(mountpoint)
    if state.exists():
        raise CdpError(f"{mountpoint} has a cdp mount already (run 'cdp umount {mountpoint}')")
    state.mkdir(parents=True)
    undo: list = [lambda: shutil.rmtree(state, ignore_errors=True)]
    try:
        sock = state / "nbd.sock"
        args = [sys.executable, "-m", "cdp", "export", "--journal", os.fspath(journal.absolute()),
                "--seq", str(seq), "--unix", os.fspath(sock), "--json"]
        if allow_partial:
            args.append("--allow-partial")
        log = open(state / "export.log", "w")  # noqa: SIM115 - handed to the detached export
        export = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                                  text=True, start_new_session=True)
        log.close()
        undo.append(lambda: (export.terminate(), export.wait(timeout=15)))
        line = export.stdout.readline() if export.stdout is not None else ""
        if export.stdout is not None:
            export.stdout.close()
        if not line:
            export.wait(timeout=30)
            lines = (state / "export.log").read_text().strip().splitlines()
            raise CdpError(lines[-1].removeprefix("cdp: export: ") if lines else "cdp export failed")
        device = _free_nbd()
        # 512-byte blocks: a filesystem cannot be mounted on a device whose logical block is larger
        # than its own (ext4 made with 1 KiB blocks, the default below 512 MiB; xfs with 512-byte
        # sectors); the block layer still sends large requests
        _run("nbd-client", "-unix", os.fspath(sock), device, "-readonly", "-block-size", "512")
        undo.append(lambda: _run("nbd-client", "-d", device))
        nbd_pid = _connection(device) or ""
        fstype = _fstype(device)
        options = NO_REPLAY.get(fstype, "ro") + (f",{fs_options}" if fs_options else "")
        _run("mount", "-t", fstype, "-o", options, device, os.fspath(mountpoint))
        result = MountState(os.path.realpath(mountpoint), device, os.fspath(sock), export.pid,
                            os.fspath(journal.absolute()), seq, fstype, nbd_pid)
        (state / "state.json").write_text(json.dumps(asdict(result)))
        return result
    except BaseException:
        for step in reversed(undo):
            try:
                step()
            except Exception:  # noqa: BLE001 - undo as much as can be undone
                pass
        raise


def umount(mountpoint: Path) -> MountState:
    """Undo `cdp mount`: unmount, disconnect the nbd device, stop the export, forget the state."""
    state = state_dir(mountpoint)
    try:
        saved = MountState(**json.loads((state / "state.json").read_text()))
    except FileNotFoundError:
        raise CdpError(f"{mountpoint} was not mounted by 'cdp mount'") from None
    if _mounted(mountpoint):
        _run("umount", os.fspath(mountpoint))
    connection = _connection(saved.device)
    if connection is not None:
        if connection == saved.nbd_pid or not saved.nbd_pid:
            _run("nbd-client", "-d", saved.device)
        else:
            # disconnected by hand since, and connected again by something else (another cdp
            # mount): not ours to cut
            print(f"cdp: umount: {saved.device} is connected to something else now; left alone",
                  file=sys.stderr)
    _stop_export(saved.export_pid, saved.socket)
    shutil.rmtree(state, ignore_errors=True)
    return saved


def _connection(device: str) -> str | None:
    """The nbd device's ``pid`` attribute (the process that connected it), None when not connected.

    It tells one connection from the next: `cdp umount` disconnects the
    device only if it is still the connection `cdp mount` made.
    """
    try:
        return Path(f"/sys/block/{Path(device).name}/pid").read_text().strip()
    except FileNotFoundError:
        return None


def _stop_export(pid: int, sock: str) -> None:
    """SIGTERM the detached `cdp export` (if that pid is still the one serving ``sock``) and wait for it to go."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return
    if b"export" not in cmdline or os.fsencode(sock) not in cmdline:
        return  # the pid was reused by something else
    os.kill(pid, signal.SIGTERM)
    for _ in range(100):
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.05)

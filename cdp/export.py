"""Serve one rewind point over NBD: nbdkit, our plugin, the socket, the overlay.

:class:`ExportServer` runs ``nbdkit python cdp/nbdkit_plugin.py`` for one
journal and seq. The listening socket is made here and handed to nbdkit by
socket activation (``LISTEN_FDS``), which gives:

- errors of our own making as one line before anything starts (a port in
  use, a socket path that exists, a directory that is missing);
- ``--listen ADDR:0``: the port the kernel chose is known, for the URI;
- no window in which the URI is printed but nothing listens.

The URI is announced once nbdkit has written its pid file, which it does
when it is ready to serve (after the plugin opened the journal). nbdkit
runs with ``--exit-with-parent``, so it never outlives `cdp export`, even
one killed with SIGKILL.

``writable`` puts nbdkit's ``cow`` filter in front: the plugin stays
read-only and every write goes to the filter's overlay, a temporary file in
a directory made for this export (``TMPDIR`` for nbdkit) and removed at
exit. The journal is never written either way.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import urllib.parse
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from cdp.errors import CdpError

PLUGIN = Path(__file__).with_name("nbdkit_plugin.py")
#: Lines the plugin writes for the user (see cdp/nbdkit_plugin.py; it cannot import cdp).
REPORT_PREFIX = "cdp-export: "
#: How long nbdkit may take to become ready (it imports lmdb and opens the journal).
START_TIMEOUT_S = 30.0
#: How long a stopping nbdkit may wait for connected clients to hang up.
STOP_GRACE_S = 1.0
_INSTALL_HINT = "apt-get install nbdkit nbdkit-plugin-python"


@dataclass(frozen=True, slots=True)
class Listen:
    """Where the export listens: a unix socket path, or a TCP address and port."""

    unix: Path | None = None
    host: str = ""
    port: int = 0

    @classmethod
    def parse_tcp(cls, text: str) -> Listen:
        """``ADDR:PORT``, ``[v6]:PORT`` or ``:PORT`` (all addresses), or a usage error."""
        host, sep, port = text.rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            raise CdpError(f"--listen {text!r}: give ADDR:PORT, e.g. 127.0.0.1:10809 or [::1]:0", exit_code=2)
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if host:
            try:
                ipaddress.ip_address(host)
            except ValueError:
                if not host.replace("-", "").replace(".", "").isalnum():
                    raise CdpError(f"--listen {text!r}: {host!r} is not an address", exit_code=2) from None
        return cls(None, host, int(port))


def nbdkit_binary() -> str:
    """The nbdkit program, or a one-line error saying how to install it."""
    found = shutil.which("nbdkit") or shutil.which("nbdkit", path="/usr/sbin:/sbin")
    if found is None:
        raise CdpError(f"nbdkit is not installed ({_INSTALL_HINT})")
    return found


def import_paths() -> list[str]:
    """Where this interpreter finds cdp and its dependencies, for the plugin's ``syspath=``."""
    import journal

    root = str(Path(journal.__file__).resolve().parent.parent)
    paths = [root]
    for key in ("purelib", "platlib"):
        p = sysconfig.get_paths()[key]
        if p not in paths:
            paths.append(p)
    return paths


def _bind(listen: Listen) -> tuple[socket.socket, str]:
    """The listening socket and the URI clients use, or a one-line error."""
    if listen.unix is not None:
        path = listen.unix.absolute()
        if path.exists() or path.is_symlink():
            raise CdpError(f"{path} exists; remove it or choose another --unix path")
        if not path.parent.is_dir():
            raise CdpError(f"cannot create {path}: {path.parent} is not a directory")
        if len(os.fsencode(path)) > 107:
            raise CdpError(f"{path}: a unix socket path must be at most 107 bytes")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(os.fspath(path))
            sock.listen(64)
        except OSError as exc:
            sock.close()
            raise CdpError(f"cannot listen on {path}: {exc.strerror}") from None
        return sock, "nbd+unix:///?socket=" + urllib.parse.quote(os.fspath(path), safe="/")
    host = listen.host
    try:
        infos = socket.getaddrinfo(host or None, listen.port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise CdpError(f"cannot listen on {host or '*'}:{listen.port}: {exc.strerror}") from None
    family, _type, _proto, _name, addr = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(64)
    except OSError as exc:
        sock.close()
        raise CdpError(f"cannot listen on {host or '*'}:{listen.port}: {exc.strerror}") from None
    port = sock.getsockname()[1]
    shown = host or ("::" if family == socket.AF_INET6 else "0.0.0.0")
    if not host or shown in ("0.0.0.0", "::"):
        shown = "localhost"  # all addresses: this one works from here
    if ":" in shown:
        shown = f"[{shown}]"
    return sock, f"nbd://{shown}:{port}"


class ExportServer:
    """One nbdkit serving one journal at one seq; see the module docstring."""

    def __init__(self, journal: Path, seq: int, listen: Listen | None = None, *, writable: bool = False) -> None:
        """``listen`` None: a unix socket in a directory made for this export."""
        self.journal = Path(journal).absolute()
        self.seq = seq
        self.listen = listen
        self.writable = writable
        self.uri = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self._workdir: Path | None = None
        self._sock: socket.socket | None = None
        self._bound: Listen | None = None
        self._ready = False
        self._log: deque[str] = deque(maxlen=20)
        self._log_thread: threading.Thread | None = None

    # ------------------------------------------------------------- lifecycle

    def start(self) -> str:
        """Listen, start nbdkit, wait until it serves; returns the URI."""
        program = nbdkit_binary()
        self._workdir = Path(tempfile.mkdtemp(prefix="cdp-export-"))
        try:
            listen = self.listen if self.listen is not None else Listen(unix=self._workdir / "nbd.sock")
            self._sock, self.uri = _bind(listen)
            self._bound = listen
            pidfile = self._workdir / "nbdkit.pid"
            self._spawn(program, pidfile)
            self._wait_ready(pidfile)
        except BaseException:
            self.stop()
            raise
        return self.uri

    def _command(self, program: str, pidfile: Path) -> list[str]:
        args = [program, "--exit-with-parent", "-P", os.fspath(pidfile)]
        if self.writable:
            args += ["--filter=cow"]
        else:
            args += ["-r"]
        args += ["python", os.fspath(PLUGIN), f"journal={self.journal}", f"seq={self.seq}",
                 f"python={sys.version_info[0]}.{sys.version_info[1]}"]
        args += [f"syspath={p}" for p in import_paths()]
        return args

    def _spawn(self, program: str, pidfile: Path) -> None:
        assert self._sock is not None and self._workdir is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
        env["LISTEN_FDS"] = "1"
        env["TMPDIR"] = os.fspath(self._workdir)  # the cow filter's overlay goes here
        env.pop("PYTHONHOME", None)  # a virtualenv's would break the system Python nbdkit embeds
        fd = self._sock.fileno()
        # socket activation wants the socket on fd 3 and LISTEN_PID == nbdkit's pid:
        # a shell moves the socket to fd 3, sets LISTEN_PID to its own pid and execs
        # nbdkit (same pid); bash, because dash takes only one-digit descriptors
        move = "" if fd == 3 else f"exec 3<&{fd} {fd}<&-; "
        shell = move + 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"'
        self.proc = subprocess.Popen(
            ["/bin/bash", "-c", shell, "bash", *self._command(program, pidfile)],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            pass_fds=(fd,), start_new_session=True)  # a terminal's Ctrl-C is ours to relay
        self._log_thread = threading.Thread(target=self._read_log, name="cdp-export-log", daemon=True)
        self._log_thread.start()

    def _read_log(self) -> None:
        """Keep nbdkit's last lines for errors; pass on the plugin's own one-line reports.

        nbdkit shows a plugin's exception as a Python traceback over several
        lines; the plugin also writes one line of its own (REPORT_PREFIX)
        first, and only those reach the user once the export is serving.
        """
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if not line:
                continue
            self._log.append(line)
            if self.uri and self._ready and line.startswith(REPORT_PREFIX):
                sys.stderr.write(f"cdp: export: {line[len(REPORT_PREFIX):]}\n")
                sys.stderr.flush()

    def _wait_ready(self, pidfile: Path) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        delay = 0.002
        while True:
            if pidfile.exists() and pidfile.stat().st_size > 0:
                self._ready = True
                return
            code = self.proc.poll()
            if code is not None:
                if self._log_thread is not None:
                    self._log_thread.join(timeout=2)
                raise CdpError(f"nbdkit failed to start (exit {code}): {self.failure()}")
            if time.monotonic() > deadline:
                raise CdpError(f"nbdkit did not become ready in {START_TIMEOUT_S:.0f} s: {self.failure()}")
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def failure(self) -> str:
        """Why nbdkit failed, on one line: the plugin's report, else nbdkit's last error."""
        lines = list(self._log)
        for line in reversed(lines):
            if line.startswith(REPORT_PREFIX):
                return line[len(REPORT_PREFIX):]
        for line in reversed(lines):
            if line.startswith("nbdkit: ") and "error" in line and "Traceback" not in line:
                return _short_log(line)
        return _short_log(lines[-1]) if lines else "no message"

    def wait(self, stop: threading.Event) -> int | None:
        """Block until ``stop`` is set (returns None) or nbdkit exits (returns its status)."""
        assert self.proc is not None
        while not stop.is_set():
            try:
                return self.proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                continue
        return None

    def stop(self) -> None:
        """Stop nbdkit, close the socket, remove the unix socket and the overlay."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            # SIGTERM stops nbdkit at once when no client is connected; with one
            # connected it waits for the client to hang up, so it gets a moment,
            # then SIGKILL: nothing of ours is lost (the journal is only read, the
            # overlay is thrown away) and the LMDB reader slot is left idle
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc is not None and proc.stderr is not None:
            if self._log_thread is not None:
                self._log_thread.join(timeout=2)
            proc.stderr.close()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            if self._bound is not None and self._bound.unix is not None:
                try:
                    self._bound.unix.absolute().unlink()
                except FileNotFoundError:
                    pass
                self._bound = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> ExportServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _short_log(line: str) -> str:
    """An nbdkit log line without its ``nbdkit: python[1]: error:`` prefix."""
    for marker in (" error: ", "error: "):
        if marker in line:
            line = line.split(marker, 1)[1]
            break
    return line.strip()

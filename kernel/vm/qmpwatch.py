#!/usr/bin/env python3
"""Answer the guest's requests to the qemu monitor (QMP) while it runs.

The guest tests cannot reach qemu's monitor themselves; a test that needs
the host to act (hot removal of a disk: ``device_del``) prints

    CDPVM: QMP device_del <id>

on the serial console and waits for the device to go. run.sh starts this
watcher next to qemu: it follows the console log, and for each such line
sends the command on the QMP socket and prints the reply on stderr.
Standard library only; exits when the log stops growing after qemu ended
(run.sh kills it).

    qmpwatch.py CONSOLE_LOG QMP_SOCKET
"""

from __future__ import annotations

import json
import re
import socket
import sys
import time

REQUEST = re.compile(rb"^CDPVM: QMP device_del (\w+)$")


def qmp(sock_path: str, command: dict[str, object]) -> dict[str, object]:
    """One QMP session: capabilities, the command; its reply (the first line with return or error)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(30)
        s.connect(sock_path)
        f = s.makefile("rwb")
        f.readline()    # the greeting
        for cmd in ({"execute": "qmp_capabilities"}, command):
            f.write(json.dumps(cmd).encode() + b"\n")
            f.flush()
            while True:
                reply = json.loads(f.readline() or b"{}")
                if "return" in reply or "error" in reply or not reply:
                    break
        return reply


def main(log_path: str, sock_path: str) -> int:
    pos = 0
    while True:
        try:
            with open(log_path, "rb") as f:
                f.seek(pos)
                data = f.read()
        except FileNotFoundError:
            data = b""
        if data:
            # only whole lines; a partial one is read again next time
            end = data.rfind(b"\n") + 1
            for line in data[:end].splitlines():
                m = REQUEST.match(line.strip())
                if m:
                    dev = m.group(1).decode()
                    try:
                        reply = qmp(sock_path, {"execute": "device_del", "arguments": {"id": dev}})
                    except OSError as exc:
                        reply = {"error": str(exc)}
                    print(f"qmpwatch: device_del {dev}: {json.dumps(reply)}", file=sys.stderr, flush=True)
            pos += end
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))

"""dm-cdp in real kernels: boot Debian's kernels in qemu and assert every guest result.

The kernels: 6.1 (bookworm), 6.12 (bookworm-security), 7.3 (trixie-backports,
its module built in a trixie chroot with gcc-14) and 7.3-rt, its PREEMPT_RT
flavour, where sleeping in atomic context shows at once. Each is prepared and
booted once (kernel/vm/run.sh: download the Debian packages, build the module
with warnings as failures, boot under TCG, run kernel/vm/guest/cdpvm.py with
the real drain service and journal); the guest prints one
``CDPVM: RESULT <test> PASS|FAIL <detail>`` line per test, and each becomes
one assertion here. ``kernel`` is run.sh's check that the guest booted the
release it built for (PREEMPT_RT exactly on -rt); ``dmesg-probe`` is the
dmesg scan's positive control (a module that sleeps with preemption off must
show up in it).

Without the VM tools (qemu, debootstrap, ...) or root, the tests skip with
the reason, unless ``CDP_REQUIRE_VM=1`` (CI sets it): then they fail, so a
CI machine that lost its tools cannot pass silently.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "kernel" / "vm" / "run.sh"
KERNELS = ("6.1", "6.12", "7.3", "7.3-rt")
#: Every guest test that must report PASS (kernel/vm/guest/cdpvm.py DEFAULT, the dmesg scan and its
#: control, and run.sh's check of the booted kernel).
GUEST_TESTS = ("module", "ringcheck", "block", "raw", "ext4", "discard", "overflow", "overflow-inflight",
               "overflow-irqsoff", "mark-rdonly", "mark-names", "device-id", "table-errors", "concurrent", "live",
               "cli", "filter-errors", "filter-ext4", "filter-stacked", "filter-cli", "filter-cycle",
               "filter-hotplug", "dmesg", "dmesg-probe", "kernel")
#: kernel/vm/guest/accessvm.py's (cdpvm.py runs them after its own): cdp mount, diff --files, umount
GUEST_TESTS += ("access-mount",)
#: kernel/vm/guest/reattachvm.py's: the boot unit's command lines, reattach with the filter and with dm
GUEST_TESTS += ("reattach-filter", "reattach-dm")
TOOLS = ("qemu-system-x86_64", "debootstrap", "mkfs.ext4", "e2fsck", "cpio", "depmod", "apt-get",
         "apt-cache", "dpkg", "busybox", "make", "gcc", "xz", "pahole", "unshare", "chroot")
LINE = re.compile(r"^CDPVM\[(?P<k>[^\]]+)\]: RESULT (?P<test>\S+) (?P<verdict>PASS|FAIL) ?(?P<detail>.*)$")

_results: dict[str, tuple[dict[str, tuple[str, str]], str]] = {}


def _missing() -> str | None:
    """Why the VM tests cannot run here, or None."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        return f"VM tools missing: {' '.join(missing)} (scripts/setup --vm installs them)"
    if os.geteuid() != 0:
        return "the kernel harness needs root (debootstrap, apt-get download)"
    return None


def _require_or_skip() -> None:
    reason = _missing()
    if reason is None:
        return
    if os.environ.get("CDP_REQUIRE_VM") == "1":
        pytest.fail(f"CDP_REQUIRE_VM=1 but {reason}")
    pytest.skip(reason)


def _run(kernel: str) -> tuple[dict[str, tuple[str, str]], str]:
    """Boot one kernel once per session; its results by test name and the whole output."""
    if kernel not in _results:
        env = dict(os.environ, CDP_HOST_PYTHON=sys.executable)
        p = subprocess.run([str(RUN), kernel], capture_output=True, text=True, env=env, timeout=1500)
        out = p.stdout + p.stderr
        found: dict[str, tuple[str, str]] = {}
        for line in p.stdout.splitlines():
            m = LINE.match(line.strip())
            if m and m["k"] == kernel:
                found[m["test"]] = (m["verdict"], m["detail"])
        _results[kernel] = (found, out)
    return _results[kernel]


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("test", GUEST_TESTS)
def test_guest(kernel: str, test: str) -> None:
    _require_or_skip()
    found, out = _run(kernel)
    if test not in found:
        tail = "\n".join(out.splitlines()[-25:])
        pytest.fail(f"{kernel}: the guest printed no result for {test}:\n{tail}")
    verdict, detail = found[test]
    assert verdict == "PASS", f"{kernel} {test}: {detail}"


@pytest.mark.timeout(1800)
@pytest.mark.parametrize("kernel", KERNELS)
def test_guest_finished(kernel: str) -> None:
    """The guest ran to its end (no hang, no panic) and no unexpected FAIL line appeared."""
    _require_or_skip()
    found, out = _run(kernel)
    assert f"CDPVM[{kernel}]: DONE ok" in out, "\n".join(out.splitlines()[-25:])
    extra = {t: d for t, (v, d) in found.items() if v == "FAIL"}
    assert not extra, extra

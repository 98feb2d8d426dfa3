"""`cdp attach`: put the dm-cdp filter on a device and start its journal.

Two ways in, one ring: a device-mapper device gets the ``cdp`` target
inserted live (:mod:`cdp.attach`: dmsetup tables), any other block device
the in-place filter (:mod:`cdp.filter`: the module's control device), so
the user keeps writing to the same node either way; ``--via`` forces one
(``--via dm`` on a plain device creates ``/dev/mapper/NAME`` as before the
filter existed). This verb adds the journal: attach inserts the filter
first and copies the baseline second, so a write that races the copy is also
in the ring and is applied after it.

Onto an existing journal (after a detach, a reboot, a crash) attach
continues it: it checks that DEVICE is the journal's (identity and size),
opens a reattach window, puts the filter on, then compares the device with
the journal block by block and journals only the blocks that differ
(:mod:`cdp.reattach` says why that is exact with writes racing the compare).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from cdp.commands._common import (add_compress_option, add_json_option, add_verb, compression_of, journal_path,
                                  print_json)
from cdp.errors import CdpError, UsageError

ORDER = 30


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `cdp attach`."""
    p = add_verb(
        subparsers, "attach", cmd_attach, help="put the dm-cdp filter on a block device and start its journal",
        description="Put the dm-cdp kernel filter on DEVICE and create the journal with the\n"
                    "device's present content as the baseline. A device-mapper device (an LVM\n"
                    "volume) gets the cdp target inserted live under its own name (its table\n"
                    "moves to NAME-real); any other block device gets the in-place filter: no\n"
                    "new device, keep writing to DEVICE. Mounted filesystems keep running either\n"
                    "way. --via dm on a plain device creates /dev/mapper/NAME to write through\n"
                    "instead. Onto an existing journal (after a detach, a reboot, a crash) it\n"
                    "continues that journal: DEVICE must be its device (identity and size); the\n"
                    "filter goes on, then the device is compared with the journal block by block\n"
                    "(CRC-32C) and only the blocks that differ are journaled; the points between\n"
                    "the journal's last record and the end of the compare are not whole.\n"
                    "systemd/cdp-attach@.service does this at every boot. Then run the drain service:\n"
                    "--run here, or 'systemctl start cdp@NAME' (kernel/systemd/cdp@.service).\n"
                    "Needs root and the dm-cdp module (make -C kernel install, or dkms).",
        epilog="examples:\n"
               "  cdp attach /dev/sdb --name sdb --journal /var/lib/cdp/sdb\n"
               "  cdp attach /dev/vg0/data --journal /var/lib/cdp/data --run   # live, under vg0-data\n"
               "  cdp attach /dev/sdb --via dm --name sdb --journal /var/lib/cdp/sdb   # /dev/mapper/sdb\n"
               "  cdp attach /dev/sdb --name sdb --journal /var/lib/cdp/sdb --json     # again: continue it\n"
               "  cdp attach disk.img --journal ./j --ring ./ring2     # continue, the simulator's new ring")
    p.add_argument("device", metavar="DEVICE", help="the block device to protect")
    p.add_argument("--name", "-n", metavar="NAME", default=None,
                   help="dm and ring name (default: the dm name of a dm DEVICE, else its basename)")
    p.add_argument("--ring-mb", type=int, default=16, metavar="N", help="ring size in MiB, a power of two (16)")
    p.add_argument("--policy", choices=("block", "overflow"), default="block",
                   help="full ring: wait up to --wait-ms then drop (block), or drop at once (overflow)")
    p.add_argument("--wait-ms", type=int, default=1000, metavar="MS", help="longest wait for room (1000)")
    p.add_argument("--via", choices=WAYS, default=None,
                   help="force the way in: dm (the cdp target) or filter (in place); default: dm for a "
                        "device-mapper device, filter otherwise")
    p.add_argument("--run", action="store_true", help="drain in the foreground until detached")
    p.add_argument("--ring", metavar="RING", default=None,
                   help="an existing journal only: a ring a producer started on DEVICE after the gap "
                        "(the simulator) instead of the kernel filter")
    p.add_argument("--compare-later", action="store_true",
                   help="an existing journal only: return once the filter is on and leave the compare to "
                        "the drain service (points stay not whole until it is done)")
    add_json_option(p)
    add_compress_option(p)


WAYS = ("dm", "filter")


def choose_way(dm_name: str | None, via: str | None) -> str:
    """The way in: ``via`` when given, else dm for a device-mapper device (``dm_name``), else the filter."""
    if via is not None:
        if via not in WAYS:
            raise UsageError(f"--via must be one of {', '.join(WAYS)}")
        return via
    return "dm" if dm_name is not None else "filter"


def default_name(device: str, dm_name: str | None, name: str | None) -> str:
    """The ring's name: --name, else the dm name of a dm device, else the device's basename."""
    if name is not None:
        return name
    return dm_name or os.path.basename(device.rstrip("/"))


def _options(args: argparse.Namespace) -> list[str]:
    if args.ring_mb < 1 or args.ring_mb > 1024 or args.ring_mb & (args.ring_mb - 1):
        raise UsageError("--ring-mb must be a power of two from 1 to 1024")
    if not 0 <= args.wait_ms <= 60000:
        raise UsageError("--wait-ms must be between 0 and 60000")
    return [f"ring_mb={args.ring_mb}", f"policy={args.policy}", f"wait_ms={args.wait_ms}"]


def cmd_attach(args: argparse.Namespace) -> int:
    """Filter first, baseline second, then (with --run) drain until detached.

    Onto an existing journal: a reattach (:func:`cmd_reattach`).
    """
    from cdp import attach
    from journal.format import MARKER
    from journal.journal import occupied

    jpath = journal_path(args)
    if (jpath / MARKER).exists():
        if args.no_compress:
            raise UsageError(f"--no-compress is for a new journal: {jpath} exists and keeps its own setting")
        return cmd_reattach(args, jpath)
    # an empty directory (a mount point made for the journal) is fine, and so is what an attach
    # killed during its baseline left (no marker file yet): Journal.create starts that over
    if occupied(jpath):
        raise CdpError(f"{jpath} exists and is not a journal; give a new --journal directory "
                       "(or an existing journal to continue it)")
    if args.ring is not None:
        raise UsageError("--ring continues an existing journal; for a new one use 'cdp init'")
    did = _device_id(args.device)
    way, name, path, how = _start_capture(args, did)
    try:
        from journal import Journal
        from journal.errors import JournalError
        from journal.units import format_bytes
        nbytes = attach.device_bytes(path)
        block = attach.info(name).block_size or 512
        try:
            Journal.create(jpath, device_bytes=nbytes, block_size=block, device_id=did, source=path,
                           compression=compression_of(args)).close()
        except JournalError as exc:
            raise CdpError(str(exc)) from None
    except BaseException:
        _undo(way, name)
        raise
    print(f"cdp: attach: {how}; journal {jpath} holds the baseline ({format_bytes(nbytes)})", file=sys.stderr)
    if args.json:
        print_json({"journal": str(jpath), "device": args.device, "way": way, "ring": attach.ring_path(name),
                    "path": path, "device_bytes": nbytes, "created": True})
    run = f"cdp run --journal {jpath} --ring {attach.ring_path(name)} --device {path} --until-detached"
    if not args.run:
        print(f"cdp: attach: now start the drain service: systemctl start cdp@{name}  (or: {run})",
              file=sys.stderr)
        return 0
    from cdp.commands.run import run_service

    return run_service(jpath, attach.ring_path(name), device=path, until_detached=True)


def _device_id(device: str) -> bytes:
    from journal.identity import device_id

    try:
        return device_id(device)
    except (OSError, ValueError) as exc:
        raise CdpError(f"cannot use {device}: {getattr(exc, 'strerror', None) or exc}") from None


def _start_capture(args: argparse.Namespace, did: bytes) -> tuple[str, str, str, str]:
    """Put the filter on ``args.device``: (way, name, the path written through, what was done)."""
    from cdp import attach

    # the ring names the device it protects: 'cdp run' refuses a ring of another
    options = [*_options(args), f"device_id={did.hex()}"]
    dm_name = attach.dm_name_of(args.device)
    way = choose_way(dm_name, args.via)
    name = default_name(args.device, dm_name, args.name)
    attach.check_name(name)
    if way == "filter":
        from cdp import filter as cdpfilter

        if not os.path.exists(args.device):
            raise CdpError(f"{args.device} does not exist")
        cdpfilter.attach(args.device, name, options)
        path = args.device
        try:
            cdpfilter.flush_device_cache(path)   # the baseline is read from the device in use
        except CdpError:
            cdpfilter.detach(name)
            raise
        how = f"filter attached in place on {path} (keep writing to it; ring {attach.ring_path(name)})"
    elif dm_name is not None:
        if args.name not in (None, dm_name):
            raise UsageError(f"{args.device} is the dm device {dm_name}: a live insertion keeps that name")
        path = attach.attach_live(name, options=options)
        how = f"dm target inserted live under {path} (original table now in {name}-real)"
    else:
        path = attach.attach_new(args.device, name, options=options)
        how = f"dm target: created {path}: write through it"
    return way, name, path, how


def cmd_reattach(args: argparse.Namespace, jpath: Path) -> int:
    """Continue an existing journal: check the device, open the window, filter on, compare.

    The window is appended before the filter goes on, so a reattach killed
    at any moment leaves either no filter (rerun: it opens the window again,
    harmlessly) or a filter whose gap the journal already knows; a rerun
    with the filter on finds the window and finishes the compare.
    """
    from cdp import reattach
    from journal import Journal
    from journal.errors import JournalError

    started = time.monotonic()
    if args.ring is None and os.path.isfile(args.device):
        raise UsageError(f"{args.device} is a regular file: no filter goes on it; give --ring (a simulator's ring)")
    try:
        with Journal.open(jpath, readonly=True) as j:
            j.index.check_tree()
            reattach.check_device(j, args.device)
    except JournalError as exc:
        raise CdpError(f"cannot continue {jpath}: {exc}") from None
    capture = _capture_of(args)   # (way, name, ring, path) when something captures already, else None
    try:
        with Journal.open(jpath) as j:
            if args.ring is not None:
                # a ring a producer started after the gap: always a window (a rerun's
                # extra one costs a compare, never a wrong byte)
                window = reattach.open_window(j, old_ring_gone=False)
            elif capture is None:
                window = reattach.open_window(j, old_ring_gone=True)
            else:
                # the filter stayed on since the window was opened: finish that one
                ws = reattach.open_reattach_windows(j)
                window = ws[0] if ws else None
    except JournalError as exc:
        raise CdpError(f"cannot continue {jpath}: {exc}") from None
    if capture is None:
        try:
            way, name, path, how = _start_capture(args, _device_id(args.device))
        except CdpError as exc:
            raise CdpError(f"{exc} (the journal keeps its reattach window open: rerun 'cdp attach' "
                           "once the device can be filtered)") from None
        capture = (way, name, _ring_path(name), path)
        print(f"cdp: attach: {how}", file=sys.stderr)
    else:
        print(f"cdp: attach: {capture[3]} is captured already (ring {capture[2]})", file=sys.stderr)
    way, name, ring, path = capture
    summary: dict[str, Any] = {"journal": str(jpath), "device": args.device, "way": way, "ring": ring,
                               "path": path, "window": None}
    if args.run:
        summary.update(_compare(jpath, ring, path, until_detached=True))
    elif window is None:
        summary["compare"] = "none needed"
    elif args.compare_later:
        summary["compare"] = "left to the drain service"
    else:
        summary.update(_compare(jpath, ring, path, until_detached=False))
    with Journal.open(jpath, readonly=True) as j:
        if window is not None:
            w = next(x for x in j.overflow_windows() if x.seq == window.seq)
            summary["window"] = {"seq": w.seq, "start_ns": w.start_ts, "closed_seq": w.resync_seq,
                                 "closed_ns": w.resync_ts, "resynced_to": w.resynced_to,
                                 "open": w.resync_seq is None}
    summary["seconds"] = round(time.monotonic() - started, 3)
    if window is not None and summary["window"]["open"] and not args.compare_later:
        raise CdpError(f"the compare of {path} did not finish, the window stays open "
                       f"({'; '.join(summary.get('problems') or []) or 'the drain stopped'}); rerun 'cdp attach'")
    _say_reattach(args, summary)
    return 0


def _ring_path(name: str) -> str:
    from cdp import attach

    return attach.ring_path(name)


def _capture_of(args: argparse.Namespace) -> tuple[str, str, str, str] | None:
    """What captures ``args.device`` already: (way, name, ring, path written through), or None.

    ``--ring``: a producer the caller started (the simulator). Else the
    kernel: the in-place filter on the device, the cdp target inserted live
    in a dm device, or /dev/mapper/NAME made over it by ``--via dm``.
    """
    from cdp import attach

    if args.ring is not None:
        return ("ring", "", args.ring, args.device)
    from cdp import filter as cdpfilter

    st = cdpfilter.status(device=args.device)
    if st is not None:
        return ("filter", st.name, _ring_path(st.name), args.device)
    dm_name = attach.dm_name_of(args.device)
    name = default_name(args.device, dm_name, args.name)
    attach.check_name(name)
    for dm, path in ((dm_name, args.device), (name, f"/dev/mapper/{name}")):
        if dm is not None and os.path.exists(f"/dev/mapper/{dm}") and " cdp " in f" {attach.dm_table(dm)} ":
            return ("dm", dm, _ring_path(dm), path)
    return None


def _compare(jpath: Path, ring: str, path: str, *, until_detached: bool) -> dict[str, Any]:
    """Drain the ring and compare the device until the window closes (or, with --run, until detached)."""
    from cdp.progress import progress_bar
    from cdp.service import drain
    from journal.errors import JournalError

    from cdp.ringabi import RingError

    with progress_bar(f"compare of {path}") as bar:
        try:
            stats = drain(jpath, ring, device_path=path, until_detached=until_detached,
                          until_resynced=not until_detached,
                          on_compare=lambda c: bar(c.done_bytes, c.total_bytes))
        except JournalError as exc:
            raise CdpError(f"cannot continue {jpath}: {exc}") from None
        except RingError as exc:
            raise CdpError(str(exc)) from None
    return {"blocks_compared": stats.compare.blocks_compared, "blocks_differing": stats.compare.blocks_differing,
            "bytes_journaled": stats.compare.bytes_journaled, "records_journaled": stats.records,
            "stopped_by": stats.stopped_by, "problems": stats.problems}


def _say_reattach(args: argparse.Namespace, summary: dict[str, Any]) -> None:
    """The result, as JSON or one line."""
    from journal.units import format_bytes

    if args.json:
        print_json(summary)
        return
    w = summary["window"]
    if w is None:
        print(f"cdp: attach: {summary['journal']} continues; no gap to compare", file=sys.stderr)
    elif "blocks_compared" not in summary:
        print(f"cdp: attach: {summary['journal']} continues; window at seq {w['seq']} stays open until "
              f"'cdp run' has compared the device", file=sys.stderr)
    else:
        state = "open" if w["open"] else f"closed at seq {w['closed_seq']}"
        print(f"cdp: attach: {summary['journal']} continues: compared {summary['blocks_compared']} blocks, "
              f"{summary['blocks_differing']} differed ({format_bytes(summary['bytes_journaled'])} journaled); "
              f"window at seq {w['seq']} {state}", file=sys.stderr)


def _undo(way: str, name: str) -> None:
    """Take the filter off again after a failed journal creation."""
    if way == "filter":
        from cdp import filter as cdpfilter

        cdpfilter.detach(name)
    else:
        from cdp import attach

        attach.detach(name)

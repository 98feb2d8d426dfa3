"""The drain service's status: the record it publishes, and whether it is running.

`cdp run` publishes a :class:`ServiceStatus` about once a second, and once
more with ``state="stopped"`` when it ends, through ``Journal.set_status``
(the index's ``status`` meta value, a msgpack map of the fields below).
`cdp status` and the TUI read it back with :meth:`ServiceStatus.from_record`
and look at one :class:`Service` to decide whether the service runs.

Whether it runs: the writer lock
--------------------------------
The record says what the service last said; it cannot say that the
service died. The one fact that does is the journal's writer lock: the
service holds ``DIR/lock`` (``flock``, exclusive) from the moment it opens
the journal until its process ends, and the kernel drops the lock when the
process goes, however it goes (SIGKILL included). So "running" means "a
process holds the writer lock", read from ``/proc/locks``.

That is chosen over the TUI's former test (the record is younger than five
seconds and its pid answers ``kill(pid, 0)``), which is wrong both ways: a
service stalled for five seconds on a slow fsync or a long resync read is
taken for dead, and a dead one whose pid was reused, or whose record is
fresh because it was killed a moment ago, is taken for alive; it also
depends on the wall clock not stepping and on the reader seeing the
service's pid namespace. Reading ``/proc/locks`` instead of trying the lock
never disturbs a service that is starting at the same moment (a ``flock``
probe could make its own ``LOCK_NB`` attempt fail). A lock held by another
writer (``cdp init`` copying the baseline) also counts: something is
writing the journal.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from journal.mounts import mount_of

#: ``state`` of a service that is draining.
RUNNING = "running"
#: ``state`` of a service that ended cleanly (its last record).
STOPPED = "stopped"

_LOCK_FILE = "lock"


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """What `cdp run` says about itself; a field is None when the record lacks it.

    Rates, lag and ring fill describe the moment of ``updated_ns`` and mean
    something only while the service runs; drops, damage and the pending
    resync stay true of the journal after it stops.
    """

    #: the service's process id
    pid: int | None = None
    #: the ring it drains and the journal it writes
    ring: str | None = None
    journal: str | None = None
    #: the device it copies overflow ranges from ('' if none is known)
    device: str | None = None
    #: RUNNING or STOPPED
    state: str | None = None
    started_ns: int | None = None
    #: wall clock of this record
    updated_ns: int | None = None
    #: records and payload bytes journaled by this run
    records: int | None = None
    bytes: int | None = None
    #: records/s and bytes/s over the last second or so
    rate_records: float | None = None
    rate_bytes: float | None = None
    #: ring bytes not yet released, and the age of the oldest record not yet read
    lag_bytes: int | None = None
    lag_seconds: float | None = None
    #: fraction of the ring not yet released (0..1), and its size in bytes
    ring_fill: float | None = None
    ring_size: int | None = None
    #: writes the producer dropped since it attached; whether it is dropping now
    dropped: int | None = None
    overflow: bool | None = None
    #: whether the producer has detached
    detached: bool | None = None
    #: ring records that failed their checks, overflow windows seen
    corrupt: int | None = None
    overflows: int | None = None
    #: bytes of open overflow windows still to copy from the device
    resync_pending_bytes: int | None = None
    #: newest journal seq, newest ring seq journaled
    last_seq: int | None = None
    ring_seq: int | None = None

    @classmethod
    def from_record(cls, record: Any) -> ServiceStatus | None:
        """The status stored in the journal (None if there is none); fields of a wrong type read as None."""
        if not isinstance(record, dict) or not record:
            return None
        values = {}
        for f in fields(cls):
            value = record.get(f.name)
            values[f.name] = value if _fits(value, _TYPES[f.name]) else None
        return cls(**values)

    def as_record(self) -> dict[str, Any]:
        """The map ``Journal.set_status`` stores: the fields that are set."""
        return {key: value for key, value in asdict(self).items() if value is not None}


def _fits(value: object, kinds: tuple[type, ...]) -> bool:
    if value is None or (isinstance(value, bool) and bool not in kinds):
        return False
    return isinstance(value, kinds)


_NUMBER = (int, float)
_TYPES: dict[str, tuple[type, ...]] = {
    "pid": (int,), "ring": (str,), "journal": (str,), "device": (str,), "state": (str,),
    "started_ns": (int,), "updated_ns": (int,), "records": (int,), "bytes": (int,),
    "rate_records": _NUMBER, "rate_bytes": _NUMBER, "lag_bytes": (int,), "lag_seconds": _NUMBER,
    "ring_fill": _NUMBER, "ring_size": (int,), "dropped": (int,), "overflow": (bool,),
    "detached": (bool,), "corrupt": (int,), "overflows": (int,), "resync_pending_bytes": (int,),
    "last_seq": (int,), "ring_seq": (int,),
}
assert set(_TYPES) == {f.name for f in fields(ServiceStatus)}


@dataclass(frozen=True, slots=True)
class Service:
    """The drain service of one journal, as seen now: what it last said, who holds the journal."""

    #: its last published status (None: no service ever ran on this journal)
    status: ServiceStatus | None
    #: pid of the process holding the writer lock (None: nobody)
    writer_pid: int | None

    def is_running(self) -> bool:
        """Whether the service runs: some process holds the journal's writer lock."""
        return self.writer_pid is not None


def read_service(journal: Any) -> Service:
    """The status ``journal`` (any open :class:`journal.JournalReader`) holds, and its writer."""
    return Service(ServiceStatus.from_record(journal.status()), writer_pid(journal.path))


def writer_pid(path: str | os.PathLike[str]) -> int | None:
    """Pid of the process holding journal ``path``'s writer lock, from ``/proc/locks``.

    ``/proc/locks`` names a file as MAJOR:MINOR:INODE with the device of its
    file system's superblock; ``stat()`` reports another device on a btrfs
    subvolume, so the device of the mount holding the file counts too.
    """
    lock = Path(path) / _LOCK_FILE
    try:
        st = os.stat(lock)
        with open("/proc/locks") as fh:
            lines = fh.readlines()
    except OSError:
        return None
    mount = mount_of(lock)
    devices = {st.st_dev} | ({mount.dev} if mount is not None else set())
    wanted = {f"{os.major(dev):02x}:{os.minor(dev):02x}:{st.st_ino}" for dev in devices}
    for line in lines:
        found = line.split()
        if "->" in found:  # a process waiting for the lock, not holding it
            continue
        if len(found) >= 6 and found[1] == "FLOCK" and found[5] in wanted:
            return int(found[4])
    return None

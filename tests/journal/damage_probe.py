"""Run every read a user can ask of a journal and print one JSON line per answer.

Used by test_index_damage in a subprocess, so that a damaged index that
crashed the process (SIGBUS, SIGSEGV) would show as a signal, not take
pytest down. Each answer is ``{"op": ..., "ok": value}`` or
``{"op": ..., "err": "one line"}``.

    python -m tests.journal.damage_probe JOURNAL OUTDIR SPEC.json
    python -m tests.journal.damage_probe --reindex JOURNAL
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from journal import Journal, JournalError
from journal.reindex import reindex


def _answer(op: str, fn) -> None:  # noqa: ANN001
    try:
        value = fn()
    except JournalError as exc:
        print(json.dumps({"op": op, "err": str(exc)}), flush=True)
        return
    print(json.dumps({"op": op, "ok": value}), flush=True)


def main(argv: list[str]) -> int:
    if argv[0] == "--reindex":
        _answer("reindex", lambda: reindex(argv[1]).records)
        return 0
    path, out, spec = Path(argv[0]), Path(argv[1]), json.loads(Path(argv[2]).read_text())

    def restore(**at: int) -> str:
        target = out / "restored.img"
        target.unlink(missing_ok=True)
        with Journal.open(path, readonly=True) as j:
            j.restore(target, allow_partial=True, **at)
        return hashlib.sha256(target.read_bytes()).hexdigest()

    def points() -> list:
        with Journal.open(path, readonly=True) as j:
            j.index.check_tree()  # as `cdp points` does
            return [[p.seq, p.ts_ns, p.kind, p.name, p.whole] for p in j.points()]

    def verify() -> bool:
        with Journal.open(path, readonly=True) as j:
            return j.verify().ok

    for seq in spec["seqs"]:
        _answer(f"restore seq {seq}", lambda seq=seq: restore(seq=seq))
    for ts in spec["times"]:
        _answer(f"restore at {ts}", lambda ts=ts: restore(at_ns=ts))
    _answer("points", points)
    _answer("verify", verify)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

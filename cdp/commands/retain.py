"""`cdp retain`: how much history the journal keeps (its retention policy)."""

from __future__ import annotations

import argparse
from typing import Any

from cdp.commands._common import add_json_option, add_verb, open_journal, print_json
from cdp.errors import UsageError

ORDER = 15


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `cdp retain`."""
    p = add_verb(
        subparsers, "retain", cmd_retain, help="set or show how much history the journal keeps",
        description="Set the journal's retention policy, or (with no option) print it with\n"
                    "where retention stands: the oldest point kept, the last compaction.\n\n"
                    "--keep DURATION keeps every point of the last DURATION; the device as of\n"
                    "the oldest point kept becomes the new base and older history is deleted.\n"
                    "--thin TIERS keeps fewer points as they age: '1h:all,1d:1m,30d:1h' keeps\n"
                    "every point of the last hour, the newest of each minute for a day, the\n"
                    "newest of each hour for 30 days. With both, --keep is the horizon and\n"
                    "--thin thins inside it (past the oldest tier, its spacing goes on); with\n"
                    "--thin alone, the oldest tier's age is the horizon. Named marks are kept until they fall behind the horizon;\n"
                    "'cdp mark --keep-forever NAME' pins one whatever the policy says.\n"
                    "--max-size SIZE caps the journal's bytes on disk: reaching it moves the\n"
                    "horizon forward (the oldest history goes first) instead of stopping the\n"
                    "drain, and 'cdp status' and the service's log say so.\n\n"
                    "The policy is stored in the journal. The drain service ('cdp run') applies\n"
                    "it by itself, checking every minute; 'cdp compact' applies it now. A time\n"
                    "that was thinned away restores as the newest kept point before it.",
        epilog="examples:\n"
               "  cdp retain --journal /var/lib/cdp/sdb --keep 7d --max-size 200G\n"
               "  cdp retain --keep 30d --thin '1h:all,1d:1m,30d:1h'\n"
               "  cdp retain                      # print the policy and the horizon\n"
               "  cdp retain --clear              # keep everything again (from now on)")
    p.add_argument("--keep", metavar="DURATION", help="keep every point of the last DURATION (e.g. 7d, 12h)")
    p.add_argument("--max-size", metavar="SIZE", help="cap the journal's size on disk (e.g. 500M, 200G, 2T)")
    p.add_argument("--thin", metavar="TIERS", help="thin older points: AGE:EVERY,... e.g. '1h:all,1d:1m,30d:1h'")
    p.add_argument("--clear", action="store_true", help="remove the policy: keep everything from now on")
    add_json_option(p)


def cmd_retain(args: argparse.Namespace) -> int:
    """Set the policy (any option given) or print it, with where retention stands."""
    from journal.retention import Policy, PolicyError, parse_size, parse_tiers
    from journal.timespec import parse_duration

    changing = args.keep is not None or args.max_size is not None or args.thin is not None or args.clear
    if args.clear and (args.keep is not None or args.max_size is not None or args.thin is not None):
        raise UsageError("--clear removes the policy; it cannot be given with --keep, --max-size or --thin")
    with open_journal(args, marks=changing) as journal:  # beside a running service, as marks are
        if changing:
            if args.clear:
                policy = Policy()
            else:
                try:
                    keep = parse_duration(args.keep) if args.keep is not None else None
                    if keep is not None and keep <= 0:
                        raise UsageError("--keep: the duration must be more than zero")
                    policy = Policy(keep, parse_size(args.max_size) if args.max_size is not None else None,
                                    parse_tiers(args.thin) if args.thin is not None else ())
                except (PolicyError, ValueError) as exc:
                    raise UsageError(f"{_option(args, exc)}{exc}") from None
            journal.set_retention(policy)
        doc = retention_doc(journal)
    if args.json:
        print_json(doc)
        return 0
    for line in retention_lines(doc):
        print(line)
    if changing and not args.clear:
        print("applied by the drain service within a minute, or now with 'cdp compact'")
    return 0


def _option(args: argparse.Namespace, exc: Exception) -> str:
    text = str(exc)
    if text.startswith(("cannot read SIZE", "SIZE")):
        return "--max-size: "
    if text.startswith(("tier", "cannot read tier")):
        return "--thin: "
    return "--keep: " if args.keep is not None and "DURATION" in text else ""


def retention_doc(journal: Any) -> dict[str, Any]:
    """The policy and where retention stands, as `cdp retain --json` and `cdp status --json` carry it."""
    from journal.compact import COMPACTION_META
    from journal.maintain import last_compaction
    from journal.points import retained
    from journal.retention import Policy
    from journal.units import format_ts

    index = journal.index
    with index.read() as txn:
        policy = Policy.from_meta(index.get_meta(txn, "retention"))
        sel = retained(index, txn)
        pending = index.get_meta(txn, COMPACTION_META)
    last = last_compaction(journal)
    doc: dict[str, Any] = {"policy": policy.describe(), "active": policy.active,
                           "horizon": None, "compaction": pending["stage"] if pending else None,
                           "last_compaction": last}
    if sel is not None:
        doc["horizon"] = {"seq": sel.horizon_seq, "ts_ns": sel.horizon_ts, "time": format_ts(sel.horizon_ts),
                          "fold_seq": sel.fold_seq, "kept_points": len(sel.kept)}
    return doc


def retention_lines(doc: dict[str, Any]) -> list[str]:
    """The same for people."""
    from journal.units import format_bytes, format_ts

    p = doc["policy"]
    if not doc["active"]:
        lines = ["retention none: every point is kept and the journal only grows "
                 "(set one with 'cdp retain --keep 7d')"]
    else:
        parts = []
        if p["keep"]:
            parts.append(f"keep {p['keep']}")
        if p["thin"]:
            parts.append(f"thin {p['thin']}")
        if p["max_size"]:
            parts.append(f"at most {p['max_size']} on disk")
        lines = [f"retention {', '.join(parts)}"]
    h = doc["horizon"]
    if h is not None:
        lines.append(f"horizon   oldest point {format_ts(h['ts_ns'])} (seq {h['seq']}); history up to seq "
                     f"{h['fold_seq']} thinned to {h['kept_points']} points")
    last = doc["last_compaction"]
    if doc["compaction"]:
        lines.append(f"compact   in progress (step: {doc['compaction']})")
    elif last:
        why = "" if last.get("reason") in (None, "policy", "cdp compact") else f"; {last['reason']}"
        lines.append(f"compact   last finished {format_ts(last['finished_ns'])}: {last['segments_deleted']} "
                     f"segments deleted, {format_bytes(last['bytes_freed'])} freed{why}")
    return lines

"""The `cdp` command: argparse front door over the journal, the service and the UIs.

Every module in :mod:`cdp.commands` (except ``_``-prefixed helpers) is one
verb, with a ``register(subparsers)`` that adds it and one function that
takes the parsed arguments and returns the exit status. Command
modules import only ``argparse`` at load time, and their handlers import
what they need, so ``cdp --help`` stays fast and ``cdp run`` never loads
the TUI.

Errors meant for users (:class:`cdp.errors.CdpError`, the journal's
``JournalError``, the ring's ``RingError``, ``OSError``) are printed here as
one line, ``cdp: VERB: message``, with a non-zero status; no traceback
reaches the terminal. ``CDP_DEBUG=1`` shows the traceback of unexpected
errors, which are bugs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import re
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import NoReturn

from cdp.errors import CdpError, one_line

#: Exit status of a bug (an exception no one expected): sysexits' EX_SOFTWARE.
EXIT_BUG = 70
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

DESCRIPTION = """\
Continuous data protection for Linux block devices: every write to a protected
device is journaled with its time, so the device can be rebuilt exactly as it
was at any moment since the journal began."""

EPILOG = """\
getting started:
  cdp demo                                   a simulated device, end to end, in seconds
  cdp init --journal /var/lib/cdp/sdb --device /dev/sdb
  cdp run --journal /var/lib/cdp/sdb --ring /dev/cdp/sdb
  cdp points --journal /var/lib/cdp/sdb --since -1h
  cdp restore --journal /var/lib/cdp/sdb --at -5m --to /tmp/sdb-5-minutes-ago.img

Every verb takes --journal DIR, or reads it from $CDP_JOURNAL.
'cdp VERB --help' explains each verb; 'cdp restore --help' the TIME forms.
Set CDP_DEBUG=1 to see a traceback when cdp reports an internal error."""


class CdpArgumentParser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line, ``cdp: VERB: message``, exit 2.

    ``time_help=True`` (for verbs whose options take a TIME) appends the TIME
    grammar, :data:`journal.timespec.TIME_HELP`, to the description when the
    help is shown, not when the verb is registered: registering every verb
    for ``cdp --help`` must not load the journal package.
    """

    def __init__(self, *args: object, time_help: bool = False, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self._time_help = time_help

    def format_help(self) -> str:
        if self._time_help:
            from journal.timespec import TIME_HELP

            self.description = f"{self.description}\n\n{TIME_HELP}" if self.description else TIME_HELP
            self._time_help = False
        return super().format_help()

    def error(self, message: str) -> NoReturn:
        unknown = re.match(r"argument (?:command|COMMAND): invalid choice: '([^']*)'", message)
        if unknown:
            message = f"unknown command '{unknown.group(1)}'; 'cdp --help' lists the commands"
        else:
            message = f"{message} (see '{self.prog} --help')"
        verb = self.prog.split()[1:]
        prefix = "cdp: " + "".join(f"{v}: " for v in verb)
        sys.stderr.write(prefix + message + "\n")
        sys.exit(2)


def _command_modules() -> list[tuple[str, object]]:
    """Import every public module of :mod:`cdp.commands`, in their ``ORDER``.

    A module that fails to import is returned as the exception, so one
    broken verb reports itself instead of taking every other verb down.
    """
    import cdp.commands

    modules: list[tuple[int, str, object]] = []
    for info in pkgutil.iter_modules(cdp.commands.__path__):
        if info.name.startswith("_"):
            continue
        try:
            module: object = importlib.import_module(f"cdp.commands.{info.name}")
        except Exception as exc:  # noqa: BLE001 - reported when the verb is used
            module = exc
        modules.append((getattr(module, "ORDER", 50), info.name, module))
    return [(name, module) for _order, name, module in sorted(modules, key=lambda m: (m[0], m[1]))]


def _broken_verb(subparsers: argparse._SubParsersAction, name: str, exc: BaseException) -> None:
    """A stand-in for a verb whose module did not load: using it says why."""
    if name in subparsers.choices:
        return
    reason = f"{type(exc).__name__}: {one_line(exc)}"
    p = subparsers.add_parser(name, help=f"(unavailable: {reason})", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)

    def fail(_args: argparse.Namespace) -> int:
        raise CdpError(f"this command failed to load ({reason}); set CDP_DEBUG=1 for details", exit_code=EXIT_BUG)

    p.set_defaults(func=fail)


def build_parser() -> CdpArgumentParser:
    """The whole command line: the top-level options and every verb."""
    parser = CdpArgumentParser(prog="cdp", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"cdp {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands",
                                       parser_class=CdpArgumentParser)
    for name, module in _command_modules():
        if isinstance(module, BaseException):
            if os.environ.get("CDP_DEBUG"):
                raise module
            _broken_verb(subparsers, name, module)
            continue
        try:
            module.register(subparsers)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - as for a failed import
            if os.environ.get("CDP_DEBUG"):
                raise
            _broken_verb(subparsers, name, exc)
    return parser


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("cdp")
    except Exception:  # noqa: BLE001 - not installed: running from a checkout
        return "unknown"


def _user_error_types() -> tuple[type[BaseException], ...]:
    """CdpError plus the library errors, taken only from modules already loaded.

    An exception of a library can only exist if its module was imported, so
    looking in ``sys.modules`` keeps the top level from importing LMDB or the
    ring just to be able to catch their errors.
    """
    types: list[type[BaseException]] = [CdpError]
    for module, name in (("journal.errors", "JournalError"), ("cdp.ringabi", "RingError")):
        loaded = sys.modules.get(module)
        found = getattr(loaded, name, None) if loaded is not None else None
        if isinstance(found, type) and issubclass(found, BaseException):
            types.append(found)
    return tuple(types)


#: Options whose value is a TIME, which may start with '-' (``--at -5m``).
TIME_OPTIONS = frozenset({"--at", "--since", "--until", "--from", "--to"})


def _join_time_values(argv: Sequence[str]) -> list[str]:
    """Turn ``--at -5m`` into ``--at=-5m``: argparse would take ``-5m`` for an option."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            out.extend(argv[i:])
            break
        if arg in TIME_OPTIONS and i + 1 < len(argv) and argv[i + 1].startswith("-") and argv[i + 1] != "--":
            out.append(f"{arg}={argv[i + 1]}")
            i += 2
            continue
        out.append(arg)
        i += 1
    return out


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the program is, so cleanups run as for Ctrl-C."""


@contextmanager
def _terminate_like_interrupt() -> Iterator[None]:
    """Make SIGTERM unwind like Ctrl-C while a verb runs: a half-written restore target is removed.

    Verbs with a clean stop of their own (`cdp run`) install their own handler
    inside this one. The previous handler comes back afterwards, so ``main``
    can be called in-process (tests) without changing the caller's signals.
    """
    def raise_terminated(_signum: int, _frame: object) -> None:
        raise Terminated

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _subparser(parser: argparse.ArgumentParser, verb: str | None) -> argparse.ArgumentParser | None:
    """The parser of one verb, to report its errors under its name."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and verb is not None:
            return action.choices.get(verb)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one `cdp` command line; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(_join_time_values(sys.argv[1:] if argv is None else argv))
    if extra:
        # Blame the verb, whose --help lists what it accepts, not the top level.
        verb_parser = _subparser(parser, args.command)
        (verb_parser or parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    verb = args.command
    try:
        with _terminate_like_interrupt():
            return int(args.func(args))
    except Terminated:
        sys.stderr.write(f"cdp: {verb}: terminated\n")
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        sys.stderr.write(f"cdp: {verb}: interrupted\n")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our output went away (`cdp points | head`): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except Exception as exc:  # noqa: BLE001 - the one place errors become messages
        if isinstance(exc, _user_error_types()):
            sys.stderr.write(f"cdp: {verb}: {one_line(exc)}\n")
            return getattr(exc, "exit_code", 1)
        if isinstance(exc, OSError):
            sys.stderr.write(f"cdp: {verb}: {one_line(exc)}\n")
            return 1
        if os.environ.get("CDP_DEBUG"):
            raise
        sys.stderr.write(f"cdp: {verb}: internal error: {type(exc).__name__}: {one_line(exc)} "
                         "(set CDP_DEBUG=1 for the traceback)\n")
        return EXIT_BUG


if __name__ == "__main__":
    sys.exit(main())

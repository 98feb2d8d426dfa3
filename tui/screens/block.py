"""The block chooser: which block the detail view dumps, by number or by byte offset."""

from __future__ import annotations

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Input, Label, Static

from journal.format import BLOCK


def parse_block(text: str, device_bytes: int) -> int:
    """'300' is block 300; '0x12c000' (or '@1228800') is the block holding that byte.

    Raises ValueError with a one-line message.
    """
    text = text.strip().replace("_", "")
    try:
        if text.lower().startswith("0x"):
            block = int(text, 16) // BLOCK
        elif text.startswith("@"):
            block = int(text[1:]) // BLOCK
        else:
            block = int(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither a block number nor a byte offset (0x… or @…)") from None
    last = (device_bytes - 1) // BLOCK
    if not 0 <= block <= last:
        raise ValueError(f"block {block} is outside the device (blocks 0..{last})")
    return block


class BlockScreen(ModalScreen[int | None]):
    """Returns the block number, or None when dismissed."""

    BINDINGS = [Binding("escape", "dismiss_none", "Cancel")]

    def __init__(self, device_bytes: int) -> None:
        super().__init__()
        self.device_bytes = device_bytes

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(f"Show which 4 KiB block? A block number (0..{(self.device_bytes - 1) // BLOCK}), "
                        "or a byte offset as 0x… or @…")
            yield Input(placeholder="e.g. 300 or 0x12c000", id="block")
            yield Static("", id="block-message")

    def on_mount(self) -> None:
        self.query_one("#dialog").border_title = "choose a block"
        self.query_one(Input).focus()

    @on(Input.Submitted)
    def _go(self, event: Input.Submitted) -> None:
        try:
            self.dismiss(parse_block(event.value, self.device_bytes))
        except ValueError as exc:
            self.query_one("#block-message", Static).update(str(exc))

    def action_dismiss_none(self) -> None:
        self.dismiss(None)

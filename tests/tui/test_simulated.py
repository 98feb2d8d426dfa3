"""End to end: a simulated device drained by the real service, browsed and restored in the TUI.

The simulator writes a seeded workload to an image and publishes it in a
ring as the kernel filter would; the drain service journals it. The image
is copied at the moment of a mark, then written on: restoring the mark from
the TUI must give back exactly that copy.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from cdp.ringwriter import RingWriter
from cdp.service import drain
from cdp.sim import SimDevice, Workload, run
from journal import Journal
from tests.support.devices import write_device
from tests.support.tui import make_app, settle, until
from tui.screens.main import MainScreen
from tui.screens.restore import RestoreScreen
from tui.widgets.points_list import PointsList

SIZE = 8 << 20


def simulated_journal(tmp_path: Path) -> tuple[Path, Path]:
    """(journal, copy of the image at the mark 'before-disaster')."""
    image, journal, ring = tmp_path / "device.img", tmp_path / "journal", tmp_path / "ring"
    write_device(image, SIZE, 5, zero_fraction=0.0)
    Journal.create(journal, device_bytes=SIZE, source=image).close()
    RingWriter.create_file(ring, 8 << 20, SIZE)
    at_mark = tmp_path / "at-mark.img"

    def produce() -> None:
        device = SimDevice(image, RingWriter.attach(ring))
        workload = Workload(9, SIZE, max_write=128 << 10)
        run(device, workload, ops=300)
        device.mark("before-disaster")
        shutil.copyfile(image, at_mark)
        run(device, workload, ops=200)
        device.close()

    producer = threading.Thread(target=produce)
    producer.start()
    drain(journal, ring, until_detached=True, handle_signals=False)
    producer.join()
    return journal, at_mark


async def test_restore_a_mark_of_a_simulated_device(tmp_path: Path) -> None:
    journal, at_mark = simulated_journal(tmp_path)
    target = tmp_path / "restored.img"
    app = make_app(journal)
    async with app.run_test(size=(110, 40)) as pilot:
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, MainScreen)
        table = screen.query_one(PointsList)
        assert {"baseline", "flush", "mark"} <= {p.kind for p in table.points}
        await pilot.press("g", *"mark:before-disaster", "enter")
        await settle(pilot)
        assert table.selected.name == "before-disaster"
        await pilot.press("r")
        dialog = app.screen
        assert isinstance(dialog, RestoreScreen)
        dialog.query_one("#target").value = str(target)
        await pilot.press("enter")
        await until(pilot, lambda: dialog.state == "done")
    assert target.read_bytes() == at_mark.read_bytes()

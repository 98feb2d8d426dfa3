"""What a C header says: compile a tiny program against it and read the values it prints.

The ring ABI (kernel/cdp_ring_abi.h) and the filter's control ioctls
(kernel/cdp_filter_abi.h) are plain UAPI C; the tests hold each size,
offset and number to the Python side with this. No kernel needed.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def header_values(header: Path, expressions: dict[str, str], workdir: Path) -> dict[str, int]:
    """``{name: value}`` of each C expression, evaluated by a program that includes ``header``.

    The header must compile cleanly in userspace (-Wall -Wextra -Werror);
    the test is skipped where there is no C compiler.
    """
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler (gcc) on this machine")
    lines = [f'    printf("%s %llu\\n", "{k}", (unsigned long long)({v}));' for k, v in expressions.items()]
    src = workdir / "values.c"
    src.write_text("#include <stdio.h>\n#include <stddef.h>\n" f'#include "{header}"\n'
                   "int main(void)\n{\n" + "\n".join(lines) + "\n    return 0;\n}\n")
    exe = workdir / "values"
    build = subprocess.run([cc, "-std=c11", "-Wall", "-Wextra", "-Werror", "-o", str(exe), str(src)],
                           capture_output=True, text=True)
    assert build.returncode == 0, f"{header.name} does not compile cleanly in userspace:\n{build.stderr}"
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    return {k: int(v) for k, v in (line.split() for line in out.splitlines())}

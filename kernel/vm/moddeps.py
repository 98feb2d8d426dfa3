"""Print the modules to load, dependencies first, from a kernel's modules.dep.

Usage: moddeps.py /lib/modules/RELEASE NAME...   (names as modprobe takes them;
a module the kernel has built in, or does not have, is skipped).
"""
import os
import sys


def norm(name: str) -> str:
    return name.replace("-", "_")


def main() -> int:
    moddir, names = sys.argv[1], sys.argv[2:]
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    with open(os.path.join(moddir, "modules.dep")) as f:
        for line in f:
            path, _, rest = line.partition(":")
            deps[path] = rest.split()
            base = os.path.basename(path).split(".ko")[0]
            by_name[norm(base)] = path
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in deps.get(path, []):
            visit(dep)
        order.append(path)

    for name in names:
        path = by_name.get(norm(name))
        if path:
            visit(path)
    print("\n".join(order))
    return 0


if __name__ == "__main__":
    sys.exit(main())

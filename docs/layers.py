#!/usr/bin/env python3
"""Evidence that herald's request path is layered: no crate cycle, and no two modules of
herald-http or herald-proxy that use each other, directly or around a loop.

A module uses another when its source names it (`crate::a::…`, `super::a`, `self::a`, or an
item the crate root re-exports from it). The crate root's own `mod` and `pub use` lines are its
table of contents, not uses. Prints each crate's module graph in layers (a module only uses
modules in the layers below it) and exits 1 on a cycle, naming it.

Usage: docs/layers.py   (from anywhere; needs python3 and cargo)
"""
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRATES = ["herald-http", "herald-proxy"]


def modules(src):
    """Module path ("fast::head", "" for the root) -> its source file."""
    found = {}
    for path in sorted(src.rglob("*.rs")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        if parts[-1] in ("lib", "mod"):
            parts = parts[:-1]
        found["::".join(parts)] = path
    return found


def code(text):
    """The source without comments, string literals or `#[cfg(test)]` modules."""
    text = re.sub(r"#\[cfg\(test\)\]\s*(pub(\(crate\))?\s+)?mod \w+ \{.*", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    return re.sub(r'"(\\.|[^"\\])*"', '""', text)


def root_exports(lib_text, known):
    """Item name -> the module the crate root re-exports it from (`pub use fast::fuzz;`)."""
    exports = {}
    for path, names in re.findall(r"pub use (\w+(?:::\w+)*?)::(\{[^}]*\}|\w+);", lib_text):
        if path in known:
            for name in re.findall(r"\w+", names):
                exports[name] = path
    return exports


def uses(name, text, known, exports):
    """The modules `name`'s source refers to."""
    here = name.split("::") if name else []
    found = set()

    def resolve(path):
        # The longest known module that starts the path.
        for n in range(len(path), 0, -1):
            candidate = "::".join(path[:n])
            if candidate in known:
                return candidate
        return exports.get(path[0]) if path else None

    for prefix, rest in re.findall(r"\b(crate|super|self)::((?:\w+::)*(?:\w+|\{[^;]*?\}))", text):
        base = {"crate": [], "super": here[:-1], "self": here}[prefix]
        heads = rest.split("::{")
        stem = [p for p in heads[0].split("::") if p and p != "{"]
        tails = re.findall(r"[\w:]+", heads[1]) if len(heads) > 1 else [""]
        for tail in tails:
            path = base + stem + [p for p in tail.split("::") if p and p != "self"]
            target = resolve(path) if path else None
            if target is None and not path[len(base):]:
                target = "::".join(base)
            if target is not None and target != name and not (name and target == "" and prefix == "crate" and not path):
                found.add(target)
    return found


def layers(graph):
    """Modules in layers (each uses only lower ones); a cycle if there is one."""
    placed, order = set(), []
    while len(placed) < len(graph):
        layer = sorted(m for m in graph if m not in placed and graph[m] <= placed)
        if not layer:
            return order, cycle(graph, placed)
        order.append(layer)
        placed |= set(layer)
    return order, None


def cycle(graph, placed):
    start = next(m for m in sorted(graph) if m not in placed)
    path, seen = [start], {start}
    while True:
        nxt = sorted(graph[path[-1]] - placed)[0]
        if nxt in seen:
            return path[path.index(nxt):] + [nxt]
        path.append(nxt)
        seen.add(nxt)


def main():
    failed = False
    # Crates: cargo refuses a cycle outright; herald-proxy must depend on no other herald crate.
    tree = subprocess.run(
        ["cargo", "tree", "-p", "herald-proxy", "-e", "normal", "--prefix", "none", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    herald = sorted({line.split()[0] for line in tree.splitlines() if line.startswith("herald-")} - {"herald-proxy"})
    print(f"herald-proxy depends on herald crates: {', '.join(herald) or 'none'}")
    failed |= bool(herald)
    for crate in CRATES:
        known = modules(ROOT / "crates" / crate / "src")
        lib_text = code(known[""].read_text())
        exports = root_exports(lib_text, known)
        graph = {}
        for name, path in known.items():
            text = code(path.read_text())
            if name == "":
                text = re.sub(r"(?m)^\s*(pub(\(crate\))?\s+)?(mod \w+;|use [^;]*;)", "", text)
            graph[name] = uses(name, text, known, exports) & set(known)
        order, loop = layers(graph)
        print(f"\n{crate}: {len(known)} modules, lowest layer first")
        for i, layer in enumerate(order):
            print(f"  {i}: {', '.join(m or '(crate root)' for m in layer)}")
        if loop:
            failed = True
            print(f"  CYCLE: {' -> '.join(m or '(crate root)' for m in loop)}")
    print("\nno cycle" if not failed else "\nFAILED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

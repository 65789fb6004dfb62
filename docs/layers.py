#!/usr/bin/env python3
"""Evidence that herald's request path and its poller are layered: no crate cycle, and no two
modules of herald-http, herald-proxy or herald-poll that use each other, directly or around a
loop.

A module uses another when its source names it: in a `use` (grouped ones included:
`use crate::{a::X, b}`), or in a path anywhere else (`crate::a::f()`, `super::a`, `self::a`, a
child module by its bare name, `local::run()`, or a module a `use` brought in). A name a module
re-exports (`pub use child::X;`) is resolved to the module it comes from, so `crate::X` and
`super::X` reach that module. A module that re-exports or names its child uses it; a child that
names an item its parent defines uses the parent: both together are a cycle. The crate root's own
`mod` and `use` lines are its table of contents, not uses; every other module's `mod` lines are
declarations, not uses. Prints each crate's module graph in layers (a module only uses modules
in the layers below it) and exits 1 on a cycle, naming it.

Usage: docs/layers.py   (from anywhere; needs python3 and cargo)
"""
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRATES = ["herald-http", "herald-proxy", "herald-poll"]

# Comments, string literals (raw and byte ones too) and character literals, so that nothing in
# them reads as a path. A lifetime (`'a`) is no character literal: it has no closing quote.
LEXEMES = re.compile(
    r"""(?P<line>//[^\n]*)
      | (?P<block>/\*.*?\*/)
      | (?P<raw>b?r(?P<hashes>\#*)".*?"(?P=hashes))
      | (?P<str>b?"(?:\\.|[^"\\])*")
      | (?P<char>b?'(?:\\.|[^'\\])')""",
    re.S | re.X,
)


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
    """The source without `#[cfg(test)]` modules, comments, string or character literals."""
    text = re.sub(r"#\[cfg\(test\)\]\s*(pub(\(\w+\))?\s+)?mod \w+ \{.*", "", text, flags=re.S)

    def blank(m):
        if m.group("line") or m.group("block"):
            return " "
        return "''" if m.group("char") else '""'

    return LEXEMES.sub(blank, text)


def split_top(group):
    """The comma-separated parts of a `{...}` group, nested groups kept whole."""
    parts, depth, start = [], 0, 0
    for i, c in enumerate(group):
        depth += {"{": 1, "}": -1}.get(c, 0)
        if c == "," and depth == 0:
            parts.append(group[start:i])
            start = i + 1
    parts.append(group[start:])
    return [p.strip() for p in parts if p.strip()]


def use_paths(tree):
    """The paths a `use` tree names, each as (segments, the name it binds or None for a glob):
    `crate::{a::{X, Y as Z}, b}` -> ([crate, a, X], X), ([crate, a, Y], Z), ([crate, b], b)."""
    tree = re.sub(r"\s+", " ", tree).strip()
    m = re.fullmatch(r"((?:\w+ ?:: ?)*)\{(.*)\}", tree)
    if m:
        prefix = [p.strip() for p in m.group(1).split("::") if p.strip()]
        return [(prefix + path, bound) for part in split_top(m.group(2)) for path, bound in use_paths(part)]
    alias = re.fullmatch(r"(.*) as (\w+)", tree)
    path = [p.strip() for p in (alias.group(1) if alias else tree).split("::") if p.strip()]
    if path and path[-1] == "*":
        return [(path[:-1], None)]
    if path and path[-1] == "self":
        path = path[:-1]
    bound = alias.group(2) if alias else (path[-1] if path else None)
    return [(path, bound)]


class Crate:
    def __init__(self, src):
        self.known = modules(src)
        self.texts = {name: code(path.read_text()) for name, path in self.known.items()}
        # Module -> {name it re-exports: the module that name comes from}.
        self.exports = {name: {} for name in self.known}
        for _ in range(len(self.known)):  # re-exports of re-exports settle in as many rounds
            for name, text in self.texts.items():
                for tree in re.findall(r"\bpub(?:\([\w: ]+\))?\s+use\s+([^;]+);", text):
                    for path, bound in use_paths(tree):
                        target = self.resolve(name, path, {})
                        if bound and target is not None and target != name:
                            self.exports[name][bound] = target

    def children(self, name):
        """The names of `name`'s child modules (`local` for `coordination::local`)."""
        prefix = name + "::" if name else ""
        return {m[len(prefix):] for m in self.known if m and m.startswith(prefix) and "::" not in m[len(prefix):]}

    def resolve(self, name, path, aliases):
        """The module a path written in `name` reaches, or None when it is not this crate's."""
        here = name.split("::") if name else []
        if not path:
            return None
        head, rest = path[0], path[1:]
        if head == "crate":
            base = []
        elif head in ("self", "super"):
            base = list(here)
            while True:
                if head == "super":
                    if not base:
                        return None
                    base = base[:-1]
                if not rest or rest[0] not in ("self", "super"):
                    break
                head, rest = rest[0], rest[1:]
        elif head in self.children(name):
            base, rest = here + [head], rest
        elif head in aliases:
            base = aliases[head].split("::") if aliases[head] else []
        else:
            return None
        module = "::".join(base)
        for segment in rest:
            child = "::".join(base + [segment])
            if child in self.known:
                base.append(segment)
                module = child
            else:
                return self.exports.get(module, {}).get(segment, module)
        return module

    def uses(self, name):
        """The modules `name`'s source refers to."""
        text = self.texts[name]
        if name == "":
            # The crate root's table of contents: its modules and what it re-exports.
            text = re.sub(r"(?m)^\s*(pub(\([\w: ]+\))?\s+)?(mod \w+;|use [^;]*;)", "", text)
        else:
            text = re.sub(r"(?m)^\s*(pub(\([\w: ]+\))?\s+)?mod \w+;", "", text)
        found, aliases = set(), {}
        for tree in re.findall(r"\buse\s+([^;]+);", text):
            for path, bound in use_paths(tree):
                target = self.resolve(name, path, {})
                if target is None:
                    continue
                found.add(target)
                # `use crate::a;` then `a::f()`: a module brought in under a name.
                if bound and target == self.module_at(name, path):
                    aliases[bound] = target
        code_only = re.sub(r"\buse\s+[^;]+;", "", text)
        for path in re.findall(r"(?<![\w:])(\w+(?:\s*::\s*\w+)+)", code_only):
            target = self.resolve(name, [p.strip() for p in path.split("::")], aliases)
            if target is not None:
                found.add(target)
        found.discard(name)
        return found & set(self.known)

    def module_at(self, name, path):
        """The module `path` names when it names a module itself (not an item in one)."""
        target = self.resolve(name, path, {})
        if target is None:
            return None
        last = path[-1]
        return target if last in ("crate", "self", "super") or target.split("::")[-1] == last else None


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
    for name in CRATES:
        crate = Crate(ROOT / "crates" / name / "src")
        graph = {m: crate.uses(m) for m in crate.known}
        order, loop = layers(graph)
        print(f"\n{name}: {len(crate.known)} modules, lowest layer first")
        for i, layer in enumerate(order):
            print(f"  {i}: {', '.join(m or '(crate root)' for m in layer)}")
        if loop:
            failed = True
            print(f"  CYCLE: {' -> '.join(m or '(crate root)' for m in loop)}")
    print("\nno cycle" if not failed else "\nFAILED")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

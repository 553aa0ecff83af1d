#!/usr/bin/env python3
"""Import-cycle check between the modules of the workspace's crates (run by scripts/test.sh).

Reads every Rust file under src/ (the root crate) and plugins/*/src, samples/*/src, wire/*/src
(each its own crate), and every module path it names: `use crate::...` / `use super::...` / `use
self::...` trees, paths such as `crate::x::y::f()` or `super::Core` in code, relative paths
through a child module (`store::flush` in the file that declares `mod store`) and through
names a `use` brought in (`use crate::sync; ... sync::exporter::X` names `sync::exporter`).
Comments, doc comments and string literals are ignored (except a string that is itself a
path, as in `#[serde(with = "crate::x")]`); `$crate` in macros is ignored.

Modules are grouped at the level of a top module's direct children: `src/sync/exporter.rs`
is `sync::exporter`, `src/servicecenter/store/etcd.rs` and `src/servicecenter/store/mod.rs`
are both `servicecenter::store`, `src/servicecenter/mod.rs` is `servicecenter`, `src/lib.rs`
is `crate`. Another crate's modules carry its crate name (`syncer_wire_eureka::xml`).
A path names the deepest module it goes through, so `crate::sync::mapping::Mapping` is an
edge to `sync::mapping` (a path into a module's child depends on that child).

Test code is left out: an item under `#[cfg(test)]` (a `mod tests { ... }`, a test helper,
a `use`) and a file declared by `#[cfg(test)] mod x;` add no edge. Tests may reach anywhere;
the rule is for the code that ships. `--with-tests` counts them too, each test module as
the module that holds it.

Every strongly connected component of more than one module is a cycle. The check compares
them with the baseline scripts/known-cycles.txt (one line per cycle: its module set, sorted,
space-separated; `#` comments). It fails when a cycle is not inside one baseline line (a new
cycle, a cycle that grew, or two that merged), and prints a note when a baseline cycle shrank
or is gone, so that the file can shrink with it. The baseline is the debt of today's tree:
the redesign of issue 11 (the core in layers api -> registry -> store, the sync side without
cycles) must leave scripts/known-cycles.txt empty, and nothing may add to it.

The script checks itself first on a small tree of tricky cases (comments, strings, char
literals, raw strings, nested modules, `super::super`, aliases, cfg(test)); it reads the
whole workspace in about a second.

Usage: scripts/check-cycles.py [--root DIR] [--baseline FILE] [--with-tests] [--verbose]
                               [--write-baseline]
  --root DIR        the workspace to read (default: this script's ..), e.g. a `git archive`
  --verbose         every edge inside each cycle, with file:line
  --write-baseline  write today's cycles to the baseline file (only to shrink it, or once)
Exit status: 0 clean (baseline cycles may remain), 1 a cycle beyond the baseline, 2 usage.
"""
import argparse
import collections
import os
import re
import sys

# ---------------------------------------------------------------- lexing


SPECIAL = re.compile(r"""//|/\*|(?<![A-Za-z0-9_])[bc]?r(#*)"|(?<![A-Za-z0-9_])r\#(?=[A-Za-z_])|"|'""")

STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)


def strip(src):
    """The source with comments and literals blanked (newlines kept). A string literal that
    is a module path (`"crate::x::f"`) is kept without its quotes."""
    out = []
    i, n = 0, len(src)
    while i < n:
        m = SPECIAL.search(src, i)
        if not m:
            out.append(src[i:])
            break
        out.append(src[i:m.start()])
        i, tok = m.start(), m.group()
        if tok == "//":
            j = src.find("\n", i)
            i = n if j < 0 else j
        elif tok == "/*":
            depth, j = 1, i + 2
            while depth:
                k = src.find("*/", j)
                o = src.find("/*", j)
                if k < 0:
                    j = n
                    break
                if 0 <= o < k:
                    depth, j = depth + 1, o + 2
                else:
                    depth, j = depth - 1, k + 2
            out.append("\n" * src.count("\n", i, j))
            i = j
        elif tok.endswith('"') and "r" in tok:  # raw string
            close = '"' + m.group(1)
            end = src.find(close, m.end())
            end = n if end < 0 else end + len(close)
            out.append(_literal(src[m.end():end - len(close)], src, i, end))
            i = end
        elif tok == "r#":  # raw identifier r#type
            i += 2
        elif tok == '"':
            m = STRING.match(src, i)
            j = m.end() if m else n
            out.append(_literal(src[i + 1:j - 1], src, i, j))
            i = j
        else:  # "'": a char literal, or a lifetime or label (kept)
            if src.startswith("\\", i + 1):  # '\n', '\'', '\u{..}'
                j = src.find("'", i + 3)
                i = n if j < 0 else j + 1
                out.append(" ")
            elif i + 2 < n and src[i + 2] == "'" and src[i + 1] != "\n":  # 'x'
                i += 3
                out.append(" ")
            else:
                out.append("'")
                i += 1
    return "".join(out)


def _literal(content, src, i, j):
    nl = "\n" * src.count("\n", i, j)
    if re.fullmatch(r"(?:crate|super|self)(?:::\w+)+", content):
        return " " + content + " " + nl
    return '""' + nl


TOKEN = re.compile(r"\s+|(?P<t>::|[A-Za-z_][A-Za-z0-9_]*|[0-9][A-Za-z0-9_.]*|.)", re.S)


def tokens(text):
    """(token, line) pairs; `::` is one token."""
    line, out = 1, []
    for m in TOKEN.finditer(text):
        t = m.group("t")
        if t is None:
            line += m.group().count("\n")
        else:
            out.append((t, line))
    return out


# ---------------------------------------------------------------- parsing

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*$")
ITEM_KEYWORDS = {"fn", "impl", "mod", "struct", "enum", "union", "trait", "use", "const",
                 "static", "type", "macro_rules", "let"}


class FileScan:
    """What one file says: inline modules, child modules declared (test-only or not), the
    names its `use`s bind per module, and the paths it names (module, line, segments)."""

    def __init__(self, module):
        self.module = module
        self.inline = set()  # module paths of inline `mod x { }`
        self.declared = {}  # child module path -> test only
        self.aliases = collections.defaultdict(dict)  # module -> name -> segments
        self.paths = []  # (module, line, segments)
        self.test_file = False  # #![cfg(test)]
        self.test_inline = set()  # inline #[cfg(test)] mod x { }
        self.unbalanced = False


def is_test_cfg(attr):
    """attr: the tokens between `#[` and `]`."""
    words = [t for t, _ in attr]
    if words[:4] == ["cfg", "(", "test", ")"]:
        return True
    if words[:4] == ["cfg", "(", "all", "("]:
        return "test" in words and "not" not in words and "any" not in words
    return False


def scan(toks, module, with_tests):
    fs = FileScan(module)
    i, n = 0, len(toks)
    scopes = [("mod", module)]  # ("mod", path) or ("block", path)
    pending_test = False

    def cur():
        return scopes[-1][1]

    def skip_item(k):
        """Index after the #[cfg(test)] item starting at k. An item (fn, impl, mod, struct,
        use, ...) ends at `;` or after its first top-level `{ }`; anything else (a field,
        a variant, a statement) also ends at a top-level `,`, generics (`<>`) counted as
        brackets; both stop before a `}` that closes an enclosing scope."""
        j = k
        while j < n and toks[j][0] in ("pub", "(", ")", "crate", "super", "in", "async",
                                       "unsafe", "extern", "default"):
            j += 1
        item = j < n and toks[j][0] in ITEM_KEYWORDS
        depth = 0
        while k < n:
            t = toks[k][0]
            if t in ("(", "["):
                depth += 1
            elif t in (")", "]"):
                depth -= 1
            elif t == "<" and not item:
                depth += 1
            elif t == ">" and not item and toks[k - 1][0] not in ("-", "="):
                depth -= 1
            elif t == "{":
                if depth == 0:
                    b = 1
                    k += 1
                    while k < n and b:
                        b += {"{": 1, "}": -1}.get(toks[k][0], 0)
                        k += 1
                    return k
                depth += 1
            elif t == "}":
                if depth == 0:
                    return k
                depth -= 1
            elif depth == 0 and (t == ";" or (t == "," and not item)):
                return k + 1
            k += 1
        return k

    while i < n:
        t, line = toks[i]
        # attributes
        if t == "#" and i + 1 < n and toks[i + 1][0] in ("[", "!"):
            inner = toks[i + 1][0] == "!"
            j = i + (2 if inner else 1)
            if j < n and toks[j][0] == "[":
                depth, k = 0, j
                while k < n:
                    if toks[k][0] == "[":
                        depth += 1
                    elif toks[k][0] == "]":
                        depth -= 1
                        if depth == 0:
                            break
                    k += 1
                attr = toks[j + 1:k]
                if is_test_cfg(attr):
                    if inner:
                        fs.test_file = True
                        if not with_tests:
                            return fs
                    else:
                        pending_test = True
                # paths inside attributes are still paths (serde's `with`)
                _collect_paths(attr, fs, cur())
                i = k + 1
                continue
        if pending_test:
            pending_test = False
            # a `mod x;` under cfg(test): its file is test code
            k = i
            while k < n and toks[k][0] in ("pub", "(", ")", "crate", "super", "in"):
                k += 1
            if k + 2 < n and toks[k][0] == "mod" and toks[k + 2][0] == ";":
                fs.declared[cur() + (toks[k + 1][0],)] = True
            elif k + 2 < n and toks[k][0] == "mod" and toks[k + 2][0] == "{":
                fs.test_inline.add(cur() + (toks[k + 1][0],))
            if not with_tests:
                i = skip_item(i)
                continue
        if t == "mod" and i + 2 < n and IDENT.match(toks[i + 1][0]):
            name, nxt = toks[i + 1][0], toks[i + 2][0]
            child = cur() + (name,)
            if nxt == ";":
                fs.declared.setdefault(child, False)
                i += 3
                continue
            if nxt == "{":
                fs.inline.add(child)
                scopes.append(("mod", child))
                i += 3
                continue
        if t == "use" and (i == 0 or toks[i - 1][0] != "::"):
            k = i + 1
            depth = 0
            while k < n and not (toks[k][0] == ";" and depth == 0):
                depth += {"{": 1, "}": -1}.get(toks[k][0], 0)
                k += 1
            for segs, alias, glob in _use_tree(toks[i + 1:k]):
                if not segs or segs[0] == "::":
                    continue
                fs.paths.append((cur(), line, segs))
                name = alias if alias else segs[-1]
                if not glob and name not in ("_", "self", "super", "crate"):
                    fs.aliases[cur()][name] = segs
            i = k + 1
            continue
        if t == "{":
            scopes.append(("block", cur()))
            i += 1
            continue
        if t == "}":
            if len(scopes) > 1:
                scopes.pop()
            i += 1
            continue
        if t == "pub" and i + 2 < n and toks[i + 1][0] == "(" and toks[i + 2][0] == "in":
            # pub(in crate::x): a visibility, not a use
            k = i
            while k < n and toks[k][0] != ")":
                k += 1
            i = k + 1
            continue
        if IDENT.match(t) and i + 1 < n and toks[i + 1][0] == "::":
            prev = toks[i - 1][0] if i else ""
            k, segs = i, []
            while k < n and IDENT.match(toks[k][0]):
                segs.append(toks[k][0])
                if k + 2 < n and toks[k + 1][0] == "::" and IDENT.match(toks[k + 2][0]):
                    k += 2
                else:
                    k += 1
                    break
            if prev not in ("::", "$", "."):
                fs.paths.append((cur(), line, segs))
            i = k
            continue
        i += 1
    fs.unbalanced = len(scopes) != 1
    return fs


def _collect_paths(toks, fs, module):
    for k, (t, line) in enumerate(toks):
        if t in ("crate", "super", "self") and k + 2 < len(toks) and toks[k + 1][0] == "::":
            if k and toks[k - 1][0] in ("::", "$"):
                continue
            segs, j = [t], k + 2
            while j < len(toks) and IDENT.match(toks[j][0]):
                segs.append(toks[j][0])
                if j + 2 < len(toks) and toks[j + 1][0] == "::":
                    j += 2
                else:
                    break
            fs.paths.append((module, line, segs))


def _use_tree(toks):
    """Leaves of a use tree: (segments, alias or None, glob)."""
    pos = [0]

    def peek():
        return toks[pos[0]][0] if pos[0] < len(toks) else None

    def tree(prefix):
        segs = list(prefix)
        if peek() == "::":
            if not segs:
                return [(["::"], None, False)]
            pos[0] += 1
        while True:
            t = peek()
            if t is None:
                return [(segs, None, False)]
            if t == "*":
                pos[0] += 1
                return [(segs, None, True)]
            if t == "{":
                pos[0] += 1
                leaves = []
                while peek() not in (None, "}"):
                    if peek() == ",":
                        pos[0] += 1
                        continue
                    leaves += tree(segs)
                pos[0] += 1
                return leaves
            if IDENT.match(t):
                pos[0] += 1
                if t == "self" and segs:
                    alias = None
                    if peek() == "as":
                        pos[0] += 1
                        alias = peek()
                        pos[0] += 1
                    return [(segs, alias or segs[-1], False)]
                segs = segs + [t]
                if peek() == "::":
                    pos[0] += 1
                    continue
                alias = None
                if peek() == "as":
                    pos[0] += 1
                    alias = peek()
                    pos[0] += 1
                return [(segs, alias, False)]
            pos[0] += 1  # something unexpected: skip it

    leaves = []
    while pos[0] < len(toks):
        if peek() == ",":
            pos[0] += 1
            continue
        before = pos[0]
        leaves += tree([])
        if pos[0] == before:
            pos[0] += 1
    return leaves


# ---------------------------------------------------------------- the crates


def crates(root):
    """(crate label, src dir, root file) for the root crate and plugins/*, samples/*, wire/*."""
    found = []
    for base in [root] + sorted(
            os.path.join(root, d, c) for d in ("plugins", "samples", "wire")
            if os.path.isdir(os.path.join(root, d))
            for c in os.listdir(os.path.join(root, d))):
        lib = os.path.join(base, "src", "lib.rs")
        if not os.path.isfile(lib):
            continue
        name = None
        try:
            with open(os.path.join(base, "Cargo.toml")) as f:
                m = re.search(r'^\s*name\s*=\s*"([^"]+)"', f.read(), re.M)
                name = m.group(1).replace("-", "_") if m else None
        except OSError:
            pass
        label = "" if base == root else (name or os.path.basename(base))
        found.append((label, os.path.join(base, "src"), lib))
    return found


def file_module(rel):
    """src-relative path -> module path (tuple), or None for a binary's files."""
    parts = rel[:-3].split(os.sep)
    if parts[0] == "bin" or parts == ["main"]:
        return None
    if parts == ["lib"]:
        return ()
    if parts[-1] == "mod":
        parts = parts[:-1]
    return tuple(parts)


def analyse(root, with_tests, quiet=False):
    """Edges between grouped modules: {(from, to): [(file, line), ...]}, and the modules."""
    edges = collections.defaultdict(list)
    modules = set()
    for label, src, _lib in crates(root):
        scans = {}
        for dirpath, dirnames, files in os.walk(src):
            dirnames.sort()
            for fname in sorted(files):
                if not fname.endswith(".rs"):
                    continue
                path = os.path.join(dirpath, fname)
                module = file_module(os.path.relpath(path, src))
                if module is None:
                    continue
                with open(path, encoding="utf-8", errors="replace") as f:
                    text = strip(f.read())
                scans[path] = scan(tokens(text), module, with_tests)
                if scans[path].unbalanced and not quiet:
                    print("check-cycles: warning: %s: braces do not balance once comments and "
                          "literals are stripped; its edges may be off"
                          % os.path.relpath(path, root), file=sys.stderr)
        known = {s.module for s in scans.values()}
        for s in scans.values():
            known |= s.inline
        # files of test-only modules (and their descendants) are test code
        test_only = {m for s in scans.values() for m, t in s.declared.items() if t}
        for s in scans.values():
            test_only |= s.test_inline
            if s.test_file:
                test_only.add(s.module)

        def fold(m):
            """A test module counts as the module that holds it."""
            for k in range(1, len(m) + 1):
                if m[:k] in test_only:
                    return m[:k - 1]
            return m
        aliases = collections.defaultdict(dict)
        for s in scans.values():
            for m, names in s.aliases.items():
                aliases[m].update(names)
        children = collections.defaultdict(set)
        for m in known:
            if m:
                children[m[:-1]].add(m[-1])

        def group(m):
            g = fold(m)[:2]
            name = "::".join(g) if g else "crate"
            return (label + "::" + name) if label and g else (label or name)

        def resolve(module, segs, depth=0):
            head = segs[0]
            if head == "crate":
                return tuple(segs[1:])
            if head == "self":
                return module + tuple(segs[1:])
            if head == "super":
                k = 0
                while k < len(segs) and segs[k] == "super":
                    k += 1
                return module[:max(0, len(module) - k)] + tuple(segs[k:])
            if head in children.get(module, ()):
                return module + tuple(segs)
            target = aliases.get(module, {}).get(head)
            if target and depth < 8 and target != segs:
                base = resolve(module, target, depth + 1)
                if base is not None:
                    return base + tuple(segs[1:])
            return None

        def target_module(abs_path):
            best = ()
            for k in range(1, len(abs_path) + 1):
                if abs_path[:k] in known:
                    best = abs_path[:k]
                else:
                    break
            return best

        for path, s in scans.items():
            if not with_tests and fold(s.module) != s.module:
                continue
            rel = os.path.relpath(path, root)
            modules.add(group(s.module))
            for module, line, segs in s.paths:
                if segs[0] in ("Self",):
                    continue
                a = resolve(module, segs)
                if a is None:
                    continue
                frm, to = group(module), group(target_module(a))
                if frm != to and (rel, line) not in edges[(frm, to)][-1:]:
                    edges[(frm, to)].append((rel, line))
    return edges, modules


# ---------------------------------------------------------------- self-test

SELF_TEST = {
    "Cargo.toml": '[package]\nname = "t"\n',
    "src/lib.rs": "pub mod a;\npub mod b;\npub mod c;\npub mod d;\n",
    "src/a.rs": r"""//! use crate::b::X;
/* use crate::b::Y; /* nested */ use crate::b::Z; */
const S: &str = "use crate::b::W; \" crate::b::V {";
const R: &str = r#"crate::b "quoted" { use crate::b::U;"#;
const C: char = '"';
const B: u8 = b'{';
fn f<'a>(x: &'a str) -> &'a str { let _q = '\''; let _r = '\\'; x }
use crate::c::{self as cc, Thing};
pub fn g() { cc::h(); }
#[cfg(test)]
#[allow(unused)]
mod tests { use crate::d::T; fn t() { crate::b::inner::f(); } }
#[cfg(test)]
mod fuzz;
""",
    "src/a/fuzz.rs": "use crate::d::T;\n",
    "src/b.rs": "pub mod inner { pub fn f() { super::super::a::g(); } }\n"
                "pub struct S { #[cfg(test)] x: std::collections::HashMap<u8, crate::a::T>,\n"
                "  y: crate::b::inner::Y }\n"
                "#[cfg(test)]\nfn t() -> Result<(), crate::c::E> { crate::c::h(); Ok(()) }\n"
                "#[cfg(test)]\nimpl S { fn u(&self) -> Option<u8> { crate::c::h(); None } }\n",
    "src/c/mod.rs": 'mod sub;\npub fn h() { sub::k(); }\n#[serde(with = "crate::d::ser")]\nstruct X;\n',
    "src/c/sub.rs": "mod deep;\nuse super::super::b;\npub fn k() { b::inner::f(); }\n",
    "src/c/sub/deep.rs": "fn z() { crate::a::g(); super::k(); }\n",
    "src/d.rs": "pub(in crate::a) fn x() {}\nmacro_rules! m { () => { $crate::a::g() } }\n"
                "fn y() { std::mem::drop(1); ::std::mem::drop(2); Self::z(); }\n",
}


def self_test():
    """Runs the lexer and resolver on a small tree with the tricky cases; None when it
    finds what it should, else a message."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        for rel, text in SELF_TEST.items():
            path = os.path.join(tmp, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)
        base = {("a", "c"), ("b", "b::inner"), ("b::inner", "a"), ("c", "c::sub"), ("c", "d"),
                ("c::sub", "b"), ("c::sub", "b::inner"), ("c::sub", "a")}
        for with_tests, want in ((False, base),
                                 (True, base | {("a", "d"), ("a", "b::inner"), ("b", "a"),
                                                 ("b", "c")})):
            got = set(analyse(tmp, with_tests, quiet=True)[0])
            if got != want:
                return "with_tests=%s: edges %s, expected %s" % (with_tests, sorted(got),
                                                                sorted(want))
    return None


# ---------------------------------------------------------------- graph


def sccs(nodes, graph):
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    for v in sorted(nodes):
        if v not in index:
            visit(v)
    return out


def closing_chain(comp, graph):
    """A shortest cycle through comp's first module, as a list of modules (first repeated)."""
    start, inside = comp[0], set(comp)
    prev, queue = {}, collections.deque([start])
    while queue:
        v = queue.popleft()
        for w in sorted(graph.get(v, ())):
            if w not in inside:
                continue
            if w == start:
                chain = [v]
                while chain[-1] != start:
                    chain.append(prev[chain[-1]])
                return chain[::-1] + [start]
            if w not in prev:
                prev[w] = v
                queue.append(w)
    return comp


def read_baseline(path):
    cycles = []
    if os.path.exists(path):
        with open(path) as f:
            for raw in f:
                line = raw.split("#", 1)[0].strip()
                if line:
                    cycles.append(frozenset(line.split()))
    return cycles


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", default=os.path.dirname(here))
    ap.add_argument("--baseline", default=os.path.join(here, "known-cycles.txt"))
    ap.add_argument("--with-tests", action="store_true")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--write-baseline", action="store_true")
    args = ap.parse_args()

    problem = self_test()
    if problem:
        print("check-cycles: FAILED its self-test (the script itself is wrong): " + problem)
        return 1

    edges, modules = analyse(args.root, args.with_tests)
    graph = collections.defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
        modules |= {a, b}
    cycles = [c for c in sccs(modules, graph) if len(c) > 1]
    cycles.sort(key=lambda c: (-len(c), c))

    def show(comp):
        chain = closing_chain(comp, graph)
        print("  %d modules: %s" % (len(comp), " ".join(comp)))
        print("  closed by:")
        for a, b in zip(chain, chain[1:]):
            f, ln = edges[(a, b)][0]
            print("    %s -> %s   (%s:%d)" % (a, b, f, ln))
        if args.verbose:
            print("  every edge inside:")
            for a in comp:
                for b in sorted(graph[a] & set(comp)):
                    where = ", ".join("%s:%d" % x for x in edges[(a, b)][:3])
                    more = len(edges[(a, b)]) - 3
                    print("    %s -> %s   (%s%s)" % (a, b, where,
                                                      " and %d more" % more if more > 0 else ""))

    if args.write_baseline:
        with open(args.baseline, "w") as f:
            f.write("# Import cycles between modules that scripts/check-cycles.py tolerates today,\n"
                    "# one line per cycle (its module set, sorted). This is debt, not a rule: the\n"
                    "# redesign of issue 11 must empty this file. A line may shrink or go (the\n"
                    "# check notes when it can); never add one. Written by --write-baseline.\n")
            for c in cycles:
                f.write(" ".join(c) + "\n")
        print("wrote %d cycle(s) to %s" % (len(cycles), args.baseline))
        return 0

    baseline = read_baseline(args.baseline)
    shown = os.path.relpath(args.baseline)
    bad, notes, matched = [], [], set()
    for c in cycles:
        homes = [b for b in baseline if set(c) <= b]
        if not homes:
            bad.append(c)
            continue
        matched.update(homes)
        for b in homes:
            if set(c) != b:
                notes.append("a known cycle shrank to %d modules (%s left it): update its line in %s"
                             % (len(c), " ".join(sorted(b - set(c))), shown))
    for b in baseline:
        if b not in matched and not any(b & set(c) for c in cycles):
            notes.append("a known cycle is gone: delete its line from %s: %s"
                         % (shown, " ".join(sorted(b))))

    for c in bad:
        over = [b for b in baseline if b & set(c)]
        if over:
            known = set().union(*over)
            added, left = sorted(set(c) - known), sorted(known - set(c))
            print("check-cycles: a known cycle grew (%s%s):"
                  % ("now also " + " ".join(added) if added else "known cycles merged",
                     "; no longer " + " ".join(left) if left else ""))
        else:
            print("check-cycles: a new import cycle between modules:")
        show(c)
    for note in notes:
        print("check-cycles: note: " + note)
    if args.verbose:
        for c in cycles:
            if c not in bad:
                print("check-cycles: known cycle:")
                show(c)
    if bad:
        print("check-cycles: FAILED: %d cycle(s) beyond %s. Break the cycle (move the shared "
              "items to a module both can use) rather than adding to the baseline."
              % (len(bad), shown))
        return 1
    print("check-cycles: ok: %d modules, %d edges, %d known cycle(s) left (%s)"
          % (len(modules), len(edges), len(cycles), shown))
    return 0


if __name__ == "__main__":
    sys.exit(main())

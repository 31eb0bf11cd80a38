"""`wordtree build | stats | show | lookup`: a thin command line over wordtree's library.

Bad input (an unknown wnid, a name with no synset, an unreadable or malformed file) is refused: one
message naming the file and line on stderr, exit status 2, no traceback, and nothing written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from wordtree.build import BuildError, build_tree
from wordtree.darknet_files import load_tree, save_tree
from wordtree.labelsets import LABEL_MAPS, LabelSetError, known_sets, read_label_map, synset_lines
from wordtree.tree import TreeError, WordTree
from wordtree.wordnet import UnknownSynset, WordNetNotFound, open_wordnet, synset_of, wnid_of

USER_ERRORS = (LabelSetError, TreeError, BuildError, UnknownSynset, WordNetNotFound)


class CommandError(ValueError):
    """Bad command-line input; the message says what and where."""


def main(argv: list[str] | None = None) -> int:
    """Run one `wordtree` command; returns the exit status (0 ok, 2 bad input)."""
    args = _parser().parse_args(argv)
    try:
        args.run(args)
    except USER_ERRORS + (CommandError,) as error:
        print(f"wordtree {args.command}: error: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # e.g. an output folder that cannot be written
        print(f"wordtree {args.command}: error: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return 2
    return 0


REFUSES = ("Bad input is refused, never skipped: one message on stderr naming the file and line (or the "
           "argument), exit status 2, and nothing written.")


def run_build(args: argparse.Namespace) -> None:
    if args.out.exists() and not args.out.is_dir():
        raise CommandError(f"--out {args.out} is a file; give the folder to write wordtree.tree/.names/.labels into")
    wordnet = open_wordnet()
    wnids = _checked_wnids(args.synsets, args.map, wordnet)
    result = build_tree(wnids, root=args.root, shape=args.shape, wordnet=wordnet, collapse_chains=args.collapse_chains)
    paths = save_tree(result.tree, args.out, stem="wordtree")
    print(f"{result.tree.stats_line()} ({len(set(wnids))} synsets, shape {args.shape}, root {args.root})")
    print(f"wrote {paths['tree']}, {paths['names'].name}, {paths['labels'].name}")
    if result.outside:
        print(f"{len(result.outside)} synsets do not descend from {args.root} and are left out:")
        for wnid in result.outside:
            synset = synset_of(wnid, wordnet)
            print(f"  {wnid} {synset.name()}: {synset.definition()}")


def run_stats(args: argparse.Namespace) -> None:
    print(load_tree(args.tree).stats_line())


def run_show(args: argparse.Namespace) -> None:
    tree = load_tree(args.tree)
    node = tree.resolve(args.node)
    print("path to root: " + " -> ".join(_label(tree, i) for i in tree.path_to_root(node)))
    print(f"depth {int(tree.depth[node])}, group {int(tree.group[node])}")
    print(f"siblings ({len(tree.siblings(node))}): " + ", ".join(_label(tree, i) for i in tree.siblings(node)))
    children = tree.children(node)
    print(f"children ({len(children)}): " + (", ".join(_label(tree, i) for i in children) or "none (a leaf)"))


def run_lookup(args: argparse.Namespace) -> None:
    synsets = open_wordnet().synsets(args.word.replace(" ", "_"), pos="n")
    if not synsets:
        raise CommandError(f"{args.word!r} names no noun synset of WordNet 3.0 (try a singular form)")
    for synset in synsets:
        print(f"{wnid_of(synset)}  {synset.name():30s}  {synset.definition()}")


def _checked_wnids(sets: list[str], maps: list[str], wordnet) -> list[str]:
    """The wnids of every --synsets and --map, in order, each checked against WordNet with its line."""
    sources = [synset_lines(s) for s in sets] + [_map_lines(m) for m in maps]
    if not sources:
        raise CommandError("give at least one --synsets FILE (or a shipped set name) or --map NAME=FILE")
    wnids = []
    for path, lines in sources:
        for number, wnid in lines:
            try:
                synset_of(wnid, wordnet)
            except UnknownSynset as error:
                raise CommandError(f"{path}:{number}: {error}") from None
            wnids.append(wnid)
    return wnids


def _map_lines(spec: str) -> tuple[Path, list[tuple[int, str]]]:
    """A `--map NAME=FILE` (FILE may be a shipped map name such as coco) as numbered wnid lines."""
    name, sep, file = spec.partition("=")
    if not sep or not name or not file:
        raise CommandError(f"--map {spec!r}: expected NAME=FILE, e.g. coco=coco.map")
    path = LABEL_MAPS[file] if file in LABEL_MAPS and not Path(file).exists() else Path(file)
    read_label_map(path)  # checks every line, naming file and line
    return synset_lines(path)


def _label(tree: WordTree, i: int) -> str:
    return f"{i} {tree.wnids[i]} {tree.names[i]!r}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wordtree", description="Build and inspect WordTrees from WordNet 3.0.",
                                     epilog=REFUSES)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    build = commands.add_parser(
        "build", help="build a WordTree and write darknet .tree/.names/.labels",
        description="Build a WordTree over the given synsets (YOLO9000 paper, section 4) and write darknet's "
        "wordtree.tree, wordtree.names and wordtree.labels into --out: all three, or none of them.",
        epilog="Every wnid of --synsets and --map is checked against WordNet 3.0 before anything is built. "
        "Synsets that do not descend from --root are left out and listed on stdout. " + REFUSES,
    )  # fmt: skip
    build.add_argument(
        "--synsets", action="append", default=[], metavar="FILE",
        help="a file of wnid or name<TAB>wnid lines, or a shipped set: " + ", ".join(known_sets())
        + " (repeatable)",
    )  # fmt: skip
    build.add_argument(
        "--map", action="append", default=[], metavar="NAME=FILE",
        help="a dataset label map (name<TAB>wnid lines) whose synsets join the tree, e.g. coco=coco.map "
        "(FILE may be a shipped map: coco, voc); repeatable",
    )  # fmt: skip
    build.add_argument("--root", default="physical_entity.n.01", help="root synset, not itself a node (default: %(default)s)")
    build.add_argument(
        "--shape", choices=("full", "labels-only"), default="full",
        help="full: every synset on the chosen paths is a node; labels-only: only the given synsets, "
        "each under its nearest given ancestor, as darknet's 9k.tree (default: %(default)s)",
    )  # fmt: skip
    build.add_argument(
        "--collapse-chains", action="store_true",
        help="drop every added (not given) synset that has a single child, so no sibling group holds one node "
        "(P(child | parent) = 1). ImageNet-1k full shape: 1,768 -> 1,366 nodes; the paper's WordTree1k has "
        "1,369, the difference being the 3 ImageNet-1k synsets that WordNet 3.0 does not place under "
        "physical_entity (listed as left out), which the paper's tree kept",
    )  # fmt: skip
    build.add_argument("-o", "--out", required=True, type=Path, help="output folder for wordtree.tree/.names/.labels")
    build.set_defaults(run=run_build)

    stats = commands.add_parser("stats", help="nodes, groups, leaves, depth and roots of a .tree file",
                                epilog="A line that is not 'wnid parent_index' (n + 8 ASCII digits, an ASCII integer), "
                                "a parent after its child, split siblings or a repeated wnid is refused. " + REFUSES)
    stats.add_argument("tree", type=Path, help="a darknet .tree file (names from the .names beside it)")
    stats.set_defaults(run=run_stats)

    show = commands.add_parser("show", help="a node's path to the root, its siblings and its children",
                               epilog="The .tree file is checked as by 'wordtree stats'; a node that is not in it, "
                               "or a name that several nodes share, is refused. " + REFUSES)
    show.add_argument("tree", type=Path, help="a darknet .tree file (names from the .names beside it)")
    show.add_argument("node", help="node index, wnid (n02084071) or unique name (dog)")
    show.set_defaults(run=run_show)

    lookup = commands.add_parser("lookup", help="noun synsets of a word, with wnids and glosses",
                                 epilog="A word with no noun synset is refused. " + REFUSES)
    lookup.add_argument("word", help="a word or phrase, e.g. 'traffic light'")
    lookup.set_defaults(run=run_lookup)
    return parser


if __name__ == "__main__":
    sys.exit(main())

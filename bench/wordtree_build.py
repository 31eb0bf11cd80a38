"""WordTree builder against darknet's 9k tree and the paper, plus build and WordNet-open times.

Run: python bench/wordtree_build.py   (needs WordNet 3.0; about a minute on 2 CPU cores)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from wordtree.build import build_tree
from wordtree.darknet_files import load_tree
from wordtree.labelsets import synset_set
from wordtree.wordnet import noun_graph, open_wordnet, synset_of, wnid_of

DARKNET = Path(__file__).resolve().parents[1] / "wordtree" / "data" / "darknet"

OPEN_OURS = "import time; t = time.perf_counter(); from wordtree.wordnet import open_wordnet; open_wordnet(); print(time.perf_counter() - t)"
OPEN_NLTK = """import time, warnings; warnings.simplefilter('ignore')
t = time.perf_counter()
import nltk
from wordtree.wordnet import find_wordnet_dir
root = find_wordnet_dir()
nltk.data.path.append(str(root.parent.parent))  # nltk's own version map looks for corpora/wordnet
from nltk.corpus.reader.wordnet import WordNetCorpusReader
WordNetCorpusReader(str(root), None)
print(time.perf_counter() - t)"""


def parents_by_wnid(tree) -> dict[str, str | None]:
    return {w: (tree.wnids[p] if p >= 0 else None) for w, p in zip(tree.wnids, tree.parent.tolist())}


def wordnet_ancestors(wnid: str, wordnet) -> set[str]:
    return {wnid_of(s) for path in synset_of(wnid, wordnet).hypernym_paths() for s in path[:-1]}


def classify_differences(darknet, built, full_parent, wordnet) -> Counter:
    """Why a node's darknet parent differs from ours, one reason per node."""
    theirs, ours = parents_by_wnid(darknet), parents_by_wnid(built)
    reasons = Counter()
    for wnid in darknet.wnids:
        if wnid not in ours:
            reasons["not under physical_entity in WordNet 3.0 (darknet placed it anyway)"] += 1
            continue
        if theirs[wnid] == ours[wnid]:
            continue
        if theirs[wnid] is not None and theirs[wnid] not in wordnet_ancestors(wnid, wordnet):
            reasons["darknet parent is no WordNet ancestor"] += 1
            continue
        chain, node = [], full_parent[wnid]  # our chosen path, bottom-up
        while node is not None:
            chain.append(node)
            node = full_parent[node]
        if theirs[wnid] is None or theirs[wnid] in chain:
            sibling = ours[wnid] is not None and theirs.get(ours[wnid]) == theirs[wnid]
            reasons["same path, darknet's parent is higher: the label between is darknet's sibling, not parent"
                    if sibling else "same path, darknet's parent is higher: other"] += 1  # fmt: skip
        else:
            reasons["darknet chose another hypernym path (multi-path synset)"] += 1
    return reasons


def nearest_earlier_ancestor_share(darknet, full_parent) -> int:
    """Nodes whose darknet parent is their nearest ancestor on our path that precedes them in 9k.tree.

    Tests the guess that darknet inserted synsets one by one, attaching each to the nearest
    ancestor already inserted, and never re-parented a node when a label between arrived later.
    """
    theirs, inserted, same = parents_by_wnid(darknet), set(), 0
    for wnid in darknet.wnids:
        if wnid not in full_parent:
            continue
        node = full_parent[wnid]
        while node is not None and node not in inserted:
            node = full_parent[node]
        same += node == theirs[wnid]
        inserted.add(wnid)
    return same


def share_same_parent(darknet, built) -> tuple[int, int]:
    theirs, ours = parents_by_wnid(darknet), parents_by_wnid(built)
    common = [w for w in ours if w in theirs]
    return sum(theirs[w] == ours[w] for w in common), len(common)


def timed_subprocess(code: str, cache: str) -> float:
    env = {**os.environ, "YOLO9000_CACHE": cache}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        cold = timed_subprocess(OPEN_OURS, cache)
        cached = timed_subprocess(OPEN_OURS, cache)
        nltk_plain = timed_subprocess(OPEN_NLTK, cache)
    print(f"WordNet open: cold (copy + open) {cold:.2f} s, cached {cached:.2f} s, "
          f"nltk's own reader {nltk_plain:.2f} s -> {nltk_plain / cached:.1f}x faster")  # fmt: skip

    wordnet = open_wordnet()
    start = time.perf_counter()
    noun_graph(wordnet)
    print(f"noun hypernym graph read from data.noun: {time.perf_counter() - start:.2f} s (once per process)")
    darknet = load_tree(DARKNET / "9k.tree")
    full = build_tree(darknet.wnids, shape="full", wordnet=wordnet)
    labels_only = build_tree(darknet.wnids, shape="labels-only", wordnet=wordnet)
    same, total = share_same_parent(darknet, labels_only.tree)
    print(f"9k.labels ({len(darknet)} wnids), labels-only: {labels_only.tree.stats_line()}; "
          f"{len(labels_only.outside)} outside physical_entity")  # fmt: skip
    print(f"  same parent as darknet: {same}/{len(darknet)} = {same / len(darknet):.1%} of darknet's nodes")
    for reason, count in classify_differences(darknet, labels_only.tree, parents_by_wnid(full.tree), wordnet).most_common():
        print(f"  {count:5d}  {reason}")
    earlier = nearest_earlier_ancestor_share(darknet, parents_by_wnid(full.tree))
    print(f"  darknet parent == nearest ancestor on our path that comes earlier in 9k.tree: {earlier}/{len(darknet)} "
          f"= {earlier / len(darknet):.1%}")  # fmt: skip

    leaves = [w for w, leaf in zip(darknet.wnids, darknet.leaf.tolist()) if leaf]
    from_leaves = build_tree(leaves, shape="full", wordnet=wordnet)
    same, total = share_same_parent(darknet, from_leaves.tree)
    shared = len(set(from_leaves.tree.wnids) & set(darknet.wnids))
    print(f"9k.tree leaves ({len(leaves)}), full: {from_leaves.tree.stats_line()} (darknet 9418); "
          f"{shared} nodes in common; same parent on {same}/{total} = {same / total:.1%} of common nodes")  # fmt: skip

    inet1k = build_tree(synset_set("imagenet1k"), shape="full", wordnet=wordnet)
    print(f"ImageNet-1k, full: {inet1k.tree.stats_line()} (paper: 1369 nodes); outside: {len(inet1k.outside)}")
    given = set(synset_set("imagenet1k"))
    children = Counter(inet1k.tree.parent[inet1k.tree.parent >= 0].tolist())
    unary = sum(1 for i, w in enumerate(inet1k.tree.wnids) if w not in given and children[i] == 1)
    compact = len(inet1k.tree) - unary
    print(f"  without the {unary} added nodes that have a single child: {compact}; "
          f"+ the {len(inet1k.outside)} synsets outside physical_entity: {compact + len(inet1k.outside)}")  # fmt: skip

    wnids = synset_set("imagenet21k")
    start = time.perf_counter()
    inet21k = build_tree(wnids, shape="full", wordnet=wordnet)
    first = time.perf_counter() - start
    start = time.perf_counter()
    build_tree(wnids, shape="full", wordnet=wordnet)
    again = time.perf_counter() - start
    print(f"ImageNet-21k ({len(wnids)} wnids), full: {inet21k.tree.stats_line()}; outside {len(inet21k.outside)}; "
          f"multi-path {inet21k.multi_path}")  # fmt: skip
    print(f"  build {first:.2f} s, again {again:.2f} s (WordNet open and graph read excluded)")


if __name__ == "__main__":
    main()

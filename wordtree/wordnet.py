"""WordNet 3.0 through nltk's reader, found offline.

Looked up in order (DESIGN.md, "Real components"): nltk's data path (a user who ran
`nltk.download("wordnet")`), `$WORDNET_DIR`, then Debian's `/usr/share/wordnet` (packages
`wordnet-base` + `wordnet-sense-index`). A folder that lacks nltk's `lexnames` file (Debian omits it)
is copied once into `<cache>/nltk_data/corpora/wordnet` with the standard file added; nltk 3.10
refuses symlinks there, so the copy is real. cache = `$YOLO9000_CACHE` or `~/.cache/yolo9000`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from nltk.corpus.reader.wordnet import ADJ, ADJ_SAT, WordNetCorpusReader, WordNetError

from atomicio import write_folder
from wordtree.labelsets import is_wnid

DEBIAN_DIR = Path("/usr/share/wordnet")
# The files nltk's reader opens; `lexnames` is added when missing, the rest must be there.
REQUIRED_FILES = (
    "index.noun", "index.verb", "index.adj", "index.adv",
    "data.noun", "data.verb", "data.adj", "data.adv",
    "noun.exc", "verb.exc", "adj.exc", "adv.exc", "index.sense",
)  # fmt: skip
# Princeton WordNet 3.0's `lexnames` (lexicographer file number, name, syntactic category).
LEXNAMES = (
    "adj.all adj.pert adv.all noun.Tops noun.act noun.animal noun.artifact noun.attribute "
    "noun.body noun.cognition noun.communication noun.event noun.feeling noun.food noun.group "
    "noun.location noun.motive noun.object noun.person noun.phenomenon noun.plant noun.possession "
    "noun.process noun.quantity noun.relation noun.shape noun.state noun.substance noun.time "
    "verb.body verb.change verb.cognition verb.communication verb.competition verb.consumption "
    "verb.contact verb.creation verb.emotion verb.motion verb.perception verb.possession "
    "verb.social verb.stative verb.weather adj.ppl"
).split()
INSTALL_HINT = (
    "install WordNet 3.0 with 'sudo apt-get install wordnet-base wordnet-sense-index' (Debian/Ubuntu), "
    "or run python -c 'import nltk; nltk.download(\"wordnet\")', "
    "or set WORDNET_DIR to a folder holding WordNet 3.0's dict files (data.noun, index.noun, ...)"
)

_readers: dict[Path, WordNetCorpusReader] = {}
_by_settings: dict[tuple, WordNetCorpusReader] = {}
_graphs: dict[Path, "NounGraph"] = {}
_graph_readers: dict[int, WordNetCorpusReader] = {}


class WordNetNotFound(RuntimeError):
    """No usable WordNet 3.0 in any of the places looked at; the message says how to install it."""


class UnknownSynset(ValueError):
    """A wnid or synset name that WordNet does not have."""


class _WordNet30(WordNetCorpusReader):
    """nltk's reader, opened in ~0.7 s instead of ~3 s (plus ~0.3 s to import nltk); lookups are nltk's own.

    Three costs of nltk's open are cut (measured with cProfile, see bench/wordtree_build.py):
    - the WordNet-version map: nltk maps the loaded WordNet onto the one named "wordnet" in its
      data path (two full reads of `index.sense`). That map (`map30`) serves only Open Multilingual
      WordNet lookups, which this reader never loads (`omw_reader=None`), and our WordNet *is* 3.0;
    - nltk's seekable stream reading the four `index.<pos>` files and `data.adj` line by line while
      opening. Those reads go once, front to back, so a plain text file gives the same lines;
    - nltk's token-by-token parse of the index lines (the same map, built by slicing each line).
    """

    _SEQUENTIAL_FILES = frozenset({"index.noun", "index.verb", "index.adj", "index.adv"})

    def map_wn(self, version: str = "wordnet"):
        return None

    def _scan_satellites(self) -> None:
        """nltk's set of adjective-satellite offsets, from one plain read of `data.adj` (nltk's seekable reader takes ~0.5 s)."""
        with open(self.abspath("data.adj").path, encoding=self._encoding) as lines:
            fields = (line.split() for line in lines if line.strip() and not line.startswith(" "))
            self.satellite_offsets = {int(f[0]) for f in fields if len(f) >= 3 and f[2] == "s"}

    def _load_lemma_pos_offset_map(self) -> None:
        """nltk's lemma -> pos -> synset offsets map, each index line parsed by slicing (nltk goes token by token)."""
        for suffix in self._FILEMAP.values():
            with self.open(f"index.{suffix}") as lines:
                for number, line in enumerate(lines, 1):
                    if line.startswith(" "):
                        continue
                    tokens = line.split()
                    try:  # lemma pos n_synsets n_pointers pointers... n_senses n_tagged offsets...
                        lemma, pos, count = tokens[0], tokens[1], int(tokens[2])
                        if count < 1 or len(tokens) != 6 + int(tokens[3]) + count:
                            raise ValueError(f"expected {count} offsets after {tokens[3]} pointers")
                        offsets = [int(token) for token in tokens[-count:]]
                    except (IndexError, ValueError) as exn:
                        raise WordNetError(f"file index.{suffix}, line {number}: {exn}") from exn
                    self._lemma_pos_offset_map[lemma][pos] = offsets
                    if pos == ADJ:  # as nltk: satellites among an adjective's offsets, in index order
                        self._lemma_pos_offset_map[lemma][ADJ_SAT] = [o for o in offsets if o in self.satellite_offsets]

    def open(self, file: str):
        if file in self._SEQUENTIAL_FILES:
            return open(self.abspath(file).path, encoding=self._encoding)  # abspath applies nltk's path guard
        return super().open(file)


def cache_dir() -> Path:
    """`$YOLO9000_CACHE`, or `~/.cache/yolo9000`."""
    return Path(os.environ.get("YOLO9000_CACHE") or Path.home() / ".cache" / "yolo9000")


def find_wordnet_dir() -> Path:
    """The folder nltk will read, preparing a cached copy with `lexnames` where one is needed."""
    nltk_dir = _nltk_data_wordnet()
    if nltk_dir is not None:
        return nltk_dir
    looked = ["nltk's data path (corpora/wordnet)"]
    env_dir = os.environ.get("WORDNET_DIR")
    if env_dir:
        source = Path(env_dir)
        missing = _missing_files(source)
        if missing:
            raise WordNetNotFound(f"WORDNET_DIR={env_dir} lacks {', '.join(missing)}; {INSTALL_HINT}")
        if (source / "lexnames").is_file():
            return source.resolve()
        digest = hashlib.sha1(str(source.resolve()).encode()).hexdigest()[:12]
        return _prepared_copy(source, cache_dir() / f"wordnet_dir-{digest}" / "corpora" / "wordnet")
    looked.append("$WORDNET_DIR (not set)")
    if not _missing_files(DEBIAN_DIR):
        return _prepared_copy(DEBIAN_DIR, cache_dir() / "nltk_data" / "corpora" / "wordnet")
    looked.append(f"{DEBIAN_DIR} (lacks {', '.join(_missing_files(DEBIAN_DIR)) or 'nothing'})")
    raise WordNetNotFound(f"WordNet 3.0 not found; looked at {'; '.join(looked)}. To fix: {INSTALL_HINT}")


def open_wordnet() -> WordNetCorpusReader:
    """nltk's WordNet 3.0 reader, opened once per process per folder (and per lookup settings)."""
    import nltk.data

    settings = (tuple(map(str, nltk.data.path)), os.environ.get("WORDNET_DIR"), os.environ.get("YOLO9000_CACHE"))
    if settings in _by_settings:
        return _by_settings[settings]
    root = find_wordnet_dir()
    reader = _readers.get(root)
    if reader is None:
        _authorise(root)
        with warnings.catch_warnings():  # "multilingual functions are not available": we load no OMW
            warnings.simplefilter("ignore", UserWarning)
            reader = _WordNet30(str(root), None)
        _readers[root] = reader
    _by_settings[settings] = reader
    return reader


def synset_of(wnid: str, wordnet: WordNetCorpusReader | None = None):
    """The noun synset of an ImageNet wnid: `n02084071` → Synset('dog.n.01')."""
    wordnet = wordnet or open_wordnet()
    if not is_wnid(wnid):
        raise UnknownSynset(f"{wnid!r} is not a WordNet noun id: expected 'n' and 8 digits, like n02084071")
    with warnings.catch_warnings():  # nltk warns and returns None for an offset that starts no synset
        warnings.simplefilter("ignore", UserWarning)
        try:
            synset = wordnet.synset_from_pos_and_offset("n", int(wnid[1:]))
        except (ValueError, AssertionError, LookupError):  # an offset inside a line, or past the end
            synset = None
    if synset is None:
        raise UnknownSynset(f"{wnid!r} is no noun synset of WordNet 3.0 (nothing starts at that offset)")
    return synset


@dataclass(frozen=True)
class NounGraph:
    """Every noun synset's hypernyms (instance hypernyms included) and first lemma, by wnid."""

    parents: dict[str, tuple[str, ...]]
    names: dict[str, str]

    def check(self, wnid: str) -> None:
        """Raise UnknownSynset naming the wnid when it is no noun synset."""
        if wnid not in self.parents:
            synset_of(wnid, _reader_of(self))  # the same message as a lookup through nltk


def noun_graph(wordnet: WordNetCorpusReader | None = None) -> NounGraph:
    """The noun hypernym graph, read once per process straight from `data.noun` (~0.5 s).

    nltk builds a Synset object per synset it is asked for (~0.2 ms each, ~5 s for ImageNet-21k's
    ancestors); a tree only needs the pointers, which one pass over the file gives.
    Pointer symbols `@` (hypernym) and `@i` (instance hypernym), as in WordNet's wndb(5) format.
    """
    wordnet = wordnet or open_wordnet()
    root = Path(wordnet.root.path)
    graph = _graphs.get(root)
    if graph is None:
        graph = _read_noun_graph(root / "data.noun")
        _graphs[root] = graph
        _graph_readers[id(graph)] = wordnet
    return graph


def unknown_wnids(wnids: Iterable[str], wordnet: WordNetCorpusReader | None = None) -> list[str]:
    """The distinct values of `wnids`, sorted, that name no noun synset of WordNet 3.0 (shaped like one or not)."""
    parents = noun_graph(wordnet).parents
    return sorted({wnid for wnid in wnids if wnid not in parents})


def _read_noun_graph(path: Path) -> NounGraph:
    parents, names = {}, {}
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            if line.startswith(" "):  # the license header
                continue
            # offset lex_filenum ss_type w_cnt (word lex_id)*w_cnt p_cnt (symbol offset pos source/target)*p_cnt ...
            fields = line.split(" ", 4 + 2 * int(line[14:16], 16))
            wnid = "n" + fields[0]
            names[wnid] = fields[4].replace("_", " ")
            count = int(fields[-1][:3])
            pointers = fields[-1].split(" ", 1 + 4 * count)[1 : 1 + 4 * count]
            parents[wnid] = tuple(
                "n" + pointers[i + 1] for i in range(0, len(pointers), 4) if pointers[i] in ("@", "@i")
            )
    return NounGraph(parents, names)


def _reader_of(graph: NounGraph) -> WordNetCorpusReader:
    return _graph_readers[id(graph)]


def wnid_of(synset) -> str:
    """The ImageNet-style id of a noun synset: Synset('dog.n.01') → `n02084071`."""
    return f"{synset.pos()}{synset.offset():08d}"


def _authorise(root: Path) -> None:
    """Add the folder to nltk's data path: nltk 3.10 reads corpora only under its data roots."""
    import nltk.data

    if str(root) not in nltk.data.path:
        nltk.data.path.append(str(root))


def _nltk_data_wordnet() -> Path | None:
    """`corpora/wordnet` from nltk's data path, as nltk.download left it: a folder, or only its zip
    (then unpacked once into the cache, as nltk's reader of a zip is slower and our fast open needs files)."""
    import nltk.data

    try:
        found = Path(str(nltk.data.find("corpora/wordnet")))
        if found.is_dir():
            return found.resolve()
    except LookupError:
        pass
    try:
        zipped = nltk.data.find("corpora/wordnet.zip/wordnet/")
    except LookupError:
        return None
    archive = Path(zipped.zipfile.filename).resolve()
    digest = hashlib.sha1(str(archive).encode()).hexdigest()[:12]
    return _unpacked_copy(zipped, cache_dir() / f"nltk_zip-{digest}" / "corpora" / "wordnet")


def _unpacked_copy(zipped, target: Path) -> Path:
    """The `wordnet/` folder of nltk's zip, unpacked once (a folder written whole or not at all)."""
    target = target.expanduser().resolve()
    if target.is_dir():
        return target

    def unpack(staging: Path) -> None:
        for name in zipped.zipfile.namelist():
            if name.startswith(zipped.entry) and not name.endswith("/") and "/" not in name[len(zipped.entry) :]:
                (staging / name[len(zipped.entry) :]).write_bytes(zipped.zipfile.read(name))

    return write_folder(target, unpack)


def _missing_files(folder: Path) -> list[str]:
    return [name for name in REQUIRED_FILES if not (folder / name).is_file()]


def _prepared_copy(source: Path, target: Path) -> Path:
    """Copy a WordNet dict folder once, adding `lexnames` (a folder written whole or not at all)."""
    target = target.expanduser().resolve()
    if (target / "lexnames").is_file():
        return target

    def copy(staging: Path) -> None:
        for name in REQUIRED_FILES:
            shutil.copyfile(source / name, staging / name)
        lines = [f"{i:02d}\t{name}\t{_lexname_category(name)}\n" for i, name in enumerate(LEXNAMES)]
        (staging / "lexnames").write_text("".join(lines), encoding="utf-8")

    return write_folder(target, copy)


def _lexname_category(name: str) -> int:
    """WordNet's syntactic category number of a lexicographer file: 1 noun, 2 verb, 3 adj, 4 adv."""
    return {"noun": 1, "verb": 2, "adj": 3, "adv": 4}[name.split(".")[0]]

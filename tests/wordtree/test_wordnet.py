import shutil
import zipfile

import nltk.data
import pytest
from nltk.corpus.reader.wordnet import WordNetCorpusReader, WordNetError

from wordtree import wordnet
from wordtree.wordnet import (
    REQUIRED_FILES,
    UnknownSynset,
    WordNetNotFound,
    find_wordnet_dir,
    noun_graph,
    open_wordnet,
    synset_of,
    wnid_of,
)


def fake_wordnet(folder, lexnames=True):
    """A folder shaped like a WordNet dict (empty files): enough for the lookup, not for reading."""
    folder.mkdir(parents=True)
    for name in REQUIRED_FILES + (("lexnames",) if lexnames else ()):
        (folder / name).write_text(f"{name}\n")
    return folder


@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    """No WordNet anywhere: empty nltk data path, no WORDNET_DIR, no Debian folder, a tmp cache."""
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path / "empty_nltk_data")])
    monkeypatch.delenv("WORDNET_DIR", raising=False)
    monkeypatch.delenv("NLTK_DATA", raising=False)
    monkeypatch.setattr(wordnet, "DEBIAN_DIR", tmp_path / "no_debian")
    monkeypatch.setenv("YOLO9000_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_nltk_data_path_is_looked_at_before_wordnet_dir_and_debian(nowhere, monkeypatch):
    downloaded = fake_wordnet(nowhere / "nltk_data" / "corpora" / "wordnet")
    monkeypatch.setattr(nltk.data, "path", [str(nowhere / "nltk_data")])
    monkeypatch.setenv("WORDNET_DIR", str(fake_wordnet(nowhere / "mine")))
    monkeypatch.setattr(wordnet, "DEBIAN_DIR", fake_wordnet(nowhere / "debian", lexnames=False))
    assert find_wordnet_dir() == downloaded.resolve()


def test_wordnet_dir_is_looked_at_before_debian(nowhere, monkeypatch):
    mine = fake_wordnet(nowhere / "mine")
    monkeypatch.setenv("WORDNET_DIR", str(mine))
    monkeypatch.setattr(wordnet, "DEBIAN_DIR", fake_wordnet(nowhere / "debian", lexnames=False))
    assert find_wordnet_dir() == mine.resolve()


def test_debian_folder_is_copied_once_into_the_cache_with_lexnames(nowhere, monkeypatch):
    monkeypatch.setattr(wordnet, "DEBIAN_DIR", fake_wordnet(nowhere / "debian", lexnames=False))
    found = find_wordnet_dir()
    assert found == (nowhere / "cache" / "nltk_data" / "corpora" / "wordnet").resolve()
    assert not found.is_symlink() and (found / "data.noun").read_text() == "data.noun\n"
    lexnames = (found / "lexnames").read_text().splitlines()
    assert len(lexnames) == 45
    assert lexnames[0] == "00\tadj.all\t3" and lexnames[5] == "05\tnoun.animal\t1"
    assert lexnames[44] == "44\tadj.ppl\t3"
    stamp = (found / "lexnames").stat().st_mtime_ns
    assert find_wordnet_dir() == found and (found / "lexnames").stat().st_mtime_ns == stamp
    assert [p.name for p in found.parent.iterdir()] == ["wordnet"]  # no staging folder left behind


def test_wordnet_dir_without_lexnames_is_copied_into_the_cache(nowhere, monkeypatch):
    monkeypatch.setenv("WORDNET_DIR", str(fake_wordnet(nowhere / "mine", lexnames=False)))
    found = find_wordnet_dir()
    assert found.is_relative_to((nowhere / "cache").resolve()) and (found / "lexnames").is_file()


def test_wordnet_dir_missing_files_is_named(nowhere, monkeypatch):
    folder = fake_wordnet(nowhere / "mine")
    (folder / "index.sense").unlink()
    monkeypatch.setenv("WORDNET_DIR", str(folder))
    with pytest.raises(WordNetNotFound, match="index.sense"):
        find_wordnet_dir()


def test_no_wordnet_anywhere_says_how_to_install(nowhere):
    with pytest.raises(WordNetNotFound) as caught:
        open_wordnet()
    message = str(caught.value)
    assert "apt-get install wordnet-base wordnet-sense-index" in message
    assert 'nltk.download("wordnet")' in message and "WORDNET_DIR" in message


@pytest.fixture(scope="module")
def real_wordnet():
    return open_wordnet()


def test_imagenet_wnid_resolves_to_its_noun_synset(real_wordnet):
    dog = synset_of("n02084071", real_wordnet)
    assert dog.name() == "dog.n.01" and dog.lexname() == "noun.animal"
    assert wnid_of(dog) == "n02084071"
    assert synset_of("n01440764").name() == "tench.n.01"  # the reader is cached per process
    assert open_wordnet() is real_wordnet


@pytest.mark.parametrize("wnid", ["n99999999", "n02084072", "dog", "v02084071", "n0208407"])
def test_bad_or_unknown_wnid_is_named_in_the_error(real_wordnet, wnid):
    with pytest.raises(UnknownSynset, match=wnid):
        synset_of(wnid, real_wordnet)


class NltkReaderWithoutVersionMap(WordNetCorpusReader):
    """nltk's own reading of the index files; only the map onto a downloaded "wordnet" is skipped."""

    def map_wn(self, version="wordnet"):
        return None


@pytest.mark.filterwarnings("ignore:The multilingual functions")
def test_fast_open_reads_the_same_lemmas_and_satellites_as_nltks_own_reader(real_wordnet):
    root = str(real_wordnet.root.path)
    fast, plain = type(real_wordnet)(root, None), NltkReaderWithoutVersionMap(root, None)  # fresh: lookups add keys
    assert fast._lemma_pos_offset_map == plain._lemma_pos_offset_map
    assert fast.satellite_offsets == plain.satellite_offsets and len(fast.satellite_offsets) > 10_000
    for word in ("dog", "square", "bank", "run", "good", "quickly", "atmospheric_phenomenon"):
        assert fast.synsets(word) == plain.synsets(word)


def test_noun_graph_read_from_data_noun_agrees_with_nltks_synsets(real_wordnet):
    graph = noun_graph(real_wordnet)
    sample = {real_wordnet.synset(n) for n in ("eiffel_tower.n.01", "square.n.01", "english_springer.n.01")}
    for synset in list(sample):
        sample.update(s for path in synset.hypernym_paths() for s in path)
    sample.update(real_wordnet.synset("dog.n.01").closure(lambda s: s.hyponyms()))
    assert len(sample) > 150
    for synset in sample:
        expected = {wnid_of(s) for s in synset.hypernyms() + synset.instance_hypernyms()}
        assert set(graph.parents[wnid_of(synset)]) == expected, synset
        assert graph.names[wnid_of(synset)] == synset.lemmas()[0].name().replace("_", " ")
    assert len(graph.parents) == 82115  # WordNet 3.0's noun synsets
    with pytest.raises(UnknownSynset, match="n00000001"):
        graph.check("n00000001")


def test_nltk_download_left_as_a_zip_is_unpacked_once_into_the_cache(nowhere, monkeypatch):
    folder = fake_wordnet(nowhere / "zipsrc" / "wordnet")
    corpora = nowhere / "nltk_data" / "corpora"
    corpora.mkdir(parents=True)
    with zipfile.ZipFile(corpora / "wordnet.zip", "w") as archive:
        for path in sorted(folder.iterdir()):
            archive.write(path, f"wordnet/{path.name}")
    monkeypatch.setattr(nltk.data, "path", [str(nowhere / "nltk_data")])
    monkeypatch.setenv("WORDNET_DIR", str(fake_wordnet(nowhere / "mine")))
    found = find_wordnet_dir()
    assert found.is_relative_to((nowhere / "cache").resolve()) and found.name == "wordnet"
    assert sorted(p.name for p in found.iterdir()) == sorted(p.name for p in folder.iterdir())
    assert find_wordnet_dir() == found


@pytest.mark.filterwarnings("ignore:The multilingual functions")
def test_a_malformed_index_line_is_named_by_file_and_line(real_wordnet, tmp_path, monkeypatch):
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path)])  # nltk reads only below its data path
    copy = tmp_path / "corpora" / "wordnet"
    shutil.copytree(real_wordnet.root.path, copy)
    lines = (copy / "index.verb").read_text().splitlines(keepends=True)
    number = next(i for i, line in enumerate(lines, 1) if not line.startswith(" "))
    tokens = lines[number - 1].split()
    lines[number - 1] = " ".join(tokens[:2] + [str(int(tokens[2]) + 1)] + tokens[3:]) + "\n"  # one offset short
    (copy / "index.verb").write_text("".join(lines))
    with pytest.raises(WordNetError, match=f"index.verb, line {number}:"):
        type(real_wordnet)(str(copy), None)

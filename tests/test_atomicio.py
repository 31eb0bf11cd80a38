import errno

import pytest

from atomicio import TEMPORARY_GLOB, remove_temporaries, temporary_path, write_file, write_files, write_folder


def test_a_file_is_replaced_whole(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    assert write_file(path, lambda p: p.write_text("new")) == path
    assert path.read_text() == "new" and not list(tmp_path.glob(TEMPORARY_GLOB))


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")

    def half_then_fail(p):
        p.write_text("half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        write_file(path, half_then_fail)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_files_written_together_are_all_replaced_or_none(tmp_path):
    first, second, third = (tmp_path / n for n in ("one", "two", "three"))
    for path in (first, second, third):
        path.write_text("old")
    third.unlink()
    third.mkdir()  # the last one cannot be written
    with pytest.raises(IsADirectoryError) as error:
        write_files({first: lambda p: p.write_text("new"), second: lambda p: p.write_text("new"),
                     third: lambda p: p.write_text("new")})
    assert error.value.filename == str(third)
    assert first.read_text() == second.read_text() == "old" and not list(tmp_path.glob(TEMPORARY_GLOB))
    with pytest.raises(ValueError):
        write_files({first: lambda p: p.write_text("new"), second: lambda p: int("not a number")})
    assert first.read_text() == "old" and not list(tmp_path.glob(TEMPORARY_GLOB))


def test_an_error_names_the_target_not_the_temporary_file(tmp_path):
    target = tmp_path / "missing-folder" / "a.txt"
    with pytest.raises(FileNotFoundError) as error:
        write_file(target, lambda p: p.write_text("x"))
    assert error.value.filename == str(target) and error.value.errno == errno.ENOENT


def test_temporaries_a_killed_writer_left_are_removed_and_nothing_else(tmp_path):
    temporary_path(tmp_path / "shard-000000.tar").write_bytes(b"half a shard")
    (tmp_path / "shard-000001.tar").write_bytes(b"a whole shard")
    assert remove_temporaries(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["shard-000001.tar"]


def test_a_folder_appears_whole_and_a_copy_already_there_is_kept(tmp_path):
    target = tmp_path / "cache" / "wordnet"
    write_folder(target, lambda staging: (staging / "data.noun").write_text("nouns"))
    assert (target / "data.noun").read_text() == "nouns"
    write_folder(target, lambda staging: (staging / "data.noun").write_text("another copy"))
    assert (target / "data.noun").read_text() == "nouns"
    assert [p.name for p in target.parent.iterdir()] == ["wordnet"]

    def fail(staging):
        (staging / "half").write_text("half a copy")
        raise RuntimeError("copy failed")

    with pytest.raises(RuntimeError):
        write_folder(tmp_path / "other", fail)
    assert [p.name for p in tmp_path.iterdir()] == ["cache"]

import argparse

import pytest

from yolo9000.arguments import integer, plain_name, size_in_bytes


@pytest.mark.parametrize("text, size", [("123456", 123456), ("100MB", 100_000_000), ("1.5GB", 1_500_000_000),
                                        ("512KiB", 524288), ("2 mb", 2_000_000), ("7k", 7000)])
def test_size_in_bytes_reads_bytes_and_unit_suffixes(text, size):
    assert size_in_bytes(text) == size


@pytest.mark.parametrize("text", ["", "MB", "10 parsecs", "0", "-5MB"])
def test_size_in_bytes_refuses_what_it_cannot_read(text):
    with pytest.raises(argparse.ArgumentTypeError, match="size"):
        size_in_bytes(text)


@pytest.mark.parametrize("text, value", [("5", 5), ("-3", -3), (" 7 ", 7), ("+2", 2)])
def test_integer_reads_ascii_digits(text, value):
    assert integer()(text) == value


@pytest.mark.parametrize("text", ["٣", "³", "1_000", "1.0", "", "five", "0x10"])
def test_integer_refuses_other_scripts_separators_and_words(text):
    with pytest.raises(argparse.ArgumentTypeError, match="digits 0-9"):
        integer()(text)


def test_integer_refuses_values_out_of_range_naming_the_bounds():
    with pytest.raises(argparse.ArgumentTypeError, match="between 1 and 100, got 500"):
        integer(1, 100)("500")
    with pytest.raises(argparse.ArgumentTypeError, match="at least 1, got 0"):
        integer(minimum=1)("0")
    assert integer(1, 100)("100") == 100


@pytest.mark.parametrize("text", ["", "a/b", "a.b", "../x", "-x", "a b", "ä"])
def test_plain_name_refuses_dots_slashes_and_spaces(text):
    with pytest.raises(argparse.ArgumentTypeError, match="not a plain name"):
        plain_name(text)

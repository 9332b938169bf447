"""core/files.py: atomic writes that lose nothing and name the file meant."""

from __future__ import annotations

import errno
import os

import pytest

from rnndsl.core.files import printable, utf8_prefix, write_atomically


def test_a_folder_on_the_way_that_is_a_file_is_named(tmp_path):
    """mkdir of a folder below a file said "File exists: '<file>/m.npz'", naming a file
    that does not exist rather than the one in the way."""
    (tmp_path / "corpus.txt").write_text("text")
    with pytest.raises(NotADirectoryError) as caught:
        write_atomically(tmp_path / "corpus.txt" / "sub" / "m.npz", b"data")
    assert caught.value.errno == errno.ENOTDIR
    assert f"{tmp_path / 'corpus.txt'} is not a folder" in str(caught.value)
    assert caught.value.filename == str(tmp_path / "corpus.txt" / "sub" / "m.npz")
    assert (tmp_path / "corpus.txt").read_text() == "text"


def test_a_name_near_the_limit_gets_a_temporary_name_that_fits(tmp_path):
    """The temporary file's name added a dot and a suffix to the whole stem: a target
    of 250 bytes could not be written."""
    target = tmp_path / ("b" * 246 + ".npz")
    write_atomically(target, b"data")
    assert target.read_bytes() == b"data" and os.listdir(tmp_path) == [target.name]


def test_utf8_prefix_and_printable():
    assert utf8_prefix("漢字x", 4) == "漢" and utf8_prefix("abc", 10) == "abc"
    assert printable("r\udce9seau.rnn") == "r\\udce9seau.rnn"


def test_a_link_to_nothing_on_the_way_is_named(tmp_path):
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(NotADirectoryError, match="dangling is not a folder"):
        write_atomically(tmp_path / "dangling" / "m.npz", b"data")

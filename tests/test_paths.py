"""The one rule of one path lying within another (``dispatch.servers.paths``): part by part, as
``PurePath.is_relative_to`` judges it, for absolute and relative paths alike."""

from __future__ import annotations

import itertools
from pathlib import PurePosixPath

from dispatch.servers.paths import covered_by_any, covers

PATHS = ["/", "/a", "/a/b", "/a/bc", "/a/b/c", "/ab", "/a/b/", "//a", ".", "a", "a/b", "ab", "a/b/c", "a/./b", "a/.."]


def test_a_path_lies_within_another_part_by_part_never_by_bare_prefix() -> None:
    for top, path in itertools.product(PATHS, repeat=2):
        top_path, below = PurePosixPath(top), PurePosixPath(path)
        assert covers(top_path, below) == below.is_relative_to(top_path), (top, path)
    assert not covers(PurePosixPath("/a/b"), PurePosixPath("/a/bc"))
    assert covered_by_any(PurePosixPath("/a/b/c"), [PurePosixPath("/x"), PurePosixPath("/a/b")])
    assert not covered_by_any(PurePosixPath("/a/bc"), [PurePosixPath("/x"), PurePosixPath("/a/b")])

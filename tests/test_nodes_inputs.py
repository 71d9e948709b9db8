"""The nodes' input rules without ComfyUI: file names stay inside the pack's folder, text inputs parse or fail clearly."""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "zerase_pack_nodes"


def nodes_module(name: str):
    """A module of the pack's `nodes/` package, imported by path (a bare `nodes` may be ComfyUI's)."""
    if PACKAGE not in sys.modules:
        spec = importlib.util.spec_from_file_location(PACKAGE, REPO / "nodes" / "__init__.py",
                                                      submodule_search_locations=[str(REPO / "nodes")])
        package = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"{PACKAGE}.{name}")


names = nodes_module("names")
parsing = nodes_module("parsing")


@pytest.mark.parametrize("name, expected", [("star-erased", "star-erased.safetensors"),
                                            ("  Van Gogh v2.safetensors ", "Van Gogh v2.safetensors"),
                                            ("a.b_c", "a.b_c.safetensors")])
def test_check_name_accepts_plain_names(name, expected):
    assert names.check_name(name) == expected


@pytest.mark.parametrize("name, fragment", [
    ("", "empty"), ("   ", "empty"), ("../escape", "path separator"), ("/etc/passwd", "path separator"),
    ("sub/file", "path separator"), ("..\\win", "path separator"), ("..", "may not start with '.'"),
    (".hidden", "may not start with '.'"), ("x.pt", "pickle"), ("x.ckpt", "pickle"), ("a:b", "contains [':']"),
    ("a*b?", "contains"), ("x" * 200, "at most 128"), ("new\nline", "contains"),
])
def test_check_name_refuses_escapes_and_pickles(name, fragment):
    with pytest.raises(ValueError, match=fragment.replace("[", r"\[").replace("*", r"\*").replace("?", r"\?")):
        names.check_name(name)


def test_resolve_inside_refuses_a_symlink_leading_out(tmp_path):
    folder, outside = tmp_path / "zerase", tmp_path / "outside"
    folder.mkdir()
    outside.mkdir()
    (outside / "secret.safetensors").write_bytes(b"x")
    (folder / "evil.safetensors").symlink_to(outside / "secret.safetensors")
    with pytest.raises(ValueError, match="outside the erasure folder"):
        names.resolve_inside(folder, "evil", must_exist=True)
    assert names.resolve_inside(folder, "fresh") == folder / "fresh.safetensors"
    with pytest.raises(ValueError, match="does not exist"):
        names.resolve_inside(folder, "fresh", must_exist=True)


def test_strengths_and_sweep_parse_or_explain():
    assert parsing.parse_strengths("", 2) == [None, None]
    assert parsing.parse_strengths("0.5, auto", 3) == [0.5, None, None]
    with pytest.raises(ValueError, match="2 values for 1"):
        parsing.parse_strengths("1, 2", 1)
    with pytest.raises(ValueError, match="'strong' .* is not a number"):
        parsing.parse_strengths("strong", 1)
    assert parsing.parse_sweep("0.5, 2;3") == [0.5, 2.0, 3.0]
    with pytest.raises(ValueError, match="not a number"):
        parsing.parse_sweep("half")
    assert parsing.words_list("Van Gogh, starry\nnight") == ("Van Gogh", "starry", "night")
    assert parsing.lines(" a \n\n b ") == ("a", "b")

"""If-Match and If-None-Match lists as RFC 9110 writes them (section 8.8.3)."""

import pytest

from postservice.http import etags


@pytest.mark.parametrize(
    ("value", "strong", "weak"),
    [
        ('"a"', {"a"}, set()),
        ('W/"a"', set(), {"a"}),
        ('"a", W/"b" ,"c"', {"a", "c"}, {"b"}),
        ('"a,b", "c"', {"a,b", "c"}, set()),  # a comma is a tag's character
        (' \t"a"\t ', {"a"}, set()),
        ('"a",,"b",', {"a", "b"}, set()),  # empty members of a list
        ('""', {""}, set()),
        ('"caf\xe9"', {"caf\xe9"}, set()),  # obs-text, as WSGI's latin-1
        ("", set(), set()),
    ],
)
def test_lists_of_tags_are_read(value, strong, weak):
    tags = etags.parse(value)
    assert (tags.any, tags.strong, tags.weak) == (False, strong, weak)


@pytest.mark.parametrize(
    "value",
    [
        "a",  # unquoted: no tag
        "e8091d51.2.5",
        'w/"a"',  # the weak mark is case-sensitive
        '"a" "b"',  # no comma between
        '"a"x',
        '"a", *',  # * stands alone
        '"a',  # unterminated
        'W/ "a"',
        '"a"b"',
    ],
)
def test_values_that_are_not_lists_of_tags_name_none(value):
    tags = etags.parse(value)
    assert tags == etags.NONE
    assert not tags.strongly_match("a")
    assert not tags.weakly_match("a")


def test_star_matches_any_tag():
    for value in ("*", " * "):
        tags = etags.parse(value)
        assert tags.strongly_match("x")
        assert tags.weakly_match("x")


def test_strong_comparison_leaves_weak_tags_out():
    tags = etags.parse('W/"a", "b"')
    assert not tags.strongly_match("a")
    assert tags.strongly_match("b")
    assert tags.weakly_match("a")
    assert tags.weakly_match("b")
    assert not tags.weakly_match("c")


def test_absent_headers_are_none():
    assert etags.if_match({}) is None
    assert etags.if_none_match({}) is None
    assert etags.if_match({"HTTP_IF_MATCH": '"a"'}).strong == {"a"}
    assert etags.if_none_match({"HTTP_IF_NONE_MATCH": '"a"'}).strong == {"a"}

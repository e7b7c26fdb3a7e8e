"""Calico's selector language: grammar, evaluation, canonical form, errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from libcalico.selector import Selector, SelectorError, parse

LABELS = {"app": "web", "tier": "frontend", "env": "prod", "k8s.io/name": "x-y"}


class TestEvaluation:
    @pytest.mark.parametrize("text,expected", [
        ("", True), ("all()", True), ("global()", True),
        ("has(app)", True), ("has(nope)", False), ("!has(nope)", True), ("!has(app)", False),
        ("app == 'web'", True), ('app == "db"', False), ("app != 'db'", True), ("nope != 'x'", True),
        ("nope == ''", False),
        ("app in {'web', 'db'}", True), ("app in {}", False), ("app not in {'db'}", True),
        ("nope not in {'x'}", True), ("nope in {'x'}", False),
        ("tier contains 'ont'", True), ("tier starts with 'front'", True), ("tier ends with 'end'", True),
        ("tier starts with 'end'", False), ("nope contains ''", False),
        ("app == 'web' && env == 'prod'", True), ("app == 'web' && env == 'dev'", False),
        ("app == 'db' || env == 'prod'", True), ("app == 'db' || env == 'dev'", False),
        ("!(app == 'web' && env == 'dev')", True), ("!!has(app)", True),
        ("app == 'db' || env == 'prod' && tier == 'x'", False),  # && binds tighter than ||
        ("(app == 'db' || env == 'prod') && tier == 'frontend'", True),
        ("k8s.io/name == 'x-y'", True), ("app notin {'db'}", True),
    ])
    def test_evaluates_like_calico(self, text: str, expected: bool) -> None:
        assert parse(text).evaluate(LABELS) is expected


class TestCanonicalForm:
    @pytest.mark.parametrize("text,canonical", [
        ("", "all()"),
        ("app=='web'", 'app == "web"'),
        ("a == 'say \"hi\"'", "a == 'say \"hi\"'"),
        ("a in {'y','x','x'}", 'a in {"x", "y"}'),
        ("a=='1'&&b=='2'||c=='3'", '((a == "1" && b == "2") || c == "3")'),
        ("!(a == 'b')", '!a == "b"'),
        ("has( a )", "has(a)"),
        ("a not   in {'x'}", 'a not in {"x"}'),
    ])
    def test_canonical(self, text: str, canonical: str) -> None:
        assert str(parse(text)) == canonical

    def test_equal_selectors_compare_and_hash_equal(self) -> None:
        assert parse("a=='b'") == parse('a == "b"')
        assert len({parse("a=='b'"), parse('a == "b"')}) == 1
        assert isinstance(parse("all()"), Selector)


class TestErrors:
    @pytest.mark.parametrize("text,fragment", [
        ("a ==", "expected a quoted string"),
        ("a = 'b'", "expected =="),
        ("has(a", "no closing ')'"),
        ("(a == 'b'", "expected ')'"),
        ("a == 'b' b", "expected '&&', '||' or the end"),
        ("a in {'x' 'y'}", "expected ',' or '}'"),
        ("a == 'unterminated", "unterminated string"),
        ("a foo 'b'", "expected an operator after label 'a'"),
        ("a & b", "expected &&"),
        ("a | b", "expected ||"),
        ("!", "expected a label"),
        ("a == b", "expected a quoted string"),
        ("x" * 513 + " == 'a'", "label too long"),
        ("a == 'b' $", "unexpected character"),
    ])
    def test_invalid_selectors_raise_a_value_error_that_says_why(self, text: str, fragment: str) -> None:
        with pytest.raises(SelectorError) as info:
            parse(text)
        assert fragment in str(info.value)
        assert isinstance(info.value, ValueError)


# --- property tests ------------------------------------------------------------------------

label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_./-", min_size=1, max_size=12)
value = st.text(alphabet=st.characters(blacklist_characters="\"'\x00", blacklist_categories=("Cs",)), max_size=10)


def leaves() -> st.SearchStrategy[str]:
    return st.one_of(
        st.just("all()"),
        label.map(lambda l: f"has({l})"),
        st.tuples(label, st.sampled_from(["==", "!=", "contains", "starts with", "ends with"]), value).map(
            lambda t: f"{t[0]} {t[1]} '{t[2]}'"),
        st.tuples(label, st.sampled_from(["in", "not in"]), st.lists(value, max_size=3)).map(
            lambda t: f"{t[0]} {t[1]} {{{', '.join(repr(v) if False else chr(34) + v + chr(34) for v in t[2])}}}"),
    )


selectors = st.recursive(
    leaves(),
    lambda inner: st.one_of(
        inner.map(lambda s: f"!({s})"),
        st.tuples(inner, inner).map(lambda t: f"({t[0]}) && ({t[1]})"),
        st.tuples(inner, inner).map(lambda t: f"({t[0]}) || ({t[1]})"),
    ),
    max_leaves=8,
)
label_sets = st.dictionaries(label, value, max_size=5)


@settings(max_examples=300, deadline=None)
@given(selectors)
def test_canonical_form_is_a_fixed_point(text: str) -> None:
    once = str(parse(text))
    assert str(parse(once)) == once


@settings(max_examples=300, deadline=None)
@given(selectors, label_sets)
def test_canonical_form_means_the_same(text: str, labels: dict[str, str]) -> None:
    assert parse(str(parse(text))).evaluate(labels) == parse(text).evaluate(labels)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30))
def test_arbitrary_text_either_parses_or_raises_selector_error(text: str) -> None:
    try:
        sel = parse(text)
    except SelectorError:
        return
    assert str(parse(str(sel))) == str(sel)


# --- fuzzing (issue 18): hostile selectors and label sets never crash ----------------------------

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None)

# Fragments of the grammar, glued at random: most soups are invalid, some parse, and the
# parser's error paths get exercised far more than with arbitrary text.
_FRAGMENTS = ["a", "b.c/d", "x-y_z", "==", "!=", "!", "&&", "||", "(", ")", "{", "}", ",", "in", "not in",
              "contains", "starts with", "ends with", "has(", "has(a)", "all()", "global()", "'v'", '"w"', "''",
              "'", '"', " ", "\t", "=", "&", "|", "\u00e9", "0"]
soups = st.lists(st.sampled_from(_FRAGMENTS), max_size=20).map(" ".join)
any_labels = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=6)


@FUZZ
@given(st.one_of(soups, selectors, st.text(max_size=40)), any_labels)
def test_a_selector_parses_or_raises_selector_error_and_a_parsed_one_reparses_to_itself(
        text: str, labels: dict[str, str]) -> None:
    try:
        sel = parse(text)
    except SelectorError as exc:
        assert exc.text == text and exc.reason
        return
    again = parse(str(sel))
    assert again == sel and hash(again) == hash(sel)
    assert isinstance(sel.evaluate(labels), bool)
    assert again.evaluate(labels) == sel.evaluate(labels)


@FUZZ
@given(selectors, any_labels)
def test_evaluation_never_raises_on_arbitrary_labels(text: str, labels: dict[str, str]) -> None:
    assert isinstance(parse(text).evaluate(labels), bool)


@pytest.mark.parametrize("text", ["(" * 5000 + "a == 'b'" + ")" * 5000, "(" * 101 + "all()" + ")" * 101,
                                  "!" * 100_000 + "has(a)", " && ".join(["has(a)"] * 20_000)])
def test_deeply_nested_or_very_long_selectors_give_an_answer_not_a_recursion_error(text: str) -> None:
    try:
        sel = parse(text)
    except SelectorError as exc:
        assert "nested deeper than" in exc.reason
        return
    assert isinstance(sel.evaluate({"a": "b"}), bool)

"""Hypothesis strategies for key-paths and patterns."""

from __future__ import annotations

from hypothesis import strategies as st

from keypath import GLOBSTAR, STAR, KeyPath, KeyPattern

# every character a segment may hold, weighted towards the ones that need escaping
_tricky = st.sampled_from(list("/*~:. -_é漢🔌0123456789"))
_any = st.characters(
    blacklist_categories=("Cc", "Cs"), blacklist_characters="\x7f", max_codepoint=0x10FFFF
)
segments = st.text(st.one_of(_tricky, _any), min_size=1, max_size=12)
paths = st.lists(segments, max_size=8).map(lambda segs: KeyPath(*segs))

# a small alphabet, so that random patterns and paths actually match each other
small_segments = st.sampled_from(["a", "b", "c", "a/b", "*x"])
small_paths = st.lists(small_segments, max_size=6).map(lambda segs: KeyPath(*segs))
small_patterns = st.lists(
    st.one_of(small_segments, st.just(STAR), st.just(GLOBSTAR)), max_size=6
).map(KeyPattern)

"""The fast canonical JSON path writes exactly the bytes of the RFC 8785 reference implementation.

The hash chain is only checkable by an outside auditor if its encoding is RFC 8785 to the
byte, so the orjson shortcut is checked against ``rfc8785`` over generated JSON documents,
including the cases where the two would differ and the shortcut must step aside.
"""

from __future__ import annotations

from typing import Any

import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.envelope import _orjson_is_exact, jcs

KEYS = st.text(min_size=0, max_size=12) | st.sampled_from(["a", "b", "\ue000", "\U0001f600", "é", "A", "\x00", "ä"])
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(KEYS, children, max_size=6),
    max_leaves=30,
)


@settings(max_examples=1500, deadline=None)
@given(DOCUMENTS)
def test_the_fast_path_writes_the_rfc8785_bytes(document: Any) -> None:
    assert jcs(document) == rfc8785.dumps(document)


BMP = st.characters(max_codepoint=0xFFFF, exclude_categories=("Cs",))


@given(st.dictionaries(st.text(BMP, max_size=8), st.text(max_size=20) | st.integers(-1000, 1000), max_size=8))
def test_plain_documents_take_the_fast_path(document: dict[str, Any]) -> None:
    assert _orjson_is_exact(document)


def test_what_orjson_would_write_differently_goes_to_the_reference() -> None:
    # Key order by UTF-16 code units (RFC 8785) is not code point order beyond U+FFFF.
    keys = {"\ue000": 1, "\U0001f600": 2}
    assert not _orjson_is_exact(keys)
    assert jcs(keys) == rfc8785.dumps(keys) == '{"\U0001f600":2,"\ue000":1}'.encode()
    # Numbers are doubles in RFC 8785 and written the ECMAScript way.
    for number in (1.0, 1e21, 1e-7, 0.1, -0.0):
        assert not _orjson_is_exact({"x": number})
        assert jcs({"x": number}) == rfc8785.dumps({"x": number})
    assert not _orjson_is_exact({"x": 2**53})
    assert _orjson_is_exact({"x": 2**53 - 1})

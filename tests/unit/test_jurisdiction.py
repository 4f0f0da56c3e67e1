"""Jurisdictions: six-digit division codes, their levels, their tree, and who may act where."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared import jurisdiction
from shared.errors import InvalidInput, NotPermitted
from shared.jurisdiction import CENTRAL, Level, ancestors, covers, level, parent
from shared.principal import Principal, Role

SICHUAN = "510000"
DEYANG = "510600"  # a city of Sichuan
GUANGHAN = "510681"  # a county-level city under Deyang
BEIJING = "110000"
DONGCHENG = "110101"


def principal(role: Role = Role.DEPARTMENT, where: str = DEYANG) -> Principal:
    return Principal(subject="alice", organisation="dept-x", role=role, jurisdiction=where)


# --- codes ---------------------------------------------------------------------------


@pytest.mark.parametrize("code", [CENTRAL, SICHUAN, DEYANG, GUANGHAN, "999999", "110101"])
def test_a_well_formed_code_is_accepted_as_is(code: str) -> None:
    assert jurisdiction.validate(code) == code


@pytest.mark.parametrize(
    "code",
    [
        "051060",  # starts with 0
        "010000",
        "51060",  # five digits
        "5106000",  # seven digits
        "51060a",
        "",
        " 510600",
        "510 600",
        "５１０６００",  # full-width digits
    ],
)
def test_a_malformed_code_is_refused_as_invalid_jurisdiction(code: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        jurisdiction.validate(code)
    assert caught.value.code == "invalid_jurisdiction"


def test_a_code_that_is_not_a_string_is_refused() -> None:
    with pytest.raises(InvalidInput):
        jurisdiction.validate(510600)  # type: ignore[arg-type]


def test_a_code_with_a_trailing_newline_is_refused() -> None:
    with pytest.raises(InvalidInput):
        jurisdiction.validate("510600\n")


def test_a_code_with_non_ascii_digits_is_refused() -> None:
    with pytest.raises(InvalidInput):
        jurisdiction.validate("1\u0660\u0660\u0660\u0660\u0660")


# --- levels and the tree -------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "expected"),
    [(CENTRAL, Level.CENTRAL), (SICHUAN, Level.PROVINCE), (DEYANG, Level.CITY), (GUANGHAN, Level.COUNTY)],
)
def test_level_of_a_code(code: str, expected: Level) -> None:
    assert level(code) is expected


def test_level_refuses_a_malformed_code() -> None:
    with pytest.raises(InvalidInput):
        level("51060")


def test_parent_of_each_level() -> None:
    assert parent(GUANGHAN) == DEYANG
    assert parent(DEYANG) == SICHUAN
    assert parent(SICHUAN) == CENTRAL
    assert parent(CENTRAL) is None


def test_ancestors_run_from_the_code_up_to_central_nearest_first() -> None:
    assert ancestors(GUANGHAN) == [GUANGHAN, DEYANG, SICHUAN, CENTRAL]
    assert ancestors(DEYANG) == [DEYANG, SICHUAN, CENTRAL]
    assert ancestors(SICHUAN) == [SICHUAN, CENTRAL]
    assert ancestors(CENTRAL) == [CENTRAL]


# --- covers --------------------------------------------------------------------------


@pytest.mark.parametrize("target", [CENTRAL, SICHUAN, DEYANG, GUANGHAN, BEIJING, DONGCHENG])
def test_central_covers_every_jurisdiction(target: str) -> None:
    assert covers(CENTRAL, target)


@pytest.mark.parametrize("target", [SICHUAN, DEYANG, GUANGHAN])
def test_a_province_covers_itself_its_cities_and_counties(target: str) -> None:
    assert covers(SICHUAN, target)


@pytest.mark.parametrize("target", [BEIJING, DONGCHENG, "110100"])
def test_a_province_does_not_cover_another_provinces_jurisdictions(target: str) -> None:
    assert not covers(SICHUAN, target)


def test_a_city_covers_its_counties_but_not_its_province_nor_central() -> None:
    assert covers(DEYANG, GUANGHAN)
    assert not covers(DEYANG, SICHUAN)
    assert not covers(DEYANG, CENTRAL)


def test_a_city_does_not_cover_a_sibling_city() -> None:
    assert not covers(DEYANG, "510100")
    assert not covers(DEYANG, "510104")


def test_a_county_does_not_cover_its_city() -> None:
    assert not covers(GUANGHAN, DEYANG)


ascii_codes = st.builds(
    lambda first, rest: first + rest,
    st.sampled_from("123456789"),
    st.text(alphabet="0123456789", min_size=5, max_size=5),
)


@given(ascii_codes)
def test_every_ancestor_covers_the_code_and_the_code_does_not_cover_its_parent(code: str) -> None:
    chain = ancestors(code)
    assert chain[0] == code
    assert chain[-1] == CENTRAL
    for above in chain:
        assert covers(above, code)
    up = parent(code)
    if up is not None:
        assert not covers(code, up)


# --- principals ----------------------------------------------------------------------


def test_a_principal_with_an_allowed_role_may_act() -> None:
    principal(Role.DEPARTMENT).require_role(Role.ASSOCIATION, Role.DEPARTMENT)


def test_a_principal_without_an_allowed_role_is_not_permitted() -> None:
    with pytest.raises(NotPermitted) as caught:
        principal(Role.SOCIETY).require_role(Role.ASSOCIATION, Role.DEPARTMENT)
    assert caught.value.code == "role_not_permitted"
    assert caught.value.status == 403


@pytest.mark.parametrize("target", [DEYANG, GUANGHAN])
def test_a_principal_may_act_inside_its_subtree(target: str) -> None:
    principal(where=DEYANG).require_jurisdiction(target)


@pytest.mark.parametrize("target", [SICHUAN, CENTRAL, "510100", DONGCHENG])
def test_a_principal_may_not_act_outside_its_subtree(target: str) -> None:
    with pytest.raises(NotPermitted) as caught:
        principal(where=DEYANG).require_jurisdiction(target)
    assert caught.value.code == "outside_jurisdiction"


def test_a_principal_with_a_malformed_jurisdiction_cannot_be_built() -> None:
    with pytest.raises(InvalidInput):
        principal(where="5106")

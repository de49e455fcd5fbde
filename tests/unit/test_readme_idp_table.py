"""README's `--idp` table against the rows make dev's identity provider imitates (devstack/identity/shapes.py)."""

from __future__ import annotations

import re

import pytest

from behest_lambda.providers import PROVIDERS
from devstack.identity import SHAPES
from tests.support import ROOT

README = (ROOT / "README.md").read_text()
TABLE = README[README.index("| `--idp` | issuer on loopback"):].split("\n\n", 1)[0]
ROWS = {cells[0].strip("`"): cells for cells in
        (line.strip("| ").split(" | ") for line in TABLE.splitlines()[2:])}
LOOPBACK_ISSUER = "http://127.0.0.1:3100"


def literal_pieces(cell: str) -> list[str]:
    """The literal parts of the cell's first code span: `…` and `<placeholders>` left out."""
    span = re.search(r"`([^`]*)`", cell)
    assert span, cell
    return [piece for piece in re.split(r"…|<[^>]*>", span.group(1).removeprefix(LOOPBACK_ISSUER)) if piece]


def test_the_table_has_a_row_for_each_imitated_provider_and_no_other() -> None:
    assert set(ROWS) == set(SHAPES)


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_each_row_says_what_the_imitation_serves(name: str) -> None:
    shape, cells = SHAPES[name], ROWS[name]
    issuer, keys, signed, user_id, cookie = cells[1:6]

    assert all(piece in shape.issuer_path for piece in literal_pieces(issuer)), (issuer, shape.issuer_path)
    assert all(piece in shape.jwks_path for piece in literal_pieces(keys)), (keys, shape.jwks_path)
    assert ("another host" in keys) == shape.keys_elsewhere
    assert signed.startswith(shape.algorithm)
    assert user_id.startswith(f"`{PROVIDERS[name].user_claim}`")
    expected_cookie = shape.cookie.name.replace("{ref}", "127") if shape.cookie else None
    assert (cookie == "—") if expected_cookie is None else cookie.startswith(f"`{expected_cookie}`")


DEPLOY_TABLE = README[README.index("| `IdentityProvider` | `AuthJwtIssuer`"):].split("\n\n", 1)[0]
DEPLOY_ROWS = {cells[0].split("`")[1]: cells for cells in
               (line.strip("| ").split(" | ") for line in DEPLOY_TABLE.splitlines()[2:])}


def test_the_deploy_table_has_a_row_for_each_preset_and_no_other() -> None:
    assert set(DEPLOY_ROWS) == set(PROVIDERS)


@pytest.mark.parametrize("name", sorted(PROVIDERS))
def test_each_deploy_row_names_the_presets_user_claim_verifier_and_cookie(name: str) -> None:
    preset, cells = PROVIDERS[name], DEPLOY_ROWS[name]
    user_id, verified_by, cookie = cells[3:6]

    assert user_id.startswith(f"`{preset.user_claim}`")
    assert verified_by.startswith("the functions" if preset.function_verifies() else "the JWT authorizer")
    assert (cookie == "—") if preset.cookie is None else cookie.startswith(f"`{preset.cookie.split('{')[0]}")

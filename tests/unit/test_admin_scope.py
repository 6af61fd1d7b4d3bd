"""Admins act only within the studies and sites they hold (issue 14, A-4): the pure rules."""

from __future__ import annotations

import pytest

from domain import admin_scope
from domain.errors import Forbidden
from domain.user import Grant

STUDY_A_SITE_1 = frozenset({Grant("admin", "A", "S1")})
EVERYWHERE = frozenset({Grant("admin", "*", "*")})
COORDINATOR_A1 = [Grant("coordinator", "A", "S1")]
MONITOR_B = [Grant("monitor", "B", "*")]


def test_a_site_admin_grants_only_at_their_site_and_never_every_site() -> None:
    assert admin_scope.grant_over_role(STUDY_A_SITE_1, "adm", Grant("monitor", "A", "S1"))
    for outside in (Grant("monitor", "A", "S2"), Grant("monitor", "A", "*"),
                    Grant("monitor", "B", "S1"), Grant("monitor", "*", "*")):
        with pytest.raises(Forbidden):
            admin_scope.grant_over_role(STUDY_A_SITE_1, "adm", outside)


def test_the_whole_account_needs_every_role_within_scope() -> None:
    both = [*COORDINATOR_A1, *MONITOR_B]
    assert admin_scope.grant_over_person(STUDY_A_SITE_1, "adm", COORDINATOR_A1,
                                         whole_account=True)
    assert admin_scope.grant_over_person(STUDY_A_SITE_1, "adm", both, whole_account=False)
    with pytest.raises(Forbidden):
        admin_scope.grant_over_person(STUDY_A_SITE_1, "adm", both, whole_account=True)
    with pytest.raises(Forbidden):
        admin_scope.grant_over_person(STUDY_A_SITE_1, "adm", MONITOR_B, whole_account=False)
    with pytest.raises(Forbidden):  # a person with no role: deployment-wide admins only
        admin_scope.grant_over_person(STUDY_A_SITE_1, "adm", [], whole_account=False)
    assert admin_scope.grant_over_person(EVERYWHERE, "root", [], whole_account=True)


def test_listings_show_people_with_a_role_within_scope() -> None:
    assert admin_scope.within_scope(STUDY_A_SITE_1, COORDINATOR_A1)
    assert not admin_scope.within_scope(STUDY_A_SITE_1, MONITOR_B)
    assert not admin_scope.within_scope(STUDY_A_SITE_1, [Grant("monitor", "*", "*")])
    assert admin_scope.within_scope(EVERYWHERE, MONITOR_B)


def test_only_an_admin_of_every_study_and_site_is_deployment_wide() -> None:
    assert admin_scope.deployment_wide(EVERYWHERE) is not None
    assert admin_scope.deployment_wide({Grant("admin", "A", "*")}) is None
    assert admin_scope.deployment_wide({Grant("monitor", "*", "*")}) is None
    with pytest.raises(Forbidden):
        admin_scope.any_admin_grant({Grant("monitor", "*", "*")}, "mon")

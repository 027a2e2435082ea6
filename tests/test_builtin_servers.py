"""The built-in servers' table (``dispatch.hub.policy.servers``): every place that names the
built-in servers agrees with it, and what each row says is what an agent gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatch.hub.config.outside import check_server_name
from dispatch.hub.config.templates import ToolSet
from dispatch.hub.mounts.plan import MountPlan
from dispatch.hub.policy.grants import Grants
from dispatch.hub.policy.servers import BUILTIN_KINDS, BUILTIN_SERVERS, GRANTED_SERVERS, TEMPLATE_KINDS
from dispatch.servers.hublink import GrantRequest


def test_the_summon_request_and_the_grants_name_the_tables_granted_servers() -> None:
    granted = {s.name for s in GRANTED_SERVERS}
    assert granted == {"shell", "summon", "lsp", "web"}
    assert granted <= set(GrantRequest.model_fields) and granted <= set(Grants.model_fields)
    for fields in (GrantRequest.model_fields, Grants.model_fields):  # and no other built-in server
        assert set(fields) & set(BUILTIN_KINDS) == granted


def test_templates_name_every_server_but_the_inbox() -> None:
    assert list(ToolSet.model_fields) != [] and set(ToolSet.model_fields) == set(TEMPLATE_KINDS)
    assert "inbox" not in TEMPLATE_KINDS and set(TEMPLATE_KINDS) | {"inbox"} == set(BUILTIN_KINDS)


@pytest.mark.parametrize("name", BUILTIN_KINDS)
def test_no_outside_server_takes_a_built_in_name(name: str) -> None:
    with pytest.raises(ValueError, match=f"'{name}' is the name of a built-in tool server"):
        check_server_name(name)


def test_an_agent_with_every_grant_mounts_every_server_the_hub_can_build(tmp_path: Path) -> None:
    everything = MountPlan(tmp_path, Grants.everything())
    assert everything.kinds() == ["inbox", "fs", "shell", "summon", "web"]  # lsp: the hub runs no language servers
    no_depth = MountPlan(tmp_path, Grants.everything().model_copy(update={"max_depth": 0}))
    assert "summon" not in no_depth.kinds()  # summon needs a level left below the agent
    leaf = MountPlan(tmp_path, Grants())
    assert leaf.kinds() == [s.name for s in BUILTIN_SERVERS if s.grant == "always"] == ["inbox", "fs"]


def test_a_child_inherits_shell_and_lsp_but_not_summon_or_web() -> None:
    parent = Grants.everything()
    child = parent.for_child(GrantRequest(), ())
    inherited = {s.name for s in GRANTED_SERVERS if s.inherited}
    assert inherited == {"shell", "lsp"}
    assert {s.name for s in GRANTED_SERVERS if getattr(child, s.name)} == inherited

"""Who acts: the principal named by a signed token, and the roles of the domain."""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, field_validator

from shared import jurisdiction
from shared.errors import NotPermitted


class Role(StrEnum):
    """Roles of DOMAIN.md's parties; auditors and the public only read."""

    ASSOCIATION = "association"  # 科协
    DEPARTMENT = "department"  # 政府部门
    SOCIETY = "society"  # 学会
    EVALUATOR = "evaluator"  # 第三方评估机构
    FINANCE_BUREAU = "finance_bureau"  # 财政局
    POLICY_SUPPORT = "policy_support"  # 中央编办、发改委、民政部、财政部
    AUDITOR = "auditor"
    PUBLIC = "public"
    SYSTEM = "system"  # a service reacting to another service's event (a policy)


READ_ONLY_ROLES = frozenset({Role.AUDITOR, Role.PUBLIC})


class Principal(BaseModel):
    """The authenticated actor: recorded on every event it causes."""

    model_config = ConfigDict(frozen=True)

    subject: str
    organisation: str
    role: Role
    jurisdiction: str

    @field_validator("jurisdiction")
    @classmethod
    def _valid_jurisdiction(cls, value: str) -> str:
        return jurisdiction.validate(value)

    def require_role(self, *allowed: Role) -> None:
        """Raise ``NotPermitted`` unless the principal holds one of ``allowed``."""
        if self.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise NotPermitted(
                "role_not_permitted",
                f"role {self.role.value!r} may not do this; allowed: {names}",
            )

    def require_jurisdiction(self, target: str) -> None:
        """Raise ``NotPermitted`` unless ``target`` is inside the principal's subtree."""
        if not jurisdiction.covers(self.jurisdiction, target):
            raise NotPermitted(
                "outside_jurisdiction",
                f"jurisdiction {target} is outside {self.jurisdiction}'s subtree",
            )

"""What the API's route modules share: the base of request bodies (and of those that give caps), the
field types they check, and the shape of every error answer."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from dispatch.hub.agents.spec import Caps
from dispatch.hub.views import View


class Body(BaseModel):
    """A request body: unknown fields are refused, so a typo is an error, not silence; values must have
    their JSON type (``"detached": 0`` is refused, not read as false)."""

    model_config = ConfigDict(extra="forbid", strict=True)


Text = Annotated[str, Field(pattern=r"\S", description="not empty or blank")]
"""Free text that must say something: at least one character that is not white space."""


class FieldError(View):
    loc: list[str | int] = Field(description="where: 'body', 'query' or 'path', then the field")
    msg: str
    type: str


class Problem(View):
    """Every error the API answers: ``detail`` says what is wrong."""

    detail: str
    errors: list[FieldError] | None = Field(default=None, description="for 422: each field that is wrong")


ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "The request cannot be done as asked (the detail says why)"},
    401: {"model": Problem, "description": "No valid token"},
    403: {"model": Problem, "description": "Host or Origin not allowed"},
    404: {"model": Problem, "description": "No such chat, agent, message, approval or artifact"},
    413: {"model": Problem, "description": "The request body is larger than 1 MiB"},
    422: {"model": Problem, "description": "The body, query or path is malformed (the detail says where)"},
    507: {
        "model": Problem,
        "description": "The hub's data directory is full: nothing can be saved until space is freed",
    },
}
"""The error answers every route may give, for the OpenAPI schema."""


class CapsBody(Body):
    """The caps a request may give a top agent (or a chat's dispatch agents), over the template's.
    Their values are checked by the hub: one that is not a positive number is a 400 naming it."""

    budget_usd: float | None = Field(
        default=None, description="the most it and its descendants may spend, in US dollars; the template's if left out"
    )
    max_tokens: int | None = Field(
        default=None,
        description="the most tokens (in + out) it and its descendants may use; the template's if left out",
    )
    max_steps: int | None = Field(
        default=None, description="the most steps (model calls) it may take; the template's if left out"
    )

    def caps(self) -> Caps:
        return Caps(self.budget_usd, self.max_tokens, self.max_steps)

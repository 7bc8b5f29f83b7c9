"""The CRM side of the deployment, read only: which CRM, whether it has tags, and for
Salesforce the object records are and the open/closed rule that follows from it."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from app.entrypoints.http.deps import Reader, RuntimeDep
from app.entrypoints.http.errors import READ
from app.service.crm_setup import crm_setup

router = APIRouter(prefix="/api", tags=["crm"])


class CrmSetupView(BaseModel):
    model_config = ConfigDict(frozen=True)

    crm: str = Field(description="CRM_PROVIDER")
    has_tags: bool
    tags: str = Field(description="what the tag settings do in this CRM")
    record_object: str | None = Field(None, description="Salesforce: Case, Opportunity or Account")
    open_closed_rule: str | None = Field(None, description="Salesforce: when a record counts as open, when it "
                                                           "closed, and how a session reopens it")
    session_log: str | None = Field(None, description="Salesforce: how each session is logged on its record")


@router.get("/crm", response_model=CrmSetupView, responses=READ,
            summary="the CRM in use: its tags and, for Salesforce, the record object and its open/closed rule")
async def get_crm(runtime: RuntimeDep, _: Reader) -> CrmSetupView:
    setup = crm_setup(runtime.settings)
    return CrmSetupView(crm=setup.crm, has_tags=setup.has_tags, tags=setup.tags, record_object=setup.record_object,
                        open_closed_rule=setup.open_closed_rule, session_log=setup.session_log)

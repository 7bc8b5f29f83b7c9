"""Use case: what the administrators see of the CRM side of the deployment: which CRM,
whether it has tags, and for Salesforce which object records are and the open/closed
rule that follows from it. Derived from the settings alone (no CRM call), so it answers
even while the CRM is unreachable."""

from __future__ import annotations

from dataclasses import dataclass

from app.adapters.crm.registry import has_tags
from app.settings import Settings


@dataclass(frozen=True, slots=True)
class CrmSetup:
    crm: str
    has_tags: bool
    tags: str  # what the tag options do in this CRM, in plain words
    # Salesforce only: the object records are, the rule, and how sessions are logged.
    record_object: str | None = None
    open_closed_rule: str | None = None
    session_log: str | None = None


def crm_setup(settings: Settings) -> CrmSetup:
    crm = settings.crm_provider
    if crm == "salesforce":
        from app.adapters.crm.salesforce.objects import build_record_object

        record_object = build_record_object(settings)
        log = settings.salesforce_session_log
        return CrmSetup(
            crm=crm,
            has_tags=False,
            tags="Salesforce has no tags: the tag options change nothing there",
            record_object=record_object.name,
            open_closed_rule=record_object.rule(),
            session_log=(
                "each session is a Task on its record, completed with the end-of-session note"
                if log == "task" else "each session is a private CaseComment on its Case"
            ),
        )
    if has_tags(crm):
        return CrmSetup(crm=crm, has_tags=True, tags=f"tags are added in {crm}'s tag form")
    return CrmSetup(crm=crm, has_tags=True, tags="tags are stored with the record")

"""Salesforce's settings (SALESFORCE_*), one part of the service's Settings (app/settings.py
composes every CRM's part through the registry). Reads no environment itself; its checks
run when Settings is built, with the same messages as before the split."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

SalesforceRecordObject = Literal["Case", "Opportunity", "Account"]
SalesforceSessionLog = Literal["task", "case_comment"]


class SalesforceSettings(BaseModel):
    salesforce_login_url: str = "https://login.salesforce.com"
    salesforce_client_id: str | None = None
    salesforce_client_secret: SecretStr | None = None
    salesforce_api_version: str = "v60.0"
    salesforce_external_id_field: str = "CCAI_Session_Id__c"
    # The org's default open Case status (a value of its Status picklist).
    salesforce_reopen_status: str = "New"
    salesforce_requests_per_minute: int | None = Field(default=None, ge=1)

    # Of Salesforce's daily API allocation (Sforce-Limit-Info), the share this service
    # leaves to the org's other integrations: it pauses when only this much is left.
    salesforce_daily_reserve_percent: float = Field(default=20.0, ge=0, lt=100)
    # What a record is (Case, Opportunity or Account) and how sessions are logged on it;
    # the open/closed rules per object are in app/adapters/crm/salesforce/objects.py.
    salesforce_record_object: SalesforceRecordObject = "Case"
    salesforce_session_log: SalesforceSessionLog = "task"
    salesforce_reopen_stage: str = "Prospecting"
    # A new Opportunity's StageName and CloseDate (today + N days): both are required.
    salesforce_opportunity_stage: str = "Prospecting"
    salesforce_opportunity_close_days: int = Field(default=30, ge=0, le=3650)
    salesforce_account_status_field: str | None = None
    salesforce_account_closed_values: str | None = None  # comma list
    salesforce_account_open_value: str | None = None

    @field_validator("salesforce_record_object", "salesforce_session_log", mode="before")
    @classmethod
    def _salesforce_choice_any_case(cls, value: object) -> object:
        """`opportunity` and `Opportunity`, `TASK` and `task` are the same choice."""
        if isinstance(value, str):
            for choice in ("Case", "Opportunity", "Account", "task", "case_comment"):
                if value.strip().lower() == choice.lower():
                    return choice
        return value

    @model_validator(mode="after")
    def _salesforce_combination(self) -> Self:
        # Checked only when Salesforce is the CRM in use; CRM_PROVIDER is a field of the
        # composed Settings, not of this part.
        if getattr(self, "crm_provider", None) != "salesforce":
            return self
        if self.salesforce_session_log == "case_comment" and self.salesforce_record_object != "Case":
            raise ValueError(
                "SALESFORCE_SESSION_LOG=case_comment needs SALESFORCE_RECORD_OBJECT=Case: "
                f"CaseComments exist only on Cases, not on {self.salesforce_record_object}"
            )
        if self.salesforce_record_object == "Account" and self.salesforce_account_status_field:
            for name in ("salesforce_account_closed_values", "salesforce_account_open_value"):
                if not (getattr(self, name) or "").strip():
                    raise ValueError(f"{name.upper()} is required with SALESFORCE_ACCOUNT_STATUS_FIELD")
        return self

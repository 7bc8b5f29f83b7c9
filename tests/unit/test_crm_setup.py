"""What the admin API and console show of the CRM side, derived from the settings."""

from __future__ import annotations

import pytest

from app.service.crm_setup import crm_setup
from app.settings import Settings


def salesforce(**values: object) -> Settings:
    return Settings(_env_file=None, crm_provider="salesforce", **values)


@pytest.mark.parametrize(
    ("values", "record_object", "rule_parts"),
    [
        ({}, "Case", ["IsClosed is false", "ClosedDate", "Status to 'New'"]),
        ({"salesforce_record_object": "opportunity", "salesforce_reopen_stage": "Qualification"}, "Opportunity",
         ["OpportunityHistory", "StageName to 'Qualification'", "CloseDate today + 30 days"]),
        ({"salesforce_record_object": "Account", "salesforce_account_status_field": "Status__c",
          "salesforce_account_closed_values": "Closed, Inactive", "salesforce_account_open_value": "Active"},
         "Account", ["Status__c is not one of Closed, Inactive", "LastModifiedDate while closed",
                     "Accounts have no close date", "Status__c to 'Active'"]),
        ({"salesforce_record_object": "Account"}, "Account", ["every Account counts as open"]),
    ],
)
def test_salesforce_shows_the_object_and_its_rule(values, record_object, rule_parts) -> None:
    setup = crm_setup(salesforce(**values))
    assert setup.record_object == record_object
    assert all(part in setup.open_closed_rule for part in rule_parts), setup.open_closed_rule
    assert setup.has_tags is False and "Salesforce has no tags" in setup.tags
    assert "Task" in setup.session_log


def test_case_comment_log_and_other_crms() -> None:
    assert "CaseComment" in crm_setup(salesforce(salesforce_session_log="case_comment")).session_log
    zendesk = crm_setup(Settings(_env_file=None, crm_provider="zendesk"))
    assert zendesk.has_tags and zendesk.record_object is None and zendesk.open_closed_rule is None

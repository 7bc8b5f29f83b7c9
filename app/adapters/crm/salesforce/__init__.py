"""Salesforce: records are Cases, Opportunities or Accounts, end users are Contacts, each
session is a Task on its record. See adapter.py for the requests each step costs."""

from app.adapters.crm.salesforce.activity import split_comment
from app.adapters.crm.salesforce.adapter import SalesforceAdapter
from app.adapters.crm.salesforce.client import parse_salesforce_datetime, salesforce_quota, soql_literal

__all__ = [
    "SalesforceAdapter",
    "parse_salesforce_datetime",
    "salesforce_quota",
    "soql_literal",
    "split_comment",
]

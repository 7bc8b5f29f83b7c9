"""One entry per CRM: everything the rest of the service (and the tests) need to know
about it, in one place. Adding a CRM is its package (the adapter and its settings part),
its entry here and its base in CrmSettings, its test double, and its page in docs/crm/
(see README, "a new CRM"); app/settings.py does not change.

An entry names its adapter class and its test double by dotted path, so nothing of the
tests is imported, and the service builds only the adapter `CRM_PROVIDER` names. Its
settings part is a class: Settings is composed of them (CrmSettings below), and the values
CRM_PROVIDER accepts are the registry's names (CrmProvider). The tag form stays a pure
function of the domain; the entry only names it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

from app.adapters.crm.freshdesk.settings import FreshdeskSettings
from app.adapters.crm.kustomer.settings import KustomerSettings
from app.adapters.crm.salesforce.settings import SalesforceSettings
from app.adapters.crm.sandbox_settings import SandboxSettings
from app.adapters.crm.zendesk.settings import ZendeskSettings
from app.domain.field_limits import limits_for
from app.domain.rendering import record_tags
from app.domain.session_types import TagForm, freshdesk_tag, kustomer_tag, zendesk_tag

if TYPE_CHECKING:
    from app.domain.record_settings import RecordSettings
    from app.domain.session import SessionState


@dataclass(frozen=True, slots=True)
class CrmSpec:
    name: str  # the value of CRM_PROVIDER
    # "module:Class" of the adapter; it offers `from_settings(settings, budget=...)`.
    adapter: str
    # Its part of Settings: the fields (and their checks) of its own environment variables.
    settings: type[BaseModel]
    # The setting whose value tells two accounts of this vendor apart (their user ids and
    # API limits are separate): the key of the shared budget and of remembered end users.
    account_setting: str | None
    # The setting that lowers the request rate below what the vendor announces.
    ceiling_setting: str | None
    # How session types become tags in this CRM; None: it has no tags.
    tag_form: TagForm | None
    # True: the vendor announces a per-minute limit (paced from its headers); False: a
    # daily allocation (Salesforce), paced only by its refusals and the reserved share.
    per_minute_limit: bool = True
    # Kept in the service's own database (the sandbox): no rate budget, no account URL.
    in_database: bool = False
    # The tests' double ("module:Class" of a tests.integration.crm_backends.Backend).
    test_backend: str = ""
    docs: str = ""  # the page in docs/crm/ that cites the vendor's reference

    def adapter_class(self) -> Any:
        module, _, name = self.adapter.partition(":")
        return getattr(importlib.import_module(module), name)


# In the order CRM_PROVIDER's refusal lists them (part of the contract's error messages).
CRMS: dict[str, CrmSpec] = {
    spec.name: spec
    for spec in (
        CrmSpec(
            name="sandbox",
            adapter="app.adapters.crm.sandbox:SandboxAdapter",
            settings=SandboxSettings,
            account_setting=None,
            ceiling_setting=None,
            # The sandbox shows the display name, so trying it out shows what a tag is made from.
            tag_form=freshdesk_tag,
            in_database=True,
            test_backend="tests.integration.crm_backends:SandboxBackend",
        ),
        CrmSpec(
            name="salesforce",
            adapter="app.adapters.crm.salesforce:SalesforceAdapter",
            settings=SalesforceSettings,
            account_setting="salesforce_login_url",
            ceiling_setting="salesforce_requests_per_minute",
            tag_form=None,  # Salesforce has no tags
            per_minute_limit=False,
            test_backend="tests.integration.crm_backends:SalesforceBackend",
            docs="docs/crm/salesforce.md",
        ),
        CrmSpec(
            name="zendesk",
            adapter="app.adapters.crm.zendesk:ZendeskAdapter",
            settings=ZendeskSettings,
            account_setting="zendesk_url",
            ceiling_setting="zendesk_requests_per_minute",
            tag_form=zendesk_tag,
            test_backend="tests.integration.crm_backends:ZendeskBackend",
            docs="docs/crm/zendesk.md",
        ),
        CrmSpec(
            name="kustomer",
            adapter="app.adapters.crm.kustomer:KustomerAdapter",
            settings=KustomerSettings,
            account_setting="kustomer_url",
            ceiling_setting="kustomer_requests_per_minute",
            tag_form=kustomer_tag,
            test_backend="tests.integration.crm_backends:KustomerBackend",
            docs="docs/crm/kustomer.md",
        ),
        CrmSpec(
            name="freshdesk",
            adapter="app.adapters.crm.freshdesk:FreshdeskAdapter",
            settings=FreshdeskSettings,
            account_setting="freshdesk_url",
            ceiling_setting="freshdesk_requests_per_minute",
            tag_form=freshdesk_tag,
            test_backend="tests.integration.crm_backends:FreshdeskBackend",
            docs="docs/crm/freshdesk.md",
        ),
    )
}


# The values CRM_PROVIDER accepts: the registry's names. mypy sees a str (a Literal cannot
# be built from a dict's keys for it); pydantic validates the Literal, so the refusal of an
# unknown name reads as it always has.
if TYPE_CHECKING:
    CrmProvider = str
else:
    CrmProvider = Literal[tuple(CRMS)]


class CrmSettings(SandboxSettings, SalesforceSettings, KustomerSettings, FreshdeskSettings, ZendeskSettings):
    """Every CRM's settings part, composed into Settings (each entry's `settings` is a base
    here; tests/unit/test_crm_registry.py checks that none is missing). pydantic orders the
    fields last base first: Zendesk's, Freshdesk's, Kustomer's, Salesforce's, the sandbox's,
    as Settings always had them (the order of a refusal's errors is part of the contract);
    a new CRM's base goes first."""


def crm_spec(name: str) -> CrmSpec:
    try:
        return CRMS[name]
    except KeyError:
        raise ValueError(f"unknown CRM_PROVIDER {name!r}") from None


def has_tags(crm: str) -> bool:
    spec = CRMS.get(crm)
    return spec is not None and spec.tag_form is not None


def crm_tags(crm: str, state: SessionState, settings: RecordSettings, *, creating: bool) -> list[str]:
    """The tags for a record made (`creating`) or a session attached to one, in `crm`'s form."""
    spec = CRMS.get(crm)
    form = spec.tag_form if spec is not None else None
    return record_tags(form, state, settings, creating=creating, max_chars=limits_for(crm).tag)

"""One view over the five CRMs a test can run the service against: the sandbox (in
the service's database) and the four fake vendor servers. Each gives the settings that
point the service at it, the records it holds in a common shape, and the way an agent
closes a record there."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from app.adapters.db import sandbox_repo
from tests.fakes.freshdesk import FreshdeskFake
from tests.fakes.kustomer import KustomerFake
from tests.fakes.salesforce import SalesforceFake
from tests.fakes.zendesk import ZendeskFake


@dataclass
class RecordView:
    record_id: str
    session_id: str | None  # the external id
    title: str
    status: str
    is_open: bool
    tags: list[str]
    notes: list[str]


class Backend:
    name: str
    has_tags = True
    # A closed status the CRM never reopens (None: every closed record can be reopened).
    final_status: str | None = None

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def settings(self) -> dict[str, Any]:
        return self.settings_of(self.fake)

    @staticmethod
    def settings_of(fake: Any) -> dict[str, Any]:
        """The settings that point the service at a running `fake` of this CRM."""
        raise NotImplementedError

    async def records(self) -> list[RecordView]:
        raise NotImplementedError

    async def close(self, record_id: str, closed_at: datetime, *, final: bool = False) -> None:
        raise NotImplementedError

    async def record_of(self, session_id: str) -> RecordView | None:
        for record in await self.records():
            if record.session_id == session_id:
                return record
        return None


class SandboxBackend(Backend):
    name = "sandbox"
    final_status = "closed"

    def __init__(self, engine: AsyncEngine):
        self.engine = engine

    def settings(self) -> dict[str, Any]:
        return {"crm_provider": "sandbox"}

    async def records(self) -> list[RecordView]:
        async with self.engine.connect() as conn:
            rows = await sandbox_repo.list_records(conn, 10000)
            views = []
            for row in rows:
                notes = [n.body for n in await sandbox_repo.notes_for(conn, row.id)]
                views.append(RecordView(str(row.id), row.external_id, row.title, row.status,
                                        row.status in sandbox_repo.OPEN_STATUSES, list(row.tags), notes))
        return views

    async def close(self, record_id: str, closed_at: datetime, *, final: bool = False) -> None:
        async with self.engine.begin() as conn:
            await sandbox_repo.set_status(conn, int(record_id), "closed" if final else "solved", closed_at)


class ZendeskBackend(Backend):
    name = "zendesk"
    final_status = "closed"

    def __init__(self):
        self.fake = ZendeskFake()

    def start(self) -> None:
        self.fake.start()

    def stop(self) -> None:
        self.fake.stop()

    @staticmethod
    def settings_of(fake: Any) -> dict[str, Any]:
        return {"crm_provider": "zendesk", "zendesk_url": fake.base_url,
                "zendesk_email": fake.email, "zendesk_api_token": fake.api_token}

    async def records(self) -> list[RecordView]:
        return [
            RecordView(str(t["id"]), t.get("external_id"), t["subject"], t["status"],
                       t["status"] not in ("solved", "closed"), list(t["tags"]),
                       [c["body"] for c in t["comments"] if not c["public"]])
            for t in self.fake.records()
        ]

    async def close(self, record_id: str, closed_at: datetime, *, final: bool = False) -> None:
        self.fake.set_status(record_id, "closed" if final else "solved", closed_at)


class FreshdeskBackend(Backend):
    name = "freshdesk"

    def __init__(self):
        self.fake = FreshdeskFake()

    def start(self) -> None:
        self.fake.start()

    def stop(self) -> None:
        self.fake.stop()

    @staticmethod
    def settings_of(fake: Any) -> dict[str, Any]:
        return {"crm_provider": "freshdesk", "freshdesk_url": fake.base_url, "freshdesk_api_key": fake.api_key}

    async def records(self) -> list[RecordView]:
        return [
            RecordView(str(t["id"]), (t.get("custom_fields") or {}).get("cf_ccai_session_id"), t["subject"],
                       str(t["status"]), t["status"] not in (4, 5), list(t["tags"]),
                       [n["body_text"] for n in t["notes"] if n["private"]])
            for t in self.fake.records()
        ]

    async def close(self, record_id: str, closed_at: datetime, *, final: bool = False) -> None:
        self.fake.set_status(record_id, 5 if final else 4, closed_at)


class KustomerBackend(Backend):
    name = "kustomer"

    def __init__(self):
        self.fake = KustomerFake()

    def start(self) -> None:
        self.fake.start()

    def stop(self) -> None:
        self.fake.stop()

    @staticmethod
    def settings_of(fake: Any) -> dict[str, Any]:
        return {"crm_provider": "kustomer", "kustomer_url": fake.base_url, "kustomer_api_key": fake.api_key}

    async def records(self) -> list[RecordView]:
        return [
            RecordView(c["id"], c["externalId"], c["name"], c["status"], c["status"] != "done",
                       list(c["tags"]), list(c["notes"]))
            for c in self.fake.records()
        ]

    async def close(self, record_id: str, closed_at: datetime, *, final: bool = False) -> None:
        self.fake.set_status(record_id, "done", closed_at)


class SalesforceBackend(Backend):
    """Records are the object SALESFORCE_RECORD_OBJECT names; each session is a Task on
    its record, so a record's notes are its CaseComments and its Tasks' subject and text."""

    has_tags = False

    def __init__(self, record_object: str = "Case"):
        self.record_object = record_object
        self.name = "salesforce" if record_object == "Case" else f"salesforce-{record_object.lower()}"
        self.fake = SalesforceFake(record_object=record_object)

    def start(self) -> None:
        self.fake.start()

    def stop(self) -> None:
        self.fake.stop()

    @staticmethod
    def settings_of(fake: Any) -> dict[str, Any]:
        return {"crm_provider": "salesforce", "salesforce_login_url": fake.base_url,
                "salesforce_client_id": fake.client_id, "salesforce_client_secret": fake.client_secret,
                "salesforce_record_object": fake.record_object,
                "salesforce_account_status_field": fake.account_status_field,
                "salesforce_account_closed_values": "Closed,Inactive", "salesforce_account_open_value": "Active"}

    async def records(self) -> list[RecordView]:
        views = []
        for record in self.fake.records():
            notes = [c["CommentBody"] for c in record["comments"]]
            notes += [f"{t.get('Subject') or ''}\n{t.get('Description') or ''}" for t in record["tasks"]]
            views.append(RecordView(record["Id"], record.get("CCAI_Session_Id__c"),
                                    record.get("Subject") or record.get("Name") or "",
                                    str(record.get("Status") or record.get("StageName") or record.get("Status__c")),
                                    not record.get("IsClosed") and record.get("Status__c") != "Closed", [], notes))
        return views

    async def close(self, record_id: str, closed_at: datetime, *, final: bool = False) -> None:
        self.fake.close_record(record_id, closed_at)


BACKENDS = ("sandbox", "zendesk", "freshdesk", "kustomer", "salesforce", "salesforce-opportunity",
            "salesforce-account")


def build_backend(name: str, engine: AsyncEngine) -> Backend:
    return {
        "sandbox": lambda: SandboxBackend(engine),
        "zendesk": ZendeskBackend,
        "freshdesk": FreshdeskBackend,
        "kustomer": KustomerBackend,
        "salesforce": SalesforceBackend,
        "salesforce-opportunity": lambda: SalesforceBackend("Opportunity"),
        "salesforce-account": lambda: SalesforceBackend("Account"),
    }[name]()

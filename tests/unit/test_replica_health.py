from app.adapters.db.replicas_repo import ReplicaCrmHealth


def test_a_replicas_crm_health_reads_back_what_its_heartbeat_wrote():
    health = ReplicaCrmHealth(crm="zendesk", ok=False, detail="401 from the CRM")
    assert health.to_json() == {"crm": "zendesk", "ok": False, "detail": "401 from the CRM"}
    assert ReplicaCrmHealth.from_json(health.to_json()) == health


def test_a_heartbeat_written_before_the_first_crm_check_reads_as_not_ok():
    # the column's default is '{}'; a null detail was stored by no check yet
    assert ReplicaCrmHealth.from_json({}) == ReplicaCrmHealth(crm="", ok=False, detail="")
    assert ReplicaCrmHealth.from_json({"crm": "freshdesk", "ok": True, "detail": None}) == ReplicaCrmHealth(
        crm="freshdesk", ok=True, detail="")

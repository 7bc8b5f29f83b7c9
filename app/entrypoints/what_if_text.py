"""The what-if report as plain text, for the CLI."""

from __future__ import annotations

from app.domain.whatif import OUTCOME_KINDS
from app.service.whatif import WhatIfResult

KIND_WORDS = {
    "record": "new record",
    "attach": "attached to an existing record",
    "record_or_attach": "new record or attached: depends on the CRM's state then",
    "skip": "no record (skipped)",
    "waiting": "not decided yet",
}


def report_lines(result: WhatIfResult) -> list[str]:
    report = result.report
    lines = [
        f"What-if over the sessions first seen in the last {result.days} days: {report.sessions} sessions "
        f"(compared with what happened under settings version {result.current_version or 'defaults'}; "
        f"loaded in {result.load_seconds:.2f} s, replayed in {result.replay_seconds:.2f} s)",
        "",
        f"{'outcome':<58} {'happened':>9} {'proposed':>9}",
    ]
    for kind in OUTCOME_KINDS:
        actual, proposed = report.actual_totals[kind], report.proposed_totals[kind]
        if actual or proposed:
            lines.append(f"{KIND_WORDS[kind]:<58} {actual:>9} {proposed:>9}")
            for row in report.rows:
                if row.kind == kind:
                    lines.append(f"  {row.reason}")
                    lines.append(f"  {'':<56} {row.actual:>9} {row.proposed:>9}")
    lines += ["", f"sessions whose outcome would change: {report.changed}",
              f"sessions whose outcome depends on the CRM's state then: {report.depends_on_crm}"]
    for change in report.sample:
        lines.append(f"- {change.session_id}: {KIND_WORDS[change.actual.kind]} ({change.actual.reason}) "
                     f"-> {KIND_WORDS[change.proposed.kind]} ({change.proposed.reason})")
    return lines

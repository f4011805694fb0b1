"""The `crm-audit` admin tool: PKI, embedded OpenSearch node, sample CRM audit traffic."""

"""The operator side: the admin HTTP API (`api`), its OpenAPI document and the `entra-sync` CLI forms."""

"""The SQL store: engine/session setup, ORM models, and the query/repository layer."""

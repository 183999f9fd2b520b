"""The dev stack, outside the product: embedded PostgreSQL and Kafka (`embedded.py`), the whole stack of
`entra-sync up` (`stack.py`) and its demo tenants (`demo.py`)."""

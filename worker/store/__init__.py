"""The PostgreSQL adapter: the only package that runs SQL."""

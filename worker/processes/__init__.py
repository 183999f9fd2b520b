"""The running processes: the worker (`worker.py`: its consumer loops, `consumers.py`, and the per-tenant work
they hand records to, `work.py`), the scheduler (`scheduler.py`), and serving an aiohttp application behind its
request-body guard (`http.py`, shared by the admin API and the webhook). Nothing is imported here, so the webhook
loads only `http.py`."""

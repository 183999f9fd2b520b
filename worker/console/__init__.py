"""The operator console: server-rendered pages over the admin store and service, served by the admin API.

`app` holds the plumbing (sessions, CSRF, security headers, error pages), `views` the pages and forms,
`forms` the input checks, `plot` the charts' geometry; templates and static files ship as package data.
"""

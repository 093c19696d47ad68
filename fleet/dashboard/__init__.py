"""`fleet dashboard`: a read-only web UI over the results store (stdlib http.server, the report's views)."""

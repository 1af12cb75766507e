"""Shared code of the PostgreSQL tooling scripts (pg-dump-to-gcs, restore-drill, heartbeat).

Standard library only: the scripts run in the pgtools image (official PostgreSQL image plus
python3), which installs no Python packages. PostgreSQL is reached through the client
binaries (psql, pg_dump, pg_restore), Google Cloud Storage through its JSON API.
"""

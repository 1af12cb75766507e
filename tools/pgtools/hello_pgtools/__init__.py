"""The PostgreSQL tooling of the backups and restore drills: pg-dump-to-gcs, restore-drill and
heartbeat (console entry points; ``python -m hello_pgtools.<module>`` works too).

PostgreSQL is reached through the client binaries (psql, pg_dump, pg_restore), which the tools
image takes from the official PostgreSQL image; Google Cloud Storage through
google-cloud-storage and google-auth.
"""

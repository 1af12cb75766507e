"""The backups' Google service account may make every Cloud Storage call its components make.

The GCS emulator the backup tests use has no IAM, so a role that lacks a permission would pass
every other test and fail on the first real run with 403. This table encodes the rule instead:
each component's calls, the permission each needs, and the permissions of the roles
roles/backups grants on the bucket (hello_backups_bucket_roles, group_vars/all/backups.yml),
from Google's own references.
"""

import ast
from pathlib import Path

import yaml

from support import REPO

# Permissions of the predefined Cloud Storage roles, as Google's client library documents
# them (google-cloud-storage for Java, com.google.cloud.storage.StorageRoles; the IAM roles
# reference is cloud.google.com/storage/docs/access-control/iam-roles).
ROLE_PERMISSIONS = {
    "roles/storage.objectAdmin": {
        "storage.objects.create",
        "storage.objects.delete",
        "storage.objects.get",
        "storage.objects.list",
        "storage.objects.update",
        "storage.objects.getIamPolicy",
        "storage.objects.setIamPolicy",
    },
    "roles/storage.legacyBucketReader": {"storage.buckets.get", "storage.objects.list"},
    "roles/storage.objectViewer": {"storage.objects.get", "storage.objects.list"},
}

# barman-cloud, in the Barman Cloud plugin's sidecar: plugin-barman-cloud v0.14.0 pins barman
# 3.19.1 (containers/sidecar-requirements.txt). barman/cloud.py CloudInterface.setup_bucket
# checks the bucket before each archive, backup and restore; barman/cloud_providers/
# google_cloud_storage.py: _check_bucket_existence is Bucket.exists() (a GET of the bucket),
# list_bucket is list_blobs, upload_fileobj upload_from_file, remote_open Blob.exists and
# open, _delete_objects_batch Blob.delete (the plugin's retention policy).
BARMAN_CLOUD = {
    "bucket exists (setup_bucket)": "storage.buckets.get",
    "list_blobs (WAL and backup catalogue)": "storage.objects.list",
    "upload_from_file (WAL segments, base backup)": "storage.objects.create",
    "Blob.exists, Blob.open (restore, DR replica)": "storage.objects.get",
    "Blob.delete (retention)": "storage.objects.delete",
}

# hello_pgtools' Cloud Storage calls (tools/pgtools/hello_pgtools/gcs.py): each method, the
# google-cloud-storage 3.17.1 calls it makes (LIBRARY_CALLS), the JSON API request they send,
# the permission that request needs.
GCS_METHODS = {
    "get_bucket": "storage.buckets.get",  # GET /storage/v1/b/<bucket>
    "get_object": "storage.objects.get",  # GET .../o/<object>
    "list_objects": "storage.objects.list",  # GET .../o?prefix=
    "delete_object": "storage.objects.delete",  # DELETE .../o/<object>
    "upload": "storage.objects.create",  # POST /upload/...?uploadType=resumable, then PUTs
    "download": "storage.objects.get",  # GET .../o/<object>?alt=media
}
LIBRARY_CALLS = {
    "get_bucket": {"get_bucket"},
    "get_object": {"reload"},
    "list_objects": {"list_blobs"},
    "delete_object": {"delete"},
    "upload": {"upload_from_file"},
    "download": {"download_to_filename"},
}
GCS_MODULE = REPO / "tools/pgtools/hello_pgtools/gcs.py"
PGTOOLS_FILES = ["tools/pgtools/hello_pgtools/pg_dump_to_gcs.py", "tools/pgtools/hello_pgtools/logical.py"]


def granted_roles():
    variables = yaml.safe_load((REPO / "group_vars/all/backups.yml").read_text())
    return variables["hello_backups_bucket_roles"]


def granted_permissions():
    return set().union(*(ROLE_PERMISSIONS[role] for role in granted_roles()))


def gcs_calls(path: Path) -> set[str]:
    """The names of the methods called on an object named ``gcs`` in a Python file."""
    tree = ast.parse(path.read_text())
    return {
        node.func.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "gcs"
    }


def test_every_granted_role_is_in_the_table():
    assert set(granted_roles()) <= set(ROLE_PERMISSIONS), granted_roles()


def test_barman_cloud_may_make_every_call_it_makes():
    missing = {call: needed for call, needed in BARMAN_CLOUD.items() if needed not in granted_permissions()}
    assert missing == {}, f"barman-cloud would get 403 for {missing}"


def test_the_logical_backup_may_make_every_call_it_makes():
    calls = set().union(*(gcs_calls(REPO / path) for path in PGTOOLS_FILES))
    assert calls, "no Cloud Storage call found: the files or the client's name changed"
    unknown = calls - set(GCS_METHODS)
    assert unknown == set(), f"calls missing from GCS_METHODS (say which permission each needs): {unknown}"
    missing = {call: GCS_METHODS[call] for call in calls if GCS_METHODS[call] not in granted_permissions()}
    assert missing == {}, f"pg-dump-to-gcs would get 403 for {missing}"


def test_each_method_makes_the_library_calls_the_table_names():
    methods = {
        node.name: node
        for node in ast.walk(ast.parse(GCS_MODULE.read_text()))
        if isinstance(node, ast.FunctionDef) and node.name in GCS_METHODS
    }
    assert set(methods) == set(GCS_METHODS)
    storage_calls = set().union(*LIBRARY_CALLS.values())
    for name, method in methods.items():
        made = {
            node.func.attr
            for node in ast.walk(method)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in storage_calls
        }
        assert made == LIBRARY_CALLS[name], f"Gcs.{name} calls {made}: say which permission each needs"


def test_no_role_changes_the_bucket_itself():
    bucket_writes = {
        p for p in granted_permissions() if p.startswith("storage.buckets.") and p != "storage.buckets.get"
    }
    assert bucket_writes == set()

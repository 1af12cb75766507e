"""Fixtures of the repository's tests. What they are made of lives in ``tests/support/``.

Markers come from the fixtures a test uses (``FIXTURE_MARKERS``): a test that starts PostgreSQL
is ``postgres``, one that runs the service's binary is ``cargo``, and so on; ``scripts/test
fast`` leaves out ``slow``. Expensive things exist once per test run (per worker under
pytest-xdist, except the render, which workers share): the PostgreSQL servers, the GCS
emulator, the service's release binary, every environment's rendered objects.

PostgreSQL
  ``postgres_server``          the session's server (the "primary" of the tests)
  ``scratch_postgres_server``  a second, independent server (a restore or drill target)
  ``postgres_database``        a fresh, empty database on ``postgres_server``
  ``database_from``            factory: ``database_from(sql)`` a fresh database that is a copy
                               of a template seeded once per session with ``sql``
  ``restartable_postgres``     a server of the test's own that can stop and start again
Google Cloud Storage
  ``gcs_emulator``, ``gcs_bucket`` (a fresh bucket's name)
The service
  ``hello_binary``, ``hello_service`` (factory: ``hello_service(database_url, **settings)``)
Docker
  ``docker_engine`` (the names of the images scripts/airgap-images provides)
Ansible
  ``ansible`` (the runner of support.playbooks), ``rendered_root`` (every environment rendered)
Faults and figures
  ``tcp_proxy`` (factory of support.net.FaultyProxy), ``silencing_proxy`` (factory of
  support.net.SilencingProxy), ``measurement`` (a line for the
  "measurements" section printed at the end of the run)
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest
from filelock import FileLock

from support import playbooks
from support.docker import docker_images
from support.gcs import start_gcs_emulator
from support.net import FaultyProxy, SilencingProxy
from support.postgres import RestartablePostgres, TestDatabase, start_postgres_server
from support.render import shared_render
from support.service import hello_binary as find_hello_binary
from support.service import start_service

# The markers a fixture gives every test that uses it, directly or through another fixture.
FIXTURE_MARKERS = {
    "postgres_server": ("postgres",),
    "scratch_postgres_server": ("postgres",),
    "restartable_postgres": ("postgres", "slow"),
    "hello_binary": ("cargo",),
    "ansible": ("ansible",),
    "docker_engine": ("docker", "slow"),
}


def pytest_collection_modifyitems(items):
    for item in items:
        for fixture, markers in FIXTURE_MARKERS.items():
            if fixture in item.fixturenames:
                for marker in markers:
                    item.add_marker(marker)
    # The longest modules first: each module runs on one worker (--dist=loadscope), so a long
    # one started last would be the run's tail while the other workers sit idle; started first,
    # the short modules fill the other workers beside it. The modules that build images (minutes
    # when the layer cache is cold), then those with whole playbook runs (`slow`), then the rest,
    # each group in its collection order.
    docker_modules = {item.module for item in items if item.get_closest_marker("docker")}
    slow_modules = {item.module for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: (item.module not in docker_modules, item.module not in slow_modules))


@pytest.fixture(autouse=True)
def _ansible_only_where_marked(request):
    playbooks.marked["current"] = request.node.get_closest_marker("ansible") is not None
    yield
    playbooks.marked["current"] = True


def run_folder(tmp_path_factory) -> Path:
    """A folder of this test run that every pytest-xdist worker shares."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


# -- figures worth quoting -------------------------------------------------------------------


@pytest.fixture
def measurement(request):
    """Record a line of measured figures for the summary at the end of the run. Kept in the
    report's user properties, which pytest-xdist carries from the workers to the controller."""

    def record(line: str) -> None:
        request.node.user_properties.append(("measurement", line))

    return record


_MEASUREMENTS: list[str] = []


def pytest_runtest_logreport(report):
    if report.when == "call":
        _MEASUREMENTS.extend(value for name, value in report.user_properties if name == "measurement")


def pytest_terminal_summary(terminalreporter):
    if _MEASUREMENTS:
        terminalreporter.section("measurements")
        for line in _MEASUREMENTS:
            terminalreporter.write_line(line)


# -- PostgreSQL ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server():
    server = start_postgres_server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def scratch_postgres_server():
    server = start_postgres_server()
    yield server
    server.stop()


@pytest.fixture
def postgres_database(postgres_server):
    name = "test_" + uuid.uuid4().hex[:12]
    postgres_server.create_database(name)
    yield TestDatabase(postgres_server, name)
    postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def _templates(postgres_server):
    """Template databases on ``postgres_server``, one per seed SQL, made on first use."""
    made: dict[str, str] = {}

    def template(sql: str) -> str:
        if sql not in made:
            name = "template_" + hashlib.sha256(sql.encode()).hexdigest()[:12]
            postgres_server.create_database(name)
            postgres_server.psql(sql, name)
            made[sql] = name
        return made[sql]

    return template


@pytest.fixture
def database_from(postgres_server, _templates):
    created: list[str] = []

    def new(sql: str) -> TestDatabase:
        name = "test_" + uuid.uuid4().hex[:12]
        postgres_server.create_database(name, template=_templates(sql))
        created.append(name)
        return TestDatabase(postgres_server, name)

    yield new
    for name in created:
        postgres_server.drop_database(name)


@pytest.fixture
def restartable_postgres():
    server = start_postgres_server()
    try:
        yield RestartablePostgres(server)
    finally:
        server.stop()


# -- Google Cloud Storage --------------------------------------------------------------------


@pytest.fixture(scope="session")
def gcs_emulator():
    emulator = start_gcs_emulator()
    yield emulator
    emulator.stop()


@pytest.fixture
def gcs_bucket(gcs_emulator):
    return gcs_emulator.create_bucket("hello-test-" + uuid.uuid4().hex[:12])


# -- the service -----------------------------------------------------------------------------


@pytest.fixture(scope="session")
def hello_binary(tmp_path_factory):
    # Workers may all get here at once without HELLO_BINARY: one cargo build at a time.
    with FileLock(str(run_folder(tmp_path_factory) / "hello-build.lock")):
        return find_hello_binary()


@pytest.fixture
def hello_service(hello_binary, tmp_path):
    started = []

    def start(database_url: str, **settings: str):
        service = start_service(hello_binary, database_url, tmp_path, **settings)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


# -- Ansible ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ansible():
    """The runner of the real Ansible commands (support.playbooks.ansible)."""
    return playbooks.ansible


@pytest.fixture(scope="session")
def rendered_root(ansible, tmp_path_factory):
    """The root of every environment's rendered objects: <root>/<env>/<host>/<component>/."""
    return shared_render(run_folder(tmp_path_factory))


@pytest.fixture(scope="module")
def gcloud_config(tmp_path_factory):
    """The real gcloud's (empty) configuration for the gcloud test double (support.gcloud),
    shared by a module's runs so that each command line is checked once."""
    return tmp_path_factory.mktemp("gcloud-config")


# -- Docker ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def docker_engine():
    """The images the Docker tests build on: {HELLO_BUILDER_IMAGE, HELLO_RUNTIME_IMAGE,
    HELLO_POSTGRES_IMAGE} as scripts/airgap-images names them. Fails when the engine does not
    answer or an image is missing: run scripts/test images (or scripts/airgap-images)."""
    return docker_images()


# -- faults ----------------------------------------------------------------------------------


def _proxies(proxy_class):
    """A factory that starts a ``proxy_class`` with the arguments it is given; each proxy it
    started is closed when the generator resumes."""
    proxies = []

    def start(*args, **kwargs):
        proxy = proxy_class(*args, **kwargs)
        proxy.start()
        proxies.append(proxy)
        return proxy

    yield start
    for proxy in proxies:
        proxy.close()


@pytest.fixture
def tcp_proxy():
    """Factory of fault-injecting TCP proxies (support.net.FaultyProxy); closed after the test."""
    yield from _proxies(FaultyProxy)


@pytest.fixture
def silencing_proxy():
    """Factory of proxies that make connections go silent (support.net.SilencingProxy):
    ``silencing_proxy(target_port, inspect=None)``; closed after the test."""
    yield from _proxies(SilencingProxy)

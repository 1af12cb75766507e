"""Image references through the project's Artifact Registry remote repositories.

GKE private nodes have no route to the Internet, so an image of ghcr.io, quay.io or Docker Hub
is pulled through the remote repository that proxies that registry (created by roles/image):
``ghcr.io/cloudnative-pg/postgresql:17.6`` becomes
``europe-docker.pkg.dev/<project>/ghcr/cloudnative-pg/postgresql:17.6``. A reference whose
registry has no remote repository (the project's own images, a local registry) is kept as it is.

    {{ postgres_image | hello_mirrored(hello_image_mirrors, hello_image_mirror_registry) }}
"""

from ansible.errors import AnsibleFilterError

DOCKER_HUB = "docker.io"
LEGACY_DOCKER_HUB = "index.docker.io"


def split_registry(reference):
    """(registry host, path with tag or digest) as container runtimes resolve a reference
    (splitDockerDomain in distribution/reference's normalize.go): the first part is a registry
    only when it has a dot or a port, is localhost or has capitals; otherwise the image is Docker
    Hub's, and a one-part name is one of its official images, under library/."""
    first, _, rest = reference.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost" or first.lower() != first):
        host, path = first, rest
    else:
        host, path = DOCKER_HUB, reference
    if host == LEGACY_DOCKER_HUB:
        host = DOCKER_HUB
    if host == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    return host, path


def hello_mirrored(reference, mirrors, registry):
    if not isinstance(reference, str) or not reference or any(c.isspace() for c in reference):
        raise AnsibleFilterError(f"hello_mirrored: {reference!r} is not an image reference")
    host, path = split_registry(reference)
    mirror = (mirrors or {}).get(host)
    if mirror is None:
        return reference
    return f"{registry.rstrip('/')}/{mirror['repository']}/{path}"


def hello_mirrored_registry(host, mirrors, registry):
    """The registry to name for images of ``host``, for charts that take the registry apart
    from the repository: the remote repository of ``host``, or ``host`` itself."""
    mirror = (mirrors or {}).get(host)
    return host if mirror is None else f"{registry.rstrip('/')}/{mirror['repository']}"


class FilterModule:
    def filters(self):
        return {"hello_mirrored": hello_mirrored, "hello_mirrored_registry": hello_mirrored_registry}

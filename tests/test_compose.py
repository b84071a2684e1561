"""compose.yaml and the demo directory, without a Docker engine (none on this machine): the
file validates against the Compose Specification (docker-compose 1.29's schema), every
service builds from a Dockerfile here or runs an official image that exists, what the
Dockerfiles copy exists, and the demo directory's own entry script, run on this host with
Debian's slapd, seeds a directory that the IdP, with compose.yaml's settings, signs ada in to."""

from __future__ import annotations

import json
import os
import re
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from ldap3 import Connection, Server
from ports import listen_port

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose.yaml"
# Official images (Docker Hub's "Docker Official Images") at tags that exist; anything else
# is built from a Dockerfile in this repository.
OFFICIAL = {
    "postgres:16",
    "redis:7",
    "caddy:2",
    "python:3.11-slim-bookworm",
    "debian:bookworm-slim",
}
# What a person exports before `docker compose up` (README.md, docs/docker.md).
EXPORTED = {
    "IDP_SECRET_KEY": secrets.token_hex(32),
    "IDP_ADMIN_PASSWORD": "compose admin passphrase 1",
    "LDAP_ADA_PASSWORD": "Analytical engine, 1843",
}


def compose(*args: str, files: tuple[Path, ...] = (COMPOSE,), env: dict | None = None):
    """docker-compose (1.29, Debian's package: `make test-deps` installs it) on `files`,
    merged, with only `env` (the caller's own IDP_* and LDAP_* left out)."""
    assert shutil.which("docker-compose"), "docker-compose not found: run `make test-deps`"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("IDP_", "LDAP_"))}
    given = [arg for file in files for arg in ("-f", str(file))]
    return subprocess.run(
        ["docker-compose", "--project-directory", str(ROOT), *given, *args],
        env={**clean, **(EXPORTED if env is None else env)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def config() -> dict:
    """compose.yaml as docker-compose reads it: validated, variables substituted."""
    r = compose("config")
    assert r.returncode == 0, r.stderr
    return yaml.safe_load(r.stdout)


def dockerfile(context: Path, name: str = "Dockerfile") -> dict:
    """A Dockerfile's FROM images, COPY sources and destinations, ENV values and CMD."""
    text = (context / name).read_text().replace("\\\n", " ")
    env: dict[str, str] = {}
    for line in re.findall(r"^ENV (.+)$", text, re.M):
        env.update(dict(pair.split("=", 1) for pair in shlex.split(line)))
    copies = []
    for line in re.findall(r"^COPY (.+)$", text, re.M):
        words = [w for w in shlex.split(line) if not w.startswith("--")]
        copies += [(source, words[-1]) for source in words[:-1]]
    (cmd,) = re.findall(r"^CMD (\[.+\])$", text, re.M)
    return {
        "from": re.findall(r"^FROM (\S+)", text, re.M),
        "copies": copies,
        "env": env,
        "cmd": json.loads(cmd),
    }


def test_compose_yaml_validates_against_the_compose_specification(tmp_path):
    r = compose("config", "-q")
    assert r.returncode == 0, r.stderr
    # The validator is real: a misspelt key and a missing secret key are refused.
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE.read_text().replace("healthcheck:", "helthcheck:", 1))
    r = compose("config", "-q", files=(broken,))
    assert r.returncode != 0 and "helthcheck" in r.stderr
    r = compose("config", "-q", env={k: v for k, v in EXPORTED.items() if k != "IDP_SECRET_KEY"})
    assert r.returncode != 0 and "set IDP_SECRET_KEY" in r.stderr


def test_every_service_builds_here_or_runs_an_official_image():
    services = config()["services"]
    assert set(services) == {"idp", "caddy", "postgres", "redis", "openldap"}
    built = {}
    for name, service in services.items():
        if "build" in service:
            context = Path(service["build"]["context"])
            assert context.is_relative_to(ROOT), (name, context)
            assert (context / service["build"].get("dockerfile", "Dockerfile")).is_file(), name
            built[name] = context.relative_to(ROOT).as_posix()
        else:
            assert service["image"] in OFFICIAL, (name, service["image"])
    assert built == {"idp": ".", "openldap": "deploy/openldap"}


def test_what_waits_for_a_service_waits_for_its_health_check():
    services = config()["services"]
    for name, service in services.items():
        for other, how in service.get("depends_on", {}).items():
            assert how["condition"] == "service_healthy", (name, other)
            assert services[other]["healthcheck"]["test"], other
    assert all("healthcheck" in services[n] for n in ("idp", "postgres", "redis", "openldap"))


@pytest.mark.parametrize("context", [".", "deploy/openldap"])
def test_the_dockerfiles_start_from_official_images_and_copy_files_that_exist(context):
    d = dockerfile(ROOT / context)
    assert set(d["from"]) <= OFFICIAL, d["from"]
    assert d["copies"]
    for source, _ in d["copies"]:
        assert (ROOT / context / source).exists(), f"{context}/Dockerfile copies {source}"
    # The command is a file the image copies, executable (git keeps the mode).
    command = d["cmd"][0]
    copied = {dest.rstrip("/"): source for source, dest in d["copies"]}
    source = copied[command]
    assert os.access(ROOT / context / source, os.X_OK), source


# -- the demo directory -------------------------------------------------------------------


class DemoDirectory:
    """deploy/openldap's entry script, run as the image runs it, on a loopback port."""

    def __init__(self, workdir: Path, environment: dict[str, str]):
        d = dockerfile(ROOT / "deploy/openldap")
        self.script = (
            ROOT
            / "deploy/openldap"
            / dict((dest, source) for source, dest in d["copies"])[d["cmd"][0]]
        )
        self.port = listen_port()
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("LDAP_")},
            **d["env"],
            **environment,
            # The image's paths and port, mapped to this machine.
            "LDAP_DIR": str(workdir),
            "LDAP_HOST": "127.0.0.1",
            "LDAP_PORT": str(self.port),
        }
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> subprocess.Popen:
        self.proc = subprocess.Popen(
            [str(self.script)],
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        return self.proc

    def wait_healthy(self, healthcheck: list[str]) -> None:
        """Run compose.yaml's own health check (on this port) until it passes."""
        assert healthcheck[0] == "CMD-SHELL"
        command = healthcheck[1].replace("127.0.0.1:1389", f"127.0.0.1:{self.port}")
        for _ in range(150):
            assert self.proc.poll() is None, self.proc.stdout.read()
            if subprocess.run(["sh", "-c", command], capture_output=True).returncode == 0:
                return
            time.sleep(0.1)
        raise AssertionError("the demo directory never passed its health check")

    def stop(self) -> str:
        os.killpg(self.proc.pid, signal.SIGTERM)
        output, _ = self.proc.communicate(timeout=30)
        return output


@pytest.fixture
def demo(tmp_path) -> Iterator[tuple[DemoDirectory, dict]]:
    services = config()["services"]
    directory = DemoDirectory(tmp_path / "ldap", services["openldap"]["environment"])
    yield directory, services
    if directory.proc and directory.proc.poll() is None:
        directory.stop()


def binds(url: str, dn: str, password: str) -> bool:
    conn = Connection(Server(url, connect_timeout=5), dn, password, receive_timeout=5)
    try:
        return conn.bind()
    finally:
        conn.unbind()


def test_the_demo_directory_seeds_ada_and_the_idp_signs_her_in(demo, tmp_path):
    directory, services = demo
    directory.start()
    directory.wait_healthy(services["openldap"]["healthcheck"]["test"])
    ada = "uid=ada,ou=people,dc=example,dc=org"
    assert binds(directory.url, ada, EXPORTED["LDAP_ADA_PASSWORD"])
    assert not binds(directory.url, ada, "not her password")
    assert not binds(directory.url, "cn=admin,dc=example,dc=org", "admin")  # no rootpw set
    # Anonymous clients read nothing but the root DSE.
    anonymous = Connection(Server(directory.url), auto_bind=True)
    anonymous.search("dc=example,dc=org", "(uid=ada)")
    assert anonymous.entries == []
    anonymous.unbind()

    # The IdP with compose.yaml's settings and the image's environment (production), the
    # directory's address mapped to this machine: the binding tester signs ada in, finds
    # her groups, and she is in IDP_LDAP_ADMIN_GROUP.
    idp = services["idp"]["environment"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("IDP_")}
    env |= dockerfile(ROOT)["env"] | {k: str(v) for k, v in idp.items()}
    env |= {
        "IDP_LDAP_URL": directory.url,
        "IDP_DATABASE_URL": f"sqlite:///{tmp_path / 'idp.sqlite3'}",
        "IDP_LOG_FORMAT": "text",
    }
    env.pop("IDP_REDIS_URL")
    r = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "idp", "ldap", "test", "--username", "ada"]
        + ["--password-stdin", "--json"],
        cwd=ROOT,
        env=env,
        input=EXPORTED["LDAP_ADA_PASSWORD"] + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert "admin group cn=idp-admins,ou=groups,dc=example,dc=org: yes" in r.stdout

    # A restart keeps the directory: the seed is not loaded again, and a changed password
    # in the environment changes nothing.
    first = directory.stop()
    assert "created dc=example,dc=org" in first
    directory.env["LDAP_ADA_PASSWORD"] = "another password entirely"
    directory.start()
    directory.wait_healthy(services["openldap"]["healthcheck"]["test"])
    assert binds(directory.url, ada, EXPORTED["LDAP_ADA_PASSWORD"])
    assert "created" not in directory.stop()
    assert EXPORTED["LDAP_ADA_PASSWORD"] not in first


def test_the_demo_directory_needs_adas_password_on_its_first_start(demo):
    directory, _ = demo
    directory.env.pop("LDAP_ADA_PASSWORD")
    proc = directory.start()
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert output.strip() == (
        "demo directory: LDAP_ADA_PASSWORD is not set: the first start needs it "
        "(or LDAP_ADA_PASSWORD_FILE)"
    )


def test_the_docker_secrets_override_in_docs_validates_with_compose_yaml(tmp_path):
    """docs/docker.md's compose.override.yaml, merged with compose.yaml as Compose does:
    valid, and the IdP gets the password file instead of the password."""
    (block,) = re.findall(r"```yaml\n(.*?)```", (ROOT / "docs/docker.md").read_text(), re.S)
    override = tmp_path / "compose.override.yaml"
    override.write_text(block)
    env = {k: v for k, v in EXPORTED.items() if k != "IDP_ADMIN_PASSWORD"}
    r = compose("config", files=(COMPOSE, override), env=env)
    assert r.returncode == 0, r.stderr
    idp = yaml.safe_load(r.stdout)["services"]["idp"]
    assert idp["environment"]["IDP_ADMIN_PASSWORD_FILE"] == "/run/secrets/idp_admin_password"
    assert idp["environment"]["IDP_ADMIN_PASSWORD"] == ""  # empty counts as unset
    assert [s["source"] for s in idp["secrets"]] == ["idp_admin_password"]


def test_the_demo_directory_reads_passwords_from_files_and_the_rootdn_binds(demo, tmp_path):
    directory, services = demo
    secret = tmp_path / "rootdn-password"
    secret.write_text("rootdn passphrase 42\n")  # as `echo … > file` writes it
    directory.env["LDAP_ADMIN_PASSWORD_FILE"] = str(secret)
    directory.start()
    directory.wait_healthy(services["openldap"]["healthcheck"]["test"])
    assert binds(directory.url, "cn=admin,dc=example,dc=org", "rootdn passphrase 42")
    directory.stop()
    assert oct((tmp_path / "ldap" / "db" / "data.mdb").stat().st_mode & 0o777) == "0o600"


def test_the_demo_directory_refuses_an_unreadable_password_file(demo, tmp_path):
    directory, _ = demo
    directory.env["LDAP_ADMIN_PASSWORD_FILE"] = str(tmp_path / "missing")
    proc = directory.start()
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert output.strip() == (
        f"demo directory: LDAP_ADMIN_PASSWORD_FILE: cannot read {tmp_path / 'missing'}"
    )


def test_the_demo_directory_refuses_a_password_and_its_file(demo, tmp_path):
    directory, _ = demo
    directory.env["LDAP_ADA_PASSWORD_FILE"] = str(tmp_path / "x")
    proc = directory.start()
    output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert (
        output.strip()
        == "demo directory: set LDAP_ADA_PASSWORD or LDAP_ADA_PASSWORD_FILE, not both"
    )

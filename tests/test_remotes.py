"""DVC remotes, for real: the zero-setup default, an OpenSSH server and an S3 server on 127.0.0.1.

Each test pushes a small DVC repo, deletes the local cache and outputs, pulls them back and sees
`dvc status -c` clean; then it tampers with one object on the remote and checks that `dvc pull`
refuses it. Everything goes through `python -m lifecycle.remote`, which `make push/pull` run.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, run, s3_client
from tests.helpers_process import free_port, listening, stop_process, wait_ready

SSHD = Path("/usr/sbin/sshd")
TABLE = "id,value\n1,10\n2,20\n"
TAMPERED = "id,value\n1,10\n2,99\n"  # same size: only re-hashing can tell
IMAGES = {"a.txt": "first\n", "b.txt": "second\n"}


# --- a small DVC project ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_project(tmp_path_factory):
    """Makes a copy of one small project (built once per module) at a given path."""
    template = build_small_project(tmp_path_factory.mktemp("template") / "project")

    def copy_to(path: Path) -> Path:
        shutil.copytree(template, path, symlinks=True)
        return path

    return copy_to


def build_small_project(path: Path) -> Path:
    """A git + DVC repo with the template's .dvc/config, one tracked file and one tracked folder."""
    path.mkdir(parents=True)
    run("git init -q && dvc init -q", path)
    shutil.copy2(ROOT / ".dvc" / "config", path / ".dvc" / "config")
    (path / "data" / "images").mkdir(parents=True)
    (path / "data" / "table.csv").write_text(TABLE)
    for name, text in IMAGES.items():
        (path / "data" / "images" / name).write_text(text)
    run(["dvc", "add", "-q", "data/table.csv", "data/images"], path)
    run("git add -A && git -c user.name=t -c user.email=t@t commit -qm data", path)
    return path


def dvc(repo: Path, *args: str, env: dict | None = None, check: bool = True):
    """`dvc <args>` the way `make push` / `make pull` run it (SSH host keys checked)."""
    return run([sys.executable, "-m", "lifecycle.remote", *args], repo, check=check,
               env={"PYTHONPATH": str(ROOT), **(env or {})})


def wipe_local_data(repo: Path) -> None:
    """Forget everything local: the DVC cache and the checked-out outputs."""
    shutil.rmtree(repo / ".dvc" / "cache", ignore_errors=True)
    (repo / "data" / "table.csv").unlink(missing_ok=True)
    shutil.rmtree(repo / "data" / "images", ignore_errors=True)


def assert_data_back(repo: Path) -> None:
    assert (repo / "data" / "table.csv").read_text() == TABLE
    assert {p.name: p.read_text() for p in (repo / "data" / "images").iterdir()} == IMAGES


def table_object(repo: Path) -> str:
    """Where data/table.csv's object lives inside any remote (relative to the remote's root)."""
    md5 = yaml.safe_load((repo / "data" / "table.csv.dvc").read_text())["outs"][0]["md5"]
    return f"files/md5/{md5[:2]}/{md5[2:]}"


def round_trip(repo: Path, env: dict | None = None) -> None:
    """Push, lose the local copy, pull it back, and find cache and remote in sync."""
    dvc(repo, "push", env=env)
    wipe_local_data(repo)
    dvc(repo, "pull", env=env)
    assert_data_back(repo)
    assert "in sync" in dvc(repo, "status", "-c", env=env).stdout


def assert_tampered_object_refused(repo: Path, env: dict | None = None) -> None:
    """After a remote object was altered, `dvc pull` fails and does not check it out."""
    wipe_local_data(repo)
    pulled = dvc(repo, "pull", env=env, check=False)
    assert pulled.returncode != 0, pulled.stdout + pulled.stderr
    assert "data/table.csv" in pulled.stderr  # named as not checked out
    assert not (repo / "data" / "table.csv").exists()


# --- 1. the default remote: nothing to configure ----------------------------------------------
def test_fresh_clone_pushes_and_pulls_with_zero_configuration(small_project, tmp_path: Path
                                                               ) -> None:
    origin = small_project(tmp_path / "origin")
    assert run(["dvc", "config", "remote.storage.verify"], origin).stdout.strip() == "true"

    dvc(origin, "push")
    storage = tmp_path / "dvc-storage"  # beside the clone, outside its work tree
    assert (storage / table_object(origin)).is_file()

    clone = tmp_path / "clone"  # a second clone in the same folder shares the storage
    run(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    dvc(clone, "pull")
    assert_data_back(clone)
    assert "in sync" in dvc(clone, "status", "-c").stdout

    obj = storage / table_object(origin)
    obj.chmod(0o644)  # DVC stores objects read-only
    obj.write_text(TAMPERED)
    assert_tampered_object_refused(clone)


# --- 2. SSH: a real OpenSSH server, its host key checked ---------------------------------------
@dataclass
class SshServer:
    port: int
    user: str
    client_key: Path
    known_hosts_line: str  # what `ssh-keyscan` would print for this server
    store: Path            # the remote folder, seen from this machine (same machine)

    def url(self, name: str) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}{self.store / name}"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory) -> Iterator[SshServer]:
    """Debian's OpenSSH server on a free port: temp host key, key login as the current user."""
    if not SSHD.exists():
        pytest.fail(f"{SSHD} not found: install the Debian package openssh-server "
                    "(`apt-get install openssh-server`; .ci/run does it)")
    home = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / key)],
                       check=True)
    shutil.copy(home / "client_key.pub", home / "authorized_keys")
    if os.geteuid() == 0:  # as root, sshd insists on its privilege-separation directory
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    port = free_port()
    (home / "sshd_config").write_text(f"""\
ListenAddress 127.0.0.1
Port {port}
HostKey {home / 'host_key'}
PidFile {home / 'sshd.pid'}
AuthorizedKeysFile {home / 'authorized_keys'}
AllowUsers {getpass.getuser()}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
# a root test run logs in as root, by key only
PermitRootLogin prohibit-password
# the keys live in a world-readable temp folder
StrictModes no
UsePAM no
Subsystem sftp internal-sftp
""")
    log = home / "sshd.log"
    proc = subprocess.Popen([str(SSHD), "-D", "-f", str(home / "sshd_config"), "-E", str(log)])
    try:
        wait_ready(proc, lambda: listening(port), "sshd", log, timeout=30)
        host_key = (home / "host_key.pub").read_text().split()[:2]
        yield SshServer(port, getpass.getuser(), home / "client_key",
                        f"[127.0.0.1]:{port} {' '.join(host_key)}\n", home / "store")
    finally:
        stop_process(proc)


def ssh_home(tmp_path: Path, known_hosts: str | None) -> dict:
    """An isolated $HOME whose ~/.ssh/known_hosts holds `known_hosts` (none if None)."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    if known_hosts is not None:
        (home / ".ssh" / "known_hosts").write_text(known_hosts)
    return {"HOME": str(home)}


def use_ssh_remote(repo: Path, server: SshServer, name: str) -> None:
    """What README "Remotes" says: the URL in .dvc/config, the key path in config.local."""
    run(["dvc", "remote", "modify", "storage", "url", server.url(name)], repo)
    run(["dvc", "remote", "modify", "--local", "storage", "keyfile", str(server.client_key)],
        repo)


def test_ssh_remote_round_trip_with_checked_host_key(small_project, sshd: SshServer,
                                                    tmp_path: Path) -> None:
    repo = small_project(tmp_path / "project")
    use_ssh_remote(repo, sshd, "round-trip")
    env = ssh_home(tmp_path, sshd.known_hosts_line)

    round_trip(repo, env)
    assert (sshd.store / "round-trip" / table_object(repo)).is_file()

    obj = sshd.store / "round-trip" / table_object(repo)
    obj.chmod(0o644)
    obj.write_text(TAMPERED)
    assert_tampered_object_refused(repo, env)


def test_ssh_remote_refuses_unknown_or_changed_host_key(small_project, sshd: SshServer,
                                                        tmp_path: Path) -> None:
    repo = small_project(tmp_path / "project")
    use_ssh_remote(repo, sshd, "refused")
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")],
                   check=True)
    impostor = " ".join((tmp_path / "other.pub").read_text().split()[:2])

    changed = dvc(repo, "push", env=ssh_home(tmp_path / "changed", f"[127.0.0.1]:{sshd.port} "
                                             f"{impostor}\n"), check=False)
    unknown = dvc(repo, "push", env=ssh_home(tmp_path / "unknown", None), check=False)
    for refused in (changed, unknown):
        assert refused.returncode != 0
        assert "Host key is not trusted for host 127.0.0.1" in refused.stderr
    assert not (sshd.store / "refused").exists()  # nothing was sent

    # Why `make push` goes through lifecycle.remote: plain dvc trusts any SSH host key.
    plain = run(["dvc", "push"], repo, env=ssh_home(tmp_path / "plain", None), check=False)
    assert plain.returncode == 0, "dvc-ssh now checks host keys: README 'Remotes' needs updating"


# --- 3. S3: moto's S3 server as a separate process, credentials from the environment ---------
@pytest.fixture(scope="module")
def s3_env(s3_server: dict) -> dict:
    """The S3 server with a bucket `dvc-test`; the env that reaches it."""
    s3_client(s3_server).create_bucket(Bucket="dvc-test")
    return s3_server


def test_s3_remote_round_trip_and_tamper_check(small_project, s3_env: dict, tmp_path: Path
                                               ) -> None:
    repo = small_project(tmp_path / "project")
    run(["dvc", "remote", "modify", "storage", "url", "s3://dvc-test/project"], repo)
    env = {**s3_env, "HOME": str(tmp_path)}  # no ~/.aws of the machine's user
    round_trip(repo, env)

    s3 = s3_client(s3_env)
    key = f"project/{table_object(repo)}"
    assert s3.get_object(Bucket="dvc-test", Key=key)["Body"].read().decode() == TABLE
    s3.put_object(Bucket="dvc-test", Key=key, Body=TAMPERED.encode())
    assert_tampered_object_refused(repo, env)

    # Why the template sets `verify = true`: without it DVC checks out the altered bytes and
    # even reports the workspace as up to date.
    run(["dvc", "remote", "modify", "--local", "storage", "verify", "false"], repo)
    dvc(repo, "pull", env=env)
    assert (repo / "data" / "table.csv").read_text() == TAMPERED
    assert "up to date" in dvc(repo, "status", env=env).stdout

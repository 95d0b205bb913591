"""DVC's command line with SSH host keys checked: what `make push` and `make pull` run.

dvc-ssh connects through sshfs, which hands asyncssh `known_hosts=None`: no host-key check at
all, so a plain `dvc push` to an ssh:// remote sends data to whatever server answers (dvc-ssh
has no config option to change that). This runs the very same DVC command with asyncssh's own
default put back: the server's key must be listed in ~/.ssh/known_hosts (or in the
UserKnownHostsFile that ~/.ssh/config names for that host); an unknown or a changed key stops
the command before anything is sent. S3 and other remotes are not affected (TLS checks them).

    python -m lifecycle.remote push          # any dvc arguments: pull, fetch, status -c, ...
"""

from __future__ import annotations

import sys

# asyncssh reads an empty tuple as "not given": known hosts from ~/.ssh, strictly.
ASYNCSSH_DEFAULT_KNOWN_HOSTS: tuple = ()


def check_ssh_host_keys() -> None:
    """Make dvc-ssh verify server host keys the way OpenSSH does with StrictHostKeyChecking."""
    try:
        from dvc_ssh import SSHFileSystem
    except ImportError:  # no SSH support installed: nothing can connect over SSH
        return
    prepare = SSHFileSystem._prepare_credentials
    if getattr(prepare, "checks_host_keys", False):
        return

    def prepare_checking_host_keys(self, **config):
        login = prepare(self, **config)
        login["known_hosts"] = ASYNCSSH_DEFAULT_KNOWN_HOSTS
        return login

    prepare_checking_host_keys.checks_host_keys = True
    SSHFileSystem._prepare_credentials = prepare_checking_host_keys


def main(argv: list[str] | None = None) -> int:
    """Run `dvc <argv>` in this process with host-key checking on; return DVC's exit code."""
    from dvc.cli import main as dvc_main

    check_ssh_host_keys()
    return dvc_main(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())

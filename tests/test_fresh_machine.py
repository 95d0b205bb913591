"""A fresh machine needs nothing but the README's commands: `make test` installs the Debian
packages whose servers the tests start, before it runs them (no `.ci/run` needed first)."""

from __future__ import annotations

import shutil

from tests.conftest import ROOT, run

# the servers and tools the tests start, as they find them
BINARIES = ["/usr/sbin/sshd", "redis-server", "promtool", "prometheus", "chromium"]


def test_make_test_installs_the_system_packages_before_it_runs_the_tests():
    steps = run(["make", "-n", "test"], ROOT).stdout.splitlines()
    setup = next(i for i, s in enumerate(steps) if "tools/system-packages.sh" in s)
    tests = next(i for i, s in enumerate(steps) if s.strip().startswith("pytest"))
    assert setup < tests


def test_every_server_the_tests_start_comes_from_a_package_the_script_installs():
    script = (ROOT / "tools" / "system-packages.sh").read_text()
    listed = {line.split()[0] for line in script.split("packages=(")[1].split(")")[0]
              .splitlines() if line.strip()}
    for binary in BINARIES:
        path = binary if binary.startswith("/") else shutil.which(binary)
        assert path, f"{binary} is not installed: make test would not find it"
        owner = run(["dpkg", "-S", path], ROOT, check=False).stdout.split(":")[0]
        assert owner in listed, (binary, owner, listed)

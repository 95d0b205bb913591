"""The warm stage runner (lifecycle/warm.py): real servers, real forks, real `dvc repro`.

The DAG test compares a warm and a cold (`LIFECYCLE_WARM=0`) run byte for byte; the others run
small modules of a throw-away project through `python -m lifecycle.warm` directly."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, run
from tests.helpers_stages import set_params

WAIT = 60  # seconds a test waits for an event before it fails (a bound, not a speed claim)


def outputs(ws: Path) -> dict[str, str]:
    """sha256 of every file the DAG wrote, and of dvc.lock."""
    files = [p for d in ("data", "models", "metrics") for p in (ws / d).rglob("*") if p.is_file()]
    return {p.relative_to(ws).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in [*files, ws / "dvc.lock"]}


def test_warm_and_cold_dags_write_the_same_bytes_and_fail_the_same_way(workspace: Path):
    warm = run(["dvc", "repro"], workspace)
    assert "lifecycle.warm:" not in warm.stderr  # no fallback: every stage ran warm
    warm_outputs = outputs(workspace)
    run(["dvc", "repro", "-f"], workspace, env={"LIFECYCLE_WARM": "0"})
    assert outputs(workspace) == warm_outputs
    lock = yaml.safe_load((workspace / "dvc.lock").read_text())
    assert lock["stages"]["train"]["cmd"].startswith("python -m lifecycle.warm stages.train ")

    # a library module edited between two runs: the next run runs the new code
    explain = workspace / "lifecycle" / "explain.py"
    explain.write_text(explain.read_text() + "\nimport sys\nprint('explain v2', file=sys.stderr)\n")
    edited = run(["dvc", "repro"], workspace)
    assert "explain v2" in edited.stderr and "Running stage 'explain'" in edited.stdout

    # a failing stage: its exit status and its one error line reach dvc's output
    set_params(workspace, {"split.test_size": 1.5})
    failed = run(["dvc", "repro"], workspace, check=False)
    assert failed.returncode != 0
    errors = [line for line in failed.stderr.splitlines() if line.startswith("split: error: ")]
    assert len(errors) == 1 and "test_size" in errors[0], failed.stderr
    assert "Traceback" not in failed.stderr
    assert "exited with 2" in failed.stderr, failed.stderr


# --- the runner on small modules ----------------------------------------------------------------
@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A throw-away project: a `jobs` package of modules to run (its cwd keys its server)."""
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "__init__.py").write_text("")
    (jobs / "echo.py").write_text(
        "import os, sys\n"
        "print('out', *sys.argv[1:], os.environ.get('ECHO', ''), os.getpid())\n"
        "print('err line', file=sys.stderr)\n"
        "sys.exit(int(os.environ.get('EXIT', '0')))\n")
    (jobs / "sleeper.py").write_text(
        "import os, sys, time\n"
        "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
        "try:\n"
        "    time.sleep(float(sys.argv[2]))\n"
        "except KeyboardInterrupt:\n"
        "    print('interrupted', file=sys.stderr)\n"
        "    raise\n"
        "print('slept', sys.argv[1])\n")
    (jobs / "blas.py").write_text(
        "import json, numpy, threadpoolctl\n"
        "numpy.ones((50, 50)) @ numpy.ones((50, 50))\n"
        "print(json.dumps([(p['internal_api'], p.get('architecture'), p['num_threads'])\n"
        "                  for p in threadpoolctl.threadpool_info()\n"
        "                  if 'numpy' in p['filepath']]))  # a server may hold scipy's too\n")
    return tmp_path


def warm_env(project: Path, **extra: str) -> dict:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{project}", **extra}


def runner(project: Path, *args: str, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lifecycle.warm", *args], cwd=project,
                          env=warm_env(project, **extra), capture_output=True, text=True,
                          timeout=WAIT)


def start(project: Path, *args: str, **extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "lifecycle.warm", *args], cwd=project,
                            env=warm_env(project, **extra), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"waited {WAIT} s for {what}"
        time.sleep(0.05)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return not Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"


def servers_log(warm_servers: Path) -> str:
    return "".join(p.read_text() for p in warm_servers.glob("*.log"))


def test_stdio_argv_env_and_exit_status_pass_through(project: Path):
    proc = start(project, "jobs.echo", "a b", "c", ECHO="hello", EXIT="3")
    out, err = proc.communicate(timeout=WAIT)
    assert proc.returncode == 3
    words = out.split()
    assert words[:5] == ["out", "a", "b", "c", "hello"]
    assert int(words[5]) != proc.pid  # it ran in a child of the server
    assert err == "err line\n"
    cold = start(project, "jobs.echo", "x", LIFECYCLE_WARM="0", EXIT="4")
    out, err = cold.communicate(timeout=WAIT)
    assert cold.returncode == 4 and int(out.split()[-1]) == cold.pid and err == "err line\n"


def test_children_load_the_pinned_blas_kernels_of_a_cold_process(project: Path):
    warm = runner(project, "jobs.blas")
    cold = runner(project, "jobs.blas", LIFECYCLE_WARM="0")
    again = runner(project, "jobs.blas")  # from a server that preloaded numpy (learned)
    assert warm.returncode == cold.returncode == again.returncode == 0, warm.stderr + cold.stderr
    assert json.loads(warm.stdout) == json.loads(cold.stdout) == json.loads(again.stdout)
    assert json.loads(again.stdout)  # numpy's OpenBLAS was found
    if "avx2" in Path("/proc/cpuinfo").read_text():  # lifecycle/__init__.py's pin
        assert all(arch == "Haswell" for _api, arch, _n in json.loads(again.stdout))


def test_killing_the_client_kills_its_stage(project: Path, warm_servers: Path):
    pid_file = project / "pid"
    client = start(project, "jobs.sleeper", str(pid_file), "600")
    wait_for(lambda: pid_file.exists() and pid_file.read_text(), "the stage to start")
    stage = int(pid_file.read_text())
    assert stage != client.pid and alive(stage)
    client.kill()
    client.wait()
    wait_for(lambda: not alive(stage), "the stage to be killed")


def test_a_signal_to_the_client_reaches_its_stage(project: Path):
    pid_file = project / "pid"
    client = start(project, "jobs.sleeper", str(pid_file), "600")
    wait_for(lambda: pid_file.exists() and pid_file.read_text(), "the stage to start")
    client.send_signal(signal.SIGINT)
    _, err = client.communicate(timeout=WAIT)
    assert client.returncode == 128 + signal.SIGINT
    assert "interrupted" in err and "KeyboardInterrupt" in err


def test_two_clients_at_once_share_one_server(project: Path, warm_servers: Path):
    clients = [start(project, "jobs.sleeper", str(project / f"pid{i}"), "2") for i in (1, 2)]
    results = [c.communicate(timeout=WAIT) for c in clients]
    assert [c.returncode for c in clients] == [0, 0]
    assert [out.split()[-1] for out, _ in results] == [str(project / "pid1"),
                                                       str(project / "pid2")]
    assert servers_log(warm_servers).count(f"serving {project}") == 1


def test_an_import_time_environment_gets_a_server_of_its_own(project: Path,
                                                             warm_servers: Path):
    for threads in ("1", "1", "2"):
        proc = runner(project, "jobs.echo", OMP_NUM_THREADS=threads, ECHO=threads)
        assert proc.returncode == 0 and proc.stdout.split()[1] == threads
    assert servers_log(warm_servers).count(f"serving {project}") == 2


def test_an_edited_installed_module_retires_the_server(tmp_path: Path, project: Path,
                                                       warm_servers: Path):
    """The server keeps installed modules in memory: an edit (or a pip install) must not be
    served stale. A venv of its own holds a package the test can edit."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()"
                                "['purelib'])"], capture_output=True, text=True,
                               check=True).stdout.strip())
    (site / "shade").mkdir()
    (site / "shade" / "__init__.py").write_text("VALUE = 1\n")
    (project / "jobs" / "shaded.py").write_text("import shade\nprint(shade.VALUE)\n")

    def shaded() -> str:
        proc = subprocess.run([python, "-m", "lifecycle.warm", "jobs.shaded"], cwd=project,
                              env=warm_env(project), capture_output=True, text=True,
                              timeout=WAIT)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.strip()

    assert shaded() == "1"  # the child imports shade; the server learns it
    assert shaded() == "1"  # now from the server's memory
    (site / "shade" / "__init__.py").write_text("VALUE = 22\n")
    assert shaded() == "22"
    log = servers_log(warm_servers)
    assert f"{site / 'shade' / '__init__.py'} changed" in log, log
    (site / "newcomer").mkdir()  # what a pip install does to site-packages
    assert shaded() == "22"
    log = servers_log(warm_servers)
    assert log.count(f"{site}") == 2, log


def test_the_server_exits_when_idle(project: Path, warm_servers: Path):
    proc = runner(project, "jobs.echo", LIFECYCLE_WARM_IDLE="0.5")
    assert proc.returncode == 0
    wait_for(lambda: "exits: idle for 0.5 s" in servers_log(warm_servers), "the idle exit")
    line = next(x for x in servers_log(warm_servers).splitlines() if "idle for 0.5 s" in x)
    server = int(line.split(" pid ")[1].split(":")[0])
    wait_for(lambda: not alive(server), "the server process to end")


def test_a_runner_that_cannot_start_falls_back_to_the_cold_path(project: Path,
                                                                 tmp_path: Path):
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)  # others could open it: the runner must not serve from it
    proc = runner(project, "jobs.echo", "x", LIFECYCLE_WARM_DIR=str(shared), EXIT="5")
    assert proc.returncode == 5
    lines = proc.stderr.splitlines()
    assert lines[0] == (f"lifecycle.warm: {shared} is not a private folder of this user "
                        "(mode 0700); running jobs.echo in this process")
    assert lines[1:] == ["err line"]
    assert not list(shared.iterdir())

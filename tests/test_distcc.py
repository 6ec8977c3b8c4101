"""`kcheck build-kernel --distcc HOSTS`, against real distccd daemons on 127.0.0.1.

The fake kernel tree compiles its objects with $(CC), so a build of it through a daemon takes
seconds: the preflight, the environment, the records and the refusals are tested on it. The
slow test builds Debian's real 6.1 with tinyconfig through three daemons, one of them killed
mid-build, and compares the vmlinux with a local build's, byte for byte.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import kcheck_argv, requires_root, run_kcheck
from distcc_fixtures import (
    OTHER_GCC_IDENT,
    Built,
    Daemons,
    built,
    dead_port,
    requires_distcc,
    tinyconfig_args,
)
from kbuild_fixtures import (
    FakeKernel,
    build,
    build_args,
    build_fake_kernel,
    kcheck_refs,
    workdir_json,
)

from kcheck.builder import distcc
from kcheck.builder.distcc import Answer, Compiled, decide, elf_facts, parse_hosts
from kcheck.builder.options import BuildOptions
from kcheck.core.validate import first_problem
from kcheck.errors import KcheckError

TIMESTAMP = "'KBUILD_BUILD_TIMESTAMP=Mon, 5 Jan 2015 04:26:40 +0000'"
VARIABLES = f"{TIMESTAMP} KBUILD_BUILD_USER=kcheck KBUILD_BUILD_HOST=kcheck"
FAKE_OBJECTS = {"fs/aio.c", "fs/namei.c", "fs/overlayfs/inode.c", "init/version.c"}

pytestmark = requires_distcc


@pytest.fixture
def kernel(tmp_path) -> FakeKernel:
    return build_fake_kernel(tmp_path)


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    """Start distccd daemons with daemons.start(); all are stopped after the test."""
    running = Daemons()
    try:
        yield running
    finally:
        running.close()


def without_jobs(args: list[str]) -> list[str]:
    """build_args without its --jobs 2, so that the default applies."""
    at = args.index("--jobs")
    return args[:at] + args[at + 2 :]


def assert_refused(kernel: FakeKernel, done: subprocess.CompletedProcess, *phrases: str) -> None:
    """Exit 3, one line, and nothing touched: no work dir, no kcheck branch."""
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("kcheck: error: "), done.stderr
    for phrase in phrases:
        assert phrase in done.stderr, done.stderr
    assert not (kernel.root / "work").exists()
    assert not [ref for ref in kcheck_refs(kernel) if "kcheck" in ref]


def local_compiler() -> str:
    return subprocess.run(["gcc", "--version"], capture_output=True, text=True).stdout.split("\n")[0]


# --- the host list ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "slots", "jobs"),
    [
        ("helper1/8 helper2/8,lzo", [8, 8], 16),
        ("localhost/2 10.0.0.5:3700/6 [::1]:3632/3", [2, 6, 3], 11),
        ("--randomize build@helper/4:/usr/bin/distccd,lzo helper2", [4, 4], 8),
        ("helper/5:3700 --localslots=2 localhost", [5, 2], 7),  # the old HOST/LIMIT:PORT form
        ("helper/2 @helper/2 helper:3700/2", [2, 2, 2], 6),  # over TCP, ssh, another port: 3 hosts
    ],
)
def test_the_host_list_and_the_jobs_it_allows(text, slots, jobs):
    hosts = parse_hosts(text)
    assert [host.slots for host in hosts.hosts] == slots
    assert hosts.jobs() == jobs
    assert hosts.without(set()) == " ".join(text.split())


@pytest.mark.parametrize(
    ("text", "phrase"),
    [
        ("", "names no host"),
        ("--randomize", "names no host"),
        ("helper/0", "/0 slots; give 1 or more"),
        ("helper:70000", "port 70000 is not 1 to 65535"),
        ("helper;rm", "not a distcc host; write HOST[:PORT][/SLOTS]"),
        ("helper,cpp", ",cpp is distcc-pump mode"),
        ("+zeroconf", "name them"),
        ("helper/4 helper:3632/8", "helper:3632/8 and helper/4 are the same host"),
        ("localhost localhost/4", "the same host"),
        ("me@helper/2 me@helper:/usr/bin/distccd", "the same host"),
    ],
)
def test_a_host_list_kcheck_cannot_use_is_bad_input(text, phrase):
    with pytest.raises(KcheckError, match="^--distcc") as caught:
        parse_hosts(text)
    assert phrase in str(caught.value)


def test_the_build_hosts_leave_out_only_the_hosts_named():
    hosts = parse_hosts("--randomize a/2 b/2 localhost/2")
    assert hosts.without({"b/2"}) == "--randomize a/2 localhost/2"
    assert [host.spec for host in hosts.remote] == ["a/2", "b/2"]


# --- reading an object back, and deciding -----------------------------------------------------------


def compiled_object(tmp_path: Path, *flags: str) -> bytes:
    (tmp_path / "probe.c").write_text(distcc.PROBE_SOURCE)
    subprocess.run(["gcc", *flags, "-c", "probe.c", "-o", "probe.o"], cwd=tmp_path, check=True)
    return (tmp_path / "probe.o").read_bytes()


def test_the_object_names_the_compiler_that_made_it_and_its_target(tmp_path):
    facts = elf_facts(compiled_object(tmp_path))
    version = local_compiler().split()[-1]  # gcc (Debian 12.2.0-14+deb12u1) 12.2.0
    assert facts is not None and facts.ident.startswith("GCC: (") and facts.ident.endswith(version)
    assert facts.machine == {"x86_64": "x86-64", "aarch64": "aarch64"}.get(os.uname().machine, facts.machine)
    thirty_two = subprocess.run(
        ["gcc", "-m32", "-c", "-x", "c", "/dev/null", "-o", "/dev/null"], capture_output=True
    )
    if thirty_two.returncode == 0 and os.uname().machine == "x86_64":  # the kernel's own -m32 builds
        assert elf_facts(compiled_object(tmp_path, "-m32")) == Compiled(facts.ident, "i386")
    assert elf_facts(compiled_object(tmp_path, "-fno-ident")) is None
    assert elf_facts(b"not an object") is None
    assert elf_facts(compiled_object(tmp_path)[:80]) is None  # cut short: no section table


LOCAL = Compiled("GCC: (Debian 12.2.0-14+deb12u1) 12.2.0", "x86-64")


def test_a_host_with_another_compiler_or_target_is_refused_even_when_degraded():
    hosts = parse_hosts("a/2 b/2")
    for other in (Compiled("GCC: (Debian 13.2.0-4) 13.2.0", "x86-64"), Compiled(LOCAL.ident, "aarch64")):
        answers = [Answer("a/2", LOCAL), Answer("b/2", other)]
        expected = re.escape(f"b/2 compiles with {other}, this machine with {LOCAL};")
        with pytest.raises(KcheckError, match=expected):
            decide(hosts, LOCAL, answers, degraded=True, cpus=2)


def test_hosts_that_do_not_answer_are_refused_unless_degraded():
    hosts = parse_hosts("a/2 b/2 c/2")
    answers = [Answer("a/2", LOCAL), Answer("b/2", None, "does not answer (x)"), Answer("c/2", LOCAL)]
    with pytest.raises(KcheckError, match=r"^--distcc: b/2 does not answer \(x\); .*--distcc-degraded"):
        decide(hosts, LOCAL, answers, degraded=False, cpus=2)
    cluster = decide(hosts, LOCAL, answers, degraded=True, cpus=2)
    assert cluster.hosts == "a/2 c/2" and cluster.left_out == {"b/2": "does not answer (x)"}
    assert cluster.compilers == {"localhost": str(LOCAL), "a/2": str(LOCAL), "c/2": str(LOCAL)}
    none = decide(hosts, LOCAL, [Answer(h.spec, None, "does not answer (x)") for h in hosts.hosts], True, 6)
    assert none.hosts == "localhost/6"  # nothing answers: compiled here alone
    assert "no host answers: compiling here alone" in distcc.announce(none)[-1]


def test_localhost_is_never_probed_and_always_answers():
    hosts = parse_hosts("localhost/2 a/2")
    cluster = decide(hosts, LOCAL, [Answer("a/2", None, "does not answer (x)")], degraded=True, cpus=2)
    assert cluster.hosts == "localhost/2"


# distcc's client log (DISTCC_LOG) as Debian's distcc 3.4 writes it, cut down: a job on each
# host, one moved to the other host when its first died, one compiled here when its host failed,
# and a job distcc keeps here (no host to send it to).
CLIENT_LOG = """\
distcc[3614] exec on 127.0.0.1:39001/2: gcc -c -o fs/aio.o fs/aio.c
distcc[3614] compile fs/aio.c on 127.0.0.1:39001/2 completed ok
distcc[3615] exec on 127.0.0.1:39002/2: gcc -c -o fs/namei.o fs/namei.c
distcc[3615] compile fs/namei.c on 127.0.0.1:39002/2 completed ok
distcc[3616] exec on 127.0.0.1:39002/2: gcc -c -o mm/vmstat.o mm/vmstat.c
distcc[3616] ERROR: nonblocking connect to 127.0.0.1:39002 failed: Connection refused
distcc[3616] exec on 127.0.0.1:39001/2: gcc -c -o mm/vmstat.o mm/vmstat.c
distcc[3616] compile mm/vmstat.c on 127.0.0.1:39001/2 completed ok
distcc[3617] exec on 127.0.0.1:39002/2: gcc -c -o init/main.o init/main.c
distcc[3617] ERROR: nonblocking connect to 127.0.0.1:39002 failed: Connection refused
distcc[3617] Warning: failed to distribute init/main.c to 127.0.0.1:39002/2, running locally instead
distcc[3617] exec on localhost: gcc -c -o init/main.o init/main.c
distcc[3617] compile init/main.c on localhost completed ok
distcc[3618] (dcc_scan_args) gcc's -x handling is complex; running locally for assembler-with-cpp
distcc[3618] exec on localhost: gcc -x assembler-with-cpp -c -o head.o head.S
distcc[3618] compile (null) on localhost completed ok
"""


def test_jobs_per_host_come_from_distccs_own_log():
    jobs = distcc.job_counts(CLIENT_LOG)
    assert jobs.per_host == {"127.0.0.1:39001/2": 2, "127.0.0.1:39002/2": 1, "localhost": 2}
    assert (jobs.moved, jobs.fell_back) == (2, 1)
    assert distcc.job_counts("") == distcc.Jobs({}, 0, 0)


def test_why_a_host_failed_is_read_from_the_client_log():
    refused = "distcc[1] ERROR: nonblocking connect to 127.0.0.1:9 failed: Connection refused\n"
    assert distcc.probe_problem(refused, "") == (
        "does not answer (nonblocking connect to 127.0.0.1:9 failed: Connection refused)"
    )
    whitelist = (
        "distcc[2] exec on h/2: gcc -c probe.c -o host-0.o\n"
        "distcc[2] (dcc_readx) ERROR: unexpected eof on fd6\n"
        "distcc[2] (dcc_r_result_header) ERROR: server provided no answer. Is the server configured...\n"
    )
    problem = distcc.probe_problem(whitelist, "")
    assert "Debian's distccd runs only the compilers whitelisted in /usr/lib/distcc" in problem
    assert "(gcc must be there: run update-distcc-symlinks on it)" in problem
    assert distcc.probe_problem("", "cc1: error: x\n") == "fails the test compile (cc1: error: x)"


# --- options ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "phrase"),
    [
        (["--distcc-degraded"], "--distcc-degraded: only with --distcc HOSTS"),
        (["--distcc", "h/2", "--cc-wrapper", "distcc"], "--distcc puts distcc in itself"),
        (["--distcc", "h/2", "--cc-wrapper", "ccache distcc"], "pass --cc-wrapper ccache"),
        (["--distcc", "h;reboot"], "--distcc 'h;reboot': not a distcc host"),
        (["--distcc", "h,cpp", "--dry-run"], ",cpp is distcc-pump mode"),
    ],
)
def test_bad_distcc_options_are_one_line_and_exit_3(kernel, args, phrase):
    assert_refused(kernel, build(kernel, *args), phrase)


def test_the_distcc_options_are_saved_for_continue_and_set_cc():
    options = BuildOptions(
        workdir=Path("/w"), targets=("bzImage",), distcc="h/2 localhost", distcc_degraded=True
    )
    assert BuildOptions.from_json(options.to_json()) == options
    assert (options.cc, options.wrapper_tools) == ("distcc gcc", "distcc")
    with_ccache = BuildOptions(workdir=Path("/w"), targets=("bzImage",), distcc="h", cc_wrapper="ccache")
    assert (with_ccache.cc, with_ccache.wrapper_tools) == ("ccache gcc", "ccache distcc")


def test_missing_distcc_is_listed_with_the_install_command(kernel, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git", "gcc", "make", "flex", "bison", "bc", "perl"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    done = build(kernel, "--distcc", "h/2", env={"PATH": str(bin_dir)})
    assert_refused(kernel, done, "missing build tools: distcc;", "install distcc")


def test_dry_run_shows_the_environment_and_the_make_line_and_contacts_no_host(kernel):
    args = without_jobs(
        build_args(kernel, "--dry-run", "--distcc", "localhost/2 helper1/8 helper2:3700/4,lzo")
    )
    done = run_kcheck(*args)
    assert done.returncode == 0, done.stderr
    work = kernel.root / "work"
    env = (
        "DISTCC_HOSTS='localhost/2 helper1/8 helper2:3700/4,lzo' DISTCC_NO_REWRITE_CROSS=1 "
        f"DISTCC_DIR={work}/distcc"
    )
    variables = f"{VARIABLES} 'CC=distcc gcc'"
    lines = done.stdout.splitlines()
    assert lines[-7:] == [
        f"cp {work}/base.config .config",
        "scripts/config --file .config --set-str LOCALVERSION -kcheck",
        "scripts/config --file .config --set-str SYSTEM_TRUSTED_KEYS ''",
        "scripts/config --file .config --set-str SYSTEM_REVOCATION_KEYS ''",
        f"{env} make {variables} olddefconfig",
        f"{env} make -s {variables} kernelrelease",
        # distcc's log for the build alone, whose jobs it counts; -j: 2 + 8 + 4 slots
        f"{env} DISTCC_LOG={work}/distcc.log make -j14 {variables} bzImage modules",
    ]
    assert any(
        "distcc preflight: a test compile through each host (helper1/8 helper2:3700/4,lzo)" in line
        and "refused unless every host answers" in line
        for line in lines
    ), done.stdout
    assert not work.exists()


def test_dry_run_with_ccache_puts_distcc_after_it(kernel):
    done = build(kernel, "--dry-run", "--distcc", "h/3", "--cc-wrapper", "ccache", "--distcc-degraded")
    assert done.returncode == 0, done.stderr
    make = done.stdout.splitlines()[-1]
    assert make.startswith("CCACHE_NOHASHDIR=true CCACHE_PREFIX=distcc DISTCC_HOSTS=h/3 ")
    assert make.endswith(f"make -j2 {VARIABLES} 'CC=ccache gcc' bzImage modules")
    assert "hosts that do not answer are left out (--distcc-degraded)" in done.stdout


# --- real daemons, the fake tree ------------------------------------------------------------------------


def test_a_build_through_a_real_daemon_records_hosts_compilers_and_jobs(kernel, daemons):
    daemon = daemons.start()
    host = daemon.spec(3)
    done = run_kcheck(*without_jobs(build_args(kernel, "--distcc", host)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert daemon.jobs() == dict.fromkeys(FAKE_OBJECTS, 1)  # each object compiled there, once
    ident = elf_facts(kernel.tree("fs/aio.o").read_bytes())
    assert ident is not None
    assert f"[distcc] {host}: answers with this machine's compiler ({ident})" in done.stdout

    meta = workdir_json(kernel, "metadata.json")
    assert first_problem(meta, "build-1") is None  # the distcc section is an addition to kcheck.build/1
    work = kernel.root / "work"
    assert meta["build"]["jobs"] == 3  # the host's slots
    assert meta["build"]["env"] == {
        "DISTCC_HOSTS": host,
        "DISTCC_NO_REWRITE_CROSS": "1",
        "DISTCC_DIR": f"{work}/distcc",
        "DISTCC_LOG": f"{work}/distcc.log",
    }
    assert meta["build"]["variables"][-1] == "CC=distcc gcc"
    assert meta["tools"]["distcc"].startswith("distcc 3")
    assert meta["distcc"] == {
        "given": host,
        "hosts": host,
        "compilers": {"localhost": str(ident), host: str(ident)},
        "left_out": {},
        "jobs": {host: 4},
        "moved": 0,
        "fell_back": 0,
        "log": f"{work}/distcc.log",
    }
    log = (work / "build.log").read_text()
    assert f"DISTCC_HOSTS={host} DISTCC_NO_REWRITE_CROSS=1 DISTCC_DIR={work}/distcc make" in log
    assert "distcc gcc -c -o fs/aio.o fs/aio.c" in log

    # reproducer.sh builds here without distcc; the distcc line is kept, commented out.
    script = (work / "reproducer.sh").read_text().splitlines()
    assert script[-1] == f"make -j3 {VARIABLES} bzImage modules"
    remote = f"DISTCC_HOSTS={host} DISTCC_NO_REWRITE_CROSS=1 make -j3 {VARIABLES} 'CC=distcc gcc'"
    assert script[-2] == f"# {remote} bzImage modules"
    assert f"make {VARIABLES} olddefconfig" in script
    assert not [line for line in script if "distcc" in line and not line.startswith("#")]

    # A rerun finds the build done; the hosts are checked again, the build's record stays.
    again = run_kcheck(*without_jobs(build_args(kernel, "--distcc", host)))
    assert again.returncode == 0, again.stderr
    assert "[build] done in a previous run" in again.stdout
    assert workdir_json(kernel, "metadata.json")["distcc"]["jobs"] == {host: 4}


def test_ccache_runs_first_and_hands_its_misses_to_distcc(kernel, daemons, tmp_path):
    daemon = daemons.start()
    host = daemon.spec()
    env = {"CCACHE_DIR": str(tmp_path / "ccache")}
    done = build(kernel, "--distcc", host, "--cc-wrapper", "ccache", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert set(daemon.jobs()) == FAKE_OBJECTS
    meta = workdir_json(kernel, "metadata.json")
    assert meta["build"]["variables"][-1] == "CC=ccache gcc"
    assert meta["build"]["env"]["CCACHE_PREFIX"] == "distcc"
    assert meta["distcc"]["jobs"] == {host: 4}
    stats = subprocess.run(
        ["ccache", "--print-stats"], capture_output=True, text=True, env={**os.environ, **env}
    )
    assert "cache_miss\t4" in stats.stdout or "direct_cache_miss\t4" in stats.stdout, stats.stdout


def test_a_dead_host_is_refused_before_any_work_naming_it(kernel, daemons):
    live = daemons.start()
    dead = f"127.0.0.1:{dead_port()}/2"
    done = build(kernel, "--distcc", f"{live.spec()} {dead}")
    assert_refused(
        kernel, done, f"--distcc: {dead} does not answer (", "Connection refused", "--distcc-degraded"
    )
    assert live.spec() not in done.stderr
    assert live.probes() == 1 and not live.jobs()  # its test compile, and no build


def test_degraded_builds_with_the_hosts_that_answer(kernel, daemons):
    live = daemons.start()
    dead = f"127.0.0.1:{dead_port()}/2"
    done = run_kcheck(
        *without_jobs(build_args(kernel, "--distcc", f"{dead} {live.spec()}", "--distcc-degraded"))
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (
        f"[distcc] warning: --distcc-degraded: building without {dead}: it does not answer (" in done.stdout
    )
    assert set(live.jobs()) == FAKE_OBJECTS
    meta = workdir_json(kernel, "metadata.json")
    assert meta["build"]["jobs"] == 4  # the slots given
    assert meta["distcc"]["hosts"] == live.spec() and list(meta["distcc"]["left_out"]) == [dead]
    assert meta["distcc"]["jobs"] == {live.spec(): 4}


def test_a_host_with_another_gcc_is_refused_naming_both(kernel, daemons):
    same = daemons.start("same")
    other = daemons.start("other", compilers=daemons.other_compiler())
    done = build(kernel, "--distcc", f"{same.spec()} {other.spec()}", "--distcc-degraded")
    assert_refused(kernel, done, f"--distcc: {other.spec()} compiles with {OTHER_GCC_IDENT} for x86-64, ")
    assert "this machine with GCC: (" in done.stderr and "install this machine's gcc there" in done.stderr
    assert "probe.c" in other.log_text()  # the daemon really compiled the test file


@requires_root  # a mount namespace for the daemon's own empty /usr/lib/distcc
def test_a_host_that_refuses_the_compiler_names_debians_whitelist(kernel, daemons):
    strict = daemons.start("strict", empty_whitelist=daemons.empty_directory())
    done = build(kernel, "--distcc", strict.spec())
    assert_refused(
        kernel,
        done,
        f"--distcc: {strict.spec()} takes the connection but runs no job: Debian's distccd runs only "
        "the compilers whitelisted in /usr/lib/distcc (gcc must be there: run update-distcc-symlinks on it)",
    )
    assert "not in /usr/lib/distcc" in strict.log_text()  # the daemon's own reason


# --- real daemons, Debian's 6.1 with tinyconfig ------------------------------------------------------


JOBS = 6  # three daemons of 2 slots each; the local build runs as many


@pytest.fixture(scope="module")
def local_build(tmp_path_factory) -> Built:
    """The same kernel built here alone (no distcc)."""
    root = tmp_path_factory.mktemp("local-tinyconfig")
    done = run_kcheck(*tinyconfig_args(root, "--jobs", str(JOBS)), timeout=3600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return built(root)


@pytest.mark.slow
def test_tinyconfig_through_daemons_one_killed_mid_build_is_byte_identical_to_a_local_build(
    local_build, daemons, tmp_path
):
    """Three daemons; one dies mid-build. The two that live compile their share, and their own
    logs count what kcheck's record does. distcc 3.4 sends the dead host's jobs, and those it
    could not take, to the others (it would compile them here, were there none): the build
    finishes in the same run, and the kernel is the local build's, byte for byte.

    One distributed build, not one clean and one with a kill: each tinyconfig build takes about
    3 minutes here, and the issue gives these tests 8 minutes of a cold CI run."""
    one, two, doomed = daemons.start("one"), daemons.start("two"), daemons.start("doomed")
    hosts = f"{one.spec()} {two.spec()} {doomed.spec()}"
    argv = [*kcheck_argv(), *tinyconfig_args(tmp_path, "--distcc", hosts)]
    env = {**os.environ, "NO_COLOR": "1"}
    running = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 3600
    while doomed.build_jobs() < 40 and running.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert running.poll() is None, "the build ended before the daemon was killed"
    doomed.kill()
    killed_after = doomed.build_jobs()
    stdout, stderr = running.communicate(timeout=3600)

    # What happened: distcc recovered by itself; no rerun was needed.
    assert running.returncode == 0, stdout[-3000:] + stderr[-3000:]
    result = built(tmp_path)
    meta, record = result.metadata, result.metadata["distcc"]
    assert meta["build"]["jobs"] == JOBS  # the hosts' slots, by default
    assert result.vmlinux == local_build.vmlinux  # byte for byte
    assert b"(gcc (Debian " in result.vmlinux  # the banner names gcc as the local build's does
    for living in (one, two):  # compiled a share; distcc's log here counts what theirs do
        assert living.build_jobs() > 50 and record["jobs"][living.spec()] == living.build_jobs()
    jobs = distcc.job_counts((tmp_path / "work/distcc.log").read_text())
    assert record["moved"] == jobs.moved >= 1  # the dead host's jobs, done elsewhere
    assert doomed.build_jobs() == killed_after  # nothing more after its death
    assert 0 < record["jobs"][doomed.spec()] <= killed_after  # results lost in flight are not counted
    assert record["left_out"] == {}
    print(
        f"tinyconfig build stage, -j{JOBS}: here alone {local_build.seconds:.1f} s, through three loopback "
        f"daemons {result.seconds:.1f} s; one killed after {killed_after} jobs, {record['moved']} moved "
        f"({record['fell_back']} of them compiled here); jobs {record['jobs']}"
    )

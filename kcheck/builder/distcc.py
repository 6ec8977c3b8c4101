"""`build-kernel --distcc HOSTS`: compile across machines with distcc.

The host list (DISTCC_HOSTS syntax) and the make jobs it allows; the preflight, a tiny real
compile through each host whose object names the compiler that host ran; the build's
environment; and how many jobs went where, from distcc's own log. Parsing and decisions are
pure; only `probe` runs commands.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kcheck.core.args import MAX_JOBS
from kcheck.errors import KcheckError

TCP_SLOTS = 4  # distcc's own default limit for a host with no /LIMIT
LOCALHOST_SLOTS = 2  # and for localhost
STATE_DIR = "distcc"  # DISTCC_DIR in the work dir: distcc's locks and host backoff stay with one build
CLIENT_LOG = "distcc.log"  # DISTCC_LOG in the work dir: a line per job naming where it ran
# kcheck's own places; a user replaying the build across machines keeps distcc's defaults.
PRIVATE_ENV = ("DISTCC_DIR", "DISTCC_LOG")
WHITELIST = "/usr/lib/distcc"
PROBE_SOURCE = "int kcheck_distcc_probe(int x) { return 42 * x; }\n"
PROBE_TIMEOUT = 30.0  # seconds for one host's test compile
COMPILER = "gcc"

_HOSTID = r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)"
_LIMIT = r"(?:/(?P<limit>\d+))?"
_OPTIONS = r"(?P<options>(?:,(?:lzo|cpp|auth(?:=[A-Za-z0-9._@/-]+)?))*)"
_PORT = r"(?::(?P<port>\d+))"
HOST_FORMS = {
    "localhost": re.compile(rf"localhost{_LIMIT}"),
    "ssh": re.compile(
        rf"(?P<user>[A-Za-z0-9._-]*)@(?P<host>{_HOSTID}){_LIMIT}(?::(?P<command>/[\w./-]+))?{_OPTIONS}"
    ),
    "tcp": re.compile(rf"(?P<host>{_HOSTID}){_PORT}?{_LIMIT}{_OPTIONS}"),
    "tcp-oldstyle": re.compile(rf"(?P<host>{_HOSTID}){_LIMIT}{_PORT}{_OPTIONS}"),
}
GLOBAL_OPTION = re.compile(r"--randomize|--localslots(?:_cpp)?=\d+")
HOST_SYNTAX = "HOST[:PORT][/SLOTS][,lzo], USER@HOST[/SLOTS] or localhost[/SLOTS], as in DISTCC_HOSTS"

# ELF e_machine numbers of the kernel's architectures, to name a host that compiles for another.
ELF_MACHINES = {3: "i386", 8: "mips", 20: "ppc", 21: "ppc64", 22: "s390", 40: "arm", 62: "x86-64"}
ELF_MACHINES |= {183: "aarch64", 243: "riscv", 258: "loongarch"}

# What distcc's client log says when a host could not be reached, or took the job and dropped it.
UNREACHABLE = ("connect to", "look up host", "timeout", "timed out", "Network is unreachable")
NO_ANSWER = ("server provided no answer", "unexpected eof")
# One distcc process is one job: where it was sent (again, after a host failed), and where it ended.
_SENT = re.compile(r"^distcc\[(\d+)\] exec on (\S+): ", re.MULTILINE)
_COMPLETED = re.compile(r"^distcc\[(\d+)\] compile \S+ on (\S+) completed ok$", re.MULTILINE)
_EXEC = re.compile(r"exec on \S+: (\S+)")
_ERROR = re.compile(r"ERROR: (.*)")


@dataclass(frozen=True)
class Host:
    """One host of --distcc, as written, and the jobs distcc sends it at most."""

    spec: str
    slots: int
    local: bool = False


@dataclass(frozen=True)
class HostList:
    """--distcc HOSTS parsed: the hosts, and distcc's global options (--randomize, --localslots)."""

    tokens: tuple[str, ...]
    hosts: tuple[Host, ...]

    @property
    def remote(self) -> tuple[Host, ...]:
        return tuple(host for host in self.hosts if not host.local)

    def jobs(self) -> int:
        """make -j: the slots of every host, localhost's once (it may be listed once only)."""
        return min(sum(host.slots for host in self.hosts), MAX_JOBS)

    def without(self, dropped: set[str]) -> str:
        """DISTCC_HOSTS with these hosts left out, the rest in the order given."""
        return " ".join(token for token in self.tokens if token not in dropped)


def parse_hosts(text: str) -> HostList:
    """--distcc HOSTS in DISTCC_HOSTS syntax; KcheckError naming a token distcc or kcheck cannot use."""
    tokens = tuple(text.split())
    hosts: list[Host] = []
    seen: dict[tuple[str, ...], str] = {}
    for token in tokens:
        if GLOBAL_OPTION.fullmatch(token):
            continue
        if token == "+zeroconf":
            raise KcheckError("--distcc +zeroconf: kcheck checks each host before the build; name them")
        form, match = next(
            ((form, m) for form, pattern in HOST_FORMS.items() if (m := pattern.fullmatch(token))),
            (None, None),
        )
        if match is None:
            raise KcheckError(f"--distcc {token!r}: not a distcc host; write {HOST_SYNTAX}")
        groups = match.groupdict()
        if ",cpp" in (groups.get("options") or ""):
            raise KcheckError(
                f"--distcc {token!r}: ,cpp is distcc-pump mode, which needs pump around make; drop ,cpp"
            )
        port = groups.get("port")
        if port is not None and not 0 < int(port) < 65536:
            raise KcheckError(f"--distcc {token!r}: port {port} is not 1 to 65535")
        limit = groups["limit"]
        if limit is not None and int(limit) < 1:
            raise KcheckError(f"--distcc {token!r}: /{limit} slots; give 1 or more")
        local = form == "localhost"
        if local:
            key: tuple[str, ...] = ("localhost",)
        elif form == "ssh":
            key = ("ssh", groups["user"], groups["host"])
        else:
            key = ("tcp", groups["host"], port or "3632")
        if key in seen:
            raise KcheckError(f"--distcc: {token} and {seen[key]} are the same host; list each host once")
        seen[key] = token
        default = LOCALHOST_SLOTS if local else TCP_SLOTS
        hosts.append(Host(token, int(limit) if limit is not None else default, local))
    if not hosts:
        raise KcheckError(f"--distcc {text!r} names no host; give e.g. --distcc 'helper1/8 helper2/8'")
    return HostList(tokens, tuple(hosts))


def build_env(hosts: str, ccache: bool, workdir: Path | None = None, log: bool = False) -> dict[str, str]:
    """distcc's environment for make. With ccache first, ccache hands its misses to distcc.
    `workdir`: distcc's state there; `log`: its log too (the build's make alone: its jobs are
    the ones counted).

    The cross-compiler rewrite is off: with it distcc runs `x86_64-linux-gnu-gcc --version`
    for make's `gcc --version`, and that name ends up in the kernel's banner, unlike a local
    build's. The preflight checks instead that each host's `gcc` compiles for this machine.
    (distcc 3.4 reads DISTCC_NO_REWRITE_CROSS; its manual misspells it DISTCC_NO_CROSS_REWRITE.)
    """
    env = {"CCACHE_PREFIX": "distcc"} if ccache else {}
    env |= {"DISTCC_HOSTS": hosts, "DISTCC_NO_REWRITE_CROSS": "1"}
    if workdir is not None:
        env["DISTCC_DIR"] = str(workdir / STATE_DIR)
        if log:
            env["DISTCC_LOG"] = str(workdir / CLIENT_LOG)
    return env


# --- the preflight ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Compiled:
    """What a test object says about the compiler that made it: its ident and its target."""

    ident: str
    machine: str

    def __str__(self) -> str:
        return f"{self.ident} for {self.machine}"


@dataclass(frozen=True)
class Answer:
    """One host's test compile: the compiler it ran, or why there is none."""

    host: str
    compiled: Compiled | None
    problem: str | None = None


def elf_facts(data: bytes) -> Compiled | None:
    """The .comment section (each compiler's `GCC: (...) VERSION`) and e_machine of an ELF object."""
    if data[:4] != b"\x7fELF" or data[4] not in (1, 2) or data[5] not in (1, 2):
        return None
    wide, order = data[4] == 2, "<" if data[5] == 1 else ">"
    try:
        (machine,) = struct.unpack_from(order + "H", data, 0x12)
        if wide:
            (table,) = struct.unpack_from(order + "Q", data, 0x28)
            entry, count, names_index = struct.unpack_from(order + "HHH", data, 0x3A)
        else:
            (table,) = struct.unpack_from(order + "I", data, 0x20)
            entry, count, names_index = struct.unpack_from(order + "HHH", data, 0x2E)

        def section(index: int) -> tuple[int, int, int]:
            base = table + index * entry
            (name,) = struct.unpack_from(order + "I", data, base)
            offset, size = struct.unpack_from(
                order + ("QQ" if wide else "II"), data, base + (0x18 if wide else 0x10)
            )
            return name, offset, size

        _, names, _ = section(names_index)
        idents: list[str] = []
        for index in range(count):
            name, offset, size = section(index)
            if data[names + name :].split(b"\0", 1)[0] == b".comment":
                for text in data[offset : offset + size].split(b"\0"):
                    if text and (ident := text.decode(errors="replace")) not in idents:
                        idents.append(ident)
    except struct.error:
        return None
    if not idents:
        return None
    return Compiled("; ".join(idents), ELF_MACHINES.get(machine, f"ELF machine {machine}"))


def probe_problem(log: str, stderr: str) -> str:
    """Why a host's test compile failed, from distcc's client log: unreachable, or it took the
    connection and ran no job (Debian's compiler whitelist, or --allow)."""
    text = log + stderr
    errors = _ERROR.findall(text)
    reason = errors[0].strip() if errors else (stderr.strip().splitlines() or ["no output"])[-1]
    if any(marker in text for marker in NO_ANSWER):
        asked = _EXEC.search(text)
        compiler = asked.group(1) if asked else COMPILER
        return (
            f"takes the connection but runs no job: Debian's distccd runs only the compilers "
            f"whitelisted in {WHITELIST} ({compiler} must be there: run update-distcc-symlinks on it), "
            "and serves only the clients its --allow admits"
        )
    if any(marker in text for marker in UNREACHABLE):
        return f"does not answer ({reason})"
    return f"fails the test compile ({reason})"


def probe(hosts: HostList, timeout: float = PROBE_TIMEOUT) -> tuple[Compiled, list[Answer]]:
    """This machine's compiler, and each remote host's: a test compile through each, at once.

    distcc preprocesses here, so the source cannot say which compiler ran; the object can: its
    .comment section is written by the compiler proper, on the host.
    """
    with tempfile.TemporaryDirectory(prefix="kcheck-distcc-") as name:
        scratch = Path(name)
        (scratch / "probe.c").write_text(PROBE_SOURCE)
        local = compile_here(scratch)
        remote = hosts.remote
        with ThreadPoolExecutor(max_workers=max(1, min(16, len(remote)))) as pool:
            answers = list(pool.map(lambda pair: probe_host(*pair, scratch, timeout), enumerate(remote)))
    return local, answers


def compile_here(scratch: Path) -> Compiled:
    argv = [COMPILER, "-c", "probe.c", "-o", "local.o"]
    try:
        done = subprocess.run(argv, cwd=scratch, capture_output=True, text=True, timeout=PROBE_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise KcheckError(f"--distcc: {COMPILER} cannot compile a test file here ({exc})") from None
    facts = elf_facts((scratch / "local.o").read_bytes()) if done.returncode == 0 else None
    if facts is None:
        why = done.stderr.strip()[-200:]
        raise KcheckError(f"--distcc: {COMPILER} cannot compile a test file here: {why}")
    return facts


def probe_host(index: int, host: Host, scratch: Path, timeout: float) -> Answer:
    """`distcc gcc -c probe.c` through this host alone, never compiled here instead."""
    state, log, obj = scratch / f"state-{index}", scratch / f"client-{index}.log", f"host-{index}.o"
    state.mkdir()
    env = {
        **os.environ,
        **build_env(host.spec, ccache=False),
        "DISTCC_DIR": str(state),
        "DISTCC_LOG": str(log),
        "DISTCC_FALLBACK": "0",
        "DISTCC_SKIP_LOCAL_RETRY": "1",
        "DISTCC_IO_TIMEOUT": str(int(timeout)),
    }
    argv = ["distcc", COMPILER, "-c", "probe.c", "-o", obj]
    try:
        done = subprocess.run(
            argv,
            cwd=scratch,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout + 5,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        return Answer(host.spec, None, f"does not answer (no reply in {timeout:g} s)")
    text = log.read_text(errors="replace") if log.exists() else ""
    if done.returncode != 0:
        return Answer(host.spec, None, probe_problem(text, done.stderr))
    if f"on {host.spec} completed ok" not in text:
        return Answer(host.spec, None, "compiled the test file here instead; see distcc's log")
    facts = elf_facts((scratch / obj).read_bytes())
    if facts is None:
        return Answer(host.spec, None, "sent back an object that names no compiler (no .comment)")
    return Answer(host.spec, facts)


# --- the decision ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Cluster:
    """The hosts a build uses, after the preflight: their compilers, and those left out and why."""

    given: str
    hosts: str  # DISTCC_HOSTS of the build
    compilers: dict[str, str] = field(default_factory=dict)  # host -> compiler; localhost is here
    left_out: dict[str, str] = field(default_factory=dict)  # host -> why (--distcc-degraded)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cluster:
        return cls(data["given"], data["hosts"], dict(data["compilers"]), dict(data["left_out"]))


def decide(hosts: HostList, local: Compiled, answers: list[Answer], degraded: bool, cpus: int) -> Cluster:
    """Refuse a host whose compiler differs from this machine's (always), and hosts that did not
    answer (unless degraded: then the build goes on without them, or here alone)."""
    for answer in answers:
        if answer.compiled is not None and answer.compiled != local:
            raise KcheckError(
                f"--distcc: {answer.host} compiles with {answer.compiled}, this machine with {local}; "
                "a distributed kernel is the same as a local one only with the same gcc everywhere: "
                "install this machine's gcc there, or leave the host out of --distcc"
            )
    failed = {answer.host: answer.problem or "" for answer in answers if answer.compiled is None}
    if failed and not degraded:
        shown = "; ".join(f"{host} {problem}" for host, problem in failed.items())
        raise KcheckError(
            f"--distcc: {shown}; start distccd there (and let it --allow this machine), leave the "
            "host out, or pass --distcc-degraded to build with the hosts that answer"
        )
    answered = [host for host in hosts.hosts if host.spec not in failed]
    build_hosts = hosts.without(set(failed)) if answered else f"localhost/{cpus}"
    compilers = {"localhost": str(local)} | {a.host: str(a.compiled) for a in answers if a.compiled}
    return Cluster(" ".join(hosts.tokens), build_hosts, compilers, failed)


def check_hosts(text: str, degraded: bool) -> Cluster:
    """The preflight of --distcc: a test compile through every host, then the decision."""
    hosts = parse_hosts(text)
    local, answers = probe(hosts)
    return decide(hosts, local, answers, degraded, len(os.sched_getaffinity(0)))


def announce(cluster: Cluster) -> list[str]:
    """What the preflight found, for the run's first lines."""
    helpers = [host for host in cluster.compilers if host != "localhost"]
    lines = []
    if helpers:
        lines.append(
            f"[distcc] {', '.join(helpers)}: answer{'s' if len(helpers) == 1 else ''} with this machine's "
            f"compiler ({cluster.compilers['localhost']})"
        )
    for host, why in cluster.left_out.items():
        lines.append(f"[distcc] warning: --distcc-degraded: building without {host}: it {why}")
    if cluster.left_out and not helpers:
        lines.append(f"[distcc] warning: no host answers: compiling here alone ({cluster.hosts})")
    return lines


# --- the build's own distcc state and log ------------------------------------------------------


def fresh_state(workdir: Path) -> None:
    """An empty DISTCC_DIR: the preflight just found the hosts answering, so no earlier backoff stands."""
    state = workdir / STATE_DIR
    shutil.rmtree(state, ignore_errors=True)
    state.mkdir(parents=True)


def start_log(workdir: Path, resuming: bool) -> None:
    """A build with new inputs starts a new log; a resumed one adds its jobs to the last attempt's."""
    if not resuming:
        (workdir / CLIENT_LOG).unlink(missing_ok=True)


@dataclass(frozen=True)
class Jobs:
    """Where the jobs of a build ran, by distcc's client log."""

    per_host: dict[str, int]  # host -> jobs it completed; localhost: run here
    moved: int  # jobs a host failed (died, refused) that another host then compiled
    fell_back: int  # and those that distcc compiled here instead


def job_counts(log: str) -> Jobs:
    """Each distcc process is a job: the hosts it was sent to in turn, and the one that completed
    it. distcc sends a job a host failed to another host, or compiles it here."""
    sent: dict[str, list[str]] = {}
    for pid, host in _SENT.findall(log):
        sent.setdefault(pid, []).append(host)
    done = dict(_COMPLETED.findall(log))
    moved = [pid for pid, hosts in sent.items() if len(set(hosts)) > 1 and pid in done]
    return Jobs(
        dict(sorted(Counter(done.values()).items())),
        len(moved),
        sum(1 for pid in moved if done[pid] == "localhost"),
    )


def record(cluster: Cluster, workdir: Path) -> dict[str, Any]:
    """metadata.json's distcc section: the hosts, their compilers, and the jobs each ran."""
    path = workdir / CLIENT_LOG
    try:
        text = path.read_text(errors="replace")
    except OSError:
        text = ""
    jobs = job_counts(text)
    return {
        **cluster.to_json(),
        "jobs": jobs.per_host,
        "moved": jobs.moved,
        "fell_back": jobs.fell_back,
        "log": str(path),
    }

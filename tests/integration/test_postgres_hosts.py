"""Beyond one machine: agents on several hosts share one PostgreSQL store.

Hosts for real (``test_hosts_*``)
    The test makes three network namespaces on this machine (``ip netns``). Each is joined to the
    root namespace by its own veth pair in a private 10.77.x.0/24 subnet; there is no routing
    between subnets (nothing is forwarded), so a namespace reaches only the root-side end of its
    own link and no packet leaves this machine. A PostgreSQL server owned by the test (``initdb``
    in a temporary directory, run as the ``postgres`` OS user) listens on the three root-side
    addresses only. Workers run in the namespaces of host A and host B, each in its own UTS
    namespace too (``unshare --uts`` + ``hostname``), so ``socket.gethostname()`` -- the HOST
    column of ``podium agents`` -- is really different per host. The client (``podium task add``,
    ``podium agents``) runs in the third namespace, host C. The test's own checks read the store
    from the root namespace. A host is cut off with ``ip link set <veth> down`` inside its
    namespace; its TCP connections are then neither closed nor answered, as in a real partition.

    The test server sets ``tcp_keepalives_idle/interval/count`` to a few seconds. Without that
    (the PostgreSQL default defers to the kernel: 2 hours), a host cut off in the middle of one
    of its short transactions keeps that transaction's row locks for hours, and the other hosts'
    lease recovery waits on them. That is a deployment setting for the server (see the report),
    not something these tests should depend on luck to avoid.

Loopback (``test_loopback_*``, always runs when PostgreSQL does)
    The same scenario with separate processes on 127.0.0.1 (the machine's server, a fresh
    schema): the two "hosts" are two groups of workers with the same hostname, told apart by
    agent name, and a host is lost by ``kill -9`` of its workers.

Connection drop (``test_restart_*``)
    The machine's server on 127.0.0.1:5432 is restarted (and stopped, then started) under
    running workers, with ``pg_ctlcluster``; it is always started again afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from helpers import all_events, wait_for
from netlab import Links, OwnServer, sh, unavailable
from podium.models import AgentState, TaskSpec, TaskState
from podium.store import open_store

PG_SERVER = os.environ.get("PODIUM_TEST_PG", "postgresql://127.0.0.1:5432/test")


# -- helpers ------------------------------------------------------------------------------------





def kinds_by_task(store, task_ids) -> dict[str, list[tuple[str, str | None]]]:
    """task id -> [(event kind, agent id), ...] in order."""
    out: dict[str, list[tuple[str, str | None]]] = {t: [] for t in task_ids}
    for ev in all_events(store):
        if ev.task_id in out:
            out[ev.task_id].append((ev.kind, ev.agent_id))
    return out


@dataclass
class Host:
    """Where workers (or the client) run: a network namespace, or this machine as it is."""

    label: str                   # "a", "b", "c"
    hostname: str                # what socket.gethostname() says there
    netns: str | None = None     # None: the root namespace, no hostname of its own
    veth: str | None = None      # the namespace's end of its link
    url: str | None = None       # the store URL as seen from this host (set per test)

    def wrap(self, argv: list[str]) -> list[str]:
        if self.netns is None:
            return argv
        return ["ip", "netns", "exec", self.netns, "unshare", "--uts",
                "sh", "-c", 'hostname "$0" && exec "$@"', self.hostname, *argv]


class PgWorkers:
    """Real ``podium agent run`` processes, on any host, against any store URL."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self.procs: dict[str, subprocess.Popen] = {}
        self.hosts: dict[str, Host] = {}

    def start(self, name: str, host: Host, url: str | None = None, lease: float = 10.0,
              heartbeat: float | None = None, backend: str = "shell") -> subprocess.Popen:
        argv = [sys.executable, "-m", "podium", "--store", url or host.url, "agent", "run",
                "--name", name, "--backend", backend, "--lease", str(lease)]
        if heartbeat is not None:
            argv += ["--heartbeat", str(heartbeat)]
        log = open(self.tmp_path / f"{name}.log", "ab")
        proc = subprocess.Popen(host.wrap(argv), stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=self.tmp_path)
        log.close()
        self.procs[name] = proc
        self.hosts[name] = host
        return proc

    def wait_registered(self, store, names, timeout: float = 30) -> None:
        def registered(name: str) -> bool:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise AssertionError(f"worker {name} exited {proc.returncode}: {self.log(name)}")
            try:
                a = store.get_agent(name)
            except Exception:
                return False
            # ``ip netns exec`` and ``unshare`` (without --fork) and ``sh -c exec`` all exec:
            # the pid we started is the worker's own.
            return a.pid == proc.pid and a.state.live
        for name in names:
            wait_for(lambda name=name: registered(name), timeout,
                     what=f"worker {name} to register")

    def log(self, name: str) -> str:
        p = self.tmp_path / f"{name}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def kill9(self, name: str) -> None:
        proc = self.procs[name]
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def stop_all(self, timeout: float = 15) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture
def pg_workers(tmp_path):
    w = PgWorkers(tmp_path)
    yield w
    w.stop_all()


def client_cli(host: Host, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """The real ``podium`` command, run on ``host`` against its store URL."""
    argv = host.wrap([sys.executable, "-m", "podium", "--store", host.url, *args])
    res = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"podium {' '.join(args)} on host {host.label}: {res.stderr}"
    return res


def running_agents(store) -> dict[str, str]:
    """task id -> agent id for every running task."""
    return {t.id: t.agent_id for t in store.list_tasks(state=TaskState.RUNNING)}


def store_spec(prompt: str) -> TaskSpec:
    return TaskSpec(prompt=prompt)


def all_finished(store, ids) -> bool:
    return all(store.task_state(t).finished for t in ids)


# -- the scenarios (shared by the namespace and the loopback variants) --------------------------

def scenario_spread(store, workers: PgWorkers, hosts: list[Host], client: Host, tmp_path: Path):
    """Two workers per host; eight tasks are spread over both hosts, each done exactly once."""
    names = [f"{h.label}{i}" for h in hosts for i in (1, 2)]
    for name in names:
        workers.start(name, next(h for h in hosts if h.label == name[0]), lease=10)
    workers.wait_registered(store, names)

    # The client sees every agent, each with the hostname of the host it runs on.
    shown = {a["id"]: a for a in json.loads(client_cli(client, "agents", "--json").stdout)}
    assert set(shown) == set(names)
    for name in names:
        assert shown[name]["host"] == workers.hosts[name].hostname, shown[name]
        assert shown[name]["pid"] == workers.procs[name].pid

    # Each task waits for a gate file, so a worker holds its task until the gate opens: all
    # four workers (two per host) must take one of the first four tasks.
    gate = tmp_path / "gate"
    prompt = (f"while [ ! -e {shlex.quote(str(gate))} ]; do sleep 0.05; done; "
              'hostname; echo "$PODIUM_AGENT_ID"')
    ids = [client_cli(client, "task", "add", prompt).stdout.strip() for _ in range(8)]
    assert len(set(ids)) == 8
    held = wait_for(lambda: (r := running_agents(store)) and len(set(r.values())) == 4 and r,
                    20, what="every worker on both hosts to hold a task")
    assert set(held.values()) == set(names)
    gate.touch()
    wait_for(lambda: all_finished(store, ids), 30, what="all eight tasks to finish")

    per_host: dict[str, int] = {}
    events = kinds_by_task(store, ids)
    for tid in ids:
        t = store.get_task(tid)
        assert t.state is TaskState.COMPLETED, (tid, t.state, t.error)
        assert t.attempts == 1
        ran_on, ran_by = t.output.decode().split()
        assert ran_by == t.agent_id
        # The task really ran on the host its agent is registered from.
        assert ran_on == workers.hosts[t.agent_id].hostname
        per_host[ran_on] = per_host.get(ran_on, 0) + 1
        kinds = [k for k, _ in events[tid]]
        assert kinds.count("task.completed") == 1, events[tid]
        assert kinds.count("task.claimed") == 1, events[tid]
        assert "task.requeued" not in kinds and "task.stale_result" not in kinds, events[tid]
    assert sum(per_host.values()) == 8
    if len({h.hostname for h in hosts}) == len(hosts):
        assert set(per_host) == {h.hostname for h in hosts}
        assert all(n >= 2 for n in per_host.values()), per_host
    # Agents' done counters agree with the tasks.
    done = {a.id: a.tasks_done for a in store.list_agents()}
    assert sum(done.values()) == 8 and all(done[n] >= 1 for n in names), done
    return per_host


def scenario_lose_host(store, workers: PgWorkers, hosts: list[Host], client: Host,
                       tmp_path: Path, lose, bring_back=None) -> None:
    """One worker per host, lease 2 s; the host running the task is lost mid-task: the task is
    requeued to the other host after the lease and completes exactly once there."""
    names = [f"{h.label}1" for h in hosts]
    for name, h in zip(names, hosts):
        workers.start(name, h, lease=2)
    workers.wait_registered(store, names)

    tid = client_cli(client, "task", "add", "--max-attempts", "3",
                     'sleep 3; echo "done on $(hostname) by $PODIUM_AGENT_ID"').stdout.strip()
    owner = wait_for(lambda: running_agents(store).get(tid), 15, what="the task to be claimed")
    lost_name = owner
    kept_name = next(n for n in names if n != owner)
    lost_host, kept_host = workers.hosts[lost_name], workers.hosts[kept_name]
    time.sleep(0.5)  # well into the task (its 3 s sleep has started)
    lose(lost_name, lost_host)
    cut_at = time.monotonic()

    t = wait_for(lambda: (x := store.get_task(tid)).state.finished and x, 40,
                 what="the lost host's task to complete elsewhere")
    took = time.monotonic() - cut_at
    assert t.state is TaskState.COMPLETED, (t.state, t.error)
    assert t.agent_id == kept_name
    assert t.attempts == 2
    assert t.output == f"done on {kept_host.hostname} by {kept_name}\n".encode()
    # lease (2 s) + the kept worker's 3 s run, plus detection: not a long time-out.
    assert took < 25, took

    ev = kinds_by_task(store, [tid])[tid]
    assert [a for k, a in ev if k == "task.claimed"] == [lost_name, kept_name], ev
    requeues = [e for e in all_events(store, tid) if e.kind == "task.requeued"]
    assert len(requeues) == 1 and "lease expired" in requeues[0].data["reason"], requeues
    assert [a for k, a in ev if k == "task.completed"] == [kept_name], ev
    assert not any(k in ("task.failed", "task.cancelled") for k, _ in ev), ev
    lost_agent = store.get_agent(lost_name)
    assert any(e.kind == "agent.dead" and e.agent_id == lost_name for e in all_events(store)), \
        "the lost host's agent was never declared dead"

    if bring_back is None:
        assert lost_agent.state is AgentState.DEAD
        return

    # The host comes back: its worker finishes the run it had and tries to record the result,
    # which is refused as stale; the one recorded result stays the other host's.
    bring_back(lost_name, lost_host)
    wait_for(lambda: any(e.kind == "task.stale_result" and e.agent_id == lost_name
                         for e in all_events(store, tid)), 60,
             what="the returning host's late result to be refused")
    wait_for(lambda: store.get_agent(lost_name).state in (AgentState.IDLE,), 30,
             what="the returning host's agent to be live and idle again")
    t2 = store.get_task(tid)
    assert (t2.state, t2.agent_id, t2.attempts, t2.output) == \
        (TaskState.COMPLETED, kept_name, 2, t.output)
    ev = kinds_by_task(store, [tid])[tid]
    assert [k for k, _ in ev].count("task.completed") == 1, ev
    assert workers.procs[lost_name].poll() is None, workers.log(lost_name)

    # And it takes work again: with two gated tasks, both hosts hold one.
    gate = tmp_path / "gate2"
    prompt = f"while [ ! -e {shlex.quote(str(gate))} ]; do sleep 0.05; done; hostname"
    ids = [client_cli(client, "task", "add", prompt).stdout.strip() for _ in range(2)]
    held = wait_for(lambda: (r := running_agents(store)) and len(set(r.values())) == 2 and r, 20,
                    what="both hosts to hold a task after the link came back")
    assert set(held.values()) == set(names)
    gate.touch()
    wait_for(lambda: all_finished(store, ids), 20, what="the two tasks to finish")
    outputs = {store.get_task(i).output.decode().strip() for i in ids}
    assert outputs == {lost_host.hostname, kept_host.hostname}


# -- hosts for real: network namespaces ---------------------------------------------------------

class NetLab:
    """Three namespaces linked to the root namespace, and a PostgreSQL server on the links."""

    def __init__(self):
        self.links = Links(77, "pdm")
        self.server = OwnServer("podium-pg-hosts-")
        self.hosts: list[Host] = []
        self.server_ips: dict[str, str] = {}   # root-side end of each host's link
        self.ns_ips: dict[str, str] = {}       # the host's own end
        self.port = 0
        self.admin_url = ""

    def up(self) -> None:
        self.links.add("abc")
        self.hosts = [Host(label, f"podium-host-{label}", ns, self.links.veth[label])
                      for label, ns in self.links.netns.items()]
        self.server_ips, self.ns_ips = self.links.root_ip, self.links.ns_ip
        # The test's own server, listening only on the root-side ends of the three links. A
        # host that vanishes with an open transaction is detected in ~5 s, its transaction
        # rolled back and its row locks freed (the default: 2 hours).
        self.server.start(list(self.server_ips.values()),
                          "tcp_keepalives_idle = 2\ntcp_keepalives_interval = 1\n"
                          "tcp_keepalives_count = 3\n")
        self.port = self.server.port
        self.admin_url = f"postgresql://podium@{self.server_ips['c']}:{self.port}/postgres"

    def database(self) -> str:
        """A fresh database; sets each host's URL to it (through that host's own link)."""
        import psycopg

        name = "podium_" + secrets.token_hex(4)
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        for h in self.hosts:
            h.url = f"postgresql://podium@{self.server_ips[h.label]}:{self.port}/{name}"
        return name

    def link(self, host: Host, up: bool) -> None:
        sh("ip", "netns", "exec", host.netns, "ip", "link", "set", host.veth,
           "up" if up else "down")

    def down(self) -> None:
        errors = self.links.down()
        self.server.stop()
        assert not errors, errors


@pytest.fixture(scope="module")
def lab():
    why = unavailable()
    if why:
        pytest.skip(f"network namespaces are not available here ({why}); "
                    "the loopback variant of the same scenario runs instead")
    net = NetLab()
    try:
        net.up()
        yield net
    finally:
        net.down()


def test_hosts_share_work_each_task_done_once(lab, pg_workers, tmp_path):
    lab.database()
    a, b, c = lab.hosts
    store = open_store(c.url)  # from the root namespace, over host C's link address
    try:
        per_host = scenario_spread(store, pg_workers, [a, b], c, tmp_path)
        assert set(per_host) == {"podium-host-a", "podium-host-b"}
        # Each namespace reaches the server only through its own link.
        r = subprocess.run(a.wrap([sys.executable, "-c",
                                   "import socket; socket.create_connection("
                                   f"({lab.server_ips['b']!r}, {lab.port}), timeout=2)"]),
                           capture_output=True, text=True)
        assert r.returncode != 0 and ("unreachable" in r.stderr or "timed out" in r.stderr), \
            r.stderr
    finally:
        store.close()


def test_hosts_cut_link_requeues_to_the_other_host(lab, pg_workers, tmp_path):
    lab.database()
    a, b, c = lab.hosts

    def cut(name, host):
        lab.link(host, up=False)
        # The host is really off the network now (no route to the server).
        r = subprocess.run(host.wrap([sys.executable, "-c",
                                      "import socket; socket.create_connection("
                                      f"({lab.server_ips[host.label]!r}, {lab.port}), timeout=2)"]),
                           capture_output=True, text=True)
        assert r.returncode != 0, "the link is down but the server is still reachable"

    def restore(name, host):
        lab.link(host, up=True)

    store = open_store(c.url)
    try:
        scenario_lose_host(store, pg_workers, [a, b], c, tmp_path, cut, restore)
        # After the link came back, both hosts listen for wake-ups again, each from its own
        # namespace address.
        import psycopg
        channel = store.channel_wake

        def listening_hosts():
            with psycopg.connect(lab.admin_url, autocommit=True, connect_timeout=5) as conn:
                rows = conn.execute("SELECT host(client_addr) FROM pg_stat_activity "
                                    "WHERE query = %s", (f"LISTEN {channel}",)).fetchall()
            return sorted(r[0] for r in rows)
        want = sorted(lab.ns_ips[h.label] for h in (a, b))
        wait_for(lambda: listening_hosts() == want, 20, what="both hosts to listen again")
    finally:
        store.close()
        try:
            for h in (a, b):
                lab.link(h, up=True)
        except RuntimeError:
            pass


# -- the same on loopback (always) --------------------------------------------------------------

@pytest.fixture
def loopback_hosts(pg_url):
    name = socket.gethostname()
    return [Host(label, name, url=pg_url) for label in "abc"]


def test_loopback_groups_share_work_each_task_done_once(loopback_hosts, pg_workers, tmp_path):
    a, b, c = loopback_hosts
    store = open_store(c.url)
    try:
        per_host = scenario_spread(store, pg_workers, [a, b], c, tmp_path)
        # Same hostname for both "hosts" here: they are told apart by agent name.
        assert per_host == {socket.gethostname(): 8}
        by_group: dict[str, int] = {}
        for t in store.list_tasks(state=TaskState.COMPLETED):
            by_group[t.agent_id[0]] = by_group.get(t.agent_id[0], 0) + 1
        assert set(by_group) == {"a", "b"} and min(by_group.values()) >= 2, by_group
    finally:
        store.close()


def test_loopback_killed_host_task_requeued_to_the_other(loopback_hosts, pg_workers, tmp_path):
    a, b, c = loopback_hosts

    def kill_host(name, host):
        for n in list(pg_workers.procs):
            if pg_workers.hosts[n] is host:
                pg_workers.kill9(n)

    store = open_store(c.url)
    try:
        scenario_lose_host(store, pg_workers, [a, b], c, tmp_path, kill_host)
    finally:
        store.close()


# -- connection drop: the machine's server restarts under the workers ---------------------------

def _local_cluster() -> tuple[str, str] | None:
    """(version, name) of the pg_ctlcluster cluster serving PG_SERVER, if it is local."""
    parts = urlsplit(PG_SERVER)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1") or shutil.which("pg_lsclusters") \
            is None or os.geteuid() != 0:
        return None
    port = parts.port or 5432
    for line in sh("pg_lsclusters", "-h").splitlines():
        f = line.split()
        if len(f) >= 3 and f[2] == str(port):
            return f[0], f[1]
    return None


def _pg_ctlcluster(action: str) -> None:
    version, name = _local_cluster()
    sh("pg_ctlcluster", "--skip-systemctl-redirect", version, name, action)


def _local_pg_up() -> bool:
    import psycopg
    try:
        with psycopg.connect(PG_SERVER, connect_timeout=2) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def _ensure_local_pg_up() -> None:
    if not _local_pg_up():
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", *_local_cluster(), "start"],
                       capture_output=True, timeout=60)
    wait_for(_local_pg_up, 60, 0.2, what="the local PostgreSQL server to be up again")


@pytest.fixture
def restartable_pg_url():
    """Like conftest's ``pg_url`` (a fresh schema on the local server), but it survives the
    server restarting under it: the admin connection is opened afresh to drop the schema."""
    try:
        import psycopg
    except ImportError:
        pytest.skip("psycopg is not installed")
    if _local_cluster() is None:
        pytest.skip(f"{PG_SERVER} is not a local pg_ctlcluster server this test may restart "
                    "(needs root and pg_lsclusters)")
    if not _local_pg_up():
        pytest.skip(f"no PostgreSQL at {PG_SERVER}")
    schema = "podium_t_" + secrets.token_hex(6)
    with psycopg.connect(PG_SERVER, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_SERVER else "?"
    try:
        yield f"{PG_SERVER}{sep}options=-csearch_path%3D{schema}"
    finally:
        _ensure_local_pg_up()
        with psycopg.connect(PG_SERVER, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


def _listeners(channel: str) -> list[int]:
    """Backend pids of the connections LISTENing on ``channel`` (the workers' wake-ups)."""
    import psycopg
    try:
        with psycopg.connect(PG_SERVER, autocommit=True, connect_timeout=2) as conn:
            rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE query = %s",
                                (f"LISTEN {channel}",)).fetchall()
        return sorted(r[0] for r in rows)
    except psycopg.Error:
        return []


def test_restart_idle_workers_reconnect_and_take_new_tasks(restartable_pg_url, pg_workers):
    url = restartable_pg_url
    local = Host("local", socket.gethostname(), url=url)
    store = open_store(url)
    try:
        # A 20 s heartbeat: a new task is picked up within seconds only through a wake-up.
        for name in ("w1", "w2"):
            pg_workers.start(name, local, lease=60, heartbeat=20)
        pg_workers.wait_registered(store, ["w1", "w2"])
        channel = store.channel_wake
        before = wait_for(lambda: len(pids := _listeners(channel)) == 2 and pids, 15,
                          what="both workers to listen for wake-ups")
        try:
            _pg_ctlcluster("restart")
        finally:
            _ensure_local_pg_up()
        # Both workers reconnect (new server backends) on their own.
        after = wait_for(lambda: len(pids := _listeners(channel)) == 2 and pids, 30,
                         what="both workers to listen again after the restart")
        assert not set(before) & set(after)

        ids = [t.id for t in store.add_tasks(
            [store_spec(f"echo task-{i}") for i in range(6)])]
        wait_for(lambda: all_finished(store, ids), 8,
                 what="the workers to take the new tasks (woken, well before a heartbeat)")
        events = kinds_by_task(store, ids)
        for i, tid in enumerate(ids):
            t = store.get_task(tid)
            assert t.state is TaskState.COMPLETED and t.output == f"task-{i}\n".encode(), t
            assert [k for k, _ in events[tid]].count("task.completed") == 1, events[tid]
            assert t.attempts == 1
        # The same two processes did it: they survived the restart rather than being replaced.
        for name in ("w1", "w2"):
            agent = store.get_agent(name)
            assert pg_workers.procs[name].poll() is None, pg_workers.log(name)
            assert agent.pid == pg_workers.procs[name].pid and agent.state is AgentState.IDLE
        assert {store.get_task(t).agent_id for t in ids} <= {"w1", "w2"}
    finally:
        store.close()


def test_restart_and_outage_while_a_task_runs_record_one_result(restartable_pg_url, pg_workers,
                                                                tmp_path):
    url = restartable_pg_url
    local = Host("local", socket.gethostname(), url=url)
    store = open_store(url)
    try:
        # Lease 60 s: the outages below are shorter, so the run is never handed to anyone else
        # and each task must run exactly once.
        pg_workers.start("w1", local, lease=60)
        pg_workers.wait_registered(store, ["w1"])

        # 1. The server restarts while the task runs.
        t1 = store.add_tasks([store_spec("sleep 3; echo done")])[0].id
        wait_for(lambda: running_agents(store).get(t1) == "w1", 15, what="w1 to claim task 1")
        try:
            _pg_ctlcluster("restart")
        finally:
            _ensure_local_pg_up()
        wait_for(lambda: store.task_state(t1).finished, 40, what="task 1 to finish")

        # 2. The server is down when the task ends, and stays down until the worker's calls
        #    fail outright (each waits up to 10 s for a connection): the worker then backs off
        #    and retries with the finished task's result held in memory.
        marker = tmp_path / "task2-finished"
        t2 = store.add_tasks([store_spec(
            f"sleep 2; echo done; touch {shlex.quote(str(marker))}")])[0].id
        wait_for(lambda: running_agents(store).get(t2) == "w1", 15, what="w1 to claim task 2")
        try:
            _pg_ctlcluster("stop")
            wait_for(marker.exists, 20, what="task 2's process to end while the server is down")
            ended = marker.stat().st_mtime
            # "retrying in": the main loop's back-off, reached only once task 2 has ended (while
            # a task runs, failures are logged as "still running"): the result is pending.
            wait_for(lambda: "; retrying in" in pg_workers.log("w1"), 45, 0.2,
                     what="the worker to back off with task 2's result pending")
            assert not _local_pg_up()
        finally:
            down_until = time.time()  # not up before its start is asked for
            _ensure_local_pg_up()
        wait_for(lambda: store.task_state(t2).finished, 60, what="task 2's result to be recorded")

        events = kinds_by_task(store, [t1, t2])
        for tid in (t1, t2):
            t = store.get_task(tid)
            assert t.state is TaskState.COMPLETED, (tid, t.state, t.error)
            assert t.output == b"done\n"
            assert t.attempts == 1, "ran again: the result held across the outage was lost"
            kinds = [k for k, _ in events[tid]]
            assert kinds.count("task.claimed") == 1 and kinds.count("task.completed") == 1, kinds
            assert "task.requeued" not in kinds and "task.stale_result" not in kinds, kinds
        # Task 2's run ended while the server was down (seen down after it ended), so its
        # result, recorded now, was recorded once the server was back. (Its completed_at is the
        # worker's clock when the recording call began: a retry that started while the server
        # was still down and waited for its connection stamps a time before down_until.)
        t2_done = store.get_task(t2)
        assert ended < down_until and ended <= t2_done.completed_at, \
            (ended, down_until, t2_done.completed_at)
        assert pg_workers.procs["w1"].poll() is None, pg_workers.log("w1")
        agent = store.get_agent("w1")
        assert agent.pid == pg_workers.procs["w1"].pid and agent.tasks_done == 2
        assert agent.state is AgentState.IDLE
    finally:
        store.close()

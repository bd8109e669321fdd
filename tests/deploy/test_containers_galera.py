"""docker-compose.galera.yml, run for real: three MariaDB Galera nodes.

The app reaches the nodes through galera-proxy (HAProxy), which routes to
galera-1 while it is synced; the rows are read back with the mariadb client
inside the other nodes. A node killed while posts keep coming in catches up
with every one of them once started again; galera-1, the node that started
the cluster, joins the others when it is restarted alone; and galera-1
killed under load costs no request: the proxy moves to galera-2.
"""

import subprocess
import time

import pytest
import requests

from ..support.containers import GALERA, PASSWORD, Stack
from ..support.load import Stats, load_in_background, report
from ..support.settings import ROOT

pytestmark = pytest.mark.containers

NODES = ("galera-1", "galera-2", "galera-3")


def container(stack, node):
    """The id of ``node``'s container, running or not (without compose: fast)."""
    found = stack.ps(
        "--all", "--quiet", "--filter", f"label=com.docker.compose.service={node}"
    ).stdout.split()
    assert len(found) == 1, found
    return found[0]


def sql(stack, node, statements, sync=True):
    """Rows (tuples of strings) of the last statement, run as root in ``node``.

    With ``sync``, the read first waits until the node has applied every
    commit the cluster acknowledged (wsrep_sync_wait), so a row the app wrote
    through another node a moment ago is there if it is anywhere.
    """
    if sync:
        statements = "SET SESSION wsrep_sync_wait = 1; " + statements
    result = stack.docker(
        "exec",
        container(stack, node),
        "sh",
        "-c",
        'MYSQL_PWD="$MARIADB_ROOT_PASSWORD" '
        'exec mariadb -uroot --database="$MARIADB_DATABASE" --batch '
        '--skip-column-names -e "$1"',
        "sql",
        statements,
    )
    return [tuple(line.split("\t")) for line in result.stdout.splitlines()]


def status(stack, node, name):
    [(_, value)] = sql(stack, node, f"SHOW GLOBAL STATUS LIKE '{name}'", sync=False)
    return value


def wait_synced(stack, node, timeout=240):
    """Until ``node`` is healthy and a synced member; seconds it took."""
    began = time.monotonic()
    node_container = container(stack, node)
    while time.monotonic() - began < timeout:
        if stack.health(node_container) == "healthy":
            try:
                if status(stack, node, "wsrep_local_state_comment") == "Synced":
                    return time.monotonic() - began
            except AssertionError:
                pass  # not answering yet
        time.sleep(0.5)
    logs = stack.docker("logs", "--tail", "40", node_container, check=False)
    raise AssertionError(f"{node} not synced in {timeout} s:\n{logs.stderr}")


def healthy_nodes(stack):
    """The nodes whose containers report healthy now."""
    lines = stack.ps(
        "--format", '{{.Label "com.docker.compose.service"}} {{.Status}}'
    ).stdout.splitlines()
    return {line.split()[0] for line in lines if "(healthy)" in line} & set(NODES)


def up_watching_nodes(stack):
    """``up --detach``; {node: seconds until it was first seen healthy}.

    compose waits for galera-1 before it creates the others, and for all
    three before the app: each node's time is watched meanwhile.
    """
    log = stack.env_file.with_suffix(".up.log")
    began = time.monotonic()
    with log.open("w") as output:
        up = subprocess.Popen(
            [*stack.command(), "up", "--detach"],
            env=stack.engine,
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    healthy_after = {}
    try:
        while up.poll() is None and time.monotonic() - began < 900:
            for node in healthy_nodes(stack):
                healthy_after.setdefault(node, time.monotonic() - began)
            time.sleep(0.5)
    finally:
        if up.poll() is None:
            up.kill()
        up.wait()
    assert up.returncode == 0, log.read_text()[-3000:] + why_not_healthy(
        stack, healthy_after
    )
    for node in healthy_nodes(stack):  # any that got healthy since the last look
        healthy_after.setdefault(node, time.monotonic() - began)
    return healthy_after, began


def why_not_healthy(stack, healthy_after):
    """What to read when ``up`` gave up: each container's state, and the last
    health checks and log lines of those that are not healthy."""
    lines = stack.ps(
        "--all",
        "--format",
        '{{.ID}} {{.Label "com.docker.compose.service"}} {{.Status}}',
        check=False,
    ).stdout.splitlines()
    report = [f"\nhealthy after (s): {healthy_after}", *lines]
    for line in lines:
        container = line.split()[0]
        if "(healthy)" in line:
            continue
        health = stack.docker(
            "inspect", "--format", "{{json .State.Health}}", container, check=False
        ).stdout
        logs = stack.docker("logs", "--tail", "40", container, check=False)
        report += [
            f"--- {line}",
            health[-1500:],
            logs.stdout[-2500:],
            logs.stderr[-2500:],
        ]
    return "\n".join(report)


@pytest.fixture(scope="module")
def galera(engine, tmp_path_factory):
    # Its tests register more accounts than a client may in a minute.
    stack = Stack(
        engine,
        tmp_path_factory.mktemp("galera"),
        GALERA,
        REGISTER_RATE_LIMIT="1000/minute",
    )
    try:
        stack.compose("build", timeout=1200)
        stack.healthy_after, began = up_watching_nodes(stack)
        stack.wait_ready(timeout=240)
        stack.ready_after = time.monotonic() - began
        yield stack
    finally:
        stack.down()


def answered(stack, response, status=200):
    """``response`` if it has ``status``; otherwise fail with what the stack
    was doing: its containers and the last lines of the app's and nginx's logs.
    """
    if response.status_code != status:
        state = stack.compose("ps", check=False).stdout
        logs = stack.compose(
            "logs", "--no-color", "--tail", "30", "app", "nginx", check=False
        ).stdout
        raise AssertionError(
            f"{response.request.method} {response.url}: {response.status_code} "
            f"{response.text[:300]}\n{state}\n{logs}"
        )
    return response


def register(stack, email):
    """Register through nginx; the token's header."""
    answer = requests.post(
        stack.base + "/api/v1/users/register",
        json={"email": email, "password": PASSWORD},
        timeout=30,
    )
    token = answered(stack, answer, 201).json()["access_token"]
    return {"Authorization": "Bearer " + token}


def add_posts(stack, auth, texts):
    """Add each text through nginx; [(PostID, text)] of the acknowledged ones."""
    acknowledged = []
    for text in texts:
        added = requests.post(
            stack.base + "/api/v1/posts/add-post",
            json={"text": text},
            headers=auth,
            timeout=30,
        )
        answered(stack, added)
        acknowledged.append((str(added.json()["PostID"]), text))
    return acknowledged


def listed(stack, auth):
    """[(id, text)] of the user's posts as the app lists them."""
    answer = requests.get(
        stack.base + "/api/v1/posts/get-posts", headers=auth, timeout=30
    )
    return [(str(p["id"]), p["text"]) for p in answered(stack, answer).json()]


def user_id(stack, auth):
    me = requests.get(stack.base + "/api/v1/users/me", headers=auth, timeout=30)
    return answered(stack, me).json()["id"]


def rows_on(stack, node, user):
    """[(id, text)] of the user's posts as ``node`` holds them, by id."""
    rows = sql(stack, node, "SELECT user_id, id, text FROM posts ORDER BY id")
    return [(post, text) for owner, post, text in rows if owner == str(user)]


def test_every_node_holds_what_the_app_wrote(galera, capsys):
    healthy = ", ".join(f"{n} {s:.0f} s" for n, s in galera.healthy_after.items())
    report(
        capsys,
        f"Galera compose: nodes healthy after {healthy}; "
        f"app ready through nginx after {galera.ready_after:.0f} s",
    )
    assert set(galera.healthy_after) == set(NODES)
    auth = register(galera, "galera@example.com")
    user = user_id(galera, auth)
    acknowledged = add_posts(galera, auth, [f"replicated {n}" for n in range(10)])

    for node in ("galera-2", "galera-3"):
        assert status(galera, node, "wsrep_cluster_size") == "3"
        assert rows_on(galera, node, user) == acknowledged
    report(
        capsys,
        f"{len(acknowledged)} posts acknowledged through galera-1, "
        f"{len(rows_on(galera, 'galera-3', user))} on galera-2 and galera-3 each",
    )


def test_a_killed_node_catches_up_with_every_post(galera, capsys):
    auth = register(galera, "rejoin@example.com")
    user = user_id(galera, auth)
    acknowledged = add_posts(galera, auth, [f"before {n}" for n in range(5)])

    victim = container(galera, "galera-3")
    killed = time.monotonic()
    galera.docker("kill", victim)
    # The others go on without it once they have evicted it (a few seconds:
    # evs.suspect_timeout); from then on every write succeeds.
    while status(galera, "galera-1", "wsrep_cluster_size") != "2":
        assert time.monotonic() - killed < 60, "galera-3 was never evicted"
        time.sleep(0.5)
    evicted_after = time.monotonic() - killed
    acknowledged += add_posts(galera, auth, [f"while down {n}" for n in range(15)])

    galera.docker("start", victim)
    resynced_after = wait_synced(galera, "galera-3")

    assert status(galera, "galera-3", "wsrep_cluster_size") == "3"
    present = rows_on(galera, "galera-3", user)
    report(
        capsys,
        f"galera-3 killed: evicted after {evicted_after:.1f} s; "
        f"{len(acknowledged)} posts acknowledged ({len(acknowledged) - 5} while "
        f"it was down), {len(present)} on galera-3 after it resynced in "
        f"{resynced_after:.1f} s",
    )
    # Every acknowledged post, each exactly once, and nothing else.
    assert present == acknowledged
    assert listed(galera, auth) == acknowledged


def test_the_first_node_restarted_alone_joins_the_others(galera, capsys):
    """galera-1 started the cluster; restarted, it must join it, not refuse
    to start or start a second cluster of its own."""
    for node in NODES:
        wait_synced(galera, node)
    auth = register(galera, "first@example.com")
    acknowledged = add_posts(galera, auth, [f"kept {n}" for n in range(3)])
    cluster = status(galera, "galera-2", "wsrep_cluster_state_uuid")

    galera.docker("restart", "--time", "30", container(galera, "galera-1"))
    rejoined_after = wait_synced(galera, "galera-1")
    galera.wait_ready()
    report(capsys, f"galera-1 restarted alone: synced after {rejoined_after:.1f} s")

    assert status(galera, "galera-1", "wsrep_cluster_state_uuid") == cluster
    assert status(galera, "galera-1", "wsrep_cluster_size") == "3"
    assert listed(galera, auth) == acknowledged
    more = add_posts(galera, auth, ["after the restart"])
    user = user_id(galera, auth)
    assert rows_on(galera, "galera-3", user) == acknowledged + more


def test_the_routed_node_killed_under_load_costs_no_request(galera, capsys):
    """galera-1 takes every connection through the proxy; killed under load
    (SIGKILL), the requests on it are tried again and reach galera-2."""
    for node in NODES:
        wait_synced(galera, node)
    headers = [register(galera, f"proxied{n}@example.com") for n in range(4)]
    users = [user_id(galera, h) for h in headers]
    stats = Stats()
    finish = load_in_background([galera.base], headers, stats, keyed=True)
    try:
        time.sleep(3)
        galera.docker("kill", container(galera, "galera-1"))
        killed_at = stats.requests
        # Past the eviction of galera-1 by the others (about 6 s).
        time.sleep(12)
    finally:
        writers = finish()
    acknowledged = {str(i): t for w in writers for i, t in w.present.items()}
    stored = {}
    for user in users:
        stored.update(dict(rows_on(galera, "galera-2", user)))
    lost = {i: t for i, t in acknowledged.items() if stored.get(i) != t}
    texts = list(stored.values())
    duplicated = {t for t in texts if texts.count(t) > 1}

    galera.docker("start", container(galera, "galera-1"))
    resynced_after = wait_synced(galera, "galera-1")
    report(
        capsys,
        stats.summary("Galera compose: galera-1 killed under load")
        + f"; {stats.requests - killed_at} requests from the kill on; "
        f"{len(acknowledged)} acknowledged posts, {len(lost)} lost, "
        f"{len(duplicated)} duplicated; galera-1 synced again after "
        f"{resynced_after:.1f} s",
    )
    assert stats.failed == 0, stats.summary("galera compose")
    assert not stats.bad_bodies
    assert not lost
    assert not duplicated
    assert stats.stale == 0, stats.summary("galera compose")

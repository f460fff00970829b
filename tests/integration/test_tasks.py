"""Task requests (zfront.enqueue): internal requests on channel "task" that
run after the enqueuing request ended, per-queue concurrency, logged
results, and queued tasks kept across a graceful restart."""
import json
import os
import signal

from zftest import wait_until


def ops_log(srv):
    try:
        with open(srv.marker("ops.log")) as f:
            return [json.loads(line) for line in f]
    except FileNotFoundError:
        return []


def tasks(srv):
    return [e for e in ops_log(srv) if e["channel"] == "task"]


def max_overlap(entries):
    points = sorted([(e["start"], 1) for e in entries] + [(e["end"], -1) for e in entries],
                    key=lambda p: (p[0], p[1]))
    cur = best = 0
    for _, d in points:
        cur += d
        best = max(best, cur)
    return best


def test_task_runs_after_the_enqueuing_request_with_its_headers_and_body(server_factory):
    srv = server_factory("--threads", "4", "--access-log", "-", app="opsapp")
    status, _, _ = srv.get("/enqueue?n=1&path=/status&sleep=0.5")
    assert status == 200
    assert wait_until(lambda: tasks(srv))
    (task,) = tasks(srv)
    (req,) = [e for e in ops_log(srv) if e["path"] == "/enqueue"]
    assert task["method"] == "POST" and task["path"] == "/status" and task["query"] == "i=0"
    assert task["task"] == "t0" and task["body"] == "payload 0"
    # queued while the request ran, it starts only after the request ended
    assert task["start"] >= req["end"]
    assert srv.wait_log(r"task \[default\]: POST /status\?i=0 answered 200")
    assert srv.wait_log(r'internal - - \[[^]]*\] "POST /status\?i=0 INTERNAL" 200 3 "-" "task"')


def test_task_error_status_is_logged(server_factory):
    srv = server_factory(app="opsapp")
    srv.get("/enqueue?n=1&path=/status?code=500")
    assert srv.wait_log(r"\[warn\] task \[default\]: POST /status\?code=500&i=0 answered 500")


def test_enqueue_outside_a_request_runs_at_once(server_factory):
    srv = server_factory(app="opsapp")
    srv.get("/thread-enqueue")
    assert wait_until(lambda: [e for e in tasks(srv) if e["query"] == "from=thread"])


def test_enqueue_rejects_bad_arguments(server_factory):
    srv = server_factory(app="opsapp")
    _, _, body = srv.get("/enqueue-bad")
    assert body.decode().split() == ["ValueError"] * 5 + ["TypeError"] * 2


def test_queue_concurrency_limits(server_factory):
    srv = server_factory("--threads", "4", "--set", "tasks.queue_concurrency=two=2",
                         app="opsapp")
    srv.get("/enqueue?n=4&path=/slow?s=0.4%26q=default")  # default limit: one at a time
    srv.get("/enqueue?n=4&path=/slow?s=0.4%26q=two&queue=two")
    assert wait_until(lambda: len(tasks(srv)) == 8, timeout=20)
    default = [e for e in tasks(srv) if "q=default" in e["query"]]
    two = [e for e in tasks(srv) if "q=two" in e["query"]]
    assert len(default) == 4 and len(two) == 4
    assert max_overlap(default) == 1
    assert max_overlap(two) <= 2
    # each queue runs its tasks in the order they were queued
    assert [e["query"][-3:] for e in sorted(default, key=lambda e: e["start"])] == [
        "i=0", "i=1", "i=2", "i=3"]


def test_queued_tasks_survive_a_graceful_restart(server_factory, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    srv = server_factory("--threads", "1", "--state-dir", str(state), app="opsapp")
    srv.get("/enqueue?n=3&path=/slow?s=1")
    assert srv.wait_marker("started.log")  # the first task runs, the others wait
    srv.signal(signal.SIGTERM)
    assert srv.wait() == 0, srv.log()
    assert srv.wait_log(r"tasks: 2 queued task\(s\) kept in .*tasks\.queue for the next start")
    assert (state / "tasks.queue").exists()
    ran = sorted(e["query"] for e in tasks(srv))
    assert ran == ["s=1&i=0"], ran

    again = server_factory("--threads", "1", "--state-dir", str(state), app="opsapp")
    assert again.wait_log(r"tasks: 2 task\(s\) queued again from .*tasks\.queue")
    assert wait_until(lambda: len(tasks(again)) == 2, timeout=15)
    assert sorted(e["query"] for e in tasks(again)) == ["s=1&i=1", "s=1&i=2"]
    assert [e["body"] for e in tasks(again)] == ["payload 1", "payload 2"]
    assert [e["task"] for e in tasks(again)] == ["t1", "t2"]
    assert not (state / "tasks.queue").exists()


def test_a_malformed_queue_file_is_moved_aside(server_factory, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "tasks.queue").write_bytes(b"zfront-tasks 1\ntask 0\n7\ndefault\n3\nGET\n999\n/x\n")
    srv = server_factory("--state-dir", str(state), app="opsapp")
    assert srv.wait_log(r"tasks: .*tasks\.queue is malformed: moved to .*tasks\.queue\.bad "
                        r"\(0 task\(s\) read\)")
    assert (state / "tasks.queue.bad").exists() and not (state / "tasks.queue").exists()
    assert srv.get("/status")[0] == 200
    srv.stop()
    assert not tasks(srv)

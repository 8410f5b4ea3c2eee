"""Child processes for tests: bounded in time, always cleaned up.

TensorFlow fixes its devices (and a multi-worker strategy its cluster) when
it first initialises, so tests that need another device layout, TF_CONFIG,
or a process to SIGKILL run a child Python process through these helpers.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child_env(**extra):
    """The environment of a child: quiet TensorFlow, repo on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [REPO_ROOT] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    )
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env.pop("TF_CONFIG", None)
    env.update({key: str(value) for key, value in extra.items()})
    return env


def start(args, log_path, **env):
    """Starts ``python args...`` in its own process group, output to a log."""
    log = open(log_path, "wb")
    try:
        return subprocess.Popen(
            [sys.executable, *args], cwd=REPO_ROOT, env=child_env(**env),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    finally:
        log.close()


def stop(process):
    """Kills ``process`` and its process group if still running; reaps it."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)


@contextlib.contextmanager
def running(processes):
    """Yields the list; every process in it is stopped on exit."""
    try:
        yield processes
    finally:
        for process in processes:
            stop(process)


def wait_all(processes, timeout, logs=()):
    """Waits for every process; raises with the logs' tails on failure."""
    deadline = time.monotonic() + timeout
    for process in processes:
        remaining = deadline - time.monotonic()
        try:
            process.wait(timeout=max(remaining, 0.1))
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"child processes did not finish within {timeout} s\n" + tails(logs)
            ) from None
    failed = [p.args for p in processes if p.returncode != 0]
    if failed:
        raise AssertionError(f"child processes failed: {failed}\n" + tails(logs))


def run(args, log_path, timeout, **env):
    """Runs one child to completion within ``timeout`` seconds."""
    with running([start(args, log_path, **env)]) as processes:
        wait_all(processes, timeout, [log_path])


def tails(logs, lines=40):
    text = []
    for path in logs:
        try:
            with open(path, errors="replace") as log:
                content = log.read().splitlines()[-lines:]
        except OSError:
            content = ["<no log>"]
        text.append(f"--- {path}\n" + "\n".join(content))
    return "\n".join(text)


def free_ports(count):
    """``count`` distinct TCP ports free on loopback right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def tf_config(ports, index):
    """TF_CONFIG of worker ``index`` in a loopback cluster."""
    return json.dumps({
        "cluster": {"worker": [f"127.0.0.1:{port}" for port in ports]},
        "task": {"type": "worker", "index": index},
    })

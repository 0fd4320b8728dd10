"""A real one-node Slurm cluster for the tests of the `slurm` pool driver, from Debian's packages
(slurmctld, slurmd, slurmrestd with the JWT plugin, munge), run as root without systemd or cgroups.

    slurm_harness.py up --dir DIR [--gpus 4]

writes the configuration under DIR (four fake GPUs: character devices under DIR/dev), starts
munged, slurmctld, slurmd and slurmrestd in the foreground on free loopback ports, waits until the
node is idle and the REST API answers, then prints one JSON line on stdout:
{"rest_url", "user", "token", "conf", "partition"} and stays up until SIGTERM or SIGINT, when it
stops every daemon it started (SIGKILL after a grace: slurmd ignores SIGTERM while the controller
is gone). Every start wipes the spool directories, so no state carries over between runs.

While up, `touch DIR/ctld.stop` stops slurmctld (as an outage) and `rm DIR/ctld.stop` starts it again.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def need(tool):
    path = shutil.which(tool) or (os.path.exists(f"/usr/sbin/{tool}") and f"/usr/sbin/{tool}")
    if not path:
        sys.exit(
            f"{tool} is missing: install Debian's slurmctld slurmd slurm-client slurmrestd "
            "slurm-wlm-jwt-plugin munge (scripts/test.sh does)"
        )
    return path


def write_config(d, gpus, ports):
    for sub in ("spool/ctld", "spool/d", "log", "run", "dev", "munge", "jobs"):
        path = os.path.join(d, sub)
        shutil.rmtree(path, ignore_errors=True)
        os.makedirs(path)
    devices = []
    for i in range(gpus):
        dev = os.path.join(d, "dev", f"nvidia{i}")
        os.mknod(dev, 0o600 | 0o020000, os.makedev(195, i))
        devices.append(dev)
    host = socket.gethostname()
    with open(os.path.join(d, "slurm.conf"), "w") as f:
        f.write(
            f"""ClusterName=gpucap-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ports['ctld']}
SlurmdPort={ports['d']}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={d}/munge/munge.socket.2
AuthAltTypes=auth/jwt
AuthAltParameters=jwt_key={d}/jwt.key
CredType=cred/munge
StateSaveLocation={d}/spool/ctld
SlurmdSpoolDir={d}/spool/d
SlurmctldPidFile={d}/run/slurmctld.pid
SlurmdPidFile={d}/run/slurmd.pid
SlurmctldLogFile={d}/log/slurmctld.log
SlurmdLogFile={d}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
GresTypes=gpu
KillWait=5
MinJobAge=300
NodeName={host} NodeAddr=127.0.0.1 CPUs=8 RealMemory=1000 Gres=gpu:{gpus} State=UNKNOWN
PartitionName=gpu Nodes={host} Default=YES MaxTime=2-00:00:00 State=UP
"""
        )
    with open(os.path.join(d, "gres.conf"), "w") as f:
        for dev in devices:
            f.write(f"NodeName={host} Name=gpu File={dev}\n")
    with open(os.path.join(d, "jwt.key"), "wb") as f:
        f.write(os.urandom(32))
    os.chmod(os.path.join(d, "jwt.key"), 0o600)
    return os.path.join(d, "slurm.conf")


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up")
    up.add_argument("--dir", required=True)
    up.add_argument("--gpus", type=int, default=4)
    args = ap.parse_args()
    d = os.path.abspath(args.dir)
    tools = {t: need(t) for t in ("munged", "slurmctld", "slurmd", "slurmrestd", "scontrol", "sinfo")}
    ports = {"ctld": free_port(), "d": free_port(), "rest": free_port()}
    conf = write_config(d, args.gpus, ports)
    env = dict(os.environ, SLURM_CONF=conf)
    children = {}

    def log(name):
        return open(os.path.join(d, "log", f"{name}.out"), "ab")

    # munge: the key and socket belong to the munge user.
    key = os.path.join(d, "munge", "munge.key")
    with open(key, "wb") as f:
        f.write(os.urandom(1024))
    shutil.chown(os.path.join(d, "munge"), "munge", "munge")
    os.chmod(os.path.join(d, "munge"), 0o755)
    shutil.chown(key, "munge", "munge")
    os.chmod(key, 0o400)
    children["munged"] = subprocess.Popen(
        ["runuser", "-u", "munge", "--", tools["munged"], "--foreground",
         f"--key-file={key}", f"--socket={d}/munge/munge.socket.2",
         f"--pid-file={d}/munge/munged.pid", f"--log-file={d}/munge/munged.log",
         f"--seed-file={d}/munge/munged.seed"],
        stdout=log("munged"), stderr=subprocess.STDOUT, start_new_session=True)
    wait_for(lambda: os.path.exists(f"{d}/munge/munge.socket.2"), "munged", d)

    def start_ctld():
        children["slurmctld"] = subprocess.Popen(
            [tools["slurmctld"], "-D", "-i", "-f", conf], env=env,
            stdout=log("slurmctld"), stderr=subprocess.STDOUT, start_new_session=True)

    start_ctld()
    children["slurmd"] = subprocess.Popen(
        [tools["slurmd"], "-D", "-f", conf], env=env,
        stdout=log("slurmd"), stderr=subprocess.STDOUT, start_new_session=True)
    rest_env = dict(env, SLURM_JWT="daemon")
    children["slurmrestd"] = subprocess.Popen(
        [tools["slurmrestd"], "-u", "nobody", "-g", "nogroup", "-a", "rest_auth/jwt",
         "-s", "openapi/v0.0.38",
         f"127.0.0.1:{ports['rest']}"], env=rest_env,
        stdout=log("slurmrestd"), stderr=subprocess.STDOUT, start_new_session=True)

    def stop_all(*_):
        for name in ("slurmrestd", "slurmd", "slurmctld", "munged"):
            stop(children.get(name))
        # Job steps (slurmstepd and what it runs) outlive slurmd: every process started under
        # this cluster's configuration goes too.
        kill_jobs(conf)
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)

    def idle():
        out = subprocess.run([tools["sinfo"], "-h", "-o", "%t"], env=env, capture_output=True,
                             text=True, timeout=5)
        return out.returncode == 0 and out.stdout.strip() in ("idle", "mix", "alloc")

    wait_for(idle, "an idle node", d)
    wait_for(lambda: port_open(ports["rest"]), "slurmrestd", d)
    user = "root"
    token = subprocess.run(
        [tools["scontrol"], "token", f"username={user}", "lifespan=86400"], env=env,
        capture_output=True, text=True, check=True).stdout.strip().split("=", 1)[1]
    print(json.dumps({
        "rest_url": f"http://127.0.0.1:{ports['rest']}",
        "user": user,
        "token": token,
        "conf": conf,
        "partition": "gpu",
    }), flush=True)
    outage = os.path.join(d, "ctld.stop")
    while True:
        time.sleep(0.2)
        down = children["slurmctld"].poll() is not None
        if os.path.exists(outage) and not down:
            stop(children["slurmctld"])
        elif not os.path.exists(outage) and down:
            start_ctld()


def kill_jobs(conf):
    marker = f"SLURM_CONF={conf}".encode()
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if marker in f.read().split(b"\0"):
                    os.kill(int(pid), signal.SIGKILL)
        except OSError:
            pass


def port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def wait_for(ok, what, d, limit=60):
    deadline = time.time() + limit
    while time.time() < deadline:
        try:
            if ok():
                return
        except (subprocess.TimeoutExpired, OSError):
            pass
        time.sleep(0.1)
    logs = ""
    for name in sorted(os.listdir(os.path.join(d, "log"))):
        with open(os.path.join(d, "log", name), errors="replace") as f:
            logs += f"--- {name}\n{f.read()[-3000:]}\n"
    sys.exit(f"{what} did not come up within {limit} s\n{logs}")


def stop(child, grace=3):
    if child is None or child.poll() is not None:
        return
    try:
        os.killpg(child.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        child.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait()


if __name__ == "__main__":
    main()

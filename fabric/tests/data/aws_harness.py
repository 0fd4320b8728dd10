"""The AWS side of the Auto Scaling driver's tests, against moto's server (an emulator of the
Auto Scaling and EC2 APIs).

    create  make a launch template (with the given user data) and an Auto Scaling group
    describe print a group as JSON: bounds, desired capacity, instances
    set-desired  set a group's desired capacity (as someone scaling it by hand)
    set-min  set a group's MinSize (as its owner does)
    suspend / resume  suspend or resume a group's scaling processes
    terminate  take an instance as AWS does (no decrement: the group replaces it)
    imds    a fake instance metadata service on loopback that can serve spot interruption notices
    throttle  a proxy in front of the emulator that answers every Auto Scaling call with AWS's
            `Throttling` error while a flag file exists (the emulator never throttles), and logs
            the time and action of each call it throttled
    play    play the instances: the emulator boots no machines, so for every instance a group
            reports in service this runs its launch template's user data locally, with
            INSTANCE_ID set, and stops it once the group no longer has the instance.

Never connects to the addresses the emulator reports for its instances.
"""

import argparse
import base64
import json
import os
import signal
import subprocess
import sys
import time

import boto3


def clients(args):
    kw = dict(endpoint_url=args.endpoint, region_name=args.region)
    return boto3.client("autoscaling", **kw), boto3.client("ec2", **kw)


def create(args):
    asg, ec2 = clients(args)
    with open(args.user_data, "rb") as f:
        user_data = base64.b64encode(f.read()).decode()
    lt = ec2.create_launch_template(
        LaunchTemplateName=f"{args.group}-lt",
        LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "g5.xlarge", "UserData": user_data},
    )["LaunchTemplate"]
    spec = {"LaunchTemplateId": lt["LaunchTemplateId"], "Version": "$Latest"}
    group = dict(
        AutoScalingGroupName=args.group,
        MinSize=args.min,
        MaxSize=args.max,
        DesiredCapacity=args.desired,
        AvailabilityZones=[f"{args.region}a"],
    )
    if args.spot_percent is None:
        group["LaunchTemplate"] = spec
    else:
        group["MixedInstancesPolicy"] = {
            "LaunchTemplate": {"LaunchTemplateSpecification": spec},
            "InstancesDistribution": {
                "OnDemandBaseCapacity": 0,
                "OnDemandPercentageAboveBaseCapacity": 100 - args.spot_percent,
            },
        }
    asg.create_auto_scaling_group(**group)
    print(json.dumps({"group": args.group, "launch_template": lt["LaunchTemplateId"]}))


def describe_group(asg, name):
    groups = asg.describe_auto_scaling_groups(AutoScalingGroupNames=[name])["AutoScalingGroups"]
    if not groups:
        return None
    g = groups[0]
    return {
        "min": g["MinSize"],
        "max": g["MaxSize"],
        "desired": g["DesiredCapacity"],
        "instances": [
            {
                "id": i["InstanceId"],
                "state": i["LifecycleState"],
                "protected": i.get("ProtectedFromScaleIn", False),
            }
            for i in g.get("Instances", [])
        ],
        "template": (g.get("LaunchTemplate")
                     or g.get("MixedInstancesPolicy", {}).get("LaunchTemplate", {}).get("LaunchTemplateSpecification")),
    }


def describe(args):
    asg, _ = clients(args)
    print(json.dumps(describe_group(asg, args.group)))


def terminate(args):
    """AWS takes an instance (a spot reclaim, a failed health check): the group keeps its desired
    capacity and launches a replacement."""
    asg, _ = clients(args)
    asg.terminate_instance_in_auto_scaling_group(InstanceId=args.instance, ShouldDecrementDesiredCapacity=False)


def set_desired(args):
    """Someone scales the group by hand (drift for the provider to show)."""
    asg, _ = clients(args)
    asg.set_desired_capacity(AutoScalingGroupName=args.group, DesiredCapacity=args.desired)


def set_min(args):
    """The group's owner changes its MinSize."""
    asg, _ = clients(args)
    asg.update_auto_scaling_group(AutoScalingGroupName=args.group, MinSize=args.min)


def suspend(args):
    asg, _ = clients(args)
    asg.suspend_processes(AutoScalingGroupName=args.group, ScalingProcesses=args.processes.split(","))


def resume(args):
    asg, _ = clients(args)
    asg.resume_processes(AutoScalingGroupName=args.group, ScalingProcesses=args.processes.split(","))


def imds(args):
    """A fake instance metadata service (IMDSv2) on loopback for every instance:
    /INSTANCE_ID/latest/... . An instance's spot interruption notice is served once a file named
    after it exists in --notices."""
    import http.server

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *_):
            pass

        def answer(self, code, body=b""):
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_PUT(self):
            if self.path.endswith("/latest/api/token"):
                self.answer(200, b"imds-session-token")
            else:
                self.answer(404)

        def do_GET(self):
            parts = self.path.strip("/").split("/", 1)
            if len(parts) != 2 or parts[1] != "latest/meta-data/spot/instance-action":
                return self.answer(404)
            if self.headers.get("X-aws-ec2-metadata-token") != "imds-session-token":
                return self.answer(401)
            if os.path.exists(os.path.join(args.notices, parts[0])):
                when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 120))
                return self.answer(200, json.dumps({"action": "terminate", "time": when}).encode())
            self.answer(404)

    http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


def throttle(args):
    import http.client
    import http.server
    import urllib.parse

    upstream = urllib.parse.urlsplit(args.endpoint)
    refusal = (
        b'<ErrorResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/">'
        b"<Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message>"
        b"</Error><RequestId>throttled</RequestId></ErrorResponse>"
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *_):
            pass

        def answer(self, code, headers, body):
            self.send_response(code)
            for name, value in headers:
                if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            form = urllib.parse.parse_qs(body.decode(errors="replace"))
            action = form.get("Action", [""])[0]
            if action and os.path.exists(args.flag):
                with open(args.log, "a") as log:
                    log.write(f"{time.time():.3f} {action}\n")
                return self.answer(400, [("Content-Type", "text/xml")], refusal)
            conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
            conn.request("POST", self.path, body, headers)
            resp = conn.getresponse()
            self.answer(resp.status, resp.getheaders(), resp.read())
            conn.close()

    http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


def user_data(ec2, template):
    versions = ec2.describe_launch_template_versions(
        LaunchTemplateId=template["LaunchTemplateId"], Versions=[template.get("Version", "$Latest")]
    )["LaunchTemplateVersions"]
    return base64.b64decode(versions[0]["LaunchTemplateData"]["UserData"]).decode()


def play(args):
    asg, ec2 = clients(args)
    running = {}
    stopping = []

    def stop_all(*_):
        for p in running.values():
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    os.makedirs(args.log_dir, exist_ok=True)
    while True:
        in_service = {}
        try:
            for name in args.groups.split(","):
                g = describe_group(asg, name)
                if g is None:
                    continue
                for i in g["instances"]:
                    if i["state"] == "InService":
                        in_service[i["id"]] = g["template"]
        except Exception as e:  # the emulator stopped: the machines play on
            print(f"describe failed: {e}", file=sys.stderr, flush=True)
            time.sleep(0.5)
            continue
        for iid, template in in_service.items():
            if iid in running:
                continue
            script = os.path.join(args.log_dir, f"{iid}.sh")
            with open(script, "w") as f:
                f.write(user_data(ec2, template))
            log = open(os.path.join(args.log_dir, f"{iid}.log"), "ab")
            env = dict(os.environ, INSTANCE_ID=iid)
            running[iid] = subprocess.Popen(
                ["bash", script], env=env, stdout=log, stderr=log, start_new_session=True
            )
            print(f"booted {iid}", flush=True)
        for iid in [i for i in running if i not in in_service]:
            p = running.pop(iid)
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            stopping.append(p)
            print(f"terminated {iid}", flush=True)
        for p in stopping:
            p.poll()
        stopping = [p for p in stopping if p.returncode is None]
        time.sleep(0.3)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--endpoint", required=True)
    ap.add_argument("--region", required=True)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("create")
    c.add_argument("--group", required=True)
    c.add_argument("--min", type=int, default=0)
    c.add_argument("--max", type=int, default=3)
    c.add_argument("--desired", type=int, default=0)
    c.add_argument("--user-data", required=True)
    c.add_argument("--spot-percent", type=int)
    d = sub.add_parser("describe")
    d.add_argument("--group", required=True)
    t = sub.add_parser("terminate")
    t.add_argument("--instance", required=True)
    s = sub.add_parser("set-desired")
    s.add_argument("--group", required=True)
    s.add_argument("--desired", type=int, required=True)
    n = sub.add_parser("set-min")
    n.add_argument("--group", required=True)
    n.add_argument("--min", type=int, required=True)
    for name in ("suspend", "resume"):
        r = sub.add_parser(name)
        r.add_argument("--group", required=True)
        r.add_argument("--processes", required=True)
    m = sub.add_parser("imds")
    m.add_argument("--port", type=int, required=True)
    m.add_argument("--notices", required=True)
    th = sub.add_parser("throttle")
    th.add_argument("--port", type=int, required=True)
    th.add_argument("--flag", required=True)
    th.add_argument("--log", required=True)
    p = sub.add_parser("play")
    p.add_argument("--groups", required=True)
    p.add_argument("--log-dir", required=True)
    args = ap.parse_args()
    commands = {
        "create": create,
        "describe": describe,
        "terminate": terminate,
        "set-desired": set_desired,
        "set-min": set_min,
        "suspend": suspend,
        "resume": resume,
        "imds": imds,
        "throttle": throttle,
        "play": play,
    }
    commands[args.cmd](args)


if __name__ == "__main__":
    main()

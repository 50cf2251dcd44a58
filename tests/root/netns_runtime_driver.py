"""A Runtime driven over stdin/stdout, for tests that run it inside a network namespace.

tests/root/test_runtime_networks.py starts this under `nsenter --net=/run/netns/HOST`: the
Runtime (and so the CNI plugins it runs: the bridge, the veths' host ends, iptables rules)
lives in the test's "host" namespace, never in the machine's own; the mount namespace is
the machine's (cgroups stay visible; `ip netns exec` would remount /sys and hide them).

Protocol: argv[1] is a JSON object {state, cgroup_parent, networks_dir, aci}; then one JSON
request per line on stdin, one JSON answer per line on stdout: {"ok": value} or
{"error": type name, "message": text}. Requests: ["create", manifest_json, name],
["start", uuid], ["networks", uuid], ["get", uuid], ["wait", uuid, timeout],
["destroy", uuid], ["list"], ["time_start", uuid] (seconds the start took), ["close"].
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from kurma.aci import parse_pod_manifest
from kurma.runtime._runtime import Runtime, RuntimeConfig


def _record(rec: Any) -> dict[str, Any]:
    return {
        "uuid": rec.uuid,
        "name": rec.name,
        "state": str(rec.state),
        "apps": [{"name": a.name, "exit_code": a.exit_code, "error": a.error} for a in rec.apps],
    }


def main() -> None:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    opts = json.loads(sys.argv[1])
    config = RuntimeConfig(
        cgroup_parent=opts["cgroup_parent"], networks_dir=opts["networks_dir"], stop_grace=1.0
    )
    runtime = Runtime(opts["state"], config=config)
    image = runtime.store.import_image(opts["aci"]).record.image_id
    print(json.dumps({"ok": image}), flush=True)
    for line in sys.stdin:
        op, *args = json.loads(line)
        try:
            value: Any = None
            if op == "create":
                manifest = parse_pod_manifest(args[0].encode())
                value = runtime.create_pod(manifest, name=args[1]).uuid
            elif op == "start":
                started = time.monotonic()
                value = _record(runtime.start_pod(args[0]))
                value["seconds"] = time.monotonic() - started
            elif op == "networks":
                value = [
                    {
                        "network": a.network,
                        "ifname": a.ifname,
                        "ips": [str(ip.address) for ip in a.result.ips] if a.result else [],
                    }
                    for a in runtime.pod_networks(args[0])
                ]
            elif op == "get":
                value = _record(runtime.get(args[0]))
            elif op == "wait":
                value = _record(runtime.wait(args[0], args[1]))
            elif op == "destroy":
                value = runtime.destroy_pod(args[0], grace=1.0)
            elif op == "list":
                value = [_record(r) for r in runtime.list_pods()]
            elif op == "close":
                runtime.close()
                print(json.dumps({"ok": None}), flush=True)
                return
            else:
                raise ValueError(f"unknown op {op!r}")
            answer = {"ok": value}
        except Exception as e:
            logging.getLogger("driver").info("%s failed", op, exc_info=True)
            import traceback

            message = str(e) if not isinstance(e, TypeError) else traceback.format_exc()
            answer = {"error": type(e).__name__, "message": message}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()

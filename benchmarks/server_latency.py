"""Robot server latency with the MuJoCo twin: env command -> controller target, and the 1 kHz loop's lateness.

A server process runs the twin of ``--task`` (1 kHz real-time physics + the Franka torque callback) and
serves two front ends on loopback over the *same* backend:

- ours: the authenticated, versioned TCP API (length-prefixed JSON header, ``robot serve``);
- peer: HTTP/1.1 POST with a JSON body (SERL's franka_server style), keep-alive connection.

The client (this process) sends ``--commands`` set-target commands through each, one at a time:

- command -> target latency: from the client's send to the moment the server put the target into the
  controller (``time.monotonic_ns`` on both sides: same machine, same clock); the target acts at the next
  tick, at most one loop period later;
- round trip: until the client has the reply.

Loop lateness (``RateLoop`` chunks in the server, 0.5 s each): median of the chunks' p99 while idle and
while the commands stream. Measured on a shared, loaded 2-core VM, stock kernel: a report, not a gate.

    python -m benchmarks.server_latency            # writes benchmarks/results/server_latency.json
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing as mp
import socket
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

from benchmarks.common import write_result

TOKEN = "benchmark-token"


def _serve(task: str, ports: mp.Queue, stop: mp.Event) -> None:
    import threading

    from robot.server.config import NetConfig, RobotServerConfig
    from robot.server.server import RobotServer
    from robot.server.twin import TwinBackend

    config = RobotServerConfig(arm="twin", task=task).check()
    backend = TwinBackend(config)
    server = RobotServer(backend, TOKEN, NetConfig(port=0)).start()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            # Headers and body leave in two writes: without this, Nagle + delayed ACK add ~40 ms.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            accepted = backend.set_target(body["pos"], body["quat"])
            reply = json.dumps({"accepted": accepted, "applied_ns": time.monotonic_ns()}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            pass

    peer = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=peer.serve_forever, daemon=True).start()
    ports.put((server.address[1], peer.server_address[1]))
    stop.wait()
    peer.shutdown()
    server.close()


def _targets(start: np.ndarray, n: int) -> np.ndarray:
    """Points on a 3 cm circle around the start, so every command moves the target."""
    angle = np.linspace(0.0, 2 * np.pi, n)
    return start + 0.03 * np.stack([np.cos(angle) - 1.0, np.sin(angle), np.zeros(n)], axis=1)


def measure_api(client, targets: np.ndarray, quat: list[float]) -> tuple[np.ndarray, np.ndarray]:
    one_way, round_trip = np.zeros(len(targets)), np.zeros(len(targets))
    for i, pos in enumerate(targets):
        sent = time.monotonic_ns()
        reply = client.set_target(pos, quat)
        done = time.monotonic_ns()
        one_way[i], round_trip[i] = (reply["applied_ns"] - sent) / 1e6, (done - sent) / 1e6
    return one_way, round_trip


def measure_http(port: int, targets: np.ndarray, quat: list[float]) -> tuple[np.ndarray, np.ndarray]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    one_way, round_trip = np.zeros(len(targets)), np.zeros(len(targets))
    for i, pos in enumerate(targets):
        body = json.dumps({"pos": pos.tolist(), "quat": quat})
        sent = time.monotonic_ns()
        conn.request("POST", "/pose", body, {"Content-Type": "application/json"})
        reply = json.loads(conn.getresponse().read())
        done = time.monotonic_ns()
        one_way[i], round_trip[i] = (reply["applied_ns"] - sent) / 1e6, (done - sent) / 1e6
    conn.close()
    return one_way, round_trip


def chunk_p99s(client, since_chunks: int) -> list[float]:
    stats = client.stats()
    recent = stats["recent_p99_lateness_us"]
    return recent[len(recent) - (stats["chunks"] - since_chunks):] if stats["chunks"] > since_chunks else []


def main() -> None:
    from hardware.server.client import RobotClient

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="pick-cube")
    parser.add_argument("--commands", type=int, default=2000, help="set-target commands per front end")
    parser.add_argument("--idle-seconds", type=float, default=3.0, help="loop measured without clients [s]")
    args = parser.parse_args()

    ctx = mp.get_context("spawn")
    ports, stop = ctx.Queue(), ctx.Event()
    proc = ctx.Process(target=_serve, args=(args.task, ports, stop), daemon=True)
    proc.start()
    try:
        api_port, http_port = ports.get(timeout=60)
        with RobotClient("127.0.0.1", api_port, TOKEN) as client:
            state = client.reset(seed=0)
            quat = state["tcp_quat"]
            targets = _targets(np.asarray(state["tcp_pos"]), args.commands)
            time.sleep(0.6)
            chunks0 = client.stats()["chunks"]
            time.sleep(args.idle_seconds)
            idle_p99 = chunk_p99s(client, chunks0)
            client.reset(seed=0)  # the idle phase outlasts the watchdog's stop stage (2 s): re-arm
            chunks1 = client.stats()["chunks"]
            api_one, api_rt = measure_api(client, targets, quat)
            http_one, http_rt = measure_http(http_port, targets, quat)
            busy_p99 = chunk_p99s(client, chunks1)
            stats = client.stats()
    finally:
        stop.set()
        proc.join(10)

    def pct(values: np.ndarray) -> tuple[float, float]:
        p50, p99 = np.percentile(values, [50, 99])
        return float(p50), float(p99)

    rows = {
        "tcp_json_api": {"one_way_ms": pct(api_one), "round_trip_ms": pct(api_rt)},
        "http_json_peer": {"one_way_ms": pct(http_one), "round_trip_ms": pct(http_rt)},
    }
    loop = {
        "idle_p99_lateness_us_median_chunk": float(np.median(idle_p99)) if idle_p99 else None,
        "busy_p99_lateness_us_median_chunk": float(np.median(busy_p99)) if busy_p99 else None,
        "busy_p99_lateness_us_worst_chunk": float(np.max(busy_p99)) if busy_p99 else None,
        "chunks_idle": len(idle_p99), "chunks_busy": len(busy_p99),
        "total_ticks": stats["total_ticks"], "total_overruns": stats["total_overruns"],
        "total_skipped_deadlines": stats["total_skipped_deadlines"],
    }
    print(f"{'front end':<16} {'cmd->target p50':>16} {'p99':>8} {'round trip p50':>16} {'p99':>8}   [ms]")
    for name, row in rows.items():
        print(f"{name:<16} {row['one_way_ms'][0]:>16.3f} {row['one_way_ms'][1]:>8.3f} "
              f"{row['round_trip_ms'][0]:>16.3f} {row['round_trip_ms'][1]:>8.3f}")
    ratio = rows["http_json_peer"]["one_way_ms"][1] / rows["tcp_json_api"]["one_way_ms"][1]
    print(f"peer / ours (p99 command -> target): {ratio:.2f}x")
    print(f"1 kHz twin loop, median chunk p99 lateness: idle {loop['idle_p99_lateness_us_median_chunk']:.0f} us, "
          f"while commands stream {loop['busy_p99_lateness_us_median_chunk']:.0f} us (worst chunk "
          f"{loop['busy_p99_lateness_us_worst_chunk']:.0f} us); {loop['total_overruns']} overruns in "
          f"{loop['total_ticks']} ticks")
    summary = {
        "p50_ms": rows["tcp_json_api"]["one_way_ms"][0],
        "p99_ms": rows["tcp_json_api"]["one_way_ms"][1],
        "loop_p99_lateness_us": loop["busy_p99_lateness_us_median_chunk"],
        "peer_http_p99_ms": rows["http_json_peer"]["one_way_ms"][1],
    }
    command = f"python -m benchmarks.server_latency --task {args.task} --commands {args.commands}"
    path = write_result("server_latency", summary, command, front_ends=rows, loop=loop, task=args.task,
                        commands=args.commands)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

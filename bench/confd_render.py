"""Bench: confd's render + check of a 500-peer config vs ``bird -p`` alone on the same config.

Inputs: 500 global BGPPeers, three nodes, one pool, a block. Ours: render all
three files and write them through confd's writer (stage, ``bird -p -c``,
swap). Baseline, same run: ``bird -p -c`` on the written config. Reports the
ratio ours/baseline (goal ≤ 2): what rendering and staging add to BIRD's own
parse of the result.

    python3 -m bench.confd_render [--peers 500] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from confd import render, writer
from libcalico import api


def inputs(peers: int) -> render.Inputs:
    nodes = {f"node{i}": api.Node.model_validate({"metadata": {"name": f"node{i}"},
                                                  "spec": {"bgp": {"ipv4Address": f"192.168.3.{110 + i}/24"}}})
             for i in range(1, 4)}
    bgp_peers = {f"peer{i}": api.BGPPeer.model_validate({"metadata": {"name": f"peer{i}"}, "spec": {
        "peerIP": f"10.{i // 250}.{i % 250}.1", "asNumber": 65000 + i % 100}}) for i in range(peers)}
    pools = {"p": api.IPPool.model_validate({"metadata": {"name": "p"}, "spec": {"cidr": "10.244.0.0/16"}})}
    return render.Inputs("node1", nodes=nodes, peers=bgp_peers, pools=pools, blocks=["10.244.56.64/26"])


def main(peers: int, rounds: int) -> dict[str, float]:
    inp = inputs(peers)
    ours, base = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            out = Path(tmp) / f"round{r}"
            t = time.perf_counter()
            files = render.render(inp)
            writer.write(files, out)
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            subprocess.run(["bird", "-p", "-c", str(out / "bird.cfg")], check=True)
            base.append(time.perf_counter() - t)
        lines = len(files["bird.cfg"].splitlines())
    o, b = statistics.median(ours), statistics.median(base)
    return {"peers": peers, "bird_cfg_lines": lines, "render_write_check_s": round(o, 4),
            "bird_p_alone_s": round(b, 4), "ratio": round(o / b, 2)}


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--peers", type=int, default=500)
    p.add_argument("--rounds", type=int, default=5)
    a = p.parse_args()
    print(json.dumps(main(a.peers, a.rounds), indent=2))

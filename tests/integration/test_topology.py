"""`minirun topology` shows every live object; the text form is parsed back here."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from tests.integration.conftest import minirun


@pytest.fixture
def landscape():
    made = [
        minirun("run", "-d", "--name", "web", "-p", "8080:80", "sleep", "30"),
        minirun("run", "-d", "--name", "member1", "--pod", "db", "sleep", "30"),
        minirun("run", "-d", "--name", "iso", "--network", "none", "sleep", "30"),
    ]
    assert all(m.returncode == 0 for m in made), [m.stderr for m in made]
    subprocess.run(["ip", "link", "add", "vethstray", "type", "veth", "peer", "name", "strayp"], check=True)
    subprocess.run(["ip", "link", "set", "vethstray", "master", "minirun0"], check=True)
    yield
    subprocess.run(["ip", "link", "delete", "vethstray"], capture_output=True)
    minirun("rm", "-f", "web", "member1", "iso")
    minirun("pod", "rm", "-f", "db")


def inspect(ref: str) -> dict:
    return json.loads(minirun("inspect", ref).stdout)[0]


def test_text_lists_every_live_object(landscape):
    text = minirun("topology").stdout
    web, member = inspect("web"), inspect("member1")
    pod = json.loads(minirun("pod", "inspect", "db").stdout)
    ports = dict(re.findall(r"(veth\w+)(?: DOWN)? ══ (.*)", text))
    assert ports[web["NetworkSettings"]["HostVeth"]].startswith(
        f"eth0 {web['NetworkSettings']['IPAddress']}/16  container web"
    )
    assert ports[pod["HostVeth"]].startswith(f"eth0 {pod['IPAddress']}/16  pod db")
    assert ports["vethstray"] == "? (no container or pod: leaked)"
    assert re.search(rf"member member1 \({member['Id']}\) Up", text)
    assert re.search(r"minirun0 \(bridge, network minirun\) 10\.77\.0\.1/16 up", text)
    assert "NAT exit: 10.77.0.0/16 masquerade" in text
    assert "container iso" in text and "--network none" in text
    assert "published 0.0.0.0:8080->80/tcp" in ports[web["NetworkSettings"]["HostVeth"]]
    assert all(ch in text for ch in "├└│")


def test_json_and_dot(landscape):
    document = json.loads(minirun("topology", "--format", "json").stdout)
    (bridge,) = document["bridges"]
    owners = {p["veth"]: (p["owner"] or {}).get("name") for p in bridge["ports"]}
    assert owners[inspect("web")["NetworkSettings"]["HostVeth"]] == "web" and owners["vethstray"] is None
    dot = minirun("topology", "--format", "dot").stdout
    assert dot.startswith("graph minirun {") and dot.rstrip().endswith("}")
    assert '"minirun0" --' in dot
    if shutil.which("dot"):
        rendered = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True)
        assert rendered.returncode == 0 and "<svg" in rendered.stdout

#!/usr/bin/python3
"""The registry of variants (scripts/chatbench/variants.py) against what else names them:

  - every compiled variant is a build target under servers/<its directory>/, and
    `variants.py --targets` (run_all.sh's fallback build) names those targets;
  - every Python variant's script is in the tree, unless the variant is optional;
  - every directory under servers/ with a server of its own is some variant's;
  - scripts/setup.sh's peers and their Debian packages are the registry's, in its order;
  - `variants.py --bin DIR` (what tests/cli/cli_test.py reads) gives each variant's command.
Usage: check_registry.py SOURCE_DIR (with PYTHONPATH=SOURCE_DIR/scripts)"""
import json
import re
import subprocess
import sys
from pathlib import Path

from chatbench import variants
from verdict import finish

SHARED = {"common", "net"}  # servers/ directories of shared code, no server of their own


def main():
    source = Path(sys.argv[1])
    problems = []
    script = [sys.executable, str(source / "scripts/chatbench/variants.py")]

    targets = subprocess.run(script + ["--targets"], capture_output=True, text=True, check=True).stdout.split()
    for v in variants.VARIANTS:
        if v.compiled:
            cmake = source / "servers" / v.directory / "CMakeLists.txt"
            cmake = cmake.read_text() if cmake.is_file() else ""
            if not re.search(rf"add_(executable|custom_target)\(chat-{re.escape(v.name)}\s", cmake):
                problems.append(f"{v.name}: no target chat-{v.name} in servers/{v.directory}/CMakeLists.txt")
            if (f"chat-{v.name}" in targets) == bool(v.optional):
                problems.append(f"variants.py --targets: chat-{v.name} {'listed' if v.optional else 'missing'}")
        elif not v.optional and not v.executable("/nonexistent").exists():
            problems.append(f"{v.name}: no {v.script}")
    if len(targets) != len(set(targets)) or not all(t.startswith("chat-") for t in targets):
        problems.append(f"variants.py --targets: {targets}")

    servers = {d.name for d in (source / "servers").iterdir() if d.is_dir()} - SHARED
    unregistered = servers - {v.directory for v in variants.VARIANTS}
    if unregistered:
        problems.append(f"servers/ directories no variant is built from: {sorted(unregistered)}")

    setup = (source / "scripts/setup.sh").read_text()
    names = re.search(r"^peer_names=\(([^)]*)\)", setup, re.M)
    packages = re.search(r"^declare -A peer_package=\(([^)]*)\)", setup, re.M)
    if not names or not packages:
        problems.append("scripts/setup.sh: no peer_names or peer_package")
    else:
        if names.group(1).split() != variants.PEER_NAMES:
            problems.append(f"scripts/setup.sh peer_names {names.group(1).split()}, registry {variants.PEER_NAMES}")
        setup_packages = dict(re.findall(r"\[([\w-]+)\]=([\w.+-]+)", packages.group(1)))
        registry_packages = {p.name: p.package for p in variants.PEERS}
        if setup_packages != registry_packages:
            problems.append(f"scripts/setup.sh peer_package {setup_packages}, registry {registry_packages}")

    described = json.loads(subprocess.run(script + ["--bin", "/b/bin"], capture_output=True, text=True,
                                          check=True).stdout)
    commands = {v["name"]: v["command"] for v in described["variants"]}
    expected = {"asio": ["/b/bin/chat-asio"],
                "seed": ["/usr/bin/python3", str(source.resolve() / "servers/seed/chat_server.py"),
                         "--bind", "127.0.0.1"]}
    for name, command in expected.items():
        if commands.get(name) != command:
            problems.append(f"variants.py --bin /b/bin: {name}'s command {commands.get(name)}, expected {command}")
    if [v["name"] for v in described["variants"]] != variants.NAMES \
            or [p["name"] for p in described["peers"]] != variants.PEER_NAMES:
        problems.append("variants.py --bin: not every variant and peer, or not in the registry's order")

    return finish(problems)


if __name__ == "__main__":
    sys.exit(main())

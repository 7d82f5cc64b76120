"""Start the dashboard: `python app.py [--host 127.0.0.1] [--port 7860] [--runs-dir runs] [--auth user:pw]`.

Reward functions typed into the dashboard run as Python on this machine, so the dashboard only
listens beyond this machine (any host but loopback) when a password protects it.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from pathlib import Path

LOOPBACK_NAMES = ("localhost",)


class LaunchRefused(SystemExit):
    """A launch that would be unsafe or cannot work; the message says why and what to do."""


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_auth(value: str | None) -> list[tuple[str, str]] | None:
    """`user:password`, or a file with one `user:password` a line, as Gradio's list of credentials."""
    if not value:
        return None
    path = Path(value).expanduser()
    if path.is_file():
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        entries = [line for line in lines if line and not line.startswith("#")]
        source = f"{path}"
    else:
        entries, source = [value], "--auth"
    credentials = []
    for entry in entries:
        user, sep, password = entry.partition(":")
        if not sep or not user or not password:
            raise LaunchRefused(f"{source}: expected user:password (or a file of such lines), got {entry!r}")
        credentials.append((user, password))
    if not credentials:
        raise LaunchRefused(f"{source}: the file holds no user:password line")
    return credentials


def check_exposure(host: str, auth) -> None:
    if not is_loopback(host) and not auth:
        raise LaunchRefused(
            f"Refusing to listen on {host} without --auth: anyone who can reach this address could run Python "
            "on this machine through the reward-function editor. Add --auth user:password (or a file of such "
            "lines), or keep the default --host 127.0.0.1."
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="The GRPO reinforcement fine-tuning dashboard")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument("--runs-dir", default=os.environ.get("RFT_RUNS_DIR", "runs"),
                        help="where runs are written and read (default: ./runs or $RFT_RUNS_DIR)")
    parser.add_argument("--auth", help="user:password, or a file with one user:password a line; required for "
                                       "any --host other than loopback")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        auth = parse_auth(args.auth)
        check_exposure(args.host, auth)
    except LaunchRefused as refused:
        print(f"error: {refused}", file=sys.stderr)
        return 2
    runs_dir = Path(args.runs_dir).expanduser().resolve()
    runs_dir.mkdir(parents=True, exist_ok=True)
    # The trainer subprocesses and rft.runs' defaults read the same directory.
    os.environ["RFT_RUNS_DIR"] = str(runs_dir)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

    from rft.export import exports_root
    from ui.app import build_app, launch

    launch(build_app(runs_dir), args.host, args.port, auth, allowed_paths=[exports_root(runs_dir)])
    return 0


if __name__ == "__main__":
    sys.exit(main())

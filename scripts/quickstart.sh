#!/usr/bin/env bash
# The README's first command: builds burst-agent on a fresh Debian machine and runs it on this
# host with no AWS account: checks the example config, then samples this host every 10 s.
#
#   scripts/quickstart.sh            # until Ctrl-C
#   scripts/quickstart.sh --count 3  # three samples, then exit
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install Rust with rustup (https://rustup.rs), then run $0 again" >&2
  exit 1
fi
if ! command -v cc >/dev/null 2>&1; then
  as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev
fi
cargo build --release --locked --bin burst-agent
bin=target/release/burst-agent
"$bin" check-config agent.toml.example
config=/etc/burst-agent/agent.toml
[ -f "$config" ] || config=agent.toml.example
exec "$bin" --config "$config" sample --every 10s "$@"

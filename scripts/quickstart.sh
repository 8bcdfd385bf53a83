#!/usr/bin/env bash
# The README's first command: builds burst-agent on a fresh Debian machine and runs it on this
# host with no AWS account: checks the example config, samples this host once, then runs the
# agent in dry-run (it samples, decides and logs; it launches nothing and calls no AWS API
# unless an AWS region and credentials are configured).
#
#   scripts/quickstart.sh     # until Ctrl-C; `target/release/burst-agent status` meanwhile
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
"$bin" --config "$config" sample
echo
echo "==> burst-agent run --dry-run  (Ctrl-C stops it; in another terminal: $bin --config $config status)"
exec "$bin" --config "$config" run --dry-run "$@"

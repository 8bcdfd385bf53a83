#!/usr/bin/env bash
# The README's test command: installs everything the tests need on a fresh Debian machine, then
# runs every check and test. CI runs exactly this (.ci/run).
#
#   scripts/test.sh            # set-up, fmt, clippy, the package, all tests, the benchmarks
#                              # in quick mode (their tables)
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Debian packages the tests use: apache2 + mod_status (end-to-end sampling), apache2-utils (ab),
# rsync (content-sync hooks), systemd (the service tests boot it in a namespace; systemd-analyze),
# openssh-server + openssh-client (a real sshd stands in for a slave), iproute2 and util-linux
# (the test machine's namespaces), dpkg-dev (cargo deb's dependency scan), procps, coreutils,
# python3-venv (moto, below), prometheus-node-exporter (benches/agent compares against it),
# faketime (libfaketime: the end-to-end wall-clock step), sshfs + fuse3 + openssh-sftp-server (a
# document root on a FUSE mount the hung-mount test freezes).
packages=(apache2 apache2-utils rsync systemd procps coreutils ca-certificates python3 python3-venv
          prometheus-node-exporter openssh-server openssh-client iproute2 util-linux dpkg-dev faketime
          sshfs fuse3 openssh-sftp-server)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "==> installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Debian starts apache2 on port 80 after install; the tests run their own on loopback ports.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet apache2 2>/dev/null; then
  as_root systemctl stop apache2 || true
fi

# moto (EC2, classic ELB and CloudWatch emulator) for the AWS-edge tests, in a local virtualenv.
# The tests start their own moto_server on a free loopback port.
if ! .venv-test/bin/python -c 'import moto' >/dev/null 2>&1 ||
   ! cmp -s scripts/requirements-test.txt .venv-test/requirements-test.txt; then
  echo "==> installing moto into .venv-test"
  python3 -m venv .venv-test
  .venv-test/bin/pip install -q --disable-pip-version-check -r scripts/requirements-test.txt
  cp scripts/requirements-test.txt .venv-test/requirements-test.txt
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo is not installed: install Rust with rustup (https://rustup.rs), then run $0 again" >&2
  exit 1
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
# cargo-deb builds the Debian package (README: install), which tests/systemd_service.rs installs.
cargo_deb_version=3.8.0
if ! cargo deb --version 2>/dev/null | grep -q "$cargo_deb_version"; then
  echo "==> installing cargo-deb $cargo_deb_version"
  cargo install --locked --quiet cargo-deb --version "$cargo_deb_version"
fi

echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy"
cargo clippy --locked --workspace --all-targets -- -D warnings
echo "==> cargo deb"
cargo deb --locked
echo "==> fault and crash simulation: 10,000 seeds (RELIABILITY.md)"
target/release/burst-agent faultsim --seeds 10000
echo "==> cargo test"
# The actuator's futures in the dev profile (no optimisation) outgrew a test thread's 2 MiB
# stack once the ledger table's calls joined the launch and the step (issue 28): 8 MiB.
export RUST_MIN_STACK=${RUST_MIN_STACK:-8388608}
cargo test --locked --workspace --lib --bins --tests
# The benchmarks, once each in quick mode: they print tables of ratios measured side by side and
# assert no figure (a missed target is printed, never a failure), but one that panics or cannot
# reach its measurement fails the run. They reuse the release build `cargo deb` made (the bench
# profile is the release one): four links and the dev-dependencies, a few minutes
# (CONTRIBUTING.md, "Benchmarks").
echo "==> benchmarks (quick)"
cargo bench --locked --bench sampler --bench policy --bench actuator --bench agent --bench bridge -- --quick

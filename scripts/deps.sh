#!/bin/sh
# Installs the Debian packages petrel needs to build, test or benchmark, only when
# one is missing. Usage: scripts/deps.sh build|test|bench
set -eu
build="gcc make pkg-config libuv1-dev librocksdb-dev liblua5.4-dev libc-ares-dev libssl-dev libjansson-dev libmicrohttpd-dev"
test="$build redis-server libcmocka-dev clang libclang-rt-14-dev python3 python3-pytest python3-aiosmtpd python3-dnslib python3-dkim swaks openssl"
bench="$test postfix opendkim"
case "${1:-build}" in
  build) want=$build ;;
  test) want=$test ;;
  bench) want=$bench ;;
  *) echo "usage: $0 build|test|bench" >&2; exit 2 ;;
esac
missing=""
for p in $want; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "installing:$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
# postfix asks questions at install time; answer "No configuration".
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections 2>/dev/null || true
$SUDO apt-get install -y -q --no-install-recommends $missing || {
  $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends $missing
}

#!/bin/sh
# Installs the Debian packages petrel needs to build, test or benchmark, only when
# one is missing. Usage: scripts/deps.sh build|run|test|bench
# (run = build + what README's first try types after `make run`)
set -eu
build="gcc make pkg-config libuv1-dev librocksdb-dev liblua5.4-dev libc-ares-dev libssl-dev libjansson-dev libmicrohttpd-dev libsystemd-dev libhiredis-dev libcurl4-openssl-dev zlib1g-dev libidn2-dev python3"
run="$build swaks"
test="$build redis-server libcmocka-dev clang libclang-rt-14-dev python3 python3-pytest python3-aiosmtpd python3-dnslib python3-dkim swaks openssl haproxy prometheus fail2ban yamllint systemd logrotate python3-yaml man-db curl postfix libmail-dkim-perl faketime python3-matplotlib"
bench="$test opendkim"
case "${1:-build}" in
  build) want=$build ;;
  run) want=$run ;;
  test) want=$test ;;
  bench) want=$bench ;;
  *) echo "usage: $0 build|run|test|bench" >&2; exit 2 ;;
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
# Packages' own daemons (postfix, haproxy, prometheus, fail2ban, redis...) must not
# start on install: tests start private instances. A policy-rc.d that refuses every
# start is in place for the install and removed after if we put it there.
rcd=/usr/sbin/policy-rc.d
own_rcd=""
if [ ! -e "$rcd" ]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$rcd" >/dev/null && $SUDO chmod 755 "$rcd" && own_rcd=1
fi
trap 'if [ -n "$own_rcd" ]; then $SUDO rm -f "$rcd"; fi' EXIT
# postfix asks questions at install time; answer "No configuration".
echo "postfix postfix/main_mailer_type select No configuration" | $SUDO debconf-set-selections 2>/dev/null || true
$SUDO apt-get install -y -q --no-install-recommends $missing || {
  $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends $missing
}

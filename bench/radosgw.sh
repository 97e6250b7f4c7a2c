#!/usr/bin/env bash
# A throwaway one-machine Ceph cluster with radosgw on 127.0.0.1, for the snapshot-store
# benchmark: one ceph-mon, one ceph-osd (memstore: objects in RAM, like moto), no ceph-mgr
# (radosgw does not need one), cephx off, pool size 1, one S3 user. Everything lives in
# one directory with its own ceph.conf (nothing in /etc/ceph, no systemd units); stopping
# kills the daemons and removes the directory.
#
# Sourced (bench/archive.sh --server radosgw):
#   . bench/radosgw.sh; radosgw_start DIR   # sets RGW_EP, RGW_ACCESS_KEY, RGW_SECRET_KEY
#   ...; radosgw_stop                       # idempotent; call it from an EXIT trap
# Run directly, it starts the cluster, prints the endpoint and the credentials, and
# stops it on Ctrl-C:
#   sudo bash bench/radosgw.sh
#
# Needs root (apt-get install of what is missing). RGW_MEM (MiB, 6144 by default) bounds
# the memstore: the objects of a run must fit in it.

RGW_PKGS="ceph-mon ceph-osd radosgw ceph-common"
rgw_dir=''
rgw_pids=()

rgw_log() { printf '[radosgw %s] %s\n' "$(date +%T)" "$*" >&2; }
rgw_free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rgw_ceph() { timeout 60 ceph -c "$rgw_dir/ceph.conf" "$@"; }

# Fails (return 1) with the daemon's last log lines when it does not come up.
rgw_fail() {
  rgw_log "$1"
  local f
  for f in "$2" "${2%.log}.out"; do [ -s "$f" ] && tail -n 20 "$f" >&2; done
  return 1
}

# Starts a daemon in the foreground of a background job, so that its pid is known at once
# (a daemonized one writes its pid file some time after the command returns).
rgw_daemon() {
  local name=$1; shift
  "$@" -f -c "$rgw_dir/ceph.conf" >>"$rgw_dir/log/$name.out" 2>&1 &
  rgw_pids+=($!)
}

radosgw_start() {
  rgw_dir=${1:?radosgw_start needs a directory}
  local missing=() p
  for p in $RGW_PKGS; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    rgw_log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  mkdir -p "$rgw_dir"/{mon,osd,run,log}
  local fsid mon_port rgw_port conf=$rgw_dir/ceph.conf
  fsid=$(cat /proc/sys/kernel/random/uuid)
  mon_port=$(rgw_free_port); rgw_port=$(rgw_free_port)
  cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = v2:127.0.0.1:$mon_port
ms bind msgr1 = false
# radosgw asks for a secure monitor connection, which auth none cannot give: crc.
ms mon client mode = crc
ms client mode = crc
public network = 127.0.0.0/8
auth cluster required = none
auth service required = none
auth client required = none
keyring = $rgw_dir/keyring
run dir = $rgw_dir/run
admin socket = $rgw_dir/run/\$name.asok
log file = $rgw_dir/log/\$name.log
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
[mon.a]
mon data = $rgw_dir/mon
[osd.0]
osd data = $rgw_dir/osd
osd objectstore = memstore
memstore device bytes = $(( ${RGW_MEM:-6144} * 1048576 ))
osd max object size = 1073741824
[client.rgw.bench]
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw data = $rgw_dir/rgw
EOF
  # cephx is off, but the tools still want a keyring to exist.
  ceph-authtool --create-keyring "$rgw_dir/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool "$rgw_dir/keyring" --gen-key -n client.admin --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' >/dev/null
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$rgw_dir/monmap" >/dev/null
  ceph-mon -c "$conf" --mkfs -i a --monmap "$rgw_dir/monmap" --keyring "$rgw_dir/keyring" ||
    rgw_fail "ceph-mon --mkfs failed" "$rgw_dir/log/mon.a.log" || return 1
  rgw_daemon mon.a ceph-mon -i a
  rgw_ceph -s >/dev/null || rgw_fail "the monitor does not answer" "$rgw_dir/log/mon.a.log" || return 1

  local uuid id
  uuid=$(cat /proc/sys/kernel/random/uuid)
  id=$(rgw_ceph osd new "$uuid") || rgw_fail "ceph osd new failed" "$rgw_dir/log/mon.a.log" || return 1
  [ "$id" = 0 ] || { rgw_log "ceph osd new gave id $id, not 0"; return 1; }
  ceph-osd -c "$conf" -i 0 --mkfs --osd-uuid "$uuid" >/dev/null 2>&1 ||
    rgw_fail "ceph-osd --mkfs failed" "$rgw_dir/log/osd.0.log" || return 1
  rgw_daemon osd.0 ceph-osd -i 0
  local _
  for _ in $(seq 120); do rgw_ceph osd stat 2>/dev/null | grep -q '1 up' && break; sleep 0.5; done
  rgw_ceph osd stat | grep -q '1 up' || rgw_fail "osd.0 is not up after 60 s" "$rgw_dir/log/osd.0.log" || return 1

  mkdir -p "$rgw_dir/rgw"
  rgw_daemon client.rgw.bench radosgw -n client.rgw.bench
  RGW_EP=http://127.0.0.1:$rgw_port
  for _ in $(seq 240); do curl -s -o /dev/null "$RGW_EP" && break; sleep 0.5; done
  curl -s -o /dev/null "$RGW_EP" || rgw_fail "radosgw does not answer on $RGW_EP after 120 s" "$rgw_dir/log/client.rgw.bench.log" || return 1

  RGW_ACCESS_KEY=bench$(openssl rand -hex 6)
  RGW_SECRET_KEY=$(openssl rand -hex 20)
  timeout 120 radosgw-admin -c "$conf" user create --uid=bench --display-name=bench \
    --access-key="$RGW_ACCESS_KEY" --secret="$RGW_SECRET_KEY" >/dev/null ||
    rgw_fail "radosgw-admin user create failed" "$rgw_dir/log/client.admin.log" || return 1
  export RGW_EP RGW_ACCESS_KEY RGW_SECRET_KEY
  rgw_log "up: $RGW_EP ($(ceph-osd --version | cut -d' ' -f1-3), memstore ${RGW_MEM:-6144} MiB)"
}

radosgw_stop() {
  local p i
  # radosgw first, the monitor last; each gets 10 s to go before SIGKILL.
  for (( i = ${#rgw_pids[@]} - 1; i >= 0; i-- )); do
    p=${rgw_pids[i]}
    kill "$p" 2>/dev/null || continue
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
  done
  rgw_pids=()
  [ -z "$rgw_dir" ] || rm -rf "$rgw_dir"
  rgw_dir=''
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  [ "$(id -u)" = 0 ] || { echo "bench/radosgw.sh: needs root" >&2; exit 1; }
  dir=$(mktemp -d /var/tmp/cryptvol-radosgw.XXXXXX)
  trap 'radosgw_stop' EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  radosgw_start "$dir"
  echo "endpoint:   $RGW_EP"
  echo "access key: $RGW_ACCESS_KEY"
  echo "secret key: $RGW_SECRET_KEY"
  echo "(Ctrl-C stops the cluster and removes $dir)"
  # wait (not a foreground sleep): a signal runs the traps at once.
  while :; do sleep 3600 & wait $!; done
fi

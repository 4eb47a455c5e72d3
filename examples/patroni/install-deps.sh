#!/usr/bin/env bash
# install-deps.sh: the Debian 12 (bookworm) packages this recipe needs (run as root).
#   patroni 3.0.2-1 pulls in python3-etcd (its first Depends alternative; Patroni's etcd3 DCS
#   subclasses python-etcd's client and talks to etcd's v3 JSON gateway over urllib3 itself,
#   so python3-etcd3 is NOT needed), python3-psycopg2, python3-urllib3, python3-yaml, ...
#   postgresql (15) and etcd-server/etcd-client (3.4.23) were already on this machine.
set -euo pipefail
apt-get update
apt-get install -y --no-upgrade -o DPkg::Lock::Timeout=300 patroni postgresql etcd-server etcd-client curl
# Debian's postgresql package creates and starts a default cluster (15/main on 5432) on first
# install; the demo does not use it and uses other ports, so it is left alone.
patroni --version

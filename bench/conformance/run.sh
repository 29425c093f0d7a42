#!/usr/bin/env bash
# Runs the public HTTP caching test suite (github.com/http-tests/cache-tests) against the
# cache behind a thin reverse proxy: ASGI under uvicorn, WSGI under waitress.
#   bash bench/conformance/run.sh /path/to/cache-tests-clone [origin|default] [stale-if-error s]
# Needs node + npm (the suite's runtime), redis-server, uvicorn and waitress. Everything it
# starts listens on loopback and is stopped by its PID.
set -euo pipefail
clone=$(cd "$1" && pwd); freshness=${2:-origin}; sie=${3:-0}
here=$(cd "$(dirname "$0")" && pwd); out=$(mktemp -d)
(cd "$clone" && npm install --silent --no-audit --no-fund >/dev/null)
redis-server --port 6390 --bind 127.0.0.1 --save '' --appendonly no --daemonize no >/dev/null &
redis_pid=$!
# The origin reads its port and protocol from npm's package config; set them directly so
# the PID below is the server's own (npm would start it as a child).
(cd "$clone" && npm_package_config_port=8000 npm_package_config_protocol=http \
    npm_package_config_pidfile="$out/origin.pid" \
    exec node test-engine/server/server.mjs >/dev/null 2>&1) &
origin_pid=$!
trap 'kill $redis_pid $origin_pid 2>/dev/null || true' EXIT
sleep 1
export REDIS_URL=redis://127.0.0.1:6390/0 FRESHNESS=$freshness STALE_IF_ERROR=$sie PYTHONPATH=$here
for side in asgi wsgi; do
    redis-cli -p 6390 flushall >/dev/null
    if [ $side = asgi ]; then
        # --no-date-header: the origin's Date is the one to keep (docs/deployment.md).
        python -m uvicorn proxy:asgi_app --host 127.0.0.1 --port 8002 --log-level warning \
            --no-proxy-headers --no-date-header --no-server-header &
    else
        python -c "import waitress, proxy; waitress.serve(proxy.wsgi_app, host='127.0.0.1', port=8002, threads=8, ident=None, _quiet=True)" &
    fi
    proxy_pid=$!
    sleep 2
    (cd "$clone" && npm run --silent cli --base=http://127.0.0.1:8002) > "$out/$side.json"
    kill $proxy_pid; wait $proxy_pid 2>/dev/null || true
done
node "$here/score.mjs" "$clone" "$out/asgi.json" "$out/wsgi.json"

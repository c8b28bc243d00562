#!/bin/sh
# demo.sh (make demo): start the example server on its default store, a
# bbolt file in a fresh temporary directory, send it 7 requests, print the
# status and headers of each answer (5 allowed, then 429s), and stop it.
# The server listens on a free loopback port and is stopped on any exit.
set -eu

command -v curl >/dev/null || { echo "demo: curl is needed" >&2; exit 1; }

dir=$(mktemp -d "${TMPDIR:-/tmp}/sluice-demo.XXXXXX")
pid=
cleanup() {
	if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "+ go build ./examples/httpserver"
go build -o "$dir/httpserver" ./examples/httpserver

echo "+ httpserver -addr 127.0.0.1:0   (store: bolt, $dir/sluice.db)"
(cd "$dir" && exec ./httpserver -addr 127.0.0.1:0) 2>"$dir/server.log" &
pid=$!

# Wait up to 10 seconds for the server to say where it listens, then for
# /healthz (not rate-limited) to answer.
url=
i=0
while [ -z "$url" ]; do
	if ! kill -0 "$pid" 2>/dev/null || [ "$i" -ge 100 ]; then
		echo "demo: the server did not start:" >&2
		cat "$dir/server.log" >&2
		exit 1
	fi
	sleep 0.1
	i=$((i + 1))
	url=$(sed -n 's/.*msg=listening url=\(http:[^ ]*\).*/\1/p' "$dir/server.log")
done
curl -fsS --retry 20 --retry-connrefused --retry-delay 0 -o /dev/null "$url/healthz"

for n in 1 2 3 4 5 6 7; do
	echo
	echo "+ curl -i $url/   (request $n)"
	# Status line and headers without Date, then the body.
	curl -sS -i "$url/" | tr -d '\r' | grep -v '^Date:'
done

echo
echo "+ kill -TERM $pid"
kill -TERM "$pid"
wait "$pid"
pid=
echo
echo "server log:"
cat "$dir/server.log"

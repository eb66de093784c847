#!/usr/bin/env bash
# Check or start the local RabbitMQ and Redis that genq talks to, before any Python exists.
#
#   scripts/services.sh check   exit 0 when both answer, 1 otherwise
#   scripts/services.sh start   start whichever is installed but not answering, wait, then check
#
# genq/services.py does the same from Python (`genq services check|start`) with real client
# connections; this script exists so scripts/setup.sh can bring the services up on a machine
# that has no virtualenv yet. The start commands are the same in both places.
# There is no systemd on the development and CI machines: servers are started directly.
set -euo pipefail

AMQP_HOST=127.0.0.1
AMQP_PORT=5672
REDIS_PORT=6379
# RabbitMQ boots Erlang, Mnesia and its plugins: 5-20 s here, more on a loaded machine.
# Past 60 s something is wrong and waiting longer only hides it.
WAIT_SECONDS=${GENQ_SERVICES_WAIT:-60}

say() { printf 'services: %s\n' "$*"; }

# Root runs the command as is; anyone else goes through sudo (non-interactive, so a
# password prompt fails fast instead of hanging CI).
as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        say "need root for: $*" >&2
        return 1
    fi
}

# Debian puts the server binaries in /usr/sbin, which is not on a normal user's PATH.
find_bin() {
    local name=$1 dir
    if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
    for dir in /usr/sbin /usr/bin /sbin /usr/local/sbin /usr/local/bin; do
        if [[ -x $dir/$name ]]; then echo "$dir/$name"; return 0; fi
    done
    return 1
}

# An open port is not enough: RabbitMQ's Erlang VM listens before the broker is ready to
# talk. Send the AMQP 0-9-1 protocol header and expect the first byte of a method frame
# (0x01, Connection.Start) back, which the broker sends only once it accepts connections.
# shellcheck disable=SC2016  # $0/$1 expand in the inner shell, on purpose
amqp_ok() {
    timeout 3 bash -c '
        exec 3<>"/dev/tcp/$0/$1" || exit 1
        printf "AMQP\x00\x00\x09\x01" >&3
        [[ $(head -c 1 <&3 | od -An -tx1 | tr -d " \n") == 01 ]]
    ' "$AMQP_HOST" "$AMQP_PORT" 2>/dev/null
}

redis_ok() {
    local cli
    cli=$(find_bin redis-cli) || return 1
    [[ $(timeout 3 "$cli" -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
}

# wait_for NAME CHECK_FUNCTION: poll every half second, bounded by WAIT_SECONDS.
wait_for() {
    local name=$1 probe=$2 deadline=$((SECONDS + WAIT_SECONDS))
    until "$probe"; do
        if ((SECONDS >= deadline)); then
            say "$name did not answer within ${WAIT_SECONDS}s" >&2
            return 1
        fi
        sleep 0.5
    done
    say "$name is up"
}

start_rabbitmq() {
    if amqp_ok; then say "rabbitmq answers on $AMQP_HOST:$AMQP_PORT"; return 0; fi
    local bin
    if ! bin=$(find_bin rabbitmq-server); then
        say "rabbitmq-server is not installed: install with apt-get install rabbitmq-server" >&2
        return 1
    fi
    say "starting rabbitmq ($bin -detached)"
    # Debian's wrapper switches to the rabbitmq user itself when run as root. A second
    # start while the node is still booting fails harmlessly, so its status is ignored and
    # the AMQP probe decides.
    as_root "$bin" -detached >/dev/null 2>&1 || true
    wait_for rabbitmq amqp_ok
}

start_redis() {
    if redis_ok; then say "redis answers on 127.0.0.1:$REDIS_PORT"; return 0; fi
    local bin
    if ! bin=$(find_bin redis-server); then
        say "redis-server is not installed: install with apt-get install redis-server" >&2
        return 1
    fi
    say "starting redis ($bin --daemonize yes)"
    # Nothing is persisted: genq's results are caches of finished jobs, and a dump file
    # left in the working directory would only surprise whoever runs this.
    "$bin" --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no
    wait_for redis redis_ok
}

check() {
    local rc=0
    if amqp_ok; then say "rabbitmq ok ($AMQP_HOST:$AMQP_PORT)"; else say "rabbitmq NOT answering ($AMQP_HOST:$AMQP_PORT)"; rc=1; fi
    if redis_ok; then say "redis ok (127.0.0.1:$REDIS_PORT)"; else say "redis NOT answering (127.0.0.1:$REDIS_PORT)"; rc=1; fi
    return $rc
}

start() {
    local rc=0
    start_rabbitmq || rc=1
    start_redis || rc=1
    return $rc
}

case ${1:-check} in
    check) check ;;
    start) start ;;
    *) echo "usage: $0 check|start" >&2; exit 2 ;;
esac

# progress.sh -- sourced by build-guest-kernel. A long step (extracting the source,
# compiling) would otherwise be minutes of silence: a background ticker prints, every
# WARD_PROGRESS_INTERVAL seconds (default 20), how long the step has run and, when the
# step writes a kbuild log, how many objects are done and which one is being built.

# progress_start LABEL [LOG]: starts the ticker; progress_stop ends it.
progress_start() {
    local label=$1 log=${2-} interval=${WARD_PROGRESS_INTERVAL:-20}
    (
        set +e
        started=$SECONDS
        parent=$$
        sleeper=
        trap '[ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null; exit 0' TERM
        while :; do
            # sleep in the background: a trapped signal interrupts `wait`, not `sleep`
            sleep "$interval" &
            sleeper=$!
            wait "$sleeper"
            # a builder killed outright (SIGKILL) cannot stop its ticker
            kill -0 "$parent" 2>/dev/null || exit 0
            line="$label: $((SECONDS - started))s"
            if [ -n "$log" ] && [ -f "$log" ]; then
                # kbuild's short lines: "  CC      kernel/fork.o"
                done_count=$(grep -cE '^  [A-Z0-9_]+ +[^ ]' "$log")
                last=$(tail -n 40 "$log" | grep -E '^  [A-Z0-9_]+ +[^ ]' | tail -n 1 \
                    | sed -E 's/^ +//; s/ +/ /')
                line="$line, $done_count steps done${last:+, last: $last}"
            fi
            echo "[${PROG:-progress}] $line" >&2
        done
    ) &
    PROGRESS_PID=$!
}

progress_stop() {
    [ -n "${PROGRESS_PID-}" ] || return 0
    kill "$PROGRESS_PID" 2>/dev/null || true
    wait "$PROGRESS_PID" 2>/dev/null || true
    PROGRESS_PID=
}

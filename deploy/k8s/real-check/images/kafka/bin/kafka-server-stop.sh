#!/bin/bash
# Sends SIGTERM to the broker(s) of this host (kafka.Kafka), as the distribution's script does.
signal=${SIGNAL:-TERM}
pids=$(ps ax 2>/dev/null | grep -i 'kafka\.Kafka' | grep java | grep -v grep | awk '{print $1}')
if [ -z "$pids" ]; then
  # No ps in the image: read /proc instead.
  for cmdline in /proc/[0-9]*/cmdline; do
    if tr '\0' ' ' <"$cmdline" 2>/dev/null | grep -q 'kafka\.Kafka'; then
      pid=${cmdline#/proc/}
      pids="$pids ${pid%/cmdline}"
    fi
  done
fi
if [ -z "${pids// /}" ]; then
  echo "No kafka server to stop"
  exit 1
fi
# shellcheck disable=SC2086
kill -s "$signal" $pids

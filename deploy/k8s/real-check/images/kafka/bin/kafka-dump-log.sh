#!/bin/bash
# kafka-dump-log.sh: the tool kafka.tools.DumpLogSegments, with kafka-run-class.sh's environment (a small heap unless
# KAFKA_HEAP_OPTS says otherwise; console logging).
exec "$(dirname "$0")/kafka-run-class.sh" kafka.tools.DumpLogSegments "$@"

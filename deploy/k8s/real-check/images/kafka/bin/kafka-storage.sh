#!/bin/bash
# kafka-storage.sh: the tool kafka.tools.StorageTool, with kafka-run-class.sh's environment (a small heap unless
# KAFKA_HEAP_OPTS says otherwise; console logging).
exec "$(dirname "$0")/kafka-run-class.sh" kafka.tools.StorageTool "$@"

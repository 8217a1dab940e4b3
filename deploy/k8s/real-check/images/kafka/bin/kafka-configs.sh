#!/bin/bash
# kafka-configs.sh: the tool kafka.admin.ConfigCommand, with kafka-run-class.sh's environment (a small heap unless
# KAFKA_HEAP_OPTS says otherwise; console logging).
exec "$(dirname "$0")/kafka-run-class.sh" kafka.admin.ConfigCommand "$@"

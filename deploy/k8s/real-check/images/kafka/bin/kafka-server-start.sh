#!/bin/bash
# Starts the broker (kafka.Kafka) in the foreground, or with -daemon in the background.
# Defaults, as the distribution's: a 1 GB heap, log4j2.yaml (here: to stdout), and
# EXTRA_ARGS "-name kafkaServer -loggc" (a GC log in LOG_DIR); set EXTRA_ARGS to change them.
if [ $# -lt 1 ]; then
  echo "USAGE: $0 [-daemon] server.properties [--override property=value]*" >&2
  exit 1
fi
base_dir=$(dirname "$0")

: "${KAFKA_LOG4J_OPTS:=-Dlog4j2.configurationFile=$base_dir/../config/log4j2.yaml}"
: "${KAFKA_HEAP_OPTS:=-Xmx1G -Xms1G}"
export KAFKA_LOG4J_OPTS KAFKA_HEAP_OPTS

EXTRA_ARGS=${EXTRA_ARGS-'-name kafkaServer -loggc'}
if [ "$1" = -daemon ]; then
  EXTRA_ARGS="-daemon $EXTRA_ARGS"
  shift
fi

# shellcheck disable=SC2086
exec "$base_dir/kafka-run-class.sh" $EXTRA_ARGS kafka.Kafka "$@"

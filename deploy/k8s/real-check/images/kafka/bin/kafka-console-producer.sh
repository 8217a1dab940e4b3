#!/bin/bash
# kafka-console-producer.sh: the tool org.apache.kafka.tools.ConsoleProducer, with kafka-run-class.sh's environment (a small heap unless
# KAFKA_HEAP_OPTS says otherwise; console logging).
exec "$(dirname "$0")/kafka-run-class.sh" org.apache.kafka.tools.ConsoleProducer "$@"

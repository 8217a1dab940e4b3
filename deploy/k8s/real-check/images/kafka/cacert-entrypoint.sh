#!/bin/bash
# The official image inherits this entrypoint from eclipse-temurin: with USE_SYSTEM_CA_CERTS set
# it adds the certificates mounted under /certificates to the JVM's trust store, then runs the
# command. Here the JVM trusts the system store (/etc/ssl/certs/java/cacerts, Debian's), so the
# extra certificates are imported into a copy of it that the JVM is pointed at.
set -e
if [ -n "${USE_SYSTEM_CA_CERTS:-}" ] && [ -d /certificates ] && [ -n "$(ls -A /certificates 2>/dev/null)" ]; then
  store="$(mktemp -d)/cacerts"
  cp /etc/ssl/certs/java/cacerts "$store"
  for cert in /certificates/*; do
    [ -f "$cert" ] || continue
    keytool -importcert -noprompt -cacerts -storepass changeit -alias "$(basename "$cert")" \
      -file "$cert" -keystore "$store" >/dev/null 2>&1 ||
      keytool -importcert -noprompt -storepass changeit -alias "$(basename "$cert")" \
        -file "$cert" -keystore "$store" >/dev/null
  done
  export JAVA_TOOL_OPTIONS="${JAVA_TOOL_OPTIONS:-} -Djavax.net.ssl.trustStore=$store"
fi
exec "$@"

#!/bin/sh
# A tiny record processor speaking the MultiLangDaemon protocol, for the launch tests. Like a real child it ignores
# SIGINT and SIGTERM (the daemon decides when it ends) and exits when stdin closes.
trap '' INT TERM HUP
while IFS= read -r line; do
  case "$line" in
    *'"action":"initialize"'*)
      printf '\n{"action":"status","responseFor":"initialize"}\n' ;;
    *'"action":"processRecords"'*)
      printf '\n{"action":"checkpoint","sequenceNumber":null,"subSequenceNumber":null}\n'
      IFS= read -r reply
      printf '\n{"action":"status","responseFor":"processRecords"}\n' ;;
    *'"action":"shutdownRequested"'*)
      echo "processor: shutdownRequested" >&2
      printf '\n{"action":"checkpoint","sequenceNumber":null,"subSequenceNumber":null}\n'
      IFS= read -r reply
      printf '\n{"action":"status","responseFor":"shutdownRequested"}\n' ;;
  esac
done

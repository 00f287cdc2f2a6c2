#!/usr/bin/env python3
"""A KCL processor that breaks the protocol on purpose, one way per mode (the first argument).

good                 a correct processor: checkpoints each batch and at shard end
keys                 a correct processor that writes each record's partition key to stderr
digests              a correct processor that writes the SHA-256 of each record's payload to stderr, and
                     waits 20 ms after each batch's status before it reads on
garbage              answers processRecords with a non-JSON line, then the right status
extra-key            answers processRecords with a status carrying an extra key, then the right status
wrong-response       answers processRecords with responseFor "initialize"
checkpoint-init      checkpoints during initialize
two-statuses         answers initialize twice
no-shard-end         answers shardEnded without checkpointing
no-exit              ignores stdin EOF (sleeps)
timeout              never answers processRecords
slow                 a correct processor that takes 0.3 s over each batch
"""
import base64
import hashlib
import json
import sys
import time

mode = sys.argv[1] if len(sys.argv) > 1 else "good"


def write(obj_or_text):
    text = obj_or_text if isinstance(obj_or_text, str) else json.dumps(obj_or_text)
    sys.stdout.write("\n" + text + "\n")
    sys.stdout.flush()


def status(action):
    write({"action": "status", "responseFor": action})


def checkpoint(sequence=None):
    write({"action": "checkpoint", "sequenceNumber": sequence, "subSequenceNumber": None})
    while True:
        line = sys.stdin.readline()
        if not line:
            sys.exit(0)
        if line.strip() and json.loads(line).get("action") == "checkpoint":
            return


for line in sys.stdin:
    if not line.strip():
        continue
    action = json.loads(line)["action"]
    if action == "initialize":
        if mode == "checkpoint-init":
            checkpoint("TRIM_HORIZON")
        if mode == "two-statuses":
            # One write, so that both lines are in the pipe before the daemon sends its next action.
            one = json.dumps({"action": "status", "responseFor": action})
            sys.stdout.write("\n" + one + "\n\n" + one + "\n")
            sys.stdout.flush()
        else:
            status(action)
    elif action == "processRecords":
        if mode == "timeout":
            time.sleep(60)
        if mode == "slow":
            time.sleep(0.3)
        if mode == "keys":
            for record in json.loads(line)["records"]:
                sys.stderr.write(record["partitionKey"] + "\n")
            sys.stderr.flush()
        if mode == "digests":
            for record in json.loads(line)["records"]:
                sys.stderr.write(hashlib.sha256(base64.b64decode(record["data"])).hexdigest() + "\n")
            sys.stderr.flush()
        if mode == "garbage":
            write("this is not JSON")
        if mode == "extra-key":
            write({"action": "status", "responseFor": action, "extra": 1})
        if mode == "wrong-response":
            status("initialize")
            continue
        checkpoint()
        status(action)
        if mode == "digests":
            time.sleep(0.02)
    elif action == "shardEnded":
        if mode != "no-shard-end":
            checkpoint()
        status(action)
    else:
        status(action)

if mode == "no-exit":
    time.sleep(60)

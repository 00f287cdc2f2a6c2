'use strict';

// A record processor on aws-kcl 2.x, run by tests/Kcl.Core.Tests/NodeBindingTests.fs against the daemon-side model.
// stdout belongs to the protocol, so every log line goes to stderr.

const kcl = require('aws-kcl');

// The daemon's retryable checkpoint errors (PROTOCOL.md §4.4); anything else is given up on.
const retryable = new Set(['ThrottlingException', 'KinesisClientLibDependencyException']);
const maxAttempts = 3;

let shardId = null;
let records = 0;
let batches = 0;

function log(message) {
  process.stderr.write(`node-kcl ${shardId}: ${message}\n`);
}

// aws-kcl's checkpointer takes a sequence number only (no sub-sequence number); none means "the largest permitted".
function checkpoint(checkpointer, sequenceNumber, attempt, done) {
  const target = sequenceNumber === null ? 'the largest permitted' : sequenceNumber;
  const retry = (err) => {
    if (retryable.has(err) && attempt < maxAttempts) {
      log(`checkpoint at ${target} failed with ${err}, attempt ${attempt}; retrying`);
      checkpoint(checkpointer, sequenceNumber, attempt + 1, done);
    } else {
      log(`checkpoint at ${target} failed with ${err}, attempt ${attempt}; giving up`);
      done();
    }
  };
  const answered = (err) => {
    if (err) {
      retry(err);
    } else {
      log(`checkpointed at ${target}`);
      done();
    }
  };
  if (sequenceNumber === null) {
    checkpointer.checkpoint(answered);
  } else {
    checkpointer.checkpoint(sequenceNumber, answered);
  }
}

kcl({
  initialize(input, completeCallback) {
    shardId = input.shardId;
    log(`initialized at ${input.sequenceNumber}/${input.subSequenceNumber}`);
    completeCallback();
  },

  processRecords(input, completeCallback) {
    batches += 1;
    for (const record of input.records) {
      records += 1;
      const text = record.data === null ? '' : Buffer.from(record.data, 'base64').toString('utf8');
      log(`record ${record.sequenceNumber}/${record.subSequenceNumber} key ${record.partitionKey}: ${text}`);
    }
    if (input.records.length === 0) {
      completeCallback();
      return;
    }
    const last = input.records[input.records.length - 1];
    checkpoint(input.checkpointer, last.sequenceNumber, 1, completeCallback);
  },

  leaseLost(input, completeCallback) {
    log(`lease lost after ${records} records in ${batches} batches`);
    completeCallback();
  },

  shardEnded(input, completeCallback) {
    log(`shard ended after ${records} records in ${batches} batches`);
    checkpoint(input.checkpointer, null, 1, completeCallback);
  },

  shutdownRequested(input, completeCallback) {
    log(`shutdown requested after ${records} records in ${batches} batches`);
    checkpoint(input.checkpointer, null, 1, completeCallback);
  }
}).run();

'use strict';

// The whole-process benchmark's Node child: the same work as samples/CSharpConsumer, so that the two are compared
// like for like. Each record is decoded from base64 and as UTF-8 text, and counted; one log line per batch goes to
// stderr; a checkpoint at the end of every batch and at shard end.

const kcl = require('aws-kcl');

let shardId = null;
let records = 0;
let characters = 0;
let batches = 0;

function log(message) {
  process.stderr.write(`${new Date().toISOString()} INFO [${shardId}] node: ${message}\n`);
}

function checkpoint(checkpointer, done) {
  checkpointer.checkpoint((err) => {
    if (err) {
      log(`checkpoint failed: ${err}`);
    }
    done();
  });
}

kcl({
  initialize(input, completeCallback) {
    shardId = input.shardId;
    log(`serving ${shardId} from ${input.sequenceNumber}`);
    completeCallback();
  },

  processRecords(input, completeCallback) {
    for (const record of input.records) {
      characters += Buffer.from(record.data, 'base64').toString('utf8').length;
    }
    records += input.records.length;
    batches += 1;
    log(`batch ${batches}: ${input.records.length} records (${records} in all, ${characters} characters), ` +
      `${input.millisBehindLatest} ms behind`);
    checkpoint(input.checkpointer, completeCallback);
  },

  leaseLost(input, completeCallback) {
    log(`lease on ${shardId} lost after ${records} records`);
    completeCallback();
  },

  shardEnded(input, completeCallback) {
    log(`${shardId} ended after ${records} records; checkpointing at SHARD_END`);
    checkpoint(input.checkpointer, completeCallback);
  },

  shutdownRequested(input, completeCallback) {
    log(`shutdown requested after ${records} records; checkpointing`);
    checkpoint(input.checkpointer, completeCallback);
  },
}).run();

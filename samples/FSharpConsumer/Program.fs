/// A record processor in the pure style: it counts records and checkpoints at the end of every batch, at shard end and
/// at shutdown. Retries are the library's; a failed checkpoint is escalated, so POLICY.md decides what follows.
module FSharpConsumer.Program

open Kcl.Core
open Microsoft.Extensions.Logging

type Counts =
    {
        Shard: string
        Batches: int
        Records: int64
        Bytes: int64
    }

let empty =
    {
        Shard = "(not yet initialized)"
        Batches = 0
        Records = 0L
        Bytes = 0L
    }

let private log level format =
    Printf.kprintf (fun message -> Command.Log(level, message)) format

let update (counts: Counts) (event: Event) : Counts * Command list =
    match event with
    | Event.Initialized(shardId, sequenceNumber, _) ->
        let from =
            sequenceNumber |> Option.map _.Value |> Option.defaultValue "the start of the lease"

        { counts with Shard = shardId.Value }, [ log LogLevel.Information "serving %s from %s" shardId.Value from ]
    | Event.RecordsReceived(records, millisBehindLatest) ->
        let counts =
            { counts with
                Batches = counts.Batches + 1
                Records = counts.Records + int64 records.Length
                Bytes = counts.Bytes + (records |> Array.sumBy (fun record -> int64 record.Data.Length))
            }

        counts,
        [
            log
                LogLevel.Information
                "batch %d: %d records (%d in all, %d bytes), %s ms behind"
                counts.Batches
                records.Length
                counts.Records
                counts.Bytes
                (millisBehindLatest |> Option.map string |> Option.defaultValue "?")
            Command.Checkpoint CheckpointTarget.LastDelivered
        ]
    | Event.ShardEnded ->
        counts,
        [
            log LogLevel.Information "%s ended after %d records; checkpointing at SHARD_END" counts.Shard counts.Records
            Command.Checkpoint CheckpointTarget.LastDelivered
        ]
    | Event.ShutdownRequested ->
        counts,
        [
            log LogLevel.Information "shutdown requested after %d records; checkpointing" counts.Records
            Command.Checkpoint CheckpointTarget.LastDelivered
        ]
    | Event.LeaseLost -> counts, [ log LogLevel.Information "lease on %s lost after %d records" counts.Shard counts.Records ]
    | Event.CheckpointSucceeded _ -> counts, [ log LogLevel.Debug "checkpointed after %d records" counts.Records ]
    | Event.CheckpointFailed(_, failure) ->
        counts, [ log LogLevel.Warning "checkpoint failed: %s" failure.Detail; Command.Escalate failure ]

[<EntryPoint>]
let main _ = Processor.create empty update |> Processor.run

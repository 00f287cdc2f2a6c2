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

let private log level (message: string) = Command.Log(level, message)

let update (counts: Counts) (event: Event) : Counts * Command list =
    match event with
    | Event.Initialized(shardId, sequenceNumber, _) ->
        let from =
            sequenceNumber |> Option.map _.Value |> Option.defaultValue "the start of the lease"

        { counts with Shard = shardId.Value }, [ log LogLevel.Information $"serving {shardId.Value} from {from}" ]
    | Event.RecordsReceived(records, millisBehindLatest) ->
        let counts =
            { counts with
                Batches = counts.Batches + 1
                Records = counts.Records + int64 records.Length
                Bytes = counts.Bytes + (records |> Array.sumBy (fun record -> int64 record.Data.Length))
            }

        let behind =
            millisBehindLatest |> Option.map string |> Option.defaultValue "?"

        counts,
        [
            log
                LogLevel.Information
                $"batch {counts.Batches}: {records.Length} records ({counts.Records} in all, {counts.Bytes} bytes), {behind} ms behind"
            Command.Checkpoint CheckpointTarget.LastDelivered
        ]
    | Event.ShardEnded ->
        counts,
        [
            log LogLevel.Information $"{counts.Shard} ended after {counts.Records} records; checkpointing at SHARD_END"
            Command.Checkpoint CheckpointTarget.LastDelivered
        ]
    | Event.ShutdownRequested ->
        counts,
        [
            log LogLevel.Information $"shutdown requested after {counts.Records} records; checkpointing"
            Command.Checkpoint CheckpointTarget.LastDelivered
        ]
    | Event.LeaseLost -> counts, [ log LogLevel.Information $"lease on {counts.Shard} lost after {counts.Records} records" ]
    | Event.CheckpointSucceeded _ -> counts, [ log LogLevel.Debug $"checkpointed after {counts.Records} records" ]
    | Event.CheckpointFailed(_, failure) ->
        counts, [ log LogLevel.Warning $"checkpoint failed: {failure.Detail}"; Command.Escalate failure ]

[<EntryPoint>]
let main _ = Processor.create empty update |> Processor.run

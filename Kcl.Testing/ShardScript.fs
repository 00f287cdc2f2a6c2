(*
    What the test daemon sends: an immutable script of actions for one shard, built with C#-style methods. The first
    action is always `initialize`; the checkpoint faults are applied by the daemon-side session in Kcl.Core.
*)
namespace Kcl.Testing

open System
open System.Collections.Generic
open System.Text
open Kcl.Core

type internal ScriptState =
    {
        ShardId: string
        Start: (string * int64) option
        /// Newest first.
        Actions: DaemonMessage list
        /// Newest first.
        Faults: FaultRule list
        NextRecord: int
        Timeout: TimeSpan
    }

/// The daemon's actions for one shard, and the checkpoint failures to inject. Immutable: each method returns a
/// changed copy.
[<Sealed>]
type ShardScript internal (state: ScriptState) =

    // 50 digits of a real sequence number, then a 6-digit counter: 56 digits, increasing, like Kinesis's own.
    static let sequencePrefix = "49590338271490256608559692538361571095921575989136"
    static let arrival = DateTimeOffset.FromUnixTimeMilliseconds 1700000000123L

    let shardId = state.ShardId

    /// A script for this shard, starting at TRIM_HORIZON, with no actions yet.
    static member ForShard(shardId: string) =
        if String.IsNullOrEmpty shardId then invalidArg (nameof shardId) "a shard id is required"

        ShardScript
            {
                ShardId = shardId
                Start = None
                Actions = []
                Faults = []
                NextRecord = 1
                Timeout = TimeSpan.FromSeconds 10.0
            }

    /// A script for "shardId-000000000000", starting at TRIM_HORIZON, with no actions yet.
    static member Create() = ShardScript.ForShard "shardId-000000000000"

    /// The shard the script is for.
    member _.ShardId = shardId

    /// How long the daemon waits for each message from the processor before it reports a timeout.
    member _.Timeout = state.Timeout

    member internal _.Initialize =
        let sequenceNumber, sub =
            match state.Start with
            | Some(sequenceNumber, sub) -> SequenceNumber.parse sequenceNumber, sub
            | None -> SequenceNumber.ofSentinel Sentinel.TrimHorizon, 0L

        DaemonMessage.Initialize(ShardId shardId, Some sequenceNumber, Some sub)

    member internal _.Actions = List.rev state.Actions
    member internal _.Faults = List.rev state.Faults

    /// A copy whose shard resumes from this checkpoint (digits or a sentinel).
    member this.StartingAt(sequenceNumber: string, subSequenceNumber: int64) =
        SequenceNumber.parse sequenceNumber |> ignore
        ShardScript { state with Start = Some(sequenceNumber, subSequenceNumber) }

    /// A copy that sends a batch of these records.
    member this.Batch(records: IEnumerable<Kcl.Record>, millisBehindLatest: Nullable<int64>) =
        if isNull records then nullArg (nameof records)

        let records =
            records
            |> Seq.map (fun record ->
                {
                    Data = record.Data
                    PartitionKey = record.PartitionKey
                    SequenceNumber = SequenceNumber.parse record.SequenceNumber
                    SubSequenceNumber = record.SubSequenceNumber
                    ApproximateArrivalTimestamp = Option.ofNullable record.ApproximateArrivalTimestamp
                })
            |> Array.ofSeq

        this.Then(DaemonMessage.ProcessRecords(records, Option.ofNullable millisBehindLatest))

    /// A copy that sends a batch of these records, 0 ms behind the tip.
    member this.Batch([<ParamArray>] records: Kcl.Record[]) = this.Batch(records, Nullable 0L)

    /// A copy that sends a batch of records with these UTF-8 texts, generated sequence numbers (56 digits,
    /// increasing across the script) and partition keys "pk-1", "pk-2"...
    member this.Texts([<ParamArray>] texts: string[]) =
        if isNull texts then nullArg (nameof texts)

        let records =
            texts
            |> Array.mapi (fun i text ->
                let n = state.NextRecord + i

                {
                    Data = ReadOnlyMemory(Encoding.UTF8.GetBytes text)
                    PartitionKey = sprintf "pk-%d" n
                    SequenceNumber = SequenceNumber.parse (sequencePrefix + n.ToString "D6")
                    SubSequenceNumber = 0L
                    ApproximateArrivalTimestamp = Some arrival
                })

        ShardScript
            { state with
                Actions = DaemonMessage.ProcessRecords(records, Some 0L) :: state.Actions
                NextRecord = state.NextRecord + texts.Length
            }

    /// A copy that sends an empty batch (as `callProcessRecordsEvenForEmptyRecordList` does).
    member this.EmptyBatch() =
        this.Then(DaemonMessage.ProcessRecords([||], None))

    /// A copy that ends the shard: `shardEnded`, which requires a SHARD_END checkpoint.
    member this.ShardEnded() =
        this.Then DaemonMessage.ShardEnded

    /// A copy in which the lease is lost: `leaseLost`.
    member this.LeaseLost() =
        this.Then DaemonMessage.LeaseLost

    /// A copy in which the worker shuts down: `shutdownRequested`, then `leaseLost`, as the daemon does.
    member this.ShutdownRequested() =
        this.Then(DaemonMessage.ShutdownRequested).Then(DaemonMessage.LeaseLost)

    /// A copy that sends a legacy (KCL 1.7.2 to 2.0.x) `shutdown` with this reason: TERMINATE or SHARD_END (the shard
    /// ended), ZOMBIE or LEASE_LOST (the lease was lost).
    member this.LegacyShutdown(reason: string) =
        let reason =
            match reason with
            | "TERMINATE" -> ShutdownReason.Terminate
            | "SHARD_END" -> ShutdownReason.ShardEnd
            | "ZOMBIE" -> ShutdownReason.Zombie
            | "LEASE_LOST" -> ShutdownReason.LeaseLost
            | other -> invalidArg (nameof reason) (sprintf "%A is not TERMINATE, SHARD_END, ZOMBIE or LEASE_LOST" other)

        this.Then(DaemonMessage.Shutdown reason)

    /// A copy that sends this message next, as it is: for legacy `shutdown` messages and cases the methods above do
    /// not cover.
    member internal _.Then(message: DaemonMessage) : ShardScript =
        ShardScript { state with Actions = message :: state.Actions }

    /// A copy that answers every checkpoint request with this daemon error, e.g. "ThrottlingException".
    member this.FailCheckpoints(errorName: string) =
        this.FailCheckpointsFrom(errorName, 1)

    /// A copy that answers the first `times` checkpoint requests with this daemon error.
    member this.FailCheckpoints(errorName: string, times: int) =
        this.FailCheckpoints(errorName, times, 1)

    /// A copy that answers `times` checkpoint requests in a row, from the `fromRequest`-th (1-based), with this error.
    member this.FailCheckpoints(errorName: string, times: int, fromRequest: int) =
        if times < 1 then invalidArg (nameof times) "fail at least one request"
        if fromRequest < 1 then invalidArg (nameof fromRequest) "requests are counted from 1"
        ShardScript { state with Faults = FaultRule.Times(ShardScript.ErrorOf errorName, fromRequest, times) :: state.Faults }

    /// A copy that answers every checkpoint request from the `fromRequest`-th (1-based) on with this error.
    member this.FailCheckpointsFrom(errorName: string, fromRequest: int) =
        if fromRequest < 1 then invalidArg (nameof fromRequest) "requests are counted from 1"
        ShardScript { state with Faults = FaultRule.Always(ShardScript.ErrorOf errorName, fromRequest) :: state.Faults }

    /// A copy that waits this long for each message before reporting a timeout.
    member this.WithTimeout(timeout: TimeSpan) =
        if timeout <= TimeSpan.Zero then invalidArg (nameof timeout) "the timeout must be positive"
        ShardScript { state with Timeout = timeout }

    static member private ErrorOf(errorName: string) =
        if String.IsNullOrWhiteSpace errorName then
            invalidArg (nameof errorName) "name the daemon's error, e.g. \"ThrottlingException\""

        CheckpointError.OfName errorName

(*
    The core in C#'s shape: the one file the C# facade (Kcl.CSharp) wraps. No F# option, list, function or union
    crosses this boundary; tupled members, Nullable, IReadOnlyList, Task and Func do. The rules stay in the lifecycle:
    nothing here decides.
*)
namespace Kcl.Core.Interop

open System
open System.Collections.Generic
open System.IO
open System.Threading
open System.Threading.Tasks
open Kcl.Core
open Microsoft.Extensions.Logging

/// Which processor callback an action runs.
type ActionKind =
    /// `initialize`: no checkpoints allowed.
    | Initialize = 0
    /// `processRecords`: a batch of records.
    | ProcessRecords = 1
    /// `leaseLost` (or a legacy ZOMBIE/LEASE_LOST shutdown): no checkpoints allowed.
    | LeaseLost = 2
    /// `shardEnded` (or a legacy TERMINATE/SHARD_END shutdown): a SHARD_END checkpoint is owed.
    | ShardEnded = 3
    /// `shutdownRequested`: a last checkpoint may be taken.
    | ShutdownRequested = 4

/// Reading core records from C#.
[<AbstractClass; Sealed>]
type Records =
    /// When Kinesis received the record, or null when the daemon did not say.
    static member ArrivalTime(record: Record) : Nullable<DateTimeOffset> =
        match record.ApproximateArrivalTimestamp with
        | Some time -> Nullable time
        | None -> Nullable()

/// One action of the lifecycle, as the facade hands it to a processor.
[<Sealed>]
type ActionCall internal (callback: Lifecycle.Callback, checkpointer: Checkpointer) =
    static let noRecords: IReadOnlyList<Record> = Array.empty

    static let toNullable option =
        match option with
        | Some value -> Nullable value
        | None -> Nullable()

    /// Which callback to run.
    member _.Kind =
        match callback with
        | Lifecycle.Callback.Initialize _ -> ActionKind.Initialize
        | Lifecycle.Callback.ProcessRecords _ -> ActionKind.ProcessRecords
        | Lifecycle.Callback.LeaseLost -> ActionKind.LeaseLost
        | Lifecycle.Callback.ShardEnded -> ActionKind.ShardEnded
        | Lifecycle.Callback.ShutdownRequested -> ActionKind.ShutdownRequested

    /// The shard id, for `Initialize`; null otherwise.
    member _.ShardId =
        match callback with
        | Lifecycle.Callback.Initialize(shardId, _, _) -> shardId.Value
        | _ -> null

    /// The checkpoint the shard resumes from, for `Initialize`; null when there is none.
    member _.SequenceNumber =
        match callback with
        | Lifecycle.Callback.Initialize(_, Some sequenceNumber, _) -> sequenceNumber.Value
        | _ -> null

    /// The sub-sequence number of the checkpoint the shard resumes from, for `Initialize`.
    member _.SubSequenceNumber =
        match callback with
        | Lifecycle.Callback.Initialize(_, _, sub) -> toNullable sub
        | _ -> Nullable()

    /// The batch, for `ProcessRecords`; empty otherwise.
    member _.Records: IReadOnlyList<Record> =
        match callback with
        | Lifecycle.Callback.ProcessRecords(records, _) -> records
        | _ -> noRecords

    /// How far behind the stream's tip the batch is, for `ProcessRecords`, when the daemon said.
    member _.MillisBehindLatest =
        match callback with
        | Lifecycle.Callback.ProcessRecords(_, behind) -> toNullable behind
        | _ -> Nullable()

    /// Checkpoints at the end of the batch (at SHARD_END in `ShardEnded`) when `sequenceNumber` is null, else at the
    /// given position. Completes when the daemon has answered and the retry policy is done; throws
    /// `Kcl.CheckpointException` when the checkpoint failed, and `ArgumentException` for a malformed position.
    member _.CheckpointAsync(sequenceNumber: string, subSequenceNumber: Nullable<int64>, cancellationToken: CancellationToken) =
        let target =
            if isNull sequenceNumber then
                CheckpointTarget.LastDelivered
            else
                match SequenceNumber.tryParse sequenceNumber with
                | Error message -> invalidArg (nameof sequenceNumber) message
                | Ok parsed ->
                    if subSequenceNumber.HasValue && subSequenceNumber.Value < 0L then
                        raise (
                            ArgumentOutOfRangeException(
                                nameof subSequenceNumber,
                                subSequenceNumber.Value,
                                "a sub-sequence number is never negative"
                            )
                        )

                    CheckpointTarget.At(parsed, Option.ofNullable subSequenceNumber)

        task {
            match! checkpointer.Checkpoint(target).WaitAsync cancellationToken with
            | Ok() -> ()
            | Error failure -> return raise (Kcl.CheckpointException failure)
        }
        :> Task

/// How a run is wired, in C#'s shape: every member has a default.
[<Sealed; AllowNullLiteral>]
type RuntimeSettings() =
    // The default's error names, made without F# Set or Seq functions: their code is JIT-compiled on first use, and
    // every run starts here.
    static let defaultRetryable =
        let errors = RetryPolicy.DefaultRetryOn
        let names = Array.zeroCreate<string> errors.Length

        for i in 0 .. errors.Length - 1 do
            names[i] <- errors[i].Name

        names

    // The same names in any order: a default run then reuses the default's set instead of building one.
    static let isDefaultRetryable (names: IReadOnlyCollection<string>) =
        HashSet<string>(names, StringComparer.Ordinal).SetEquals defaultRetryable

    /// Attempts in all for a checkpoint, the first included.
    member val MaxAttempts = RetryPolicy.Default.MaxAttempts with get, set
    /// The backoff limit after the first failed attempt; it doubles after each further one.
    member val InitialBackoff = RetryPolicy.Default.InitialBackoff with get, set
    /// The largest backoff limit.
    member val MaxBackoff = RetryPolicy.Default.MaxBackoff with get, set
    /// Whether each wait is a random time up to the limit (full jitter).
    member val FullJitter = RetryPolicy.Default.FullJitter with get, set
    /// The daemon error names worth another attempt.
    member val RetryableErrors: IReadOnlyCollection<string> =
        defaultRetryable.Clone() :?> string[] :> _ with get, set
    /// Log, answer and go on when a callback throws, instead of failing fast.
    member val SkipFailedBatch = false with get, set
    /// Where diagnostics go; null means the library's stderr log (KCL_LOG_LEVEL, KCL_LOG_FILE).
    member val LoggerFactory: ILoggerFactory = null with get, set
    /// The daemon's stream; null means the real stdin (and then `Output` must be null too).
    member val Input: Stream = null with get, set
    /// The protocol's stream; null means the real stdout, taken over at the file-descriptor level.
    member val Output: Stream = null with get, set

    member internal this.ToRunOptions() : RunOptions =
        if isNull this.Input <> isNull this.Output then
            invalidArg "settings" "give both the input and the output stream, or neither"

        {
            Retry =
                {
                    MaxAttempts = this.MaxAttempts
                    InitialBackoff = this.InitialBackoff
                    MaxBackoff = this.MaxBackoff
                    FullJitter = this.FullJitter
                    RetryOn =
                        if isDefaultRetryable this.RetryableErrors then
                            RetryPolicy.Default.RetryOn
                        else
                            this.RetryableErrors |> Seq.map CheckpointError.OfName |> Set.ofSeq
                }
            OnProcessorException =
                if this.SkipFailedBatch then
                    ExceptionPolicy.SkipFailedBatch
                else
                    ExceptionPolicy.FailFast
            LoggerFactory = Option.ofObj this.LoggerFactory
            Streams =
                if isNull this.Input then
                    None
                else
                    Some(this.Input, this.Output)
        }

/// Runs a processor given in C#'s shape.
[<AbstractClass; Sealed>]
type Runtime =
    /// Claims the real stdout for the protocol now (at the file-descriptor level) and ignores SIGINT, SIGTERM and
    /// SIGHUP, as a run over the real streams does first thing. For hosts that build loggers and services before the
    /// run; calling it again, or running later, is harmless.
    static member ClaimStandardStreams() = Stdio.takeOver () |> ignore

    /// Runs the child's whole life, calling `handler` for each action, and returns the exit code.
    static member RunAsync
        (handler: Func<ActionCall, CancellationToken, Task>, settings: RuntimeSettings, cancellationToken: CancellationToken)
        : Task<int> =
        if isNull handler then nullArg (nameof handler)
        if isNull settings then nullArg (nameof settings)
        let options = settings.ToRunOptions()

        let actions =
            { new IActionHandler with
                member _.Handle(callback, checkpointer, token) =
                    handler.Invoke(ActionCall(callback, checkpointer), token)
            }

        Processor.runHandler options actions cancellationToken

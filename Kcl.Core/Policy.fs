(*
    What the library does when things go wrong: shared/protocol/POLICY.md as values. The lifecycle reads these;
    nothing else decides retries, exception handling or exit codes.
*)
namespace Kcl.Core

open System

/// Why a checkpoint did not succeed. The library has already retried it as far as its retry policy allows.
type CheckpointFailure =
    {
        /// The daemon's error, or the error the daemon would have given when the library refused the request locally.
        Error: CheckpointError
        /// How many requests went on the wire for this checkpoint; 0 when it was refused or abandoned locally.
        Attempts: int
        /// A sentence saying what happened, for logs and exception messages.
        Detail: string
    }

    /// True when the lease is gone, so no checkpoint can succeed in this process.
    member this.IsLeaseLost = this.Error.IsLeaseLost

    /// True when the daemon's error is of the retryable kind (the attempts have still run out).
    member this.IsRetryable = this.Error.IsRetryable

/// What happens when a processor callback throws (POLICY.md "Processor exceptions").
[<RequireQualifiedAccess>]
type ExceptionPolicy =
    /// Log the exception and exit non-zero with no status, so the batch comes again after the restart. The default.
    | FailFast
    /// Log the exception, answer the status and go on. A later checkpoint covers the failed batch, so its records are
    /// never processed again.
    | SkipFailedBatch

/// How long to wait before the next attempt of a checkpoint.
[<RequireQualifiedAccess>]
type Backoff =
    /// Wait exactly this long.
    | Exactly of delay: TimeSpan
    /// Wait a uniformly random time between zero and this long ("full jitter").
    | UpTo of limit: TimeSpan

/// The one place checkpoint retries are decided (POLICY.md "Checkpoints").
type RetryPolicy =
    {
        /// Attempts in all, the first one included. 1 means no retries.
        MaxAttempts: int
        /// The backoff limit after the first failed attempt; it doubles after each further one.
        InitialBackoff: TimeSpan
        /// The largest backoff limit.
        MaxBackoff: TimeSpan
        /// Whether to wait a random time up to the limit (full jitter) rather than the limit itself.
        FullJitter: bool
        /// The daemon errors worth another attempt.
        RetryOn: Set<CheckpointError>
    }

    static let defaultRetryOn = [| CheckpointError.Throttling; CheckpointError.Dependency |]

    // Built once: every run reads the default, and each F# Set built costs start-up time.
    static let defaultPolicy =
        {
            MaxAttempts = 6
            InitialBackoff = TimeSpan.FromMilliseconds 200.0
            MaxBackoff = TimeSpan.FromMilliseconds 3200.0
            FullJitter = true
            RetryOn = Set.ofArray defaultRetryOn
        }

    /// The default's retryable errors as an array, for callers that must not enumerate an F# Set at start-up.
    static member internal DefaultRetryOn = defaultRetryOn

    /// POLICY.md's default: throttling and dependency errors, 6 attempts, 200 ms doubling to at most 3.2 s, full
    /// jitter; at most 6.2 s of waiting in all.
    static member Default = defaultPolicy

    /// A policy that never retries.
    static member NoRetries = { RetryPolicy.Default with MaxAttempts = 1 }

    /// Whether another attempt follows a failure with this error after `attemptsMade` attempts.
    member this.ShouldRetry(error: CheckpointError, attemptsMade: int) =
        attemptsMade < this.MaxAttempts && this.RetryOn.Contains error

    /// The wait after `failedAttempts` failed attempts (1 for the wait after the first).
    member this.BackoffAfter(failedAttempts: int) =
        let doublings = min (max (failedAttempts - 1) 0) 30
        let ticks = float this.InitialBackoff.Ticks * Math.Pow(2.0, float doublings)
        let limit = TimeSpan.FromTicks(int64 (min ticks (float this.MaxBackoff.Ticks)))
        if this.FullJitter then Backoff.UpTo limit else Backoff.Exactly limit

    /// The longest the policy can wait in all, across every retry of one checkpoint.
    member this.MaxTotalWait =
        Seq.init (max (this.MaxAttempts - 1) 0) (fun i ->
            match this.BackoffAfter(i + 1) with
            | Backoff.Exactly delay
            | Backoff.UpTo delay -> delay)
        |> Seq.fold (+) TimeSpan.Zero

/// The exit codes of a child process, one per cause.
type ExitCode =
    /// The daemon closed stdin: the normal end of every child.
    | EndOfInput = 0
    /// The library itself failed unexpectedly; a bug to report.
    | InternalError = 1
    /// A processor callback threw (or a checkpoint failure escaped it) under the fail-fast policy.
    | ProcessorFailed = 2
    /// The daemon sent a line that could not be decoded or acted on; logged with the line.
    | UndecodableInput = 3
    /// The shard ended but its SHARD_END checkpoint could not be made; answering would wedge the shard.
    | ShardEndNotCheckpointed = 4

namespace Kcl

open System
open Kcl.Core

/// A checkpoint that did not succeed, after the library's retry policy. Thrown by checkpoint calls; when it escapes a
/// callback, POLICY.md decides what follows (a lease-lost failure, for one, is answered rather than fatal).
[<Sealed>]
type CheckpointException internal (failure: CheckpointFailure) =
    inherit Exception(sprintf "checkpoint failed: %s (%s)" failure.Error.Name failure.Detail)

    member internal _.Failure = failure

    /// The daemon's error: the Java exception's simple name, e.g. "ThrottlingException".
    member _.ErrorName = failure.Error.Name

    /// True when the error is of the retryable kind (throttling or a dependency failure); the retries have run out.
    member _.IsRetryable = failure.IsRetryable

    /// True when this worker no longer holds the lease; no checkpoint can succeed in this process.
    member _.IsLeaseLost = failure.IsLeaseLost

    /// How many requests went on the wire; 0 when the library refused or abandoned the checkpoint locally.
    member _.Attempts = failure.Attempts

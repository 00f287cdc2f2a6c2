/// The shard lifecycle as one pure function, `transition : Input -> State -> State * Effect list`, in the manner of
/// Elmish's `update`. It enforces PROTOCOL.md §4 and applies POLICY.md; the interpreter only performs the effects.
[<RequireQualifiedAccess>]
module Kcl.Core.Lifecycle

open Microsoft.Extensions.Logging

/// The processor callback to run for an action.
[<RequireQualifiedAccess>]
type Callback =
    /// `initialize`: the shard and the checkpoint it resumes from, if any. No checkpoints allowed.
    | Initialize of shardId: ShardId * sequenceNumber: SequenceNumber option * subSequenceNumber: int64 option
    /// `processRecords`: a batch, possibly empty.
    | ProcessRecords of records: Record[] * millisBehindLatest: int64 option
    /// `leaseLost`, or a legacy `shutdown` for ZOMBIE or LEASE_LOST. No checkpoints allowed.
    | LeaseLost
    /// `shardEnded`, or a legacy `shutdown` for TERMINATE or SHARD_END. A SHARD_END checkpoint is owed.
    | ShardEnded
    /// `shutdownRequested`: a last checkpoint may be taken.
    | ShutdownRequested

/// A failure that escaped a processor callback.
type ProcessorFailure =
    {
        /// The exception as text (type, message and stack), for the log.
        Description: string
        /// The checkpoint failure it carried, when a failed checkpoint escaped the callback.
        Checkpoint: CheckpointFailure option
    }

/// Something that happened, fed to `transition`.
[<RequireQualifiedAccess>]
type Input =
    /// The daemon sent a message.
    | Received of message: DaemonMessage
    /// The daemon sent a line that did not decode; `excerpt` is the line, cut to 1 KiB.
    | Undecodable of error: ProtocolError * excerpt: string
    /// The daemon closed stdin.
    | EndOfInput
    /// The callback of action `action` returned normally.
    | CallbackReturned of action: int
    /// The callback of action `action` threw.
    | CallbackFailed of action: int * failure: ProcessorFailure
    /// A checkpointer handed to action `action` was asked to checkpoint. Once that callback has returned, the request
    /// is out of band (POLICY.md).
    | CheckpointRequested of request: int * action: int * target: CheckpointTarget
    /// The wait before the next attempt of the checkpoint in flight is over.
    | RetryDue

/// Something for the interpreter to do. Effects are data, so a test of `transition` is plain equality.
[<RequireQualifiedAccess>]
type Effect =
    /// Write this message to stdout.
    | Send of message: ChildMessage
    /// Run the processor's callback for action `action`.
    | Invoke of action: int * callback: Callback
    /// Complete these checkpoint requests with this outcome.
    | CompleteCheckpoints of requests: int list * outcome: Result<unit, CheckpointFailure>
    /// Wait, then feed `Input.RetryDue`.
    | WaitBeforeRetry of backoff: Backoff
    /// Write a diagnostic.
    | Log of level: LogLevel * message: string
    /// End the run with this exit code; callbacks still running are cancelled.
    | Exit of code: ExitCode

/// The settings the lifecycle applies.
type Options =
    {
        /// How failed checkpoints are retried.
        Retry: RetryPolicy
        /// What happens when a callback throws.
        OnProcessorException: ExceptionPolicy
    }

/// Where the child is in its life. Compared structurally, so tests can assert on it.
[<Sealed>]
type State =
    /// The shard this child serves, once `initialize` has named it.
    member ShardId: ShardId option
    /// The exit code, once the run has ended.
    member Finished: ExitCode option
    /// The wire action currently awaiting its status, if any.
    member OpenAction: string option
    interface System.IEquatable<State>
    override Equals: obj -> bool
    override GetHashCode: unit -> int

/// The state before the daemon has sent anything.
val initial: options: Options -> State

/// The pure transition: the new state and the effects to perform, in order.
val transition: input: Input -> state: State -> State * Effect list

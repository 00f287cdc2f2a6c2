module Kcl.Core.Lifecycle

open Microsoft.Extensions.Logging

[<RequireQualifiedAccess>]
type Callback =
    | Initialize of shardId: ShardId * sequenceNumber: SequenceNumber option * subSequenceNumber: int64 option
    | ProcessRecords of records: Record[] * millisBehindLatest: int64 option
    | LeaseLost
    | ShardEnded
    | ShutdownRequested

type ProcessorFailure =
    {
        Description: string
        Checkpoint: CheckpointFailure option
    }

[<RequireQualifiedAccess>]
type Input =
    | Received of message: DaemonMessage
    | Undecodable of error: ProtocolError * excerpt: string
    | EndOfInput
    | CallbackReturned of action: int
    | CallbackFailed of action: int * failure: ProcessorFailure
    | CheckpointRequested of request: int * action: int * target: CheckpointTarget
    | RetryDue

[<RequireQualifiedAccess>]
type Effect =
    | Send of message: ChildMessage
    | Invoke of action: int * callback: Callback
    | CompleteCheckpoints of requests: int list * outcome: Result<unit, CheckpointFailure>
    | WaitBeforeRetry of backoff: Backoff
    | Log of level: LogLevel * message: string
    | Exit of code: ExitCode

type Options =
    {
        Retry: RetryPolicy
        OnProcessorException: ExceptionPolicy
    }

/// One checkpoint as the lifecycle tracks it. `Requests` is empty for the library's own SHARD_END checkpoint.
type private Checkpoint =
    {
        Requests: int list
        Target: CheckpointTarget
    }

type private InFlight =
    {
        Checkpoint: Checkpoint
        Attempts: int
        AwaitingRetry: bool
    }

type private CallbackState =
    | Running
    | Returned
    | Failed of ProcessorFailure

type private OpenAction =
    {
        Id: int
        Callback: Callback
        ResponseFor: string
        CallbackState: CallbackState
        Queue: Checkpoint list
        InFlight: InFlight option
        ShardEndCheckpointed: bool
        LeaseLost: bool
        LibraryCheckpointedShardEnd: bool
    }

    member this.AllowsCheckpoints =
        match this.Callback with
        | Callback.ProcessRecords _
        | Callback.ShardEnded
        | Callback.ShutdownRequested -> true
        | Callback.Initialize _
        | Callback.LeaseLost -> false

type private Phase =
    | Idle
    | Open of OpenAction
    | Done of ExitCode

[<CustomEquality; NoComparison>]
type State =
    private
        {
            Options: Options
            Phase: Phase
            NextAction: int
            Shard: ShardId option
            LastDelivered: (SequenceNumber * int64) option
            /// An out-of-band checkpoint waiting for the next action that has a checkpointer.
            Deferred: Checkpoint option
        }

    member this.ShardId = this.Shard

    member this.Finished =
        match this.Phase with
        | Done code -> Some code
        | _ -> None

    member this.OpenAction =
        match this.Phase with
        | Open action -> Some action.ResponseFor
        | _ -> None

    member private this.Key =
        (this.Options, this.Phase, this.NextAction, this.Shard, this.LastDelivered, this.Deferred)

    override this.Equals other =
        match other with
        | :? State as o -> this.Key = o.Key
        | _ -> false

    override this.GetHashCode() = hash this.Key

    interface System.IEquatable<State> with
        member this.Equals other = this.Key = other.Key

let initial options =
    {
        Options = options
        Phase = Idle
        NextAction = 1
        Shard = None
        LastDelivered = None
        Deferred = None
    }

let private failure error detail =
    {
        Error = error
        Attempts = 0
        Detail = detail
    }

let private complete (checkpoint: Checkpoint) outcome =
    match checkpoint.Requests with
    | [] -> []
    | requests -> [ Effect.CompleteCheckpoints(requests, outcome) ]

/// Every checkpoint still waiting when the run ends fails as lease lost: nothing more can reach the daemon.
let private abandonAll (state: State) reason =
    let pending =
        [
            match state.Phase with
            | Open action ->
                yield! action.InFlight |> Option.map _.Checkpoint |> Option.toList
                yield! action.Queue
            | _ -> ()
            yield! Option.toList state.Deferred
        ]

    let lost = Error(failure CheckpointError.Shutdown reason)
    pending |> List.collect (fun checkpoint -> complete checkpoint lost)

let private finish code level message state =
    let effects =
        // Concatenated: an interpolated string here is F#'s printf, whose first use costs every child's exit 3.5 MiB.
        abandonAll state ("the run ended before the checkpoint was made (" + message + ")")

    { state with
        Phase = Done code
        Deferred = None
    },
    effects @ [ Effect.Log(level, message); Effect.Exit code ]

let private isShardEndTarget target =
    match target with
    | CheckpointTarget.LastDelivered -> true
    | CheckpointTarget.At(sequenceNumber, _) -> sequenceNumber.Sentinel = Some Sentinel.ShardEnd

let private describeCallback callback =
    match callback with
    | Callback.Initialize _ -> "initialize"
    | Callback.ProcessRecords _ -> "processRecords"
    | Callback.LeaseLost -> "leaseLost"
    | Callback.ShardEnded -> "shardEnded"
    | Callback.ShutdownRequested -> "shutdownRequested"

let private answer (action: OpenAction) state extra =
    { state with Phase = Idle }, extra @ [ Effect.Send(ChildMessage.Status action.ResponseFor) ]

let private failFast code message state =
    finish code LogLevel.Error message state

/// The callback is done and no checkpoint is pending: answer, fail fast, or take the owed SHARD_END checkpoint.
let rec private close (action: OpenAction) state =
    let name = describeCallback action.Callback

    match action.CallbackState with
    | Running -> { state with Phase = Open action }, []
    | Failed failure ->
        let claimsLeaseLost = failure.Checkpoint |> Option.exists _.IsLeaseLost

        let warn text =
            Effect.Log(LogLevel.Warning, $"{text} in {name}: {failure.Description}")

        match action.Callback with
        | Callback.ShardEnded when claimsLeaseLost ->
            // Only the daemon's own ShutdownException proves the lease is gone; until then SHARD_END is still owed.
            let state, effects = close { action with CallbackState = Returned } state
            state, warn "a lease-lost checkpoint failure escaped the processor" :: effects
        | _ when claimsLeaseLost ->
            answer action state [ warn "the lease was lost; answering, and the next owner resumes from the last checkpoint" ]
        | Callback.ShutdownRequested when failure.Checkpoint.IsSome ->
            answer action state [ warn "a checkpoint failed; answering, since shutdown is best effort" ]
        | Callback.ShardEnded when failure.Checkpoint.IsSome ->
            failFast
                ExitCode.ShardEndNotCheckpointed
                ($"the SHARD_END checkpoint failed, so shardEnded is not answered and the daemon will retry the shard: {failure.Description}")
                state
        | _ ->
            match state.Options.OnProcessorException with
            | ExceptionPolicy.FailFast ->
                failFast
                    ExitCode.ProcessorFailed
                    ($"the processor failed in {name}; exiting without a status so the work comes again after a restart: {failure.Description}")
                    state
            | ExceptionPolicy.SkipFailedBatch ->
                let logged =
                    Effect.Log(
                        LogLevel.Error,
                        $"the processor failed in {name}; SkipFailedBatch is set, so it is answered and its work is skipped: {failure.Description}"
                    )

                let state, effects = close { action with CallbackState = Returned } state
                state, logged :: effects
    | Returned ->
        match action.Callback with
        | Callback.ShardEnded when not action.ShardEndCheckpointed && not action.LeaseLost ->
            if action.LibraryCheckpointedShardEnd then
                failFast
                    ExitCode.ShardEndNotCheckpointed
                    "the SHARD_END checkpoint could not be made, so shardEnded is not answered and the daemon will retry the shard"
                    state
            else
                let action =
                    { action with
                        LibraryCheckpointedShardEnd = true
                        Queue = [ { Requests = []; Target = CheckpointTarget.LastDelivered } ]
                    }

                let state, effects = advance action state

                state,
                Effect.Log(LogLevel.Warning, "the processor returned from shardEnded without checkpointing at SHARD_END; the library checkpoints it now")
                :: effects
        | _ when action.LeaseLost ->
            answer action state [ Effect.Log(LogLevel.Information, $"the lease was lost during {name}; answering") ]
        | _ -> answer action state []

/// Sends the next queued checkpoint when none is in flight; closes the action when nothing is left to do.
and private advance (action: OpenAction) state =
    match action.InFlight, action.Queue with
    | Some _, _ -> { state with Phase = Open action }, []
    | None, next :: rest ->
        let action =
            { action with
                Queue = rest
                InFlight =
                    Some
                        {
                            Checkpoint = next
                            Attempts = 1
                            AwaitingRetry = false
                        }
            }

        { state with Phase = Open action }, [ Effect.Send(ChildMessage.Checkpoint next.Target) ]
    | None, [] -> close action state

let private openAction callback responseFor state =
    let action =
        {
            Id = state.NextAction
            Callback = callback
            ResponseFor = responseFor
            CallbackState = Running
            Queue = Option.toList state.Deferred
            InFlight = None
            ShardEndCheckpointed = false
            LeaseLost = false
            LibraryCheckpointedShardEnd = false
        }

    let deferred = state.Deferred

    let state =
        { state with
            NextAction = state.NextAction + 1
            Deferred = None
        }

    if action.AllowsCheckpoints then
        // The deferred out-of-band checkpoint goes on the wire before the callback runs (POLICY.md).
        let state, effects = advance action state
        state, effects @ [ Effect.Invoke(action.Id, callback) ]
    else
        let lost =
            deferred
            |> Option.map (fun deferred ->
                complete deferred (Error(failure CheckpointError.Shutdown "the lease was lost before the checkpoint could be sent")))
            |> Option.defaultValue []

        { state with Phase = Open { action with Queue = [] } }, lost @ [ Effect.Invoke(action.Id, callback) ]

let private received message state =
    match message with
    | DaemonMessage.Initialize(shardId, sequenceNumber, subSequenceNumber) ->
        let state, effects =
            openAction (Callback.Initialize(shardId, sequenceNumber, subSequenceNumber)) message.Action { state with Shard = Some shardId }

        let from =
            sequenceNumber |> Option.map _.Value |> Option.defaultValue "no checkpoint"

        state, Effect.Log(LogLevel.Information, $"initialize: shard {shardId.Value}, resuming from {from}") :: effects
    | DaemonMessage.ProcessRecords(records, millisBehindLatest) ->
        let state =
            if records.Length = 0 then
                state
            else
                let last = records[records.Length - 1]

                { state with LastDelivered = Some(last.SequenceNumber, last.SubSequenceNumber) }

        openAction (Callback.ProcessRecords(records, millisBehindLatest)) message.Action state
    | DaemonMessage.LeaseLost -> openAction Callback.LeaseLost message.Action state
    | DaemonMessage.ShardEnded -> openAction Callback.ShardEnded message.Action state
    | DaemonMessage.ShutdownRequested -> openAction Callback.ShutdownRequested message.Action state
    | DaemonMessage.Shutdown reason ->
        let callback = if reason.OwesShardEndCheckpoint then Callback.ShardEnded else Callback.LeaseLost
        openAction callback message.Action state
    | DaemonMessage.CheckpointReply _ ->
        state, [ Effect.Log(LogLevel.Warning, "ignoring a checkpoint reply that answers no pending request") ]

let private replied (action: OpenAction) error state =
    match action.InFlight with
    | Some inFlight when not inFlight.AwaitingRetry ->
        let checkpoint = inFlight.Checkpoint

        match error with
        | None ->
            let action =
                { action with
                    InFlight = None
                    ShardEndCheckpointed =
                        action.ShardEndCheckpointed
                        || (action.Callback = Callback.ShardEnded && isShardEndTarget checkpoint.Target)
                }

            let state, effects = advance action state
            state, complete checkpoint (Ok()) @ effects
        | Some(error: CheckpointError) when state.Options.Retry.ShouldRetry(error, inFlight.Attempts) ->
            let action =
                { action with InFlight = Some { inFlight with AwaitingRetry = true } }

            { state with Phase = Open action },
            [
                Effect.Log(
                    LogLevel.Information,
                    $"checkpoint attempt {inFlight.Attempts} of {state.Options.Retry.MaxAttempts} failed with {error.Name}; retrying"
                )
                Effect.WaitBeforeRetry(state.Options.Retry.BackoffAfter inFlight.Attempts)
            ]
        | Some error ->
            let outcome =
                {
                    Error = error
                    Attempts = inFlight.Attempts
                    Detail =
                        $"the daemon answered the checkpoint with {error.Name} after {inFlight.Attempts} attempt(s)"
                }

            let action =
                { action with
                    InFlight = None
                    LeaseLost = action.LeaseLost || error.IsLeaseLost
                }

            let state, effects = advance action state

            let logged =
                Effect.Log(LogLevel.Information, $"checkpoint failed: {outcome.Detail}")

            state, logged :: complete checkpoint (Error outcome) @ effects
    | _ -> { state with Phase = Open action }, [ Effect.Log(LogLevel.Warning, "ignoring a checkpoint reply that answers no pending request") ]

let private requested request actionId target state =
    let refuse error detail =
        state, [ Effect.CompleteCheckpoints([ request ], Error(failure error detail)) ]

    let enqueue (action: OpenAction) checkpoint =
        advance { action with Queue = action.Queue @ [ checkpoint ] } state

    match state.Phase with
    | Done _ -> refuse CheckpointError.Shutdown "the run has ended"
    | Open action when action.Id = actionId && action.CallbackState = Running ->
        if action.AllowsCheckpoints then
            enqueue action { Requests = [ request ]; Target = target }
        else
            refuse
                CheckpointError.InvalidState
                ($"checkpointing is not allowed during {describeCallback action.Callback}; nothing was sent to the daemon")
    | phase ->
        // Out of band: fix the position now, so the request covers no record delivered later.
        let resolved =
            match target, state.LastDelivered with
            | CheckpointTarget.At _, _ -> Some target
            | CheckpointTarget.LastDelivered, Some(sequenceNumber, sub) -> Some(CheckpointTarget.At(sequenceNumber, Some sub))
            | CheckpointTarget.LastDelivered, None -> None

        match resolved, phase with
        | None, _ -> refuse CheckpointError.InvalidState "no record has been delivered yet, so there is nothing to checkpoint"
        | Some _, Open { Callback = Callback.LeaseLost } ->
            refuse CheckpointError.Shutdown "the lease was lost before the checkpoint could be sent"
        | Some target, Open action when action.AllowsCheckpoints -> enqueue action { Requests = [ request ]; Target = target }
        | Some target, _ ->
            // At most one waits per shard: a newer request replaces the older, and both share its outcome.
            let requests =
                state.Deferred |> Option.map _.Requests |> Option.defaultValue []

            { state with Deferred = Some { Requests = requests @ [ request ]; Target = target } }, []

let transition input state =
    match state.Phase, input with
    | Done _, Input.CheckpointRequested(request, actionId, target) -> requested request actionId target state
    | Done _, _ -> state, []
    | _, Input.EndOfInput -> finish ExitCode.EndOfInput LogLevel.Information "the daemon closed stdin; exiting" state
    | Idle, Input.Undecodable(ProtocolError.UnknownAction action, _) ->
        state,
        [
            Effect.Log(LogLevel.Warning, $"unknown action \"{action}\", perhaps from a newer daemon; answering it with a status")
            Effect.Send(ChildMessage.Status action)
        ]
    | _, Input.Undecodable(error, excerpt) ->
        failFast ExitCode.UndecodableInput ($"cannot act on a line from the daemon: {error.Describe()}. The line: {excerpt}") state
    | Idle, Input.Received message -> received message state
    | Open action, Input.Received(DaemonMessage.CheckpointReply(_, _, error)) -> replied action error state
    | Open action, Input.Received message ->
        failFast
            ExitCode.UndecodableInput
            ($"the daemon sent \"{message.Action}\" while \"{action.ResponseFor}\" still awaits its status")
            state
    | Open action, Input.CallbackReturned id when id = action.Id && action.CallbackState = Running ->
        advance { action with CallbackState = Returned } state
    | Open action, Input.CallbackFailed(id, failed) when id = action.Id && action.CallbackState = Running ->
        advance { action with CallbackState = Failed failed } state
    | _, Input.CallbackReturned _
    | _, Input.CallbackFailed _ -> state, []
    | _, Input.CheckpointRequested(request, actionId, target) -> requested request actionId target state
    | Open({ InFlight = Some inFlight } as action), Input.RetryDue when inFlight.AwaitingRetry ->
        let action =
            { action with
                InFlight =
                    Some
                        { inFlight with
                            Attempts = inFlight.Attempts + 1
                            AwaitingRetry = false
                        }
            }

        { state with Phase = Open action }, [ Effect.Send(ChildMessage.Checkpoint inFlight.Checkpoint.Target) ]
    | _, Input.RetryDue -> state, []

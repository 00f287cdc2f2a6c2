module Kcl.Core.DaemonSession

open System
open System.Text
open Kcl.Core.DaemonRules
open Kcl.Core.DaemonSessionState

[<Sealed>]
type Session internal (state: State) =
    member internal _.State = state
    member _.Options = state.Settings
    member _.ShardId = state.Settings.ShardId
    member _.OpenAction = state.OpenAction
    member _.Sent = List.rev state.SentRev
    member _.Statuses = List.rev state.StatusesRev
    member _.Checkpoints = List.rev state.CheckpointsRev
    member _.Lines = List.rev state.LinesRev
    member _.Findings = List.rev state.FindingsRev

    member this.Violations =
        this.Findings |> List.filter (fun f -> f.Severity = FindingSeverity.Violation)

    member this.Warnings =
        this.Findings |> List.filter (fun f -> f.Severity = FindingSeverity.Warning)

    member _.Checkpoint = state.Current
    member _.LargestPermitted = state.Largest
    member _.SequenceNumberAtShardEnd = state.AtShardEnd
    member _.RecordsDelivered = state.Delivered
    member _.CheckpointRequests = state.Requests
    member _.ShardEndCheckpointed = state.ShardEndCheckpointed
    member _.LeaseLost = state.Lost
    member _.DaemonExited = (state.Phase = Exited)

    override _.Equals other =
        match other with
        | :? Session as o -> state = o.State
        | _ -> false

    override _.GetHashCode() = hash state

    interface IEquatable<Session> with
        member _.Equals other = state = other.State

let create (options: SessionOptions) = Session(initial options)

let tryOpen (message: DaemonMessage) (session: Session) : Result<Session, string> =
    let state = session.State
    let kind = kindOf message

    match refusal state message kind with
    | Some reason -> Error reason
    | None -> Ok(Session(opened state message kind.Value))

let canOpen (message: DaemonMessage) (session: Session) : Result<unit, string> =
    match refusal session.State message (kindOf message) with
    | Some reason -> Error reason
    | None -> Ok()

let trySend (message: DaemonMessage) (session: Session) : Result<Session * byte[], string> =
    tryOpen message session
    |> Result.map (fun next -> next, encodeLine session.State message)

let encodeInto (buffer: int -> byte[]) (options: SessionOptions) (message: DaemonMessage) =
    DaemonLine.encodeInto buffer options.Charset options.LineSeparator message

let startEncoding (buffer: int -> byte[]) (options: SessionOptions) (message: DaemonMessage) =
    DaemonLine.startInto buffer options.Charset options.LineSeparator message

let send (message: DaemonMessage) (session: Session) =
    match trySend message session with
    | Ok sent -> sent
    | Error reason -> raise (InvalidOperationException reason)

// ---- receiving ----------------------------------------------------------------------------------------------------

/// What one line does: the handling, the reply, the findings, and the session after it.
type private Step =
    {
        Handling: LineHandling
        Reply: DaemonMessage option
        Found: Finding list
        After: State
    }

let private quiet session handling =
    {
        Handling = handling
        Reply = None
        Found = []
        After = session
    }

let private violation session handling kind line =
    {
        Handling = handling
        Reply = None
        Found = [ finding session FindingSeverity.Violation kind (Some line) ]
        After = session
    }

let private onCheckpoint (session: State) line sequence subSequence =
    match session.Phase with
    | Open(action, kind) ->
        let session =
            { session with
                Requests = session.Requests + 1
            }

        let error, after, found =
            if not kind.HasCheckpointer then
                Some CheckpointError.InvalidState,
                session,
                [
                    finding session FindingSeverity.Violation FindingKind.CheckpointNotAllowed (Some line)
                ]
            else
                match
                    session.Settings.Faults
                    |> List.tryFind (fun rule -> rule.Covers session.Requests)
                with
                | Some rule ->
                    Some rule.Error,
                    { session with
                        Lost = session.Lost || rule.Error.IsLeaseLost
                    },
                    []
                | None ->
                    let error, after = perform session action sequence subSequence
                    error, after, []

        {
            Handling = LineHandling.CheckpointAnswered error
            Reply = Some(DaemonMessage.CheckpointReply(sequence, subSequence, error))
            Found = found
            After = after
        }
    | _ -> violation session LineHandling.CheckpointUnread FindingKind.CheckpointAfterStatus line

let private onStatus (session: State) line (responseFor: string option) =
    match session.Phase with
    | Open(action, kind) when responseFor = Some action ->
        let closed =
            { session with
                Phase = (if kind.IsFinal then Closed else Ready)
                StatusesRev = remember session action session.StatusesRev
            }

        let found =
            if kind = ShardEnded && not session.ShardEndCheckpointed && not session.Lost then
                [
                    finding session FindingSeverity.Violation FindingKind.MissingShardEndCheckpoint (Some line)
                ]
            else
                []

        {
            Handling = LineHandling.StatusAccepted action
            Reply = None
            Found = found
            After = closed
        }
    | Open(action, kind) ->
        let wrong = FindingKind.WrongResponseFor(action, responseFor)

        // validateStatusMessage fails: fatal, except that a failed shutdown notification is only logged.
        let severity, phase =
            if kind = ShutdownRequested then
                FindingSeverity.Warning, Ready
            else
                FindingSeverity.Violation, Exited

        {
            Handling = LineHandling.StatusRejected responseFor
            Reply = None
            Found = [ finding session severity wrong (Some line) ]
            After = { session with Phase = phase }
        }
    | _ ->
        violation session (LineHandling.StatusRejected responseFor) (FindingKind.StatusWithoutAction responseFor) line

let private daemonSideActions = set ActionNames.all

let private step (session: State) (line: string) =
    let skipped error =
        violation session (LineHandling.Skipped error) (FindingKind.UnparseableLine error) line

    if session.Phase = Exited then
        quiet session LineHandling.Drained
    elif line.Length = 0 then
        quiet session LineHandling.Empty
    elif String.IsNullOrWhiteSpace line then
        quiet session LineHandling.Blank
    else
        match Json.decodeChildLine line with
        | Ok(ChildMessage.Status responseFor) -> onStatus session line (Some responseFor)
        | Ok(ChildMessage.Checkpoint target) ->
            // The reply echoes the request as Jackson read it; the typed target drops a sub-sequence sent with null.
            match readStatusOrCheckpoint line, target with
            | Some(JacksonRead.Checkpoint(sequence, subSequence)), _ -> onCheckpoint session line sequence subSequence
            | _, CheckpointTarget.LastDelivered -> onCheckpoint session line None None
            | _, CheckpointTarget.At(sequence, subSequence) ->
                onCheckpoint session line (Some sequence.Value) subSequence
        | Error(ProtocolError.NotAnObject "null") ->
            let found =
                finding session FindingSeverity.Violation FindingKind.NullLine (Some line)

            {
                Handling = LineHandling.Fatal
                Reply = None
                Found = [ found ]
                After = { session with Phase = Exited }
            }
        | Error(ProtocolError.UnknownAction action) when daemonSideActions.Contains action ->
            quiet session (LineHandling.DaemonSideMessage action)
        // Values Jackson coerces or keeps where the codec is stricter: a null or scalar responseFor (validation then
        // fails), a sequence number that is not one (the checkpointer then answers IllegalArgumentException).
        | Error(ProtocolError.MissingField("status", "responseFor") as error)
        | Error(ProtocolError.WrongType("status", "responseFor", _, _) as error)
        | Error(ProtocolError.InvalidValue("checkpoint", "sequenceNumber", _) as error) ->
            match readStatusOrCheckpoint line with
            | Some(JacksonRead.Status responseFor) -> onStatus session line responseFor
            | Some(JacksonRead.Checkpoint(sequence, subSequence)) -> onCheckpoint session line sequence subSequence
            | None -> skipped error
        | Error error -> skipped error

let receive (line: string) (session: Session) =
    let state = session.State
    let line = if isNull line then "" else line
    let result = step state line

    let received =
        {
            Text = line
            Action = state.OpenAction
            Handling = result.Handling
        }

    let after =
        { result.After with
            LinesRev = remember result.After received result.After.LinesRev
            FindingsRev = List.rev result.Found @ result.After.FindingsRev
        }

    let bytes =
        match result.Reply with
        | Some reply -> encodeLine state reply
        | None -> [||]

    Session after,
    {
        Handling = result.Handling
        Reply = result.Reply
        ReplyBytes = bytes
        Findings = result.Found
    }

let receiveBytes (line: byte[]) (session: Session) =
    receive (if isNull line then "" else Encoding.UTF8.GetString line) session

let recordDriverFailure (failure: DriverFailure) (session: Session) =
    let state = session.State

    let kind =
        match failure with
        | DriverFailure.NoExitAfterEndOfInput -> FindingKind.NoExitAfterEndOfInput
        | DriverFailure.TimedOut -> FindingKind.TimedOut
        | DriverFailure.ChildExited code -> FindingKind.ChildExited code

    let found = finding state FindingSeverity.Violation kind None

    // A timeout halts the daemon and an early exit makes it exit; a child that will not exit only blocks its shard.
    let phase =
        match failure with
        | DriverFailure.NoExitAfterEndOfInput -> state.Phase
        | _ -> Exited

    Session
        { state with
            FindingsRev = found :: state.FindingsRev
            Phase = phase
        }

let nextStep (session: Session) =
    let state = session.State

    match state.Phase with
    | Open _ -> Next.ReadLine
    | Exited -> Next.Abort
    | Closed -> Next.CloseStdin
    | Ready when state.Lost -> Next.SendLeaseLost
    | Ready -> Next.SendAction

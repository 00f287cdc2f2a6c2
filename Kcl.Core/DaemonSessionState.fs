(*
    The state behind `DaemonSession.Session` and the rules that change it: which actions the daemon may send next,
    what each action sets up for the checkpointer, and how a checkpoint request is performed.
*)
module internal Kcl.Core.DaemonSessionState

open Kcl.Core.DaemonRules

/// What an action allows, after legacy `shutdown` reasons are mapped to their modern equivalents.
type Kind =
    | Initialize
    | Records
    | LeaseLost
    | ShardEnded
    | ShutdownRequested

    // MultiLangProtocol.checkpoint: initialize and leaseLost get a null checkpointer.
    member this.HasCheckpointer =
        match this with
        | Records
        | ShardEnded
        | ShutdownRequested -> true
        | Initialize
        | LeaseLost -> false

    // childProcessShutdownSequence: stdin is closed after these statuses.
    member this.IsFinal =
        match this with
        | LeaseLost
        | ShardEnded -> true
        | _ -> false

/// Where the daemon is with this child.
type Phase =
    /// No action awaits a status; the next may be sent.
    | Ready
    /// `action` (its wire name) awaits its status.
    | Open of action: string * kind: Kind
    /// The final action is answered: the daemon closes stdin and waits for the child to exit.
    | Closed
    /// The real daemon would have exited (a fatal violation or a driver failure).
    | Exited

/// Everything the daemon tracks for one child; lists are newest first.
type State =
    {
        Settings: SessionOptions
        Phase: Phase
        SentRev: DaemonMessage list
        StatusesRev: string list
        CheckpointsRev: CheckpointRecord list
        LinesRev: ReceivedLine list
        FindingsRev: Finding list
        Current: ExtendedSequenceNumber option
        Largest: ExtendedSequenceNumber option
        AtShardEnd: ExtendedSequenceNumber option
        Delivered: int
        Requests: int
        Lost: bool
        AfterShutdownRequested: bool
    }

    member this.OpenAction =
        match this.Phase with
        | Open(action, _) -> Some action
        | _ -> None

    member this.ShardEndCheckpointed = this.Current |> Option.exists _.IsShardEnd

let initial (options: SessionOptions) =
    {
        Settings = options
        Phase = Ready
        SentRev = []
        StatusesRev = []
        CheckpointsRev = []
        LinesRev = []
        FindingsRev = []
        Current = options.Checkpoint
        Largest = options.Checkpoint
        AtShardEnd = None
        Delivered = 0
        Requests = 0
        Lost = false
        AfterShutdownRequested = false
    }

/// `history` (newest first) with `item` added, or `item` alone when the session keeps only the latest. The rules
/// read no further back than the newest entry, so both make the same decisions.
let remember (session: State) item (history: 'T list) =
    match session.Settings.History with
    | SessionHistory.Whole -> item :: history
    | SessionHistory.Latest -> [ item ]

let shardEnd =
    {
        SequenceNumber = SequenceNumber.shardEnd
        SubSequenceNumber = 0L
    }

let kindOf (message: DaemonMessage) =
    match message with
    | DaemonMessage.Initialize _ -> Some Initialize
    | DaemonMessage.ProcessRecords _ -> Some Records
    | DaemonMessage.LeaseLost -> Some LeaseLost
    | DaemonMessage.ShardEnded -> Some ShardEnded
    | DaemonMessage.ShutdownRequested -> Some ShutdownRequested
    | DaemonMessage.Shutdown reason when reason.OwesShardEndCheckpoint -> Some ShardEnded
    | DaemonMessage.Shutdown _ -> Some LeaseLost
    | DaemonMessage.CheckpointReply _ -> None

let encodeLine (session: State) (message: DaemonMessage) =
    DaemonLine.encode session.Settings.Charset session.Settings.LineSeparator message

let lastAction (session: State) =
    match session.Phase, session.SentRev with
    | Open(action, _), _ -> Some action
    | _, last :: _ -> Some last.Action
    | _, [] -> None

// ---- sending ------------------------------------------------------------------------------------------------------

let refusal (session: State) (message: DaemonMessage) kind =
    let name = message.Action

    match session.Phase, kind, message with
    | _, None, _ -> Some "a checkpoint reply is not an action: the session writes replies itself, from receive"
    | Open(action, _), _, _ ->
        Some(
            sprintf
                "cannot send %s: %s still awaits its status, and the daemon has exactly one outstanding action per child (PROTOCOL.md §4.1)"
                name
                action
        )
    | Closed, _, _ ->
        Some(
            sprintf
                "cannot send %s: the final action (%s) has been answered, so the daemon has closed the child's stdin"
                name
                (defaultArg (lastAction session) "?")
        )
    | Exited, _, _ -> Some(sprintf "cannot send %s: the daemon has exited (see the session's violations)" name)
    | Ready, Some Initialize, _ when not session.SentRev.IsEmpty ->
        Some "cannot send initialize: it is only ever the first action of a child"
    | Ready, _, DaemonMessage.Initialize(shard, _, _) when shard <> session.Settings.ShardId ->
        Some(sprintf "cannot send initialize for %s: this session serves %s" shard.Value session.Settings.ShardId.Value)
    | Ready, Some(Initialize | Records | ShutdownRequested), _ when session.AfterShutdownRequested ->
        Some(
            sprintf
                "cannot send %s after shutdownRequested: the daemon sends only leaseLost or shardEnded then (PROTOCOL.md §4.1)"
                name
        )
    | Ready, Some k, _ when session.Lost && k <> LeaseLost ->
        Some(
            sprintf
                "cannot send %s: the lease was lost (a ShutdownException was replied), so the daemon's next action for this child is leaseLost"
                name
        )
    | Ready, Some _, _ -> None

let maxPosition (a: ExtendedSequenceNumber option) (b: ExtendedSequenceNumber) =
    match a with
    | Some a when compareExtended a b >= 0 -> Some a
    | _ -> Some b

let opened (session: State) (message: DaemonMessage) kind =
    let session =
        { session with
            Phase = Open(message.Action, kind)
            SentRev = remember session message session.SentRev
        }

    match message, kind with
    | DaemonMessage.Initialize(_, sequence, subSequence), _ ->
        // InitializeTask: the lease's checkpoint is both the last checkpoint and the largest permitted value.
        let checkpoint =
            sequence
            |> Option.map (fun s ->
                {
                    SequenceNumber = s
                    SubSequenceNumber = defaultArg subSequence 0L
                })

        { session with
            Current = checkpoint
            Largest = checkpoint
        }
    | DaemonMessage.ProcessRecords(records, _), _ ->
        // ProcessTask.filterAndGetMaxExtendedSequenceNumber: the largest record delivered so far. The batch's first
        // largest record is found before a position is made: a position per record, folded, took about 40 µs of the
        // 80 between a child's status and its next batch under kcl-local (bench/README.md, "Local daemon").
        let largest =
            if records.Length = 0 then
                session.Largest
            else
                let mutable top = records[0]

                for i in 1 .. records.Length - 1 do
                    let record = records[i]

                    if
                        comparePositions
                            record.SequenceNumber
                            record.SubSequenceNumber
                            top.SequenceNumber
                            top.SubSequenceNumber > 0
                    then
                        top <- record

                maxPosition
                    session.Largest
                    {
                        SequenceNumber = top.SequenceNumber
                        SubSequenceNumber = top.SubSequenceNumber
                    }

        { session with
            Largest = largest
            Delivered = session.Delivered + records.Length
        }
    | _, ShardEnded ->
        // ShutdownTask: sequenceNumberAtShardEnd = the largest permitted value, which becomes SHARD_END.
        { session with
            AtShardEnd = session.Largest
            Largest = Some shardEnd
        }
    | _, ShutdownRequested ->
        { session with
            AfterShutdownRequested = true
        }
    | _ -> session

let finding (session: State) severity kind line =
    {
        Severity = severity
        Kind = kind
        ShardId = session.Settings.ShardId
        Action = lastAction session
        Line = line
        Message = DaemonFindings.describe kind session.OpenAction (lastAction session) session.Current
    }

// ShardRecordProcessorCheckpointer.advancePosition: the last delivered record becomes SHARD_END; a value equal to the
// last checkpoint is not written; past that, DynamoDBCheckpointer refuses once the lease is lost.
let advance (session: State) action target =
    let written =
        match session.AtShardEnd with
        | Some atEnd when equalsExtended atEnd target -> shardEnd
        | _ -> target

    let record position changed =
        {
            Request = session.Requests
            Action = action
            Position = position
            Changed = changed
        }

    match session.Current with
    | Some current when equalsExtended current target ->
        None,
        { session with
            CheckpointsRev = remember session (record current false) session.CheckpointsRev
        }
    | _ when session.Lost -> Some CheckpointError.Shutdown, session
    | _ ->
        None,
        { session with
            Current = Some written
            CheckpointsRev = remember session (record written true) session.CheckpointsRev
        }

// ShardRecordProcessorCheckpointer.checkpoint(), checkpoint(seq) and checkpoint(seq, sub).
let perform (session: State) action (sequence: string option) (subSequence: int64 option) =
    match sequence with
    | None ->
        match session.Largest with
        | Some largest -> advance session action largest
        | None -> None, session
    | Some text ->
        let subSequence = defaultArg subSequence 0L

        match SequenceNumber.tryParse text with
        | Ok sequence when subSequence >= 0L ->
            let target =
                {
                    SequenceNumber = sequence
                    SubSequenceNumber = subSequence
                }

            let notBelow =
                session.Current |> Option.forall (fun c -> compareExtended c target <= 0)

            let notAbove =
                session.Largest |> Option.forall (fun l -> compareExtended target l <= 0)

            if notBelow && notAbove then
                advance session action target
            else
                Some CheckpointError.IllegalArgument, session
        | _ -> Some CheckpointError.IllegalArgument, session

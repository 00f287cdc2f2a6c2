(*
    The daemon's side of one child's session, as types: what a driver configures (shard, charset, injected faults),
    what the session reports for each line it is fed, and what it finds wrong. The logic is in DaemonSession.fs.
    Everything here has structural equality, so a test is plain `Assert.Equal`.
*)
namespace Kcl.Core

/// A position in a shard as the KCL stores it (`ExtendedSequenceNumber`): a sequence number or sentinel, and the
/// position inside a KPL aggregate (0 for sentinels and records that were not aggregated).
[<NoComparison>]
type ExtendedSequenceNumber =
    {
        /// Digits or a sentinel's name.
        SequenceNumber: SequenceNumber
        /// The sub-sequence number; 0 when the request or the record gave none.
        SubSequenceNumber: int64
    }

    /// True for SHARD_END with sub-sequence number 0, the value `ShutdownTask` insists on before a shard may end.
    member this.IsShardEnd =
        this.SequenceNumber.Value = "SHARD_END" && this.SubSequenceNumber = 0L

    override this.ToString() =
        sprintf "%s/%d" this.SequenceNumber.Value this.SubSequenceNumber

/// How serious a finding is.
type FindingSeverity =
    /// The real daemon would hang, exit, wedge the shard or act on a stale line; a correct child never causes it.
    | Violation = 0
    /// The real daemon only logs it and carries on.
    | Warning = 1

/// What a finding is about. Each case names what the real daemon would do in `Finding.Message`.
[<RequireQualifiedAccess>]
type FindingKind =
    /// The line is the JSON literal `null`: the daemon's `Optional.of(null)` throws, and it exits with code 1.
    | NullLine
    /// The daemon's Jackson cannot read the line (`GetNextMessageTask` skips it), so a status in it is lost.
    | UnparseableLine of error: ProtocolError
    /// A checkpoint during `initialize` or `leaseLost` (or a legacy ZOMBIE/LEASE_LOST `shutdown`), which have no
    /// checkpointer: answered with `InvalidStateException`.
    | CheckpointNotAllowed
    /// A checkpoint while no action awaits its status: the daemon leaves it unread until the next action.
    | CheckpointAfterStatus
    /// A status while no action awaits one: read as the answer to the next action.
    | StatusWithoutAction of responseFor: string option
    /// A status answering another action than the open one (`MultiLangProtocol.validateStatusMessage`).
    | WrongResponseFor of expected: string * actual: string option
    /// `shardEnded` (or a legacy TERMINATE/SHARD_END `shutdown`) answered without a successful SHARD_END checkpoint.
    | MissingShardEndCheckpoint
    /// The child kept running after its stdin was closed.
    | NoExitAfterEndOfInput
    /// No message came from the child in time while an action was open.
    | TimedOut
    /// The child's process ended while the daemon still needed it.
    | ChildExited of exitCode: int option

/// Something the session found wrong with the child, with enough context to read it alone.
[<NoComparison>]
type Finding =
    {
        /// Violation or warning.
        Severity: FindingSeverity
        /// What was found.
        Kind: FindingKind
        /// The shard of the session.
        ShardId: ShardId
        /// The action awaiting its status at the time, else the last action sent, if any.
        Action: string option
        /// The child's line that caused it, when a line did.
        Line: string option
        /// A sentence saying what happened and what the real daemon would do.
        Message: string
    }

    override this.ToString() =
        sprintf
            "%A in %s during %s: %s"
            this.Severity
            this.ShardId.Value
            (defaultArg this.Action "no action")
            this.Message

/// A failure only a driver can see: about the child process, not about one of its lines.
[<RequireQualifiedAccess>]
type DriverFailure =
    /// The child did not exit after its stdin was closed.
    | NoExitAfterEndOfInput
    /// No message came from the child within the driver's time limit.
    | TimedOut
    /// The child's process ended (with this exit code, if known) while the session still needed it.
    | ChildExited of exitCode: int option

/// An injected checkpoint failure: the checkpoint requests whose 1-based index (counted over the session's answered
/// requests) lies in `From .. From + Count - 1` are answered with `Error` instead of being performed.
[<NoComparison>]
type FaultRule =
    {
        /// The error the reply names, e.g. `CheckpointError.Throttling`.
        Error: CheckpointError
        /// How many requests in a row fail; `None` fails every one from `From` on.
        Count: int option
        /// The 1-based index of the first request that fails.
        From: int
    }

    /// Fails `count` requests in a row, starting with request number `from`.
    static member Times(error: CheckpointError, from: int, count: int) =
        {
            Error = error
            Count = Some count
            From = from
        }

    /// Fails every request from request number `from` on.
    static member Always(error: CheckpointError, from: int) =
        {
            Error = error
            Count = None
            From = from
        }

    /// True when the request with this 1-based index falls in the rule's window.
    member this.Covers(request: int) =
        request >= this.From
        && (match this.Count with
            | Some count -> request < this.From + count
            | None -> true)

/// How much of its history a session keeps.
[<RequireQualifiedAccess>]
type SessionHistory =
    /// Every action, status, checkpoint and line, in order: a test's transcript.
    | Whole
    /// Only the newest action, status, checkpoint and line, so that a driver that runs for hours holds no more for a
    /// long stream than for a short one. Findings are always kept whole.
    | Latest

/// How a session is set up.
[<NoComparison>]
type SessionOptions =
    {
        /// The shard the child serves; an `initialize` sent must name it.
        ShardId: ShardId
        /// How the daemon's JVM encodes the lines it writes (PROTOCOL.md §1.1).
        Charset: Json.DaemonCharset
        /// What ends each line the daemon writes: "\n" on Linux, "\r\n" on Windows (`System.lineSeparator()`).
        LineSeparator: string
        /// Injected checkpoint failures; the first rule covering a request wins.
        Faults: FaultRule list
        /// The lease's checkpoint before any `initialize`, for sessions that start mid-life (an `initialize`
        /// replaces it). `None` means no bound below.
        Checkpoint: ExtendedSequenceNumber option
        /// What `Sent`, `Statuses`, `Checkpoints` and `Lines` keep.
        History: SessionHistory
    }

    /// UTF-8, "\n", no faults, no checkpoint, the whole history.
    static member Create(shardId: ShardId) =
        {
            ShardId = shardId
            Charset = Json.DaemonCharset.Utf8
            LineSeparator = "\n"
            Faults = []
            Checkpoint = None
            History = SessionHistory.Whole
        }

/// A checkpoint the daemon answered with no error.
[<NoComparison>]
type CheckpointRecord =
    {
        /// The request's 1-based index in the session.
        Request: int
        /// The action it came in.
        Action: string
        /// The lease's checkpoint after it: SHARD_END when `advancePosition` converted the last delivered record.
        Position: ExtendedSequenceNumber
        /// False for the silent no-op of a checkpoint equal to the current one.
        Changed: bool
    }

/// What the daemon did with one child line.
[<RequireQualifiedAccess>]
type LineHandling =
    /// An empty line: skipped silently (`GetNextMessageTask.isEmptyLine`).
    | Empty
    /// A whitespace-only line: skipped as unparseable (logged at INFO), but harmless, so not a finding.
    | Blank
    /// Unparseable, or not a message the daemon reads: skipped, a violation.
    | Skipped of error: ProtocolError
    /// The literal `null`: the daemon exits with code 1.
    | Fatal
    /// A valid daemon-side message (`initialize`...) written by the child: parsed and ignored silently.
    | DaemonSideMessage of action: string
    /// A checkpoint request, answered with this error (`None` on success).
    | CheckpointAnswered of error: CheckpointError option
    /// A checkpoint request the daemon does not read now: no action awaits a status.
    | CheckpointUnread
    /// A status that closed the open action.
    | StatusAccepted of responseFor: string
    /// A status the daemon rejects or reads out of turn.
    | StatusRejected of responseFor: string option
    /// A line after the daemon exited (fatal violation or driver failure): drained unread.
    | Drained

/// One line the child wrote, as the session saw it.
[<NoComparison>]
type ReceivedLine =
    {
        /// The line, decoded as UTF-8, without its terminator.
        Text: string
        /// The action awaiting its status when it came, if any.
        Action: string option
        /// What the daemon did with it.
        Handling: LineHandling
    }

/// The result of feeding one line to a session.
[<NoComparison>]
type Outcome =
    {
        /// What the daemon did with the line.
        Handling: LineHandling
        /// The checkpoint reply the daemon writes, if any.
        Reply: DaemonMessage option
        /// The reply's exact bytes with the line separator, or an empty array when there is no reply.
        ReplyBytes: byte[]
        /// What the line revealed, in order; empty for a correct line.
        Findings: Finding list
    }

/// What a driver should do next (`DaemonSession.nextStep`).
[<RequireQualifiedAccess>]
type Next =
    /// An action awaits its status: read the child's next line and `receive` it.
    | ReadLine
    /// No action is open: send whichever action the scenario calls for.
    | SendAction
    /// The lease was lost (an injected `ShutdownException`) outside `shardEnded`: the real daemon's next action for
    /// this child is `leaseLost`, and no other is accepted.
    | SendLeaseLost
    /// The final action (`leaseLost`, `shardEnded` or a legacy `shutdown`) is answered: close the child's stdin and
    /// expect it to exit with code 0.
    | CloseStdin
    /// The real daemon would have exited (a fatal violation or driver failure): close stdin and stop.
    | Abort

/// The daemon's side of one child's session, as pure functions over an immutable `Session`, in the manner of Elmish:
/// a driver (the test kit, or `kcl-local` with a real process per shard) does the I/O, sends actions through `send`,
/// feeds every line the child writes to `receive`, writes back the replies it returns, and asks `nextStep` what the
/// real daemon would do next. The session mirrors the Java MultiLangDaemon (PROTOCOL.md §3, §4) for ONE shard:
/// `MultiLangProtocol`'s wait loop and status check, and `ShardRecordProcessorCheckpointer`'s checkpoint rules.
/// Anything the real daemon would hang, exit or wedge on is recorded as a `Finding`; nothing here throws on bad input.
[<RequireQualifiedAccess>]
module Kcl.Core.DaemonSession

/// One child's session as the daemon sees it. Immutable; compared structurally. With `SessionHistory.Latest`,
/// `Sent`, `Statuses`, `Checkpoints` and `Lines` hold only their newest entry.
[<Sealed>]
type Session =
    /// The settings the session was created with.
    member Options: SessionOptions
    /// The shard the child serves.
    member ShardId: ShardId
    /// The wire name of the action awaiting its status (`"shutdown"` for a legacy one), if any.
    member OpenAction: string option
    /// Every action sent, in order (checkpoint replies are not actions).
    member Sent: DaemonMessage list
    /// The `responseFor` of every status the daemon accepted (equal to the open action's name), in order. The
    /// others are in `Findings`, including a wrong one for `shutdownRequested`, which still closes that action.
    member Statuses: string list
    /// Every checkpoint answered with no error, in order, with the action it came in.
    member Checkpoints: CheckpointRecord list
    /// Every line the child wrote, in order, with what the daemon did with it.
    member Lines: ReceivedLine list
    /// Every finding, violations and warnings, in order.
    member Findings: Finding list
    /// The findings of severity `Violation`, in order.
    member Violations: Finding list
    /// The findings of severity `Warning`, in order.
    member Warnings: Finding list
    /// The lease's checkpoint: from `initialize` (or the options), then every successful checkpoint.
    member Checkpoint: ExtendedSequenceNumber option
    /// The largest value a checkpoint may name (`largestPermittedCheckpointValue`): the lease's checkpoint at first,
    /// then the largest record of each non-empty batch, then SHARD_END once `shardEnded` is sent.
    member LargestPermitted: ExtendedSequenceNumber option
    /// The largest record delivered before `shardEnded` (`sequenceNumberAtShardEnd`), once it is sent.
    member SequenceNumberAtShardEnd: ExtendedSequenceNumber option
    /// How many records all `processRecords` actions delivered.
    member RecordsDelivered: int
    /// How many checkpoint requests the daemon answered (the index that fault rules count).
    member CheckpointRequests: int
    /// True when the lease's checkpoint is SHARD_END (sub-sequence 0), as `ShutdownTask` requires.
    member ShardEndCheckpointed: bool
    /// True once an injected `ShutdownException` said the worker no longer holds the lease.
    member LeaseLost: bool
    /// True when the real daemon would have exited: a fatal violation or a driver failure.
    member DaemonExited: bool
    interface System.IEquatable<Session>
    override Equals: obj -> bool
    override GetHashCode: unit -> int

/// A session before anything is sent.
val create: options: SessionOptions -> Session

/// Opens an action: returns the new session and the line the daemon writes, encoded with the options' charset and
/// ending with their line separator. Refused with an `Error` naming the reason, never sent, when the real daemon
/// would not send it: a `CheckpointReply` (replies come from `receive`); any action while another awaits its status;
/// anything once stdin is closed or the daemon has exited; `initialize` other than first, or naming another shard;
/// `processRecords`, `shutdownRequested` or `initialize` after `shutdownRequested`; anything but `leaseLost` (or a
/// legacy ZOMBIE/LEASE_LOST `shutdown`) once the lease is lost.
/// A session may start without `initialize` (to replay a transcript from the middle); `SessionOptions.Checkpoint`
/// then stands for the lease's checkpoint.
val trySend: message: DaemonMessage -> session: Session -> Result<Session * byte[], string>

/// The line `trySend` would write for the message in a session with these options, in the first bytes of an array
/// from `buffer`, which is given the line's length and may return a larger array (a driver can reuse one array for
/// every batch once the last line is written). Pure, so a driver may encode an action ahead, while the child works on
/// the one before, and open it later with `tryOpen`.
val internal encodeInto:
    buffer: (int -> byte[]) -> options: SessionOptions -> message: DaemonMessage -> System.ArraySegment<byte>

/// `encodeInto` a slice at a time: the line is whole once `Continue` returns true, so a driver can encode the next
/// batch in the gaps of other work (while the pipe is full and the child reads the batch before it).
val internal startEncoding:
    buffer: (int -> byte[]) -> options: SessionOptions -> message: DaemonMessage -> DaemonLine.LineWriting

/// `trySend` without the encoding, for a driver that has the line from `encodeInto`: refused for the same reasons, and
/// the same session after it.
val internal tryOpen: message: DaemonMessage -> session: Session -> Result<Session, string>

/// `tryOpen`'s refusal alone, without the session after it. Cheap, where opening a batch folds over its records, so
/// a driver can write a batch's line first and open it while the child reads it.
val internal canOpen: message: DaemonMessage -> session: Session -> Result<unit, string>

/// `trySend`, throwing `InvalidOperationException` with the same message when the action is refused.
val send: message: DaemonMessage -> session: Session -> Session * byte[]

/// Feeds one line the child wrote (without its terminator). Never throws.
/// - `""`: skipped silently. Whitespace only: skipped as unparseable by the daemon, but harmless: no finding.
/// - `null` (the JSON literal): a fatal violation; the daemon exits with code 1.
/// - Unparseable, an extra key, a missing or unknown action (`Json.decodeChildMessage`): a violation; the daemon
///   skips the line and, if an action is open, keeps waiting (a hang if the line was meant as the status).
/// - A daemon-side message (`initialize`...): ignored silently, no finding.
/// - A checkpoint while an action is open: answered as `ShardRecordProcessorCheckpointer` would (no checkpointer in
///   `initialize`/`leaseLost` gives `InvalidStateException` and a violation; then fault rules; then `sub < 0` and the
///   range `checkpoint <= target <= largest permitted` give `IllegalArgumentException`; equal to the checkpoint is a
///   silent success; after the lease is lost, `ShutdownException`). The reply echoes the request's fields.
/// - A checkpoint while no action is open: a violation, no reply (the daemon would read it during the next action).
/// - A status: closes the open action when `responseFor` matches; otherwise a fatal violation (the daemon exits 1),
///   except for `shutdownRequested`, where it is a warning and the action closes. Closing `shardEnded` (or a legacy
///   TERMINATE/SHARD_END) without a SHARD_END checkpoint is a violation unless the lease was lost. A status with no
///   action open is a violation.
/// Once the daemon has exited, lines are drained with no finding.
val receive: line: string -> session: Session -> Session * Outcome

/// `receive` for a line given as bytes, decoded as UTF-8 with invalid bytes replaced, as the JVM's reader does.
val receiveBytes: line: byte[] -> session: Session -> Session * Outcome

/// Records a failure only the driver can see, as a violation naming the open (or last) action and what the real
/// daemon would do. A timeout or an early exit means the daemon exits, so the session is over (`Next.Abort`).
val recordDriverFailure: failure: DriverFailure -> session: Session -> Session

/// What the driver should do next: read a line while an action is open; send `leaseLost` once the lease is lost;
/// close stdin after the final action's status; stop when the daemon would have exited; otherwise send any action.
val nextStep: session: Session -> Next

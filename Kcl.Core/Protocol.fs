(*
    The MultiLangDaemon wire protocol as types: what the daemon writes to the child, what the child writes back.
    Facts come from shared/protocol/PROTOCOL.md (read from the daemon's Java source); the class each case mirrors is
    named in its doc comment.
*)
namespace Kcl.Core

open System

/// The id of the shard a child serves. The daemon names it only in `initialize` (PROTOCOL.md §1).
[<Struct>]
type ShardId =
    /// A shard id exactly as the daemon wrote it, e.g. "shardId-000000000000".
    | ShardId of string

    /// The id as text.
    member this.Value =
        let (ShardId id) = this
        id

    override this.ToString() = this.Value

/// A sentinel position that Kinesis and the KCL use in place of a sequence number (`SentinelCheckpoint`).
[<RequireQualifiedAccess>]
type Sentinel =
    /// The oldest record still in the stream.
    | TrimHorizon
    /// Just after the newest record.
    | Latest
    /// The first record at or after a timestamp given elsewhere.
    | AtTimestamp
    /// The shard has been read to its end; the checkpoint that lets child shards start.
    | ShardEnd

    /// The sentinel as the daemon writes it, e.g. "TRIM_HORIZON".
    member this.WireName =
        match this with
        | TrimHorizon -> "TRIM_HORIZON"
        | Latest -> "LATEST"
        | AtTimestamp -> "AT_TIMESTAMP"
        | ShardEnd -> "SHARD_END"

/// Up to 64 ASCII digits as 4-bit nibbles, sixteen to a word, digit i at nibble i % 16 of word i / 16.
module internal DigitNibbles =
    [<Literal>]
    let Nibbles = 0x0F0F0F0F0F0F0F0FUL

    /// Eight ASCII digits, the first in the lowest byte, as eight nibbles in the low 32 bits.
    let inline packEight (ascii: uint64) =
        let pairs = (ascii &&& Nibbles) ||| ((ascii &&& Nibbles) >>> 4)
        let quads = (pairs &&& 0x00FF00FF00FF00FFUL) ||| ((pairs &&& 0x00FF00FF00FF00FFUL) >>> 8)
        let eights = (quads &&& 0x0000FFFF0000FFFFUL) ||| ((quads &&& 0x0000FFFF0000FFFFUL) >>> 16)
        eights &&& 0xFFFFFFFFUL

    /// The `chunk`-th eight digits, zero bytes past the end.
    let inline chunkAt (digits: ReadOnlySpan<byte>) (chunk: int) =
        let start = 8 * chunk

        if start + 8 <= digits.Length then
            Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(digits.Slice start)
        else
            let mutable ascii = 0UL

            for i in start .. digits.Length - 1 do
                ascii <- ascii ||| (uint64 digits[i] <<< (8 * (i - start)))

            ascii

    /// The `index`-th word of sixteen digits; nibbles past the end are 0.
    let inline word (digits: ReadOnlySpan<byte>) (index: int) =
        packEight (chunkAt digits (2 * index)) ||| (packEight (chunkAt digits (2 * index + 1)) <<< 32)

    /// The digit at `index` of the four words.
    let digitAt (word0: uint64) (word1: uint64) (word2: uint64) (word3: uint64) (index: int) =
        let word =
            match index / 16 with
            | 0 -> word0
            | 1 -> word1
            | 2 -> word2
            | _ -> word3

        char (int '0' + int ((word >>> (4 * (index % 16))) &&& 0xFUL))

/// A Kinesis sequence number: a non-empty string of ASCII digits of any length (real ones have 56 or more), or a
/// sentinel. It is never an integer: 56 digits do not fit in one.
[<Sealed>]
type SequenceNumber
    private (digits0: uint64, digits1: uint64, digits2: uint64, digits3: uint64, digitCount: int, text: string) =
    // A batch decodes one per record. Up to 64 digits are kept as nibbles (DigitNibbles): one object of 64 bytes
    // instead of an object and a 56-character string (160 bytes). The text is made when first asked for, and kept.
    // Longer numbers and sentinels are kept as text (digitCount = 0).
    let mutable text = text

    static let writeDigits =
        Buffers.SpanAction<char, SequenceNumber>(fun chars number ->
            for i in 0 .. chars.Length - 1 do
                chars[i] <- number.DigitAt i)

    /// The most digits kept as nibbles.
    static member internal MaxPacked = 64

    /// Digits (1 to MaxPacked, already checked), as nibbles; `text` is the same digits as a string, or null.
    static member internal Pack(digits: ReadOnlySpan<byte>, text: string) =
        SequenceNumber(
            DigitNibbles.word digits 0,
            DigitNibbles.word digits 1,
            DigitNibbles.word digits 2,
            DigitNibbles.word digits 3,
            digits.Length,
            text
        )

    /// A sentinel's name, or digits too many to pack, kept as text.
    static member internal OfText(text: string) = SequenceNumber(0UL, 0UL, 0UL, 0UL, 0, text)

    member private _.Digits0 = digits0
    member private _.Digits1 = digits1
    member private _.Digits2 = digits2
    member private _.Digits3 = digits3
    member private _.DigitCount = digitCount
    member private _.Text = text

    member private _.DigitAt(index: int) =
        DigitNibbles.digitAt digits0 digits1 digits2 digits3 index


    /// The sequence number as the wire carries it: digits, or a sentinel's name.
    member this.Value =
        if isNull text then
            // Two threads may both make it; either string is the same.
            text <- String.Create(digitCount, this, writeDigits)

        text

    /// The sentinel this stands for, if it is one.
    member _.Sentinel =
        if digitCount > 0 then
            None
        else
            match text with
            | "TRIM_HORIZON" -> Some Sentinel.TrimHorizon
            | "LATEST" -> Some Sentinel.Latest
            | "AT_TIMESTAMP" -> Some Sentinel.AtTimestamp
            | "SHARD_END" -> Some Sentinel.ShardEnd
            | _ -> None

    /// True when both are the same digits, or the same sentinel.
    member _.Equals(other: SequenceNumber) =
        not (isNull (box other))
        && digitCount = other.DigitCount
        && (if digitCount > 0 then
                digits0 = other.Digits0
                && digits1 = other.Digits1
                && digits2 = other.Digits2
                && digits3 = other.Digits3
            else
                String.Equals(text, other.Text))

    override this.Equals(other: obj) =
        match other with
        | :? SequenceNumber as other -> this.Equals other
        | _ -> false

    override _.GetHashCode() =
        if digitCount > 0 then
            HashCode.Combine(digits0, digits1, digits2, digits3, digitCount)
        else
            text.GetHashCode()

    override this.ToString() = this.Value

    interface IEquatable<SequenceNumber> with
        member this.Equals(other: SequenceNumber) = this.Equals other

/// Building and reading sequence numbers.
[<RequireQualifiedAccess>]
[<CompilationRepresentation(CompilationRepresentationFlags.ModuleSuffix)>]
module SequenceNumber =
    // Vectorised: a batch holds thousands of 56-digit sequence numbers.
    let private isDigits (text: string) =
        text.Length > 0 && not (text.AsSpan().ContainsAnyExceptInRange('0', '9'))

    /// A sequence number from UTF-8 bytes the caller has found to be one or more ASCII digits.
    let internal ofCheckedDigits (utf8: ReadOnlySpan<byte>) =
        if utf8.Length <= SequenceNumber.MaxPacked then
            SequenceNumber.Pack(utf8, null)
        else
            SequenceNumber.OfText(Text.Encoding.ASCII.GetString utf8)

    /// A sequence number straight from a JSON string's UTF-8 bytes when they are all digits, without an intermediate
    /// string; ValueNone otherwise (a sentinel, an escape, or not a sequence number), for the general path.
    let internal tryOfUtf8Digits (utf8: ReadOnlySpan<byte>) =
        if utf8.Length = 0 || utf8.ContainsAnyExceptInRange((byte '0'), (byte '9')) then
            ValueNone
        else
            ValueSome(ofCheckedDigits utf8)

    /// Parses digits or a sentinel's name; anything else is an error that says what is wrong.
    let tryParse (text: string) : Result<SequenceNumber, string> =
        if isNull text then
            Error "a sequence number cannot be null"
        elif isDigits text then
            if text.Length <= SequenceNumber.MaxPacked then
                Ok(SequenceNumber.Pack(ReadOnlySpan(Text.Encoding.ASCII.GetBytes text), text))
            else
                Ok(SequenceNumber.OfText text)
        else
            match text with
            | "TRIM_HORIZON"
            | "LATEST"
            | "AT_TIMESTAMP"
            | "SHARD_END" -> Ok(SequenceNumber.OfText text)
            | "" -> Error "a sequence number cannot be empty"
            | _ ->
                let shown = if text.Length > 80 then text.Substring(0, 80) + "…" else text

                Error(
                    sprintf
                        "%A is not a sequence number: expected ASCII digits or one of TRIM_HORIZON, LATEST, AT_TIMESTAMP, SHARD_END"
                        shown
                )

    /// The sequence number for a sentinel.
    let ofSentinel (sentinel: Sentinel) = SequenceNumber.OfText sentinel.WireName

    /// Parses digits or a sentinel's name, throwing `ArgumentException` naming the problem otherwise.
    let parse (text: string) =
        match tryParse text with
        | Ok sequenceNumber -> sequenceNumber
        | Error message -> invalidArg "sequenceNumber" message

    /// The SHARD_END sentinel.
    let shardEnd = ofSentinel Sentinel.ShardEnd

/// The reason a legacy (KCL 1.7.2 to 2.0.x) daemon gives in its `shutdown` message (`messages/ShutdownMessage.java`).
[<RequireQualifiedAccess>]
type ShutdownReason =
    /// KCL 1.x: the shard has ended; a checkpoint is owed, as in `shardEnded`.
    | Terminate
    /// KCL 1.x: the lease was lost; no checkpoint, as in `leaseLost`.
    | Zombie
    /// KCL 2.0.x: the shard has ended; a checkpoint is owed, as in `shardEnded`.
    | ShardEnd
    /// KCL 2.0.x: the lease was lost; no checkpoint, as in `leaseLost`.
    | LeaseLost

    /// The reason as the daemon writes it, e.g. "TERMINATE".
    member this.WireName =
        match this with
        | Terminate -> "TERMINATE"
        | Zombie -> "ZOMBIE"
        | ShardEnd -> "SHARD_END"
        | LeaseLost -> "LEASE_LOST"

    /// True when the reason means the shard ended and a SHARD_END checkpoint is owed.
    member this.OwesShardEndCheckpoint =
        match this with
        | Terminate
        | ShardEnd -> true
        | Zombie
        | LeaseLost -> false

/// The error a daemon names in a checkpoint reply: the Java exception's simple class name (PROTOCOL.md §4.4).
/// The set is open, so unknown names are kept as `Other`.
[<RequireQualifiedAccess>]
type CheckpointError =
    /// `ThrottlingException`: DynamoDB throttled the lease table. Retryable.
    | Throttling
    /// `KinesisClientLibDependencyException`: DynamoDB or another dependency failed. Retryable.
    | Dependency
    /// `ShutdownException`: this worker no longer holds the lease. Not retryable: the lease is lost.
    | Shutdown
    /// `InvalidStateException`: no checkpointer for this action, or the lease table is in a bad state.
    | InvalidState
    /// `IllegalArgumentException`: the position is out of range or malformed; a programming error.
    | IllegalArgument
    /// Any other exception name the daemon reports.
    | Other of name: string

    /// The Java exception name, as on the wire.
    member this.Name =
        match this with
        | Throttling -> "ThrottlingException"
        | Dependency -> "KinesisClientLibDependencyException"
        | Shutdown -> "ShutdownException"
        | InvalidState -> "InvalidStateException"
        | IllegalArgument -> "IllegalArgumentException"
        | Other name -> name

    /// True for the `KinesisClientLibRetryableException` family (throttling and dependency failures).
    member this.IsRetryable =
        match this with
        | Throttling
        | Dependency -> true
        | _ -> false

    /// True when the error means the lease is gone (`ShutdownException`).
    member this.IsLeaseLost = (this = Shutdown)

    /// Reads a Java exception name; known names become their own case, so `Other` never holds one of them.
    static member OfName(name: string) =
        match name with
        | "ThrottlingException" -> Throttling
        | "KinesisClientLibDependencyException" -> Dependency
        | "ShutdownException" -> Shutdown
        | "InvalidStateException" -> InvalidState
        | "IllegalArgumentException" -> IllegalArgument
        | other -> Other other

/// One Kinesis record as the daemon delivers it (`messages/JsonFriendlyRecord.java`). Two records are equal when their
/// fields are, the payloads compared byte by byte.
[<CustomEquality; NoComparison>]
type Record =
    {
        /// The payload. Never pooled or recycled: it stays valid for as long as user code holds it. The payloads of a
        /// decoded batch share blocks of up to 64 KiB, so a record kept for long keeps its block: copy what you keep.
        Data: ReadOnlyMemory<byte>
        /// The partition key; empty when the daemon sent null.
        PartitionKey: string
        /// The record's sequence number.
        SequenceNumber: SequenceNumber
        /// The position inside a KPL aggregate; 0 for records that were not aggregated.
        SubSequenceNumber: int64
        /// When Kinesis received the record, if the daemon said.
        ApproximateArrivalTimestamp: DateTimeOffset option
    }

    /// True when every field is equal, the payloads compared byte by byte.
    member this.Equals(other: Record) =
        not (isNull (box other))
        && this.Data.Span.SequenceEqual other.Data.Span
        && this.PartitionKey = other.PartitionKey
        && this.SequenceNumber = other.SequenceNumber
        && this.SubSequenceNumber = other.SubSequenceNumber
        && this.ApproximateArrivalTimestamp = other.ApproximateArrivalTimestamp

    override this.Equals(other: obj) =
        match other with
        | :? Record as other -> this.Equals other
        | _ -> false

    override this.GetHashCode() =
        HashCode.Combine(this.Data.Length, this.PartitionKey, this.SequenceNumber, this.SubSequenceNumber)

    interface IEquatable<Record> with
        member this.Equals(other: Record) = this.Equals other

/// Where a child asks the daemon to checkpoint.
[<RequireQualifiedAccess>]
type CheckpointTarget =
    /// No position: the last record delivered, or SHARD_END while the shard is ending (`checkpointer.checkpoint()`).
    | LastDelivered
    /// An explicit position; a missing sub-sequence number means 0 to the daemon.
    | At of sequenceNumber: SequenceNumber * subSequenceNumber: int64 option

/// Every message the daemon writes to the child's stdin (`messages/*.java`).
[<RequireQualifiedAccess>]
type DaemonMessage =
    /// `InitializeMessage`: the shard and its current checkpoint; both checkpoint fields may be null (T03).
    | Initialize of shardId: ShardId * sequenceNumber: SequenceNumber option * subSequenceNumber: int64 option
    /// `ProcessRecordsMessage`: a batch of records, possibly empty.
    | ProcessRecords of records: Record[] * millisBehindLatest: int64 option
    /// `LeaseLostMessage`: another worker holds the lease; checkpointing is impossible.
    | LeaseLost
    /// `ShardEndedMessage`: the shard is finished; the child must checkpoint at SHARD_END.
    | ShardEnded
    /// `ShutdownRequestedMessage`: the worker is shutting down or handing the lease off; a last checkpoint may be taken.
    | ShutdownRequested
    /// `ShutdownMessage`: what daemons before KCL 2.1 send in place of `leaseLost` and `shardEnded`.
    | Shutdown of reason: ShutdownReason
    /// `CheckpointMessage`: the reply to a checkpoint request. The position echoes the request; `error` is null on success.
    | CheckpointReply of sequenceNumber: string option * subSequenceNumber: int64 option * error: CheckpointError option

    /// The action name this message carries on the wire.
    member this.Action =
        match this with
        | Initialize _ -> "initialize"
        | ProcessRecords _ -> "processRecords"
        | LeaseLost -> "leaseLost"
        | ShardEnded -> "shardEnded"
        | ShutdownRequested -> "shutdownRequested"
        | Shutdown _ -> "shutdown"
        | CheckpointReply _ -> "checkpoint"

/// The wire names of the daemon's actions, each answered by exactly one status.
[<RequireQualifiedAccess>]
module ActionNames =
    /// The actions of every supported daemon: the current five and the legacy `shutdown`.
    let all =
        [ "initialize"; "processRecords"; "leaseLost"; "shardEnded"; "shutdownRequested"; "shutdown" ]

/// Every message the child writes to its stdout (PROTOCOL.md §3).
[<RequireQualifiedAccess>]
type ChildMessage =
    /// `StatusMessage`: the action is finished. Exactly one per action, after all of its checkpoints.
    | Status of responseFor: string
    /// `CheckpointMessage`: a checkpoint request; the daemon answers with a `CheckpointReply`.
    | Checkpoint of target: CheckpointTarget

/// Why a line from the daemon could not be decoded. Each case names the problem for the log.
[<RequireQualifiedAccess>]
type ProtocolError =
    /// The line is not valid JSON.
    | MalformedJson of detail: string
    /// The line is valid JSON but not an object (the literal `null`, an array, a number...).
    | NotAnObject of found: string
    /// A required field is absent or null.
    | MissingField of action: string * field: string
    /// A field holds the wrong JSON type.
    | WrongType of action: string * field: string * expected: string * found: string
    /// A field has the right type but a value that cannot be used (bad base64, out of range, not a sequence number).
    | InvalidValue of action: string * field: string * detail: string
    /// An action this library does not know, e.g. from a newer daemon.
    | UnknownAction of action: string
    /// An `initialize` with no `sequenceNumber` key: a daemon older than KCL 1.7.2, whose protocol is not supported.
    | DaemonTooOld
    /// A legacy `shutdown` whose reason is null or unknown, so it is unclear whether a checkpoint is owed.
    | UnknownShutdownReason of reason: string option

    /// A one-line explanation for logs and exceptions.
    member this.Describe() =
        match this with
        | MalformedJson detail -> sprintf "the line is not valid JSON: %s" detail
        | NotAnObject found -> sprintf "expected a JSON object, found %s" found
        | MissingField("", field) -> sprintf "the required field \"%s\" is missing or null" field
        | MissingField(action, field) -> sprintf "\"%s\" requires the field \"%s\", which is missing or null" action field
        | WrongType(action, field, expected, found) ->
            sprintf "in \"%s\", the field \"%s\" must be %s but is %s" action field expected found
        | InvalidValue(action, field, detail) -> sprintf "in \"%s\", the field \"%s\" is invalid: %s" action field detail
        | UnknownAction action -> sprintf "unknown action \"%s\"" action
        | DaemonTooOld ->
            "the daemon is older than KCL 1.7.2 (its initialize has no sequenceNumber field); upgrade to KCL multilang 2.1 or later"
        | UnknownShutdownReason None -> "a legacy shutdown message has a null reason"
        | UnknownShutdownReason(Some reason) -> sprintf "a legacy shutdown message has the unknown reason \"%s\"" reason

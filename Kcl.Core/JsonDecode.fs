(*
    JsonDecode --- the bodies of the messages in both directions, read by field name once JsonText.findAction has
    found the action and proved the line well-formed. Every problem is raised as DecodeFailure, named by action and
    field, and Json.fs turns it into a ProtocolError.
*)
module internal Kcl.Core.JsonDecode

open System
open System.Buffers
open System.Buffers.Text
open System.Text
open System.Text.Json
open Kcl.Core.JsonText

// ---- what the daemon writes ---------------------------------------------------------------------------------------

let private minEpochMillis = DateTimeOffset.MinValue.ToUnixTimeMilliseconds()
let private maxEpochMillis = DateTimeOffset.MaxValue.ToUnixTimeMilliseconds()

let private decodeInitialize (reader: byref<Utf8JsonReader>) =
    let action = "initialize"
    let mutable shardId = None
    let mutable hasSequenceNumber = false
    let mutable sequence = None
    let mutable subSequence = None
    let mutable go = true

    while go do
        match nextProperty &reader with
        | ValueNone -> go <- false
        | ValueSome "shardId" -> shardId <- readStringOrNull (&reader, action, "shardId")
        | ValueSome "sequenceNumber" ->
            hasSequenceNumber <- true

            sequence <-
                readStringOrNull (&reader, action, "sequenceNumber")
                |> Option.map (sequenceNumber action "sequenceNumber")
        | ValueSome "subSequenceNumber" -> subSequence <- readInt64OrNull (&reader, action, "subSequenceNumber")
        | ValueSome _ -> reader.Skip()

    // A null sequenceNumber is a 1.7.2+ daemon with no checkpoint (T03); only a missing key marks the old protocol.
    if not hasSequenceNumber then
        fail ProtocolError.DaemonTooOld

    match shardId with
    | Some id -> DaemonMessage.Initialize(ShardId id, sequence, subSequence)
    | None -> fail (ProtocolError.MissingField(action, "shardId"))

/// How many bytes padded base64 `text` decodes to, if it is valid; -1 if its length cannot be padded base64's.
let private decodedLength (text: ReadOnlySpan<byte>) =
    if text.Length % 4 <> 0 then
        -1
    else
        let padding =
            if text.Length = 0 || text[text.Length - 1] <> byte '=' then 0
            elif text[text.Length - 2] <> byte '=' then 1
            else 2

        text.Length / 4 * 3 - padding

/// Decodes padded base64 `text` into `room`, which must be exactly as long as `decodedLength` says; false if invalid.
let private decodeInto (text: ReadOnlySpan<byte>) (room: Span<byte>) =
    let mutable consumed = 0
    let mutable written = 0
    Base64.DecodeFromUtf8(text, room, &consumed, &written, true) = OperationStatus.Done && written = room.Length

/// The usual payload (one unescaped span, padded) decoded straight into an array of its exact length. The reader's own
/// TryGetBytesFromBase64 decodes into a rented buffer and then copies: a second pass over every payload. Anything
/// else (escapes, pieces, whitespace, invalid text) is left to it, so what is accepted does not change.
let private base64Exactly (text: ReadOnlySpan<byte>) =
    let length = decodedLength text

    if length < 0 then
        ValueNone
    else
        let bytes = GC.AllocateUninitializedArray<byte> length

        if decodeInto text (Span bytes) then ValueSome bytes else ValueNone

let private decodeBase64Exactly (reader: byref<Utf8JsonReader>) =
    if reader.HasValueSequence || reader.ValueIsEscaped then
        ValueNone
    else
        base64Exactly reader.ValueSpan

let private readData (reader: byref<Utf8JsonReader>, field: string) : byte[] =
    match reader.TokenType with
    | JsonTokenType.Null -> Array.Empty<byte>()
    | JsonTokenType.String ->
        // Returns a new array each time: record payloads are never pooled (POLICY.md "Records that user code keeps").
        match decodeBase64Exactly &reader with
        | ValueSome bytes -> bytes
        | ValueNone ->
            match reader.TryGetBytesFromBase64() with
            | true, bytes -> bytes
            | false, _ ->
                fail (
                    ProtocolError.InvalidValue("processRecords", field, "not valid base64 (standard alphabet, padded)")
                )
    | other -> fail (ProtocolError.WrongType("processRecords", field, "a base64 string or null", describeToken other))

let private toTimestamp (field: string) (millis: int64) =
    if millis < minEpochMillis || millis > maxEpochMillis then
        let detail =
            sprintf "%d epoch milliseconds is outside the range of DateTimeOffset" millis

        fail (ProtocolError.InvalidValue("processRecords", field, detail))

    DateTimeOffset.FromUnixTimeMilliseconds millis

// The property names of a record, compared as UTF-8 bytes: a batch has thousands of records, and a string per name
// per record would be most of the decoder's garbage.
let private dataName = "data"B
let private partitionKeyName = "partitionKey"B
let private sequenceNumberName = "sequenceNumber"B
let private arrivalName = "approximateArrivalTimestamp"B
let private subSequenceNumberName = "subSequenceNumber"B

let private is (name: byte[]) (reader: byref<Utf8JsonReader>) =
    reader.ValueTextEquals(ReadOnlySpan name)

// A record's errors name their field as "records[i].field"; the prefix is built only when a record fails.
let private inRecord (index: int) (error: ProtocolError) =
    let named field =
        "records[" + string index + "]." + field

    match error with
    | ProtocolError.MissingField(action, field) -> ProtocolError.MissingField(action, named field)
    | ProtocolError.WrongType(action, field, expected, found) ->
        ProtocolError.WrongType(action, named field, expected, found)
    | ProtocolError.InvalidValue(action, field, detail) -> ProtocolError.InvalidValue(action, named field, detail)
    | other -> other

let private decodeRecord (reader: byref<Utf8JsonReader>, index: int) : Record =
    let action = "processRecords"

    if reader.TokenType <> JsonTokenType.StartObject then
        fail (
            ProtocolError.WrongType(
                action,
                "records[" + string index + "]",
                "an object",
                describeToken reader.TokenType
            )
        )

    let mutable data = ReadOnlyMemory<byte>.Empty
    let mutable partitionKey = ""
    let mutable sequence = Unchecked.defaultof<SequenceNumber>
    let mutable subSequence = 0L
    let mutable arrival = None

    // Nulls follow POLICY.md: the daemon's classes allow them, and KCL 1.x sent a null subSequenceNumber.
    // The record's own "action":"record" (absent before KCL 1.7.2) carries nothing, so it is skipped with unknown keys.
    try
        while reader.Read() && reader.TokenType = JsonTokenType.PropertyName do
            if is dataName &reader then
                reader.Read() |> ignore
                data <- ReadOnlyMemory(readData (&reader, "data"))
            elif is partitionKeyName &reader then
                reader.Read() |> ignore

                partitionKey <-
                    match reader.TokenType with
                    | JsonTokenType.Null -> ""
                    | _ -> (readStringOrNull (&reader, action, "partitionKey")).Value
            elif is sequenceNumberName &reader then
                reader.Read() |> ignore

                let digits =
                    if
                        reader.TokenType = JsonTokenType.String
                        && not reader.ValueIsEscaped
                        && not reader.HasValueSequence
                    then
                        SequenceNumber.tryOfUtf8Digits reader.ValueSpan
                    else
                        ValueNone

                match digits with
                | ValueSome parsed -> sequence <- parsed
                | ValueNone ->
                    match readStringOrNull (&reader, action, "sequenceNumber") with
                    | Some text -> sequence <- sequenceNumber action "sequenceNumber" text
                    | None -> sequence <- Unchecked.defaultof<_>
            elif is arrivalName &reader then
                reader.Read() |> ignore

                arrival <-
                    match readInt64OrNullValue (&reader, action, "approximateArrivalTimestamp") with
                    | ValueSome millis -> Some(toTimestamp "approximateArrivalTimestamp" millis)
                    | ValueNone -> None
            elif is subSequenceNumberName &reader then
                reader.Read() |> ignore

                subSequence <-
                    readInt64OrNullValue (&reader, action, "subSequenceNumber")
                    |> ValueOption.defaultValue 0L
            else
                reader.Read() |> ignore
                reader.Skip()

        if obj.ReferenceEquals(sequence, null) then
            fail (ProtocolError.MissingField(action, "sequenceNumber"))
    with DecodeFailure error ->
        fail (inRecord index error)

    {
        Data = data
        PartitionKey = partitionKey
        SequenceNumber = sequence
        SubSequenceNumber = subSequence
        ApproximateArrivalTimestamp = arrival
    }

let private readRecords (reader: byref<Utf8JsonReader>) =
    match reader.TokenType with
    | JsonTokenType.Null -> fail (ProtocolError.MissingField("processRecords", "records"))
    | JsonTokenType.StartArray ->
        let records = ResizeArray<Record>()
        reader.Read() |> ignore

        while reader.TokenType <> JsonTokenType.EndArray do
            records.Add(decodeRecord (&reader, records.Count))
            reader.Read() |> ignore

        Some(records.ToArray())
    | other -> fail (ProtocolError.WrongType("processRecords", "records", "an array", describeToken other))

let private decodeProcessRecords (reader: byref<Utf8JsonReader>) =
    let mutable records = None
    let mutable millisBehindLatest = None
    let mutable go = true

    while go do
        match nextProperty &reader with
        | ValueNone -> go <- false
        | ValueSome "records" -> records <- readRecords &reader
        | ValueSome "millisBehindLatest" ->
            millisBehindLatest <- readInt64OrNull (&reader, "processRecords", "millisBehindLatest")
        | ValueSome _ -> reader.Skip()

    match records with
    | Some records -> DaemonMessage.ProcessRecords(records, millisBehindLatest)
    | None -> fail (ProtocolError.MissingField("processRecords", "records"))

// ---- processRecords in the daemon's own layout ---------------------------------------------------------------------

// Jackson writes a batch with no white space, its fields in the message classes' order, and strings escaped only where
// JSON requires (TRANSCRIPTS.md, T04). A line in exactly that form is read here by hand: decoding records took half of
// the C# sample's stdin thread in a profile, and by hand a batch takes about half the reader's time (bench/README.md).
// Anything else (white space, another order, an escape, a sentinel, a missing or null sequence number, a number JSON
// forbids or one out of range, invalid UTF-8) stops the reading at the first byte that differs, and the reader decodes
// the line instead, so what is accepted, what it decodes to and every error stay the reader's.

/// The daemon's layout of its messages, read here; DaemonLine writes batches the same way.
module Layout =
    let batchStart = "{\"action\":\"processRecords\",\"records\":["B
    let dataField = "{\"data\":"B
    let partitionKeyField = ",\"partitionKey\":"B
    let sequenceNumberField = ",\"sequenceNumber\":"B
    let arrivalField = ",\"approximateArrivalTimestamp\":"B
    let subSequenceNumberField = ",\"subSequenceNumber\":"B
    let recordEnd = ",\"action\":\"record\"}"B
    let batchEnd = "],\"millisBehindLatest\":"B
    let initializeStart = "{\"action\":\"initialize\",\"shardId\":"B
    let checkpointStart = "{\"action\":\"checkpoint\",\"sequenceNumber\":"B
    let errorField = ",\"error\":"B
    let shardEnded = "{\"action\":\"shardEnded\"}"B
    let leaseLost = "{\"action\":\"leaseLost\"}"B
    let shutdownRequested = "{\"action\":\"shutdownRequested\"}"B

open Layout

// A sequence number in the layout is always a string: the opening quote is read with the name.
let private sequenceNumberOpen = Array.append sequenceNumberField "\""B
let private nullLiteral = "null"B

/// Steps over `expected` if the line has it at `position`.
let private skip (line: ReadOnlySpan<byte>) (position: byref<int>) (expected: byte[]) =
    if line.Slice(position).StartsWith(ReadOnlySpan expected) then
        position <- position + expected.Length
        true
    else
        false

/// Steps over `null` if the line has it at `position`; most values are not, and their first byte says so.
let private skipNull (line: ReadOnlySpan<byte>) (position: byref<int>) =
    position < line.Length && line[position] = byte 'n' && skip line &position nullLiteral

/// The index of the closing quote of the string that opens at `position`, or -1 if it has an escape or no end.
let private closingQuote (line: ReadOnlySpan<byte>) (position: int) =
    if position >= line.Length || line[position] <> byte '"' then
        -1
    else
        let length = line.Slice(position + 1).IndexOfAny(byte '"', byte '\\')

        if length < 0 || line[position + 1 + length] <> byte '"' then
            -1
        else
            position + 1 + length

// A batch's payloads are decoded into blocks of 64 KiB that neighbouring records share, never pooled (POLICY.md
// "Records that user code keeps"). An array per record cost the GC most of a 10,000-record batch's time: the batch lives
// until its callback returns, so a collection during it copied each of its arrays. Blocks of 1 MiB, on the large-object
// heap, did better but not as well: the child took four times the page faults, for fresh memory to put them in
// (bench/README.md, "Seventh round").
let private blockBytes = 64 * 1024

/// Where one batch's payloads are decoded: consecutive slices of blocks, so a record that user code keeps holds its
/// block (64 KiB at most) and nothing else.
[<Sealed>]
type private PayloadBlocks() =
    let mutable block: byte[] = null
    let mutable used = 0

    /// Decodes `text` (padded base64) into the next slice of a block, or into an array of its own if it would take
    /// half a block or more. `estimate` is how many bytes this payload and the rest of the batch's probably take.
    member _.Decode(text: ReadOnlySpan<byte>, estimate: int64, data: byref<ReadOnlyMemory<byte>>) =
        let length = decodedLength text

        if length <= 0 then
            data <- ReadOnlyMemory.Empty
            text.Length = 0
        else
            let alone = length >= blockBytes / 2

            // A small batch's one block is no bigger than its payloads.
            if not alone && (isNull block || block.Length - used < length) then
                block <- GC.AllocateUninitializedArray<byte>(int (max (int64 length) (min (int64 blockBytes) estimate)))
                used <- 0

            let room =
                if alone then
                    Memory(GC.AllocateUninitializedArray<byte> length)
                else
                    Memory(block, used, length)

            if decodeInto text room.Span then
                if not alone then
                    used <- used + length

                data <- Memory.op_Implicit room
                true
            else
                false

/// A batch's arrival times: records that Kinesis received in the same millisecond, as those of one PutRecords call or
/// one KPL aggregate are, share one `Some`.
[<Sealed>]
type private ArrivalTimes() =
    let mutable lastMillis = 0L
    let mutable last: DateTimeOffset option = None

    /// The arrival time `millis` after the epoch, already checked to be in DateTimeOffset's range.
    member _.Of(millis: int64) =
        if last.IsNone || millis <> lastMillis then
            lastMillis <- millis
            last <- Some(DateTimeOffset.FromUnixTimeMilliseconds millis)

        last

/// Steps over a payload's string, or `null`, leaving where its text starts and its length (-1 for null).
let private payloadText (line: ReadOnlySpan<byte>) (position: byref<int>) (start: byref<int>) (length: byref<int>) =
    if skipNull line &position then
        length <- -1
        true
    else
        let close = closingQuote line position

        if close > 0 && (close - position - 1) % 4 = 0 then
            start <- position + 1
            length <- close - start
            position <- close + 1
            true
        else
            false

// JSON forbids control characters in a string, and the reader refuses invalid UTF-8: both leave the line to it.
let private partitionKey (line: ReadOnlySpan<byte>) (position: byref<int>) (key: byref<string>) =
    if skipNull line &position then
        key <- ""
        true
    else
        let close = closingQuote line position
        let text = if close > 0 then line.Slice(position + 1, close - position - 1) else ReadOnlySpan.Empty

        // Most keys are ASCII without control characters, one pass to check and a widening to read: UTF8.GetString
        // would check the text as UTF-8 a second time.
        let decoded =
            if close <= 0 then null
            elif not (text.ContainsAnyExceptInRange(0x20uy, 0x7Fuy)) then Encoding.Latin1.GetString text
            elif text.IndexOfAnyInRange(0uy, 0x1Fuy) < 0 && Unicode.Utf8.IsValid text then Encoding.UTF8.GetString text
            else null

        if isNull decoded then
            false
        else
            key <- decoded
            position <- close + 1
            true

// Just after the opening quote, which `sequenceNumberOpen` includes. One pass finds the end and checks the digits.
let private digits (line: ReadOnlySpan<byte>) (position: byref<int>) (sequence: byref<SequenceNumber>) =
    let rest = line.Slice position
    let length = rest.IndexOfAnyExceptInRange(byte '0', byte '9')

    if length > 0 && rest[length] = byte '"' then
        sequence <- SequenceNumber.ofCheckedDigits (rest.Slice(0, length))
        position <- position + length + 1
        true
    else
        false

/// `null`, or an integer as JSON spells one (`-`, then `0` or digits not led by `0`) that fits an Int64, followed by
/// the end of its object, array or member.
let private integerOrNull (line: ReadOnlySpan<byte>) (position: byref<int>) (value: byref<int64 voption>) =
    if skipNull line &position then
        value <- ValueNone
        true
    else
        let rest = line.Slice position
        let first = if rest.Length > 0 && rest[0] = byte '-' then 1 else 0
        let mutable after = first
        // Exact for up to 18 digits; past that the parser checks for overflow.
        let mutable number = 0L

        while after < rest.Length && rest[after] >= byte '0' && rest[after] <= byte '9' do
            number <- number * 10L + int64 (rest[after] - byte '0')
            after <- after + 1

        let count = after - first
        let mutable consumed = 0

        if
            count > 0
            && not (count > 1 && rest[first] = byte '0')
            && after < rest.Length
            && (rest[after] = byte ',' || rest[after] = byte '}' || rest[after] = byte ']')
            && (count <= 18 || (Utf8Parser.TryParse(rest.Slice(0, after), &number, &consumed) && consumed = after))
        then
            value <- ValueSome(if count <= 18 && first = 1 then -number else number)
            position <- position + after
            true
        else
            false

/// The record that starts at `position`. `tail` is how much of the line follows `line`.
let private layoutRecord
    (blocks: PayloadBlocks)
    (arrivals: ArrivalTimes)
    (tail: int64)
    (line: ReadOnlySpan<byte>)
    (position: byref<int>)
    : Record voption =
    let start = position
    let mutable textStart = 0
    let mutable textLength = 0
    let mutable data = ReadOnlyMemory<byte>.Empty
    let mutable key = null
    let mutable sequence = Unchecked.defaultof<SequenceNumber>
    let mutable arrival = ValueNone
    let mutable subSequence = ValueNone

    if
        skip line &position dataField
        && payloadText line &position &textStart &textLength
        && skip line &position partitionKeyField
        && partitionKey line &position &key
        && skip line &position sequenceNumberOpen
        && digits line &position &sequence
        && skip line &position arrivalField
        && integerOrNull line &position &arrival
        && (arrival.IsNone || (arrival.Value >= minEpochMillis && arrival.Value <= maxEpochMillis))
        && skip line &position subSequenceNumberField
        && integerOrNull line &position &subSequence
        && skip line &position recordEnd
        // Decoded last, once the record's length gives the share of the rest of the line that payloads take.
        && (textLength < 0
            || blocks.Decode(
                line.Slice(textStart, textLength),
                (int64 (line.Length - start) + tail) * int64 textLength / int64 (position - start) * 3L / 4L,
                &data
            ))
    then
        ValueSome
            {
                Data = data
                PartitionKey = key
                SequenceNumber = sequence
                SubSequenceNumber = subSequence |> ValueOption.defaultValue 0L
                ApproximateArrivalTimestamp = if arrival.IsSome then arrivals.Of arrival.Value else None
            }
    else
        ValueNone

// The most records one GetRecords call returns; a batch holds more only when the daemon has de-aggregated KPL records.
let private fullGetRecords = 10_000

/// The records of one batch, in an array sized from the first record's length. A list that doubles would grow to
/// 16,384 slots for a batch of 10,000, on the large-object heap, and only collections of every generation free that.
[<Sealed>]
type private BatchRecords() =
    let mutable records: Record[] = Array.Empty()
    let mutable count = 0

    /// Adds a record `length` bytes long on the line, with `remaining` bytes of the line after it.
    member _.Add(record: Record, length: int, remaining: int64) =
        if count = records.Length then
            // Records are separated by a comma; what ends the batch is shorter than a record.
            let more = remaining / int64 (length + 1)
            Array.Resize(&records, count + 1 + int (min more (int64 Int32.MaxValue - int64 count - 1L)))

        records[count] <- record
        count <- count + 1

    /// Adds a record of a line whose length is not known yet: the array doubles, but stops once at the 10,000 records
    /// of a full GetRecords, since past 10,625 slots it would go to the large-object heap.
    member this.AddUnsized(record: Record) =
        if count = records.Length then
            let doubled = max 64 (2 * count)
            let size = if count < fullGetRecords then min doubled fullGetRecords else doubled
            Array.Resize(&records, size)

        records[count] <- record
        count <- count + 1

    /// How many records were added.
    member _.Count = count

    /// The records added, in order.
    member _.ToArray() =
        if count = records.Length then records else Array.sub records 0 count

/// Whether the object closes at `position` and the line ends with it.
let private closesAt (line: ReadOnlySpan<byte>) (position: int) =
    position = line.Length - 1 && line[position] = byte '}'

/// The batch of `records`, if the line ends at `position` as a batch does: `],"millisBehindLatest":`, its value, `}`.
let private batchOf (records: BatchRecords) (line: ReadOnlySpan<byte>) (position: int) =
    let mutable position = position
    let mutable behind = ValueNone

    if
        skip line &position batchEnd
        && integerOrNull line &position &behind
        && closesAt line position
    then
        ValueSome(DaemonMessage.ProcessRecords(records.ToArray(), ValueOption.toOption behind))
    else
        ValueNone

/// A string of printable ASCII without escapes at `position`, or `null` (as a null string); false for anything else.
let private asciiTextOrNull (line: ReadOnlySpan<byte>) (position: byref<int>) (text: byref<string>) =
    if skipNull line &position then
        text <- null
        true
    else
        let close = closingQuote line position

        if close < 0 then
            false
        else
            let content = line.Slice(position + 1, close - position - 1)

            if content.ContainsAnyExceptInRange(0x20uy, 0x7Euy) then
                false
            else
                text <- Encoding.ASCII.GetString content
                position <- close + 1
                true

/// An `initialize` line in the daemon's own layout. It is the child's first line, so reading it by hand keeps the JSON
/// reader's start-up (its assembly and its static tables) out of the time to the first answer (bench/README.md,
/// "Start-up", "Third round"). A null shard id or a sequence number that is neither digits nor a sentinel is left to
/// the reader, which names the problem.
let private layoutInitialize (line: ReadOnlySpan<byte>) =
    let mutable position = 0
    let mutable shardId = null
    let mutable sequence = null
    let mutable subSequence = ValueNone

    if
        skip line &position initializeStart
        && asciiTextOrNull line &position &shardId
        && not (isNull shardId)
        && skip line &position sequenceNumberField
        && asciiTextOrNull line &position &sequence
        && skip line &position subSequenceNumberField
        && integerOrNull line &position &subSequence
        && closesAt line position
    then
        let parsed =
            if isNull sequence then Ok None else SequenceNumber.tryParse sequence |> Result.map Some

        match parsed with
        | Ok sequence ->
            ValueSome(DaemonMessage.Initialize(ShardId shardId, sequence, ValueOption.toOption subSequence))
        | Error _ -> ValueNone
    else
        ValueNone

/// A checkpoint's reply in the daemon's own layout. It comes once per batch, and read by hand it leaves the JSON reader
/// unloaded: a stream's first batch pays neither for its assembly nor for its static tables.
/// The sequence number stays the text the daemon echoed, as the reader leaves it; anything but printable ASCII, or
/// a number in its place, is the reader's.
let private layoutCheckpointReply (line: ReadOnlySpan<byte>) =
    let mutable position = 0
    let mutable sequence = null
    let mutable subSequence = ValueNone
    let mutable error = null

    if
        skip line &position checkpointStart
        && asciiTextOrNull line &position &sequence
        && skip line &position subSequenceNumberField
        && integerOrNull line &position &subSequence
        && skip line &position errorField
        && asciiTextOrNull line &position &error
        && closesAt line position
    then
        ValueSome(
            DaemonMessage.CheckpointReply(
                Option.ofObj sequence,
                ValueOption.toOption subSequence,
                Option.ofObj error |> Option.map CheckpointError.OfName
            )
        )
    else
        ValueNone

/// A message with no field but its action, as the daemon writes it.
let private layoutEvent (line: ReadOnlySpan<byte>) =
    if line.SequenceEqual(ReadOnlySpan shardEnded) then ValueSome DaemonMessage.ShardEnded
    elif line.SequenceEqual(ReadOnlySpan leaseLost) then ValueSome DaemonMessage.LeaseLost
    elif line.SequenceEqual(ReadOnlySpan shutdownRequested) then ValueSome DaemonMessage.ShutdownRequested
    else ValueNone

/// A line in the daemon's own layout, decoded as the reader decodes it; ValueNone for any other line. Every message
/// the KCL 2.x daemon sends has one; only the legacy `shutdown` is left to the reader.
let tryDecodeDaemonLayout (line: ReadOnlySpan<byte>) : DaemonMessage voption =
    let mutable position = 0

    if not (skip line &position batchStart) then
        match layoutCheckpointReply line with
        | ValueSome reply -> ValueSome reply
        | ValueNone ->
            match layoutInitialize line with
            | ValueSome initialize -> ValueSome initialize
            | ValueNone -> layoutEvent line
    else
        let records = BatchRecords()
        let blocks = PayloadBlocks()
        let arrivals = ArrivalTimes()
        let mutable inLayout = true
        let mutable more = position < line.Length && line[position] <> byte ']'

        while more do
            let start = position

            match layoutRecord blocks arrivals 0L line &position with
            | ValueSome record ->
                records.Add(record, position - start, int64 (line.Length - position))

                if position < line.Length && line[position] = byte ',' then
                    position <- position + 1
                else
                    more <- false
            | ValueNone ->
                inLayout <- false
                more <- false

        if inLayout then batchOf records line position else ValueNone

let private inOneSpan (bytes: ReadOnlySequence<byte>) =
    if bytes.IsSingleSegment then bytes.FirstSpan else ReadOnlySpan(bytes.ToArray())

// A line still being read is longer than the line reader's buffer (1 MiB), so its payloads fill whole blocks: a tail
// this long makes every estimate at least a block.
let private longTail = 1L <<< 30

/// A batch whose line comes in pieces (one longer than the line reader's buffer), decoded a record at a time while the
/// rest of the line is still being read: the records wholly inside the line so far at each `Advance`, and the rest at
/// `Finish`. Decoding then runs while the daemon writes the rest of the line. Read whole first, a batch of 10,000
/// records of 1 KiB (15.6 MB) kept the reading thread spinning on the pipe's lock for a sixth of its time, while the
/// writer copied the line in (bench/README.md, "Nineteenth round"). A record inside one piece is read where it lies;
/// the few that cross into the next piece are copied first, each on its own.
[<Sealed>]
type internal BatchInPieces() =
    let records = BatchRecords()
    let blocks = PayloadBlocks()
    let arrivals = ArrivalTimes()
    // How much of the line is decoded: `batchStart` and whole records, each with the comma after it.
    let mutable consumed = 0L
    let mutable started = false
    let mutable inLayout = true
    // Just after a record: a comma or the end of the records is next.
    let mutable afterRecord = false
    // After the last record: no comma followed it, so the line's end is next.
    let mutable recordsEnded = false

    member private _.Add(record: Record, length: int, remaining: int64, complete: bool) =
        if complete then
            records.Add(record, length, remaining)
        else
            records.AddUnsized record

        consumed <- consumed + int64 length
        afterRecord <- true

    // Reads records from `consumed` while they lie whole in `line`; a record cut off by the end of `line` waits for
    // the next call unless the line is `complete`.
    member private this.Decode(line: ReadOnlySequence<byte>, complete: bool) =
        let mutable reader = SequenceReader<byte>(line.Slice consumed)

        if not started then
            if reader.IsNext(ReadOnlySpan batchStart, true) then
                started <- true
                consumed <- int64 batchStart.Length
            elif complete || reader.Remaining >= int64 batchStart.Length then
                inLayout <- false

        // A batch without records ends where its first record would start.
        if started && consumed = int64 batchStart.Length && reader.IsNext(byte ']', false) then
            recordsEnded <- true

        let mutable more = started && inLayout && not recordsEnded

        while more do
            if afterRecord then
                // The comma that says another record follows, or the end of the records.
                if reader.End && not complete then
                    more <- false
                elif reader.IsNext(byte ',', true) then
                    consumed <- consumed + 1L
                    afterRecord <- false
                else
                    recordsEnded <- true
                    more <- false
            else
                let piece = reader.UnreadSpan
                let mutable position = 0
                // Until the line is whole, how much of it is left is not known.
                let tail = if complete then reader.Remaining - int64 piece.Length else longTail

                // No field of a record in the layout can hold `recordEnd`, so its first occurrence ends the record:
                // one read here where the record lies whole, or a copy of the one record that crosses into the next
                // piece.
                match layoutRecord blocks arrivals tail piece &position with
                | ValueSome parsed ->
                    reader.Advance(int64 position)
                    this.Add(parsed, position, reader.Remaining, complete)
                | ValueNone when piece.IndexOf(ReadOnlySpan recordEnd) < 0 ->
                    let start = reader.Position
                    let mutable body = ReadOnlySequence<byte>.Empty

                    if reader.TryReadTo(&body, ReadOnlySpan recordEnd, true) then
                        let record = inOneSpan (line.Slice(start, reader.Position))
                        position <- 0
                        let tail = if complete then reader.Remaining else longTail

                        match layoutRecord blocks arrivals tail record &position with
                        | ValueSome parsed when position = record.Length ->
                            this.Add(parsed, position, reader.Remaining, complete)
                        | _ ->
                            inLayout <- false
                            more <- false
                    else
                        // Not read yet, or never there.
                        inLayout <- not complete
                        more <- false
                | ValueNone ->
                    inLayout <- false
                    more <- false

    /// How many records are decoded so far.
    member _.Decoded = records.Count

    /// Decodes the records that lie whole in the line so far.
    member this.Advance(lineSoFar: ReadOnlySequence<byte>) =
        if inLayout && not recordsEnded then
            this.Decode(lineSoFar, false)

    /// The batch, once the line is whole; ValueNone if the line left the layout, for the reader to name the problem.
    member this.Finish(line: ReadOnlySequence<byte>) : DaemonMessage voption =
        if inLayout && not recordsEnded then
            this.Decode(line, true)

        // Only the end of a batch is copied: the whole rest of the line, if it left the layout, is the reader's.
        if inLayout && started && recordsEnded then
            batchOf records (inOneSpan (line.Slice consumed)) 0
        else
            ValueNone

/// `tryDecodeDaemonLayout` for a line that came in pieces, all at once.
let tryDecodeDaemonLayoutInPieces (line: ReadOnlySequence<byte>) : DaemonMessage voption = BatchInPieces().Finish line

let private decodeShutdown (reader: byref<Utf8JsonReader>) =
    let mutable reason = None
    let mutable go = true

    while go do
        match nextProperty &reader with
        | ValueNone -> go <- false
        | ValueSome "reason" -> reason <- readStringOrNull (&reader, "shutdown", "reason")
        | ValueSome _ -> reader.Skip()

    match reason with
    | Some "TERMINATE" -> DaemonMessage.Shutdown ShutdownReason.Terminate
    | Some "ZOMBIE" -> DaemonMessage.Shutdown ShutdownReason.Zombie
    | Some "SHARD_END" -> DaemonMessage.Shutdown ShutdownReason.ShardEnd
    | Some "LEASE_LOST" -> DaemonMessage.Shutdown ShutdownReason.LeaseLost
    | other -> fail (ProtocolError.UnknownShutdownReason other)

let private decodeCheckpointReply (reader: byref<Utf8JsonReader>) =
    let action = "checkpoint"
    let mutable sequence = None
    let mutable subSequence = None
    let mutable error = None
    let mutable go = true

    // sequenceNumber stays a string: it echoes whatever the child sent, after Jackson's coercion (PROTOCOL.md §2.7).
    while go do
        match nextProperty &reader with
        | ValueNone -> go <- false
        | ValueSome "sequenceNumber" -> sequence <- readStringOrNull (&reader, action, "sequenceNumber")
        | ValueSome "subSequenceNumber" -> subSequence <- readInt64OrNull (&reader, action, "subSequenceNumber")
        | ValueSome "error" -> error <- readStringOrNull (&reader, action, "error") |> Option.map CheckpointError.OfName
        | ValueSome _ -> reader.Skip()

    DaemonMessage.CheckpointReply(sequence, subSequence, error)

let decodeDaemonBody (action: string) (reader: byref<Utf8JsonReader>) =
    match action with
    | "initialize" -> decodeInitialize &reader
    | "processRecords" -> decodeProcessRecords &reader
    | "leaseLost" -> DaemonMessage.LeaseLost
    | "shardEnded" -> DaemonMessage.ShardEnded
    | "shutdownRequested" -> DaemonMessage.ShutdownRequested
    | "shutdown" -> decodeShutdown &reader
    | "checkpoint" -> decodeCheckpointReply &reader
    | other -> fail (ProtocolError.UnknownAction other)

// ---- what a child writes, read as the daemon reads it (PROTOCOL.md §3.3) ------------------------------------------

// Jackson with FAIL_ON_UNKNOWN_PROPERTIES: the daemon skips a line with a key its message class lacks (§3.3).
let private unknownProperty action name =
    fail (ProtocolError.InvalidValue(action, name, "not a property of this message; the daemon would skip the line"))

let private decodeStatus (reader: byref<Utf8JsonReader>) =
    let mutable responseFor = None
    let mutable go = true

    while go do
        match nextProperty &reader with
        | ValueNone -> go <- false
        | ValueSome "action" -> reader.Skip()
        | ValueSome "responseFor" ->
            match reader.TokenType with
            | JsonTokenType.Null -> responseFor <- None
            | JsonTokenType.String -> responseFor <- Some(stringValue (&reader, "status", "responseFor"))
            | other -> fail (ProtocolError.WrongType("status", "responseFor", "a string", describeToken other))
        | ValueSome name -> unknownProperty "status" name

    match responseFor with
    | Some action -> ChildMessage.Status action
    | None -> fail (ProtocolError.MissingField("status", "responseFor"))

// Jackson coerces scalars into the String field: 12345 becomes "12345", true becomes "true" (then not a sequence number).
let private readRequestedSequence (reader: byref<Utf8JsonReader>) =
    let parse = sequenceNumber "checkpoint" "sequenceNumber"

    match reader.TokenType with
    | JsonTokenType.Null -> None
    | JsonTokenType.String -> Some(parse (stringValue (&reader, "checkpoint", "sequenceNumber")))
    | JsonTokenType.Number -> Some(parse (Encoding.UTF8.GetString(valueBytes &reader)))
    | JsonTokenType.True -> Some(parse "true")
    | JsonTokenType.False -> Some(parse "false")
    | other -> fail (ProtocolError.WrongType("checkpoint", "sequenceNumber", "a string or null", describeToken other))

// Jackson coerces into the Long field: "5" is 5, and 1.5 is truncated to 1 (ACCEPT_FLOAT_AS_INT); out of range fails.
let private readRequestedSubSequence (reader: byref<Utf8JsonReader>) =
    let field = "subSequenceNumber"

    let outOfRange (text: string) =
        fail (ProtocolError.InvalidValue("checkpoint", field, text + " is not an integer in the 64-bit range"))

    match reader.TokenType with
    | JsonTokenType.Number ->
        match reader.TryGetInt64() with
        | true, value -> Some value
        | false, _ ->
            match truncateToInt64 (reader.GetDouble()) with
            | Some value -> Some value
            | None -> outOfRange (numberText &reader)
    | JsonTokenType.String ->
        let text = stringValue (&reader, "checkpoint", field)

        match
            Int64.TryParse(
                text.Trim(),
                Globalization.NumberStyles.AllowLeadingSign,
                Globalization.CultureInfo.InvariantCulture
            )
        with
        | true, value -> Some value
        | false, _ -> outOfRange (sprintf "%A" text)
    | _ -> readInt64OrNull (&reader, "checkpoint", field)

let private decodeCheckpointRequest (reader: byref<Utf8JsonReader>) =
    let mutable sequence = None
    let mutable subSequence = None
    let mutable go = true

    while go do
        match nextProperty &reader with
        | ValueNone -> go <- false
        | ValueSome "action" -> reader.Skip()
        | ValueSome "sequenceNumber" -> sequence <- readRequestedSequence &reader
        | ValueSome "subSequenceNumber" -> subSequence <- readRequestedSubSequence &reader
        // CheckpointMessage has an error field, so a child may send one; the daemon ignores it.
        | ValueSome "error" ->
            match reader.TokenType with
            | JsonTokenType.StartObject
            | JsonTokenType.StartArray ->
                fail (
                    ProtocolError.WrongType("checkpoint", "error", "a string or null", describeToken reader.TokenType)
                )
            | _ -> ()
        | ValueSome name -> unknownProperty "checkpoint" name

    // With no sequence number the daemon calls checkpoint() and ignores subSequenceNumber (PROTOCOL.md §3.2).
    match sequence with
    | None -> ChildMessage.Checkpoint CheckpointTarget.LastDelivered
    | Some sequence -> ChildMessage.Checkpoint(CheckpointTarget.At(sequence, subSequence))

// Daemon-side messages written by a child parse, but the daemon ignores them; here they are not child messages.
let decodeChildBody (action: string) (reader: byref<Utf8JsonReader>) =
    match action with
    | "status" -> decodeStatus &reader
    | "checkpoint" -> decodeCheckpointRequest &reader
    | other -> fail (ProtocolError.UnknownAction other)

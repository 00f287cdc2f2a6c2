(*
    Json --- the wire codec. Decoding makes two passes over a line: the first finds `action` wherever it sits and proves
    the whole line well-formed, the second reads the fields that action defines, by name. Both passes are linear, so
    a 14 MB processRecords line costs two scans and one base64 decode per record.
*)
module Kcl.Core.Json

open System
open System.Buffers
open System.Text
open System.Text.Json
open Kcl.Core.JsonText

[<RequireQualifiedAccess>]
type DaemonCharset =
    | Utf8
    | PosixAscii

// ---- decoding: shared --------------------------------------------------------------------------------------------

let private startObject (reader: byref<Utf8JsonReader>) =
    // Read throws on an empty or invalid line, so a false here cannot happen with isFinalBlock; guard anyway.
    if not (reader.Read()) then
        fail (ProtocolError.MalformedJson "the line holds no JSON value")

    if reader.TokenType <> JsonTokenType.StartObject then
        fail (ProtocolError.NotAnObject(describeToken reader.TokenType))

/// Pass one, from the object's start. With `strictEnd`, anything but whitespace after the object is malformed.
let private findAction (reader: byref<Utf8JsonReader>, strictEnd: bool) =
    let mutable action = None
    let mutable go = true

    while go do
        match nextProperty &reader with
        | ValueNone -> go <- false
        | ValueSome "action" ->
            match reader.TokenType with
            | JsonTokenType.String -> action <- Some(stringValue (&reader, "", "action"))
            | JsonTokenType.Null -> action <- None
            | other -> fail (ProtocolError.WrongType("", "action", "a string", describeToken other))
        | ValueSome _ -> reader.Skip()

    // Utf8JsonReader throws on trailing non-whitespace after a complete value.
    if strictEnd then
        reader.Read() |> ignore

    match action with
    | Some name -> name
    | None -> fail (ProtocolError.MissingField("", "action"))

// Maps the failures a decode can raise; anything else is a bug and is left to surface.
let private (|ProtocolFailure|_|) (ex: exn) =
    match ex with
    | DecodeFailure error -> Some error
    | :? JsonException -> Some(ProtocolError.MalformedJson ex.Message)
    // Invalid UTF-8 in a property name surfaces from GetString as InvalidOperationException.
    | :? InvalidOperationException -> Some(ProtocolError.MalformedJson ex.Message)
    | _ -> None

let private withUtf8 (line: string) (decode: byte[] -> int -> Result<'T, ProtocolError>) =
    if isNull line then
        Error(ProtocolError.MalformedJson "the line is null")
    else
        // Pooling the line's bytes is safe: every decoded string and payload is a fresh copy.
        let buffer = ArrayPool<byte>.Shared.Rent(Encoding.UTF8.GetByteCount line)

        try
            decode buffer (Encoding.UTF8.GetBytes(line, 0, line.Length, buffer, 0))
        finally
            ArrayPool<byte>.Shared.Return buffer

// ---- decoding what the daemon writes ------------------------------------------------------------------------------

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

let private readData (reader: byref<Utf8JsonReader>, field: string) =
    match reader.TokenType with
    | JsonTokenType.Null -> Array.Empty<byte>()
    | JsonTokenType.String ->
        // Returns a new array each time: record payloads are never pooled (POLICY.md "Records that user code keeps").
        match reader.TryGetBytesFromBase64() with
        | true, bytes -> bytes
        | false, _ ->
            fail (ProtocolError.InvalidValue("processRecords", field, "not valid base64 (standard alphabet, padded)"))
    | other -> fail (ProtocolError.WrongType("processRecords", field, "a base64 string or null", describeToken other))

let private toTimestamp (field: string) (millis: int64) =
    if millis < minEpochMillis || millis > maxEpochMillis then
        let detail =
            sprintf "%d epoch milliseconds is outside the range of DateTimeOffset" millis

        fail (ProtocolError.InvalidValue("processRecords", field, detail))

    DateTimeOffset.FromUnixTimeMilliseconds millis

let private decodeRecord (reader: byref<Utf8JsonReader>, index: int) : Record =
    let action = "processRecords"
    let prefix = "records[" + string index + "]."

    if reader.TokenType <> JsonTokenType.StartObject then
        fail (ProtocolError.WrongType(action, prefix.TrimEnd '.', "an object", describeToken reader.TokenType))

    let mutable data = Array.Empty<byte>()
    let mutable partitionKey = ""
    let mutable sequence = None
    let mutable subSequence = 0L
    let mutable arrival = None
    let mutable go = true

    // Nulls follow POLICY.md: the daemon's classes allow them, and KCL 1.x sent a null subSequenceNumber.
    // The record's own "action":"record" (absent before KCL 1.7.2) carries nothing, so it is skipped with unknown keys.
    while go do
        match nextProperty &reader with
        | ValueNone -> go <- false
        | ValueSome "data" -> data <- readData (&reader, prefix + "data")
        | ValueSome "partitionKey" ->
            partitionKey <-
                readStringOrNull (&reader, action, prefix + "partitionKey")
                |> Option.defaultValue ""
        | ValueSome "sequenceNumber" ->
            let field = prefix + "sequenceNumber"

            sequence <-
                readStringOrNull (&reader, action, field)
                |> Option.map (sequenceNumber action field)
        | ValueSome "approximateArrivalTimestamp" ->
            let field = prefix + "approximateArrivalTimestamp"
            arrival <- readInt64OrNull (&reader, action, field) |> Option.map (toTimestamp field)
        | ValueSome "subSequenceNumber" ->
            subSequence <-
                readInt64OrNull (&reader, action, prefix + "subSequenceNumber")
                |> Option.defaultValue 0L
        | ValueSome _ -> reader.Skip()

    match sequence with
    | None -> fail (ProtocolError.MissingField(action, prefix + "sequenceNumber"))
    | Some sequenceNumber ->
        {
            Data = data
            PartitionKey = partitionKey
            SequenceNumber = sequenceNumber
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

let private decodeDaemonBody (action: string) (reader: byref<Utf8JsonReader>) =
    match action with
    | "initialize" -> decodeInitialize &reader
    | "processRecords" -> decodeProcessRecords &reader
    | "leaseLost" -> DaemonMessage.LeaseLost
    | "shardEnded" -> DaemonMessage.ShardEnded
    | "shutdownRequested" -> DaemonMessage.ShutdownRequested
    | "shutdown" -> decodeShutdown &reader
    | "checkpoint" -> decodeCheckpointReply &reader
    | other -> fail (ProtocolError.UnknownAction other)

let decodeDaemonMessage (line: ReadOnlySpan<byte>) : Result<DaemonMessage, ProtocolError> =
    try
        let mutable reader = Utf8JsonReader(line)
        startObject &reader
        let mutable body = reader
        // Trailing content is an error here: the daemon never writes it, so it means a corrupted line.
        let action = findAction (&reader, true)
        Ok(decodeDaemonBody action &body)
    with ProtocolFailure error ->
        Error error

let decodeDaemonLine (line: string) : Result<DaemonMessage, ProtocolError> =
    withUtf8 line (fun buffer length -> decodeDaemonMessage (ReadOnlySpan(buffer, 0, length)))

// ---- what the child writes ----------------------------------------------------------------------------------------

let encodeChildMessage (message: ChildMessage) : string =
    let builder = StringBuilder(128)

    match message with
    | ChildMessage.Status responseFor ->
        builder.Append "{\"action\":\"status\",\"responseFor\":" |> ignore
        appendQuotedOrNull builder true responseFor
    | ChildMessage.Checkpoint CheckpointTarget.LastDelivered ->
        builder.Append "{\"action\":\"checkpoint\",\"sequenceNumber\":null,\"subSequenceNumber\":null"
        |> ignore
    | ChildMessage.Checkpoint(CheckpointTarget.At(sequence, subSequence)) ->
        builder.Append "{\"action\":\"checkpoint\",\"sequenceNumber\":" |> ignore
        appendQuoted builder true sequence.Value
        builder.Append ",\"subSequenceNumber\":" |> ignore
        appendInt64OrNull builder subSequence

    builder.Append('}').ToString()

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
    | JsonTokenType.Number -> Some(parse (Encoding.UTF8.GetString reader.ValueSpan))
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
            let truncated = Math.Truncate(reader.GetDouble())

            if truncated >= -9.2233720368547758e18 && truncated < 9.2233720368547758e18 then
                Some(int64 truncated)
            else
                outOfRange (numberText &reader)
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
let private decodeChildBody (action: string) (reader: byref<Utf8JsonReader>) =
    match action with
    | "status" -> decodeStatus &reader
    | "checkpoint" -> decodeCheckpointRequest &reader
    | other -> fail (ProtocolError.UnknownAction other)

let decodeChildMessage (line: ReadOnlySpan<byte>) : Result<ChildMessage, ProtocolError> =
    try
        let mutable reader = Utf8JsonReader(line)
        startObject &reader
        let mutable body = reader
        // Trailing content after the object is accepted, as the daemon does (FAIL_ON_TRAILING_TOKENS is off).
        let action = findAction (&reader, false)
        Ok(decodeChildBody action &body)
    with ProtocolFailure error ->
        Error error

let decodeChildLine (line: string) : Result<ChildMessage, ProtocolError> =
    withUtf8 line (fun buffer length -> decodeChildMessage (ReadOnlySpan(buffer, 0, length)))

// ---- what the daemon writes ---------------------------------------------------------------------------------------

// The JVM's encoders replace what the charset cannot hold with '?': a lone surrogate in UTF-8, and in US-ASCII every
// non-ASCII code point, a surrogate pair being one (PROTOCOL.md §1.1). .NET's ASCII fallback would write two for a
// pair, hence the hand-written loop.
let private jvmUtf8 =
    Encoding.GetEncoding("utf-8", EncoderReplacementFallback "?", DecoderFallback.ReplacementFallback)

let private toJvmAscii (text: string) =
    let bytes = Array.zeroCreate<byte> text.Length
    let mutable written = 0
    let mutable i = 0

    while i < text.Length do
        let c = text[i]

        if c < '\u0080' then
            bytes[written] <- byte c
        else
            bytes[written] <- byte '?'

            if Char.IsHighSurrogate c && i + 1 < text.Length && Char.IsLowSurrogate text[i + 1] then
                i <- i + 1

        written <- written + 1
        i <- i + 1

    if written = bytes.Length then
        bytes
    else
        bytes[.. written - 1]

// Field order is JsonFriendlyRecord's declaration order, with the @JsonProperty getter `action` last (PROTOCOL.md §2.2).
let private appendRecord (builder: StringBuilder) (record: Record) =
    builder.Append "{\"data\":" |> ignore

    if isNull record.Data then
        builder.Append "null" |> ignore
    else
        builder.Append('"').Append(Convert.ToBase64String record.Data).Append('"')
        |> ignore

    builder.Append ",\"partitionKey\":" |> ignore
    appendQuotedOrNull builder false record.PartitionKey
    builder.Append ",\"sequenceNumber\":" |> ignore
    appendQuoted builder false record.SequenceNumber.Value
    builder.Append ",\"approximateArrivalTimestamp\":" |> ignore
    appendInt64OrNull builder (record.ApproximateArrivalTimestamp |> Option.map _.ToUnixTimeMilliseconds())

    builder.Append(",\"subSequenceNumber\":").Append(record.SubSequenceNumber).Append(",\"action\":\"record\"}")
    |> ignore

let private appendDaemonMessage (builder: StringBuilder) (message: DaemonMessage) =
    let quotedOrNull (text: string option) =
        appendQuotedOrNull builder false (Option.toObj text)

    builder.Append("{\"action\":\"").Append(message.Action).Append('"') |> ignore

    match message with
    | DaemonMessage.Initialize(shardId, sequence, subSequence) ->
        builder.Append ",\"shardId\":" |> ignore
        appendQuotedOrNull builder false shardId.Value
        builder.Append ",\"sequenceNumber\":" |> ignore
        quotedOrNull (sequence |> Option.map _.Value)
        builder.Append ",\"subSequenceNumber\":" |> ignore
        appendInt64OrNull builder subSequence
    | DaemonMessage.ProcessRecords(records, millisBehindLatest) ->
        builder.Append ",\"records\":[" |> ignore

        records
        |> Array.iteri (fun i record ->
            if i > 0 then
                builder.Append ',' |> ignore

            appendRecord builder record)

        builder.Append "],\"millisBehindLatest\":" |> ignore
        appendInt64OrNull builder millisBehindLatest
    | DaemonMessage.LeaseLost
    | DaemonMessage.ShardEnded
    | DaemonMessage.ShutdownRequested -> ()
    | DaemonMessage.Shutdown reason ->
        builder.Append ",\"reason\":" |> ignore
        appendQuoted builder false reason.WireName
    | DaemonMessage.CheckpointReply(sequence, subSequence, error) ->
        builder.Append ",\"sequenceNumber\":" |> ignore
        quotedOrNull sequence
        builder.Append ",\"subSequenceNumber\":" |> ignore
        appendInt64OrNull builder subSequence
        builder.Append ",\"error\":" |> ignore
        quotedOrNull (error |> Option.map _.Name)

    builder.Append '}' |> ignore

let encodeDaemonMessage (charset: DaemonCharset) (message: DaemonMessage) : byte[] =
    let builder = StringBuilder(256)
    appendDaemonMessage builder message
    let text = builder.ToString()

    match charset with
    | DaemonCharset.Utf8 -> jvmUtf8.GetBytes text
    | DaemonCharset.PosixAscii -> toJvmAscii text
